"""Resource requests for runner replicas: parsing Ray-style and BentoML-style specs, validating
them, and turning them into Ray actor options."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from raystore.exceptions import InvalidArgument

AUTO = "auto"
DEFAULT_NUM_CPUS = 1.0
_RAY_KEYS = {"num_cpus", "num_gpus", "accelerator_type", "memory"}
_BENTOML_KEYS = {"cpu": "num_cpus", "nvidia.com/gpu": "num_gpus"}
_MEMORY_UNITS = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}


@dataclass(frozen=True)
class Resources:
    """What one replica asks Ray for. `num_gpus=None` means "auto": decided against the cluster."""

    num_cpus: float = DEFAULT_NUM_CPUS
    num_gpus: float | None = 0.0
    accelerator_type: str | None = None
    memory: int | None = None  # bytes

    def resolve(self, *, gpu_capable: bool, cluster_gpus: float) -> Resources:
        """Settle "auto" and check the request can ever be met by a cluster with `cluster_gpus` GPUs."""
        num_gpus = self.num_gpus
        if num_gpus is None:
            num_gpus = 1.0 if gpu_capable and cluster_gpus >= 1 else 0.0
        if num_gpus > cluster_gpus:
            raise InvalidArgument(
                f"resources ask for {num_gpus:g} GPU(s) per replica, but the Ray cluster has {cluster_gpus:g}; "
                "the replica would never start. Lower num_gpus or add GPU nodes"
            )
        return replace(self, num_gpus=num_gpus)

    def ray_actor_options(self) -> dict[str, Any]:
        """Ray actor options, once "auto" is settled."""
        if self.num_gpus is None:
            raise InvalidArgument("GPU request is still 'auto'; call resolve() against the cluster first")
        options: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            options["num_gpus"] = self.num_gpus
        if self.accelerator_type:
            options["accelerator_type"] = self.accelerator_type
        if self.memory:
            options["memory"] = self.memory
        return options


def parse_resources(
    spec: Mapping[str, Any] | str | Resources | None,
    *,
    gpu_capable: bool,
    auto_gpu: bool | None = None,
    where: str = "resources",
) -> Resources:
    """Parse `{"num_cpus": 0.5, "num_gpus": 0.25, "accelerator_type": "A100", "memory": "2Gi"}` or
    BentoML's `{"cpu": "500m", "nvidia.com/gpu": 1}`; None or "auto" means one CPU, plus one GPU
    when the cluster has GPUs for frameworks that use one by default (`auto_gpu`, else every
    GPU-capable one)."""
    if isinstance(spec, Resources):
        return spec
    auto_gpu = gpu_capable if auto_gpu is None else auto_gpu and gpu_capable
    if spec is None or spec == AUTO:
        return Resources(num_gpus=None if auto_gpu else 0.0)
    if not isinstance(spec, Mapping):
        raise InvalidArgument(f"{where} must be a dict like {{'num_cpus': 1, 'num_gpus': 0.5}} or 'auto', got {spec!r}")
    unknown = set(spec) - _RAY_KEYS - set(_BENTOML_KEYS)
    if unknown:
        allowed = sorted(_RAY_KEYS | set(_BENTOML_KEYS))
        raise InvalidArgument(f"{where}: unknown keys {sorted(unknown)}; allowed: {allowed}")
    values: dict[str, Any] = {}
    for key, value in spec.items():
        name = _BENTOML_KEYS.get(key, key)
        if name in values:
            raise InvalidArgument(f"{where}: {key!r} repeats {name!r}; give one of them")
        values[name] = value
    num_cpus = _cpus(values.get("num_cpus", DEFAULT_NUM_CPUS), where)
    num_gpus = _gpus(values.get("num_gpus", None if auto_gpu else 0), where)
    if num_gpus and not gpu_capable:
        raise InvalidArgument(f"{where}: this model's framework runs on CPU only; remove the GPU request")
    accelerator = values.get("accelerator_type")
    if accelerator is not None and (not isinstance(accelerator, str) or not accelerator):
        raise InvalidArgument(f"{where}: accelerator_type must be a name like 'A100' or 'T4', got {accelerator!r}")
    if accelerator and num_gpus == 0:
        raise InvalidArgument(f"{where}: accelerator_type {accelerator!r} needs num_gpus > 0")
    memory = _memory(values["memory"], where) if values.get("memory") is not None else None
    return Resources(num_cpus=num_cpus, num_gpus=num_gpus, accelerator_type=accelerator, memory=memory)


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgument(f"{where}: {key} must be a number, got {value!r}")
    if value < 0:
        raise InvalidArgument(f"{where}: {key} must not be negative, got {value!r}")
    return float(value)


def _cpus(value: Any, where: str) -> float:
    if isinstance(value, str):  # Kubernetes style: "500m" or "2"
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)(m?)\s*", value)
        if not match:
            raise InvalidArgument(f"{where}: cpu {value!r} is not a CPU amount like 2, 0.5 or '500m'")
        value = float(match.group(1)) / (1000 if match.group(2) else 1)
    return _number(value, "num_cpus", where)


def _gpus(value: Any, where: str) -> float | None:
    if value is None or value == AUTO:
        return None
    gpus = _number(value, "num_gpus", where)
    if gpus > 1 and not gpus.is_integer():
        raise InvalidArgument(f"{where}: num_gpus above 1 must be a whole number, got {value!r}")
    return gpus


def _memory(value: Any, where: str) -> int:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]i?)?[bB]?\s*", value)
        if not match:
            raise InvalidArgument(f"{where}: memory {value!r} is not an amount like '2Gi', '512M' or 1073741824")
        return int(float(match.group(1)) * _MEMORY_UNITS[(match.group(2) or "").lower()])
    memory = _number(value, "memory", where)
    return int(memory)
