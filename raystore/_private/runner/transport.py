"""Values crossing between replicas (a runner call's arguments and result): torch tensors travel as
the numpy arrays that share their memory, and are torch tensors again on arrival.

Pickling a small torch tensor goes through torch's storage machinery: about 70 us for a 1x8
float tensor, against 7 us for the numpy array holding the same memory. A served PyTorch runner
pays that for every result it sends. Tensors numpy cannot hold (bfloat16, on a GPU, tracking
gradients, sparse) travel as they are. torch is never imported here: a tensor exists only if
torch is loaded already.
"""

from __future__ import annotations

import sys
from typing import Any


def for_the_wire(value: Any) -> Any:
    """`value` with its torch tensors (alone, or in tuples and dicts) ready to travel as arrays."""
    torch = sys.modules.get("torch")
    if torch is None:
        return value
    return _swap(value, torch.Tensor)


def _swap(value: Any, tensor_type: type) -> Any:
    if isinstance(value, tensor_type):
        if value.device.type != "cpu" or value.requires_grad or value.layout is not sys.modules["torch"].strided:
            return value
        try:
            return _TensorAsArray(value.numpy())
        except (TypeError, RuntimeError):  # a dtype numpy lacks, such as bfloat16
            return value
    if type(value) is tuple:
        return tuple(_swap(item, tensor_type) for item in value)
    if type(value) is dict:
        return {key: _swap(item, tensor_type) for key, item in value.items()}
    return value


class _TensorAsArray:
    """Pickles as its numpy array, and unpickles as a torch tensor over it."""

    __slots__ = ("array",)

    def __init__(self, array: Any):
        self.array = array

    def __reduce__(self) -> tuple:
        return (_tensor_from_array, (self.array,))


def _tensor_from_array(array: Any) -> Any:
    import torch

    # Arrays unpickled from Ray's buffers can be read-only; torch wants memory it may write.
    return torch.from_numpy(array if array.flags.writeable else array.copy())
