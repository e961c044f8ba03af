"""`ModelInfo` (what `model.yaml` holds), `ModelSignature`, and the validation of user-given fields."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from raystore._private.batch_config import validate_batch_dim
from raystore.exceptions import InvalidArgument, StoreError
from raystore.tag import Tag, validate_part, validate_version

API_VERSION = "v1"
_SIGNATURE_KEYS = {"batchable", "batch_dim", "input_spec", "output_spec"}


@dataclass(frozen=True)
class ModelSignature:
    """How a model method may be called: whether requests can be batched, and along which dims."""

    batchable: bool = False
    batch_dim: tuple[int, int] = (0, 0)  # (input dim, output dim)
    input_spec: Any = None
    output_spec: Any = None

    @classmethod
    def from_value(cls, method: str, value: Mapping[str, Any] | ModelSignature | None) -> ModelSignature:
        if isinstance(value, ModelSignature):
            return value
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise InvalidArgument(
                f"signature {method!r} must be a dict like {{'batchable': True, 'batch_dim': 0}}, "
                f"got {type(value).__name__}"
            )
        unknown = set(value) - _SIGNATURE_KEYS
        if unknown:
            raise InvalidArgument(
                f"signature {method!r} has unknown keys {sorted(unknown)}; allowed: {sorted(_SIGNATURE_KEYS)}"
            )
        batchable = value.get("batchable", False)
        if not isinstance(batchable, bool):
            raise InvalidArgument(f"signature {method!r}: 'batchable' must be True or False, got {batchable!r}")
        return cls(
            batchable=batchable,
            batch_dim=validate_batch_dim(value.get("batch_dim", 0), f"signature {method!r}: 'batch_dim'"),
            input_spec=_plain(value.get("input_spec"), f"signature {method!r} input_spec"),
            output_spec=_plain(value.get("output_spec"), f"signature {method!r} output_spec"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"batchable": self.batchable, "batch_dim": list(self.batch_dim)}
        if self.input_spec is not None:
            out["input_spec"] = self.input_spec
        if self.output_spec is not None:
            out["output_spec"] = self.output_spec
        return out


def validate_signatures(
    signatures: Mapping[str, Any] | None, has_method: Callable[[str], bool] | None = None, owner: str = "the model"
) -> dict[str, ModelSignature]:
    """Normalise signatures and, when `has_method` is given, check that it accepts every method."""
    if signatures is None:
        return {}
    if not isinstance(signatures, Mapping):
        raise InvalidArgument(
            "signatures must be a dict like {'predict': {'batchable': True}}, got " + type(signatures).__name__
        )
    out = {}
    for method, value in signatures.items():
        if not isinstance(method, str) or not method.isidentifier():
            raise InvalidArgument(f"signature name {method!r} is not a Python method name")
        if has_method is not None and not has_method(method):
            raise InvalidArgument(
                f"signature {method!r}: {owner} has no method {method!r}; pass signatures naming methods it has"
            )
        out[method] = ModelSignature.from_value(method, value)
    return out


def has_method(model: object, method: str) -> bool:
    """Whether `model.method` is callable (a property that raises is not a method either)."""
    try:
        return callable(getattr(model, method, None))
    except Exception:
        return False


def validate_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise InvalidArgument(f"labels must be a dict of str to str, got {type(labels).__name__}")
    for key, value in labels.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgument(f"label key {key!r} must be a non-empty string")
        if not isinstance(value, str):
            raise InvalidArgument(
                f"label {key!r} has a {type(value).__name__} value {value!r}; labels are str to str "
                "(put other values in metadata)"
            )
    return {str.__str__(k): str.__str__(v) for k, v in labels.items()}


def validate_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return a plain JSON/YAML-representable copy: numpy scalars and arrays become Python values."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgument(f"metadata must be a dict, got {type(metadata).__name__}")
    return _plain(metadata, "metadata")


_MAX_DEPTH = 64


def _plain(value: Any, where: str, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise InvalidArgument(f"{where} is nested more than {_MAX_DEPTH} levels deep (or refers to itself)")
    if value is None:
        return None
    if isinstance(value, dt.datetime):  # before date: datetime is a date; pandas Timestamp is a datetime
        return dt.datetime.fromisoformat(value.isoformat())
    if isinstance(value, dt.date):
        return dt.date.fromisoformat(value.isoformat())
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)  # the text itself, also for str enums and numpy strings
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(f"{where} is {value}, which JSON cannot represent; use None or a string")
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgument(f"{where}: key {key!r} must be a string")
            out[str.__str__(key)] = _plain(item, f"{where}[{key!r}]", depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    # numpy without importing it: scalars and arrays both have .tolist()
    module = type(value).__module__
    if module == "numpy" and hasattr(value, "tolist"):
        return _plain(value.tolist(), where, depth + 1)
    raise InvalidArgument(
        f"{where} is a {type(value).__module__}.{type(value).__name__}, which cannot be stored in model.yaml; "
        "metadata holds str, int, float, bool, None, dates, lists, dicts and numpy values "
        "(put arbitrary objects in custom_objects)"
    )


@dataclass
class ModelInfo:
    """Everything `model.yaml` records about one model version."""

    name: str
    version: str
    module: str
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    signatures: dict[str, ModelSignature] = field(default_factory=dict)
    api_version: str = API_VERSION
    creation_time: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def tag(self) -> Tag:
        return Tag(self.name, self.version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "module": self.module,
            "labels": dict(self.labels),
            "options": dict(self.options),
            "metadata": dict(self.metadata),
            "context": dict(self.context),
            "signatures": {k: s.to_dict() for k, s in self.signatures.items()},
            "api_version": self.api_version,
            "creation_time": self.creation_time.isoformat(),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, where: str) -> ModelInfo:
        """Parse and check a `model.yaml`, written here or arriving in an archive: without YAML
        anchors and aliases (an alias bomb), every field as a save would have checked it."""
        try:
            data = _load_plain_yaml(text)
            if not isinstance(data, dict):
                raise ValueError("not a mapping")
            return cls(
                name=validate_part(data["name"], "name"),
                version=validate_version(data["version"]),
                module=str(data["module"]),
                labels=validate_labels(data.get("labels") or {}),
                options=_plain_dict(data.get("options"), "options"),
                metadata=validate_metadata(data.get("metadata") or {}),
                context=_plain_dict(data.get("context"), "context"),
                signatures=validate_signatures(data.get("signatures") or {}),
                api_version=str(data.get("api_version", API_VERSION)),
                creation_time=_parse_time(data["creation_time"]),
            )
        except (KeyError, TypeError, ValueError, yaml.YAMLError, InvalidArgument) as exc:
            raise StoreError(
                f"{where} is corrupt ({type(exc).__name__}: {exc}); delete or re-import that version"
            ) from None


def _load_plain_yaml(text: str) -> Any:
    """YAML's safe subset without anchors and aliases. Text with neither `&` nor `*` can hold
    neither, so libyaml's parser (about 10x faster: a store's listing reads every `model.yaml`)
    takes it; anything else, or anything libyaml refuses, goes through the checking loader."""
    if _FAST_LOADER is not None and "&" not in text and "*" not in text:
        try:
            return yaml.load(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            pass  # the checking loader says what is wrong, as it always has
    return yaml.load(text, Loader=_PlainYamlLoader)  # a SafeLoader, minus aliases


_FAST_LOADER = getattr(yaml, "CSafeLoader", None)


class _PlainYamlLoader(yaml.SafeLoader):
    """YAML's safe subset without anchors and aliases: `model.yaml` never needs them, and a few
    nested aliases in a small file expand to gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.YAMLError(f"YAML anchors and aliases are not allowed here ({event.start_mark})")
        return super().compose_node(parent, index)


def _plain_dict(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{where} must be a mapping, got {type(value).__name__}")
    return _plain(value, where)


def _parse_time(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        parsed = dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
