"""`st4rtrack-synth` command line: help, writing a bag, refusing to overwrite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from st4rtrack_ros.cli.synth import main, parse_size
from st4rtrack_ros.data.bag_io import BenchmarkBagReader


def test_help_runs() -> None:
    """--help exits 0 and names the options of the issue (console script when installed, else the module)."""
    exe = shutil.which("st4rtrack-synth") or str(Path(sys.executable).parent / "st4rtrack-synth")
    cmd = [exe, "--help"] if Path(exe).exists() else [sys.executable, "-m", "st4rtrack_ros.cli.synth", "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    for opt in ("--preset", "--frames", "--seed", "--size"):
        assert opt in out


def test_writes_a_bag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A small sqlite3 png bag with ground truth and progress output."""
    out = tmp_path / "b"
    argv = [str(out), "--preset", "fast", "--frames", "3", "--seed", "2", "--size", "32x24", "--tracks", "16",
            "--object-tracks", "4", "--storage", "sqlite3", "--transport", "png"]
    assert main(argv) == 0
    assert "wrote 3 frames" in capsys.readouterr().err
    with BenchmarkBagReader(out) as r:
        frames = list(r.frames())
    assert len(frames) == 3 and frames[0].image.shape == (24, 32, 3) and r.compressed
    assert frames[2].gt_tracks is not None and frames[2].gt_tracks.ids.size == 20
    assert main(argv) == 2  # exists
    assert main([*argv, "--overwrite", "--no-gt", "-q"]) == 0
    with BenchmarkBagReader(out) as r:
        assert r.missing_ground_truth == ["depth", "pose", "tracks"]


def test_parse_size() -> None:
    """WxH parsing."""
    assert parse_size("256x160") == (256, 160)
    with pytest.raises(Exception, match="256x160"):
        parse_size("256")
