"""One parameter schema for the node and the command-line tools: ``config/tracker.yaml``.

The file is a ROS 2 parameters file (``/**: ros__parameters: {...}``) with nested sections (``model``,
``evaluation``, ...). The node gets the same values as dotted ROS parameters (``model.checkpoint``); the CLIs read
the sections directly with :func:`load_section`. Defaults live in that file only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

PACKAGE_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = PACKAGE_ROOT.parent / "config" / "tracker.yaml"
# The embedded default model (st4rtrack_ros/weights/README.md); a path relative to the package.
DEFAULT_CHECKPOINT = PACKAGE_ROOT / "weights" / "default.safetensors"


class SettingsError(ValueError):
    """A parameters file that cannot be read or lacks a section."""


def load_params(path: str | Path) -> dict[str, Any]:
    """The ``ros__parameters`` dict of a parameters file (first node entry), or the plain mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SettingsError(f"cannot read parameters file {path}: {e}") from e
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping at the top level")
    for value in data.values():
        if isinstance(value, dict) and "ros__parameters" in value:
            return dict(value["ros__parameters"] or {})
    return data


def load_section(path: str | Path, name: str) -> dict[str, Any]:
    """One section (e.g. ``model``) of a parameters file; empty when the file does not set it."""
    section = load_params(path).get(name, {})
    if not isinstance(section, dict):
        raise SettingsError(f"{path}: section {name!r} must be a mapping")
    return section


def check_keys(cls: type, d: Mapping[str, Any], what: str, error: type[Exception] = ValueError) -> None:
    """Refuse keys that are not fields of the dataclass ``cls``: a typo must not silently keep a default."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise error(f"unknown {what} {sorted(unknown)}")


def unflatten(flat: Mapping[str, Any], section: str) -> dict[str, Any]:
    """Dotted names of one section (``tracking.window_size``, ...) → the nested dict the core's ``from_dict`` takes."""
    out: dict[str, Any] = {}
    for name, v in flat.items():
        if not name.startswith(section + "."):
            continue
        node = out
        *parents, leaf = name[len(section) + 1:].split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def default_checkpoint() -> Path:
    return DEFAULT_CHECKPOINT
