"""The core reads one way (README, "Architecture"): every import inside st4rtrack_ros, module-level or inside a
function, goes to the same package or to a lower layer, the packages form no cycle, and no module below the ROS
adapter imports rclpy or ``st4rtrack_ros.ros`` / ``st4rtrack_ros.msg``. Command-line entry points (``cli.py``,
``*_cli.py``) sit on top with the demo: they may import anything."""

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
    "entry": 6,
}
ROS_ONLY = {"rclpy", "msg", "ros"}


def _unit(path: Path) -> str:
    """The layer unit of a module: its top-level package (or module), or 'entry' for an entry point."""
    rel = path.relative_to(PKG)
    if path.name == "cli.py" or path.name.endswith("_cli.py") or rel.parts[0] in ("demo.py", "__init__.py"):
        return "entry"
    return rel.parts[0].removesuffix(".py")


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
                out.append(("entry" if parts[1] in ("cli", "demo") else parts[1], node.lineno))
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
                bad.append(f"{where}: {src} imports {dst} (only ros/ and the entry points may)")
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
