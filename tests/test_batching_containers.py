"""Batch containers: concat along a batch dim and split back, for every supported payload type."""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict, namedtuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from raystore._private.batching import containers
from raystore._private.batching.containers import concat, describe, describe_members, rows_of, slice_rows, split
from raystore.exceptions import InvalidArgument

pd = pytest.importorskip("pandas")
torch = pytest.importorskip("torch")

Pair = namedtuple("Pair", "logits embedding")


def assert_same(actual, expected):
    """Equal values and types, recursively through tuples and dicts."""
    assert type(actual) is type(expected)
    if isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_same(actual[key], expected[key])
    elif isinstance(expected, tuple):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_same(a, e)
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        assert torch.equal(actual, expected)
    elif isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(actual, expected)
    elif isinstance(expected, pd.Series):
        pd.testing.assert_series_equal(actual, expected)
    else:
        assert actual == expected


def round_trip(payloads, dim):
    sizes = [rows_of(p, dim) for p in payloads]
    batch = concat(payloads, dim)
    assert rows_of(batch, dim) == sum(sizes)
    pieces = split(batch, dim, sizes)
    assert len(pieces) == len(payloads)
    for piece, payload in zip(pieces, payloads):
        assert_same(piece, payload)
    return batch


# ---- examples, one per container ----------------------------------------------------------------


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
def test_numpy_any_dim(dim):
    shapes = [(2, 3, 4), (2, 3, 4), (2, 3, 4)]
    axis = dim % 3
    payloads = []
    for k, shape in enumerate(shapes):
        shape = list(shape)
        shape[axis] = k + 1
        payloads.append(np.random.default_rng(k).normal(size=shape))
    batch = round_trip(payloads, dim)
    assert batch.shape[axis] == 6


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_torch_any_dim(dim):
    payloads = [torch.arange(6 * k, dtype=torch.float32).reshape(6, k) if dim else torch.ones(k, 6) for k in (1, 2, 5)]
    round_trip(payloads, dim)


def test_lists_are_rows_along_dim_0():
    payloads = [[1, 2], [{"text": "a"}], [[3, 4], [5, 6], "x"]]
    assert concat(payloads, 0) == [1, 2, {"text": "a"}, [3, 4], [5, 6], "x"]
    round_trip(payloads, 0)


def test_lists_refuse_other_dims():
    with pytest.raises(InvalidArgument, match=r"list, which is batched along dim 0 only \(got batch_dim=1\)"):
        describe([[1, 2]], 1)


def test_pandas_frames_and_series_keep_their_index():
    frames = [pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), pd.DataFrame({"a": [3], "b": ["z"]}, index=[7])]
    batch = round_trip(frames, 0)
    assert list(batch.index) == [0, 1, 7]
    round_trip([pd.Series([1.0, 2.0], name="s"), pd.Series([3.0], name="s")], 0)


def test_pandas_refuse_dim_1():
    with pytest.raises(InvalidArgument, match="batched along dim 0 only"):
        describe(pd.DataFrame({"a": [1]}), 1)


def test_structures_tuple_namedtuple_dict():
    payloads = [
        (np.zeros((k, 2)), {"ids": [f"r{k}"] * k, "scores": torch.full((k,), float(k))}, Pair(np.ones(k), [k] * k))
        for k in (1, 3, 2)
    ]
    batch = round_trip(payloads, 0)
    assert isinstance(batch[2], Pair) and batch[2].embedding == [1, 3, 3, 3, 2, 2]
    ordered = [OrderedDict(a=np.ones((k, 1))) for k in (1, 2)]
    assert isinstance(concat(ordered, 0), OrderedDict)
    round_trip(ordered, 0)


def test_structure_members_must_agree_on_rows():
    with pytest.raises(InvalidArgument, match=r"payload\[0\] has 2 rows along batch dim 0 but payload\[1\] has 3"):
        describe((np.zeros((2, 1)), [1, 2, 3]), 0)


def test_structures_must_match_to_concat():
    with pytest.raises(InvalidArgument, match="differ in structure"):
        concat([(np.zeros(1), np.zeros(1)), (np.zeros(1),)], 0)
    with pytest.raises(InvalidArgument, match="differ in structure"):
        concat([{"a": [1]}, {"b": [1]}], 0)


def test_arguments_must_agree_on_rows():
    with pytest.raises(InvalidArgument, match="argument 'x' has 3 rows along batch dim 1 but argument 'y' has 4"):
        describe_members([np.zeros((2, 3)), np.zeros((2, 4))], 1, lambda: ["argument 'x'", "argument 'y'"])


@pytest.mark.parametrize("value", [3, 2.5, "text", b"raw", None, np.float32(1.0), object()])
def test_scalars_and_other_values_are_not_batchable(value):
    with pytest.raises(InvalidArgument, match="cannot be batched; batchable values are numpy arrays"):
        describe(value, 0)


@pytest.mark.parametrize("value", [np.array(1.0), torch.tensor(1.0)])
def test_zero_dimensional_arrays_are_not_batchable(value):
    with pytest.raises(InvalidArgument, match="0-dimensional .* has no batch dimension"):
        describe(value, 0)


def test_dim_out_of_range():
    message = r"with 2 dimension\(s\) \(shape \(2, 3\)\), so batch_dim=2 is out of range"
    with pytest.raises(InvalidArgument, match=message):
        describe(np.zeros((2, 3)), 2)


def test_empty_structures_are_not_batchable():
    with pytest.raises(InvalidArgument, match="empty tuple"):
        describe((), 0)


def test_concat_mismatched_shapes_is_a_clear_error():
    with pytest.raises(InvalidArgument, match="cannot concatenate payload along dim 0"):
        concat([np.zeros((1, 2)), np.zeros((1, 3))], 0)
    with pytest.raises(InvalidArgument, match="got both ndarray and list"):
        concat([np.zeros((1, 2)), [1]], 0)


def test_split_checks_the_row_count_and_hints_at_tuples():
    with pytest.raises(InvalidArgument, match="has 2 rows along batch dim 0 but 5 were expected"):
        split(np.zeros((2, 1)), 0, [2, 3])
    with pytest.raises(InvalidArgument, match="return several outputs as a tuple"):
        split([np.zeros(5), np.zeros(5)], 0, [2, 3])


def test_slice_rows_through_structures():
    value = {"x": np.arange(10).reshape(2, 5), "y": (torch.arange(5),)}
    piece = slice_rows(value, -1, 1, 3)
    np.testing.assert_array_equal(piece["x"], [[1, 2], [6, 7]])
    assert piece["y"][0].tolist() == [1, 2]


def test_layout_tells_compatible_payloads_apart():
    assert describe(np.zeros((2, 3)), 0)[1] == describe(np.ones((5, 3)), 0)[1]
    assert describe(np.zeros((2, 3)), 0)[1] != describe(np.zeros((2, 4)), 0)[1]
    assert describe(np.zeros((2, 3), np.float32), 0)[1] != describe(np.zeros((2, 3)), 0)[1]


def test_importing_batching_loads_no_framework():
    code = (
        "import sys, raystore._private.batching; "
        "print(sorted(m for m in ('ray', 'torch', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- properties: split(concat(xs)) == xs -------------------------------------------------------

NUMPY_DTYPES = st.sampled_from([np.float32, np.float64, np.int8, np.int64, np.bool_, np.complex64])
TORCH_DTYPES = st.sampled_from([torch.float32, torch.float64, torch.int32, torch.int64, torch.bool, torch.bfloat16])


@st.composite
def numpy_batches(draw):
    ndim = draw(st.integers(1, 4))
    dim = draw(st.integers(-ndim, ndim - 1))
    axis = dim % ndim
    base = draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=4))
    dtype = draw(NUMPY_DTYPES)
    payloads = []
    for rows in draw(st.lists(st.integers(0, 5), min_size=1, max_size=6)):
        shape = list(base)
        shape[axis] = rows
        payloads.append(draw(hnp.arrays(dtype, tuple(shape))))
    return payloads, dim


@st.composite
def torch_batches(draw):
    ndim = draw(st.integers(1, 4))
    dim = draw(st.integers(-ndim, ndim - 1))
    axis = dim % ndim
    base = draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim))
    dtype = draw(TORCH_DTYPES)
    payloads = []
    for index, rows in enumerate(draw(st.lists(st.integers(0, 5), min_size=1, max_size=6))):
        shape = list(base)
        shape[axis] = rows
        generator = torch.Generator().manual_seed(index)
        payloads.append((torch.rand(shape, generator=generator) * 100).to(dtype))
    return payloads, dim


@settings(max_examples=150, deadline=None)
@given(numpy_batches())
def test_property_numpy_round_trip(case):
    payloads, dim = case
    round_trip(payloads, dim)


@settings(max_examples=100, deadline=None)
@given(torch_batches())
def test_property_torch_round_trip(case):
    payloads, dim = case
    round_trip(payloads, dim)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.one_of(st.integers(), st.text(max_size=3), st.none()), max_size=4), min_size=1, max_size=6))
def test_property_list_round_trip(payloads):
    round_trip(payloads, 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=5), st.integers(1, 3), st.integers(0, 9))
def test_property_structure_round_trip(row_counts, width, seed):
    rng = np.random.default_rng(seed)
    payloads = [
        (
            rng.normal(size=(width, rows)).astype(np.float32),
            {"ids": list(range(rows)), "t": torch.from_numpy(rng.integers(0, 9, size=(width, rows)))},
        )
        for rows in row_counts
    ]
    # Lists batch along dim 0 only, so the structure is batched along 1 without them.
    arrays_only = [(a, {"t": b["t"]}) for a, b in payloads]
    round_trip(arrays_only, 1)
    round_trip([(a.T.copy(), {"ids": b["ids"]}) for a, b in payloads], 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=5), st.integers(0, 9))
def test_property_pandas_round_trip(row_counts, seed):
    rng = np.random.default_rng(seed)
    frames = [pd.DataFrame({"a": rng.normal(size=rows), "b": rng.integers(0, 5, size=rows)}) for rows in row_counts]
    round_trip(frames, 0)


@settings(max_examples=100, deadline=None)
@given(numpy_batches(), st.integers(0, 2))
def test_property_quick_describe_agrees_with_the_careful_one(case, nesting):
    """`describe` answers well-formed payloads on a fast path without error labels; it must give
    exactly what the careful path gives, structures included."""
    payloads, dim = case
    value = payloads[0]
    for level in range(nesting):
        value = (value, {"x": value}) if level % 2 == 0 else {"a": value, "b": (value,)}
    describe(value, dim)  # first sight of each type goes the careful way and teaches the fast path
    assert containers._describe_quickly(value, dim) == containers._describe_carefully(value, dim, "payload")
