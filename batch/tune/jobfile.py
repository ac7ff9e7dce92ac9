"""TOML job files written by topx (``topx tune``'s best settings): nested tables of scalars."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def to_toml(tree: Mapping[str, Any], comment: str = "") -> str:
    """``tree`` (nested dicts of str/int/float/bool; None values left out) as TOML text that
    :func:`batch.config.load_config` reads back to the same values."""
    lines = [f"# {line}" for line in comment.splitlines()]
    _table(tree, (), lines)
    return "\n".join(lines).strip("\n") + "\n"


def _table(tree: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    scalars = {k: v for k, v in tree.items() if not isinstance(v, Mapping) and v is not None}
    if scalars and path:
        lines += ["", f"[{'.'.join(path)}]"]
    lines += [f"{key} = {_value(value)}" for key, value in scalars.items()]
    for key, value in tree.items():
        if isinstance(value, Mapping):
            _table(value, path + (key,), lines)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)
