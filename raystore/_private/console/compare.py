"""Versions side by side: every label, metadata entry (nested ones by dotted path), signature
setting and framework fact of any of them, one row each, marked where the versions differ."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raystore._private.store import ModelInfo

MISSING = "—"  # shown where a version has no such entry


@dataclass(frozen=True)
class CompareRow:
    section: str  # labels, metadata, signatures, framework
    key: str
    values: list[str]  # one per version, as shown
    differs: bool


def compare_versions(infos: list[ModelInfo]) -> list[CompareRow]:
    """One row per key any of the versions has, sections in a fixed order, keys sorted."""
    flats = [_flatten(info) for info in infos]
    rows = []
    for section in ("labels", "metadata", "signatures", "framework"):
        keys = sorted({key for flat in flats for key in flat.get(section, {})})
        for key in keys:
            values = [flat.get(section, {}).get(key, MISSING) for flat in flats]
            rows.append(CompareRow(section, key, values, len(set(values)) > 1))
    return rows


def _flatten(info: ModelInfo) -> dict[str, dict[str, str]]:
    signatures: dict[str, str] = {}
    for method, signature in info.signatures.items():
        for setting, value in signature.to_dict().items():
            signatures[f"{method}.{setting}"] = _shown(value)
    framework = {"module": info.module}
    for key, value in info.context.items():
        if isinstance(value, dict):
            for inner, inner_value in value.items():
                framework[f"{key}.{inner}"] = _shown(inner_value)
        else:
            framework[key] = _shown(value)
    return {
        "labels": {key: _shown(value) for key, value in info.labels.items()},
        "metadata": dict(_dotted(info.metadata)),
        "signatures": signatures,
        "framework": framework,
    }


def _dotted(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as (dotted.path, shown value) pairs; lists and scalars are leaves."""
    if isinstance(value, dict) and value:
        out = []
        for key, inner in value.items():
            out.extend(_dotted(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [(prefix, _shown(value))]


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return str(value)
