"""Shared fixtures: where the golden parity data lives, and deterministic torch on the CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def golden_path() -> Path:
    """../shared/golden beside the clone (CI lays shared/ there), or $ST4R_GOLDEN_DIR."""
    env = os.environ.get("ST4R_GOLDEN_DIR")
    return Path(env) if env else REPO.parent / "shared" / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    d = golden_path()
    if not (d / "tiny_public_io.npz").is_file():
        pytest.fail(f"golden parity data not found at {d} (set ST4R_GOLDEN_DIR)")
    return d


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
