"""Torch tensors cross between replicas as numpy arrays and arrive as torch tensors again."""

import pickle
import warnings

import numpy as np
import pytest

from raystore._private.runner.transport import for_the_wire

torch = pytest.importorskip("torch")


def round_trip(value):
    return pickle.loads(pickle.dumps(for_the_wire(value)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool])
def test_tensors_arrive_as_equal_tensors(dtype):
    tensor = (torch.rand(3, 4) * 10).to(dtype)
    out = round_trip(tensor)
    assert type(out) is torch.Tensor and out.dtype == dtype and torch.equal(out, tensor)
    assert out.data_ptr() != tensor.data_ptr()  # memory of its own, not the sender's


def test_structures_keep_their_shape_and_other_values_pass_through():
    tensor = torch.arange(4.0)
    out = round_trip((tensor, {"logits": tensor, "label": "cat"}, 3, [tensor], np.ones(2)))
    assert type(out[0]) is torch.Tensor and type(out[1]["logits"]) is torch.Tensor
    assert out[1]["label"] == "cat" and out[2] == 3
    assert type(out[3][0]) is torch.Tensor and isinstance(out[4], np.ndarray)


def test_tensors_numpy_cannot_carry_travel_as_they_are():
    for tensor in (torch.rand(2).to(torch.bfloat16), torch.rand(2, requires_grad=True)):
        assert for_the_wire(tensor) is tensor
        assert torch.equal(round_trip(tensor).detach(), tensor.detach())


def test_read_only_arrays_arrive_without_a_warning():
    tensor = torch.arange(3.0)
    wire = for_the_wire(tensor)
    wire.array = wire.array.copy()
    wire.array.flags.writeable = False  # as arrays unpickled from Ray's buffers can be
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = pickle.loads(pickle.dumps(wire))
    assert torch.equal(out, tensor)
