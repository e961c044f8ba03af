"""NVIDIA GPUs on this machine, read with NVML (pynvml); an empty list without a driver."""

from __future__ import annotations

from dataclasses import dataclass

from raystore.exceptions import NoNvidiaGpu


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total: int  # bytes
    memory_free: int  # bytes
    utilization: int  # percent


def list_gpus() -> list[GpuInfo]:
    """The GPUs NVML sees; raises `NoNvidiaGpu` with the reason when there are none."""
    try:
        import pynvml
    except ImportError:
        raise NoNvidiaGpu("the nvidia-ml-py package is not installed") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise NoNvidiaGpu(f"no NVIDIA driver ({exc})") from None
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            except pynvml.NVMLError:
                utilization = -1  # not supported on some devices (e.g. MIG slices)
            gpus.append(
                GpuInfo(
                    index,
                    name.decode() if isinstance(name, bytes) else name,
                    int(memory.total),
                    int(memory.free),
                    int(utilization),
                )
            )
    finally:
        pynvml.nvmlShutdown()
    if not gpus:
        raise NoNvidiaGpu("the NVIDIA driver reports no devices")
    return gpus
