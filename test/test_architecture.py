"""The core reads one way (README, "Architecture"): every import inside st4rtrack_ros, module-level or inside a
function, goes to the same package or to a lower layer, the packages form no cycle, and no module below the ROS
adapter imports rclpy or ``st4rtrack_ros.ros`` / ``st4rtrack_ros.msg``. The command-line tools (``cli/``, one
module per command) sit on top with the demo: they may import anything, and nothing else in the package imports them
(only the tests and the demo do)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "st4rtrack_ros"

#: bottom to top; a package may import its own modules and packages of a lower or equal layer (no cycles).
LAYERS = {
    "settings": 0,
    "model": 1, "geometry": 1,
    "tracking": 2,
    "adaptation": 3,
    "data": 4, "evaluation": 4, "training": 4, "pipeline": 4,
    "msg": 5, "ros": 5,
    "package": 6,  # st4rtrack_ros/__init__.py: re-exports the front door
    "cli": 7, "demo": 7,
}
ROS_ONLY = {"rclpy", "msg", "ros"}


def _unit(path: Path) -> str:
    """The layer unit of a module: its top-level package (or module); 'package' for the package's __init__."""
    rel = path.relative_to(PKG)
    return "package" if rel.parts == ("__init__.py",) else rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, int]]:
    """(target unit, line) of every st4rtrack_ros import and every rclpy import in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "rclpy":
                out.append(("rclpy", node.lineno))
            elif parts[0] == "st4rtrack_ros" and len(parts) > 1:
                out.append((parts[1], node.lineno))
    return out


def _modules() -> list[Path]:
    return [p for p in PKG.rglob("*.py") if "msg" not in p.relative_to(PKG).parts[:1]]


def test_every_import_goes_down_and_the_core_never_touches_ros() -> None:
    bad = []
    for path in _modules():
        src = _unit(path)
        assert src in LAYERS, f"{path}: package {src!r} has no layer in test_architecture.LAYERS"
        for dst, line in _imports(path):
            where = f"{path.relative_to(PKG.parent)}:{line}"
            if dst in ROS_ONLY and LAYERS[src] < LAYERS["ros"]:
                bad.append(f"{where}: {src} imports {dst} (only ros/ and the command-line tools may)")
            elif dst != "rclpy" and dst != src and LAYERS.get(dst, 99) > LAYERS[src]:
                bad.append(f"{where}: {src} (layer {LAYERS[src]}) imports {dst} (layer {LAYERS.get(dst)})")
    assert not bad, "\n".join(bad)


def test_packages_form_no_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for path in _modules():
        src = _unit(path)
        edges.setdefault(src, set()).update(d for d, _ in _imports(path) if d not in (src, "rclpy"))
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> list[str] | None:
        state[n] = 1
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return [*stack, n, m]
            if m not in state and (cycle := visit(m, [*stack, n])):
                return cycle
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state:
            cycle = visit(n, [])
            assert cycle is None, " → ".join(cycle)


def test_the_check_sees_a_wrong_way_import(tmp_path: Path) -> None:
    """The walker finds imports inside functions too (a lazy import is still an arrow)."""
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from st4rtrack_ros.ros.live_eval import main\n    import rclpy\n")
    assert _imports(f) == [("ros", 2), ("rclpy", 3)]


def test_commands_live_in_cli_one_module_each() -> None:
    """Every console script is a module of cli/ with a ``main``, named after it (setup.py and CMakeLists.txt derive
    the list from the folder); no command-line module is left in the library (``cli.py``, ``*_cli.py``)."""
    import importlib

    commands = sorted(p.stem for p in (PKG / "cli").glob("*.py") if not p.stem.startswith("_"))
    assert commands == ["adapt", "eval", "node", "play", "real_bench", "study", "synth", "train"]
    for name in commands:
        module = importlib.import_module(f"st4rtrack_ros.cli.{name}")  # rclpy is imported by main(), not here
        assert callable(module.main) and (name == "node" or callable(module.build_parser)), name
    strays = [p for p in PKG.rglob("*.py") if p.name == "cli.py" or p.name.endswith("_cli.py")]
    assert not strays, f"command-line modules outside cli/: {strays}"
    setup = (PKG.parent / "setup.py").read_text()
    assert "console_scripts()" in setup and "cli.{p.stem}:main" in setup
