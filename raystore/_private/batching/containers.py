"""Batch containers: concatenate per-request payloads along a batch dimension, split results back.

What can be batched (a *payload*):

- numpy arrays with at least one dimension, along any dimension (negative dims count from the end);
- torch tensors with at least one dimension, along any dimension;
- pandas DataFrames and Series, along dim 0 (their rows);
- Python lists, along dim 0: a list is a batch of rows, whatever its items are;
- tuples (named tuples included) and dicts of payloads: a *structure*, such as the several outputs of
  a model. Every member is batched along the same dim and all members must have the same row count.

The rule that settles the list/tuple ambiguity: **a list is always rows, a tuple is always a
structure.** A model with several outputs returns them as a tuple or dict, never as a list.

numpy, torch and pandas are never imported here: a value can only be an array, a tensor or a
DataFrame if its library is already loaded, so their types are looked up in `sys.modules` when a
value is inspected.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from raystore.exceptions import InvalidArgument

BATCHABLE = (
    "numpy arrays and torch tensors (any dim), lists and pandas DataFrames/Series (dim 0), and tuples or dicts of these"
)

Layout = Hashable  # what payloads must share to be concatenated: type, dtype, non-batch shape


class _Kind:
    """How one leaf type is measured, concatenated and cut. Subclasses are stateless singletons."""

    name: str

    def axis(self, value: Any, dim: int, where: str) -> int:
        """The non-negative axis that `dim` names for `value`; raises when there is none."""
        ndim = self.ndim(value)
        if ndim == 0:
            raise InvalidArgument(
                f"{where} is a 0-dimensional {self.name} (a scalar), which has no batch dimension; "
                f"give it at least one dimension, e.g. x[None]"
            )
        if not -ndim <= dim < ndim:
            raise InvalidArgument(
                f"{where} is a {self.name} with {ndim} dimension(s) (shape {self.shape(value)}), "
                f"so batch_dim={dim} is out of range; use a dim in [{-ndim}, {ndim - 1}]"
            )
        return dim % ndim

    def ndim(self, value: Any) -> int:
        raise NotImplementedError

    def shape(self, value: Any) -> tuple[int, ...]:
        raise NotImplementedError

    def rows(self, value: Any, axis: int) -> int:
        return self.shape(value)[axis]

    def layout(self, value: Any, axis: int) -> Layout:
        raise NotImplementedError

    def concat(self, values: Sequence[Any], axis: int) -> Any:
        raise NotImplementedError

    def slice(self, value: Any, axis: int, start: int, stop: int) -> Any:
        raise NotImplementedError

    def split(self, value: Any, axis: int, sizes: Sequence[int]) -> list[Any]:
        bounds = _bounds(sizes)
        return [self.slice(value, axis, start, stop) for start, stop in bounds]

    def measure(self, value: Any, dim: int) -> tuple[int, Layout]:
        """`(rows, layout)` of a well-formed value; raises (anything) otherwise. Every request
        takes this path, so kinds may answer it in one step."""
        axis = self.axis(value, dim, "")
        return self.rows(value, axis), self.layout(value, axis)


class _RowsOnly(_Kind):
    """Kinds that have rows but no other batchable dimension (lists, pandas objects)."""

    def axis(self, value: Any, dim: int, where: str) -> int:
        if dim not in (0, -self.ndim(value)):
            raise InvalidArgument(
                f"{where} is a {self.name}, which is batched along dim 0 only (got batch_dim={dim}); "
                f"pass a numpy array or torch tensor to batch along another dimension"
            )
        return 0


class _NumpyArray(_Kind):
    name = "numpy array"

    def ndim(self, value: Any) -> int:
        return value.ndim

    def shape(self, value: Any) -> tuple[int, ...]:
        return tuple(value.shape)

    def layout(self, value: Any, axis: int) -> Layout:
        shape = value.shape
        return ("ndarray", value.dtype.str, axis, shape[:axis] + shape[axis + 1 :])

    def measure(self, value: Any, dim: int) -> tuple[int, Layout]:
        shape = value.shape
        ndim = len(shape)
        if not -ndim <= dim < ndim:  # a scalar too: `describe` says what is wrong
            raise _Unusual
        axis = dim % ndim
        return shape[axis], self.layout(value, axis)

    def concat(self, values: Sequence[Any], axis: int) -> Any:
        return sys.modules["numpy"].concatenate(values, axis=axis)

    def slice(self, value: Any, axis: int, start: int, stop: int) -> Any:
        return value[(slice(None),) * axis + (slice(start, stop),)]


class _TorchTensor(_Kind):
    name = "torch tensor"

    def ndim(self, value: Any) -> int:
        return value.dim()

    def shape(self, value: Any) -> tuple[int, ...]:
        return tuple(value.shape)

    def layout(self, value: Any, axis: int) -> Layout:
        shape = tuple(value.shape)
        return ("tensor", str(value.dtype), str(value.device), axis, shape[:axis] + shape[axis + 1 :])

    def concat(self, values: Sequence[Any], axis: int) -> Any:
        return sys.modules["torch"].cat(list(values), dim=axis)

    def slice(self, value: Any, axis: int, start: int, stop: int) -> Any:
        return value.narrow(axis, start, stop - start)

    def split(self, value: Any, axis: int, sizes: Sequence[int]) -> list[Any]:
        return list(value.split(list(sizes), dim=axis))


class _List(_RowsOnly):
    name = "list"

    def ndim(self, value: Any) -> int:
        return 1  # as far as batching is concerned: items are opaque rows

    def shape(self, value: Any) -> tuple[int, ...]:
        return (len(value),)

    def layout(self, value: Any, axis: int) -> Layout:
        return ("list",)

    def concat(self, values: Sequence[Any], axis: int) -> Any:
        batch: list[Any] = []
        for value in values:
            batch.extend(value)
        return batch

    def slice(self, value: Any, axis: int, start: int, stop: int) -> Any:
        return value[start:stop]


class _PandasFrame(_RowsOnly):
    """DataFrames and Series. Rows keep their index labels through concat and split."""

    name = "pandas object"

    def ndim(self, value: Any) -> int:
        return value.ndim

    def shape(self, value: Any) -> tuple[int, ...]:
        return tuple(value.shape)

    def layout(self, value: Any, axis: int) -> Layout:
        if value.ndim == 1:
            return ("Series", str(value.dtype), value.name)
        return ("DataFrame", tuple(value.columns), tuple(str(dtype) for dtype in value.dtypes))

    def concat(self, values: Sequence[Any], axis: int) -> Any:
        return sys.modules["pandas"].concat(list(values), axis=0)

    def slice(self, value: Any, axis: int, start: int, stop: int) -> Any:
        return value.iloc[start:stop]


_NUMPY, _TORCH, _LIST, _PANDAS = _NumpyArray(), _TorchTensor(), _List(), _PandasFrame()


_KIND_BY_TYPE: dict[type, _Kind] = {}  # filled as types are met: one dict lookup per payload after that


def _kind_of(value: Any) -> _Kind | None:
    kind = _KIND_BY_TYPE.get(type(value))
    if kind is None:
        kind = _find_kind(value)
        if kind is not None:
            _KIND_BY_TYPE[type(value)] = kind
    return kind


def _find_kind(value: Any) -> _Kind | None:
    if isinstance(value, list):
        return _LIST
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        return _NUMPY
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return _TORCH
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(value, (pandas.DataFrame, pandas.Series)):
        return _PANDAS
    return None


def _not_batchable(value: Any, where: str) -> InvalidArgument:
    hint = ""
    scalar = isinstance(value, (int, float, complex, bool, str, bytes)) or value is None
    if scalar or type(value).__module__ == "numpy":  # numpy scalars such as np.float32(1.0)
        hint = " (a scalar); wrap single values in a list or array with one row"
    return InvalidArgument(
        f"{where} is a {type(value).__name__}{hint}, which cannot be batched; batchable values are {BATCHABLE}"
    )


# ---- structures ---------------------------------------------------------------------------------


def _members(value: tuple | dict) -> list[tuple[Any, Any]]:
    """(label, member) pairs of a structure, in order."""
    return list(value.items()) if isinstance(value, dict) else list(enumerate(value))


def _rebuild(template: tuple | dict, items: list[Any]) -> Any:
    """A structure of the same type as `template` holding `items` in its member order."""
    if isinstance(template, dict):
        pairs = zip(template.keys(), items)
        return dict(pairs) if type(template) is dict else type(template)(pairs)
    if type(template) is tuple:
        return tuple(items)
    if hasattr(template, "_fields"):  # a named tuple takes its members as arguments
        return type(template)(*items)
    return type(template)(items)


def _structure_key(value: tuple | dict) -> Hashable:
    return (type(value), tuple(value.keys()) if isinstance(value, dict) else len(value))


def _check_same_structure(values: Sequence[Any], where: str) -> None:
    first = values[0]
    for other in values[1:]:
        if not isinstance(other, (tuple, dict)) or _structure_key(other) != _structure_key(first):
            raise InvalidArgument(
                f"cannot concatenate {where}: payloads differ in structure "
                f"({_describe_structure(first)} vs {_describe_structure(other)}); "
                f"every request must send the same tuple length or dict keys"
            )


def _describe_structure(value: Any) -> str:
    if isinstance(value, dict):
        return f"dict with keys {list(value.keys())}"
    if isinstance(value, tuple):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


# ---- public functions ---------------------------------------------------------------------------


class _Unusual(Exception):
    """Raised by the fast path of `describe` for anything it does not settle by itself."""


def _describe_quickly(value: Any, dim: int) -> tuple[int, Layout]:
    """`describe` for well-formed payloads of known types, without building error labels: this runs
    on every request. Anything else raises, and `describe` looks again, slowly and with labels."""
    kind = _KIND_BY_TYPE.get(type(value))
    if kind is not None:
        return kind.measure(value, dim)
    if type(value) is tuple or type(value) is dict:
        rows, layouts = _describe_all_quickly(value.values() if type(value) is dict else value, dim)
        return rows, (_structure_key(value), layouts)
    raise _Unusual


def _describe_all_quickly(values: Iterable[Any], dim: int) -> tuple[int, tuple[Layout, ...]]:
    rows = -1
    layouts = []
    for value in values:
        value_rows, layout = _describe_quickly(value, dim)
        if rows == -1:
            rows = value_rows
        elif value_rows != rows:
            raise _Unusual
        layouts.append(layout)
    if rows == -1:
        raise _Unusual
    return rows, tuple(layouts)


def describe(value: Any, dim: int, where: str = "payload") -> tuple[int, Layout]:
    """Return `(rows, layout)` of a payload along `dim`.

    `rows` is the payload's size along the batch dimension; payloads with equal `layout` can be
    concatenated. Raises `InvalidArgument` when the payload cannot be batched along `dim`.
    """
    try:
        return _describe_quickly(value, dim)
    except Exception:
        return _describe_carefully(value, dim, where)  # a type met for the first time, or an error


def _describe_carefully(value: Any, dim: int, where: str) -> tuple[int, Layout]:
    if isinstance(value, (tuple, dict)):
        if not value:
            raise InvalidArgument(f"{where} is an empty {type(value).__name__}, which has no rows to batch")
        labelled = [(f"{where}[{label!r}]", member) for label, member in _members(value)]
        rows, layouts = _describe_labelled(labelled, dim)
        return rows, (_structure_key(value), layouts)
    kind = _kind_of(value)
    if kind is None:
        raise _not_batchable(value, where)
    axis = kind.axis(value, dim, where)
    return kind.rows(value, axis), kind.layout(value, axis)


def describe_members(
    values: Sequence[Any], dim: int, labels: Callable[[], Iterable[str]]
) -> tuple[int, tuple[Layout, ...]]:
    """Describe several payloads that form one request; they must agree on their row count.

    `labels()` gives each payload's name for error messages, e.g. "argument 'x'"; it is only
    called when something is wrong. Returns the common row count and the tuple of layouts.
    """
    try:
        return _describe_all_quickly(values, dim)
    except Exception:
        pass  # the careful path below says what is wrong
    return _describe_labelled(zip(labels(), values), dim)


def _describe_labelled(labelled: Iterable[tuple[str, Any]], dim: int) -> tuple[int, tuple[Layout, ...]]:
    rows: int | None = None
    first_label = ""
    layouts = []
    for label, member in labelled:
        member_rows, layout = describe(member, dim, label)
        if rows is None:
            rows, first_label = member_rows, label
        elif member_rows != rows:
            raise InvalidArgument(
                f"{first_label} has {rows} rows along batch dim {dim} but {label} has {member_rows}; "
                f"all values of one request must have the same number of rows"
            )
        layouts.append(layout)
    if rows is None:
        raise InvalidArgument("a request has no values to batch; pass at least one batchable argument")
    return rows, tuple(layouts)


def rows_of(value: Any, dim: int, where: str = "payload") -> int:
    """The number of rows of a payload along `dim`."""
    return describe(value, dim, where)[0]


def concat(values: Sequence[Any], dim: int, where: str = "payload") -> Any:
    """Concatenate payloads of the same structure along `dim` into one batch."""
    if not values:
        raise InvalidArgument(f"cannot concatenate {where}: no payloads given")
    first = values[0]
    if isinstance(first, (tuple, dict)):
        _check_same_structure(values, where)
        columns = zip(*(_members(value) for value in values))
        items = [concat([member for _, member in column], dim, f"{where}[{column[0][0]!r}]") for column in columns]
        return _rebuild(first, items)
    kind = _kind_of(first)
    if kind is None:
        raise _not_batchable(first, where)
    for other in values[1:]:
        if _kind_of(other) is not kind:
            raise InvalidArgument(
                f"cannot concatenate {where}: got both {type(first).__name__} and {type(other).__name__}; "
                f"every request must send the same type"
            )
    axis = kind.axis(first, dim, where)
    if len(values) == 1:
        return first
    try:
        return kind.concat(values, axis)
    except (ValueError, TypeError, RuntimeError) as exc:  # numpy/torch/pandas shape or dtype mismatch
        raise InvalidArgument(f"cannot concatenate {where} along dim {dim}: {exc}") from exc


def slice_rows(value: Any, dim: int, start: int, stop: int, where: str = "payload") -> Any:
    """Rows `[start, stop)` of a payload along `dim` (a view where the container allows)."""
    if isinstance(value, (tuple, dict)):
        items = [slice_rows(member, dim, start, stop, f"{where}[{label!r}]") for label, member in _members(value)]
        return _rebuild(value, items)
    kind = _kind_of(value)
    if kind is None:
        raise _not_batchable(value, where)
    return kind.slice(value, kind.axis(value, dim, where), start, stop)


def split(value: Any, dim: int, sizes: Sequence[int], where: str = "payload") -> list[Any]:
    """Cut a batch along `dim` into consecutive pieces of `sizes` rows.

    The batch must have exactly `sum(sizes)` rows; a structure is cut member by member and each
    piece keeps the structure's type.
    """
    total = sum(sizes)
    rows, _ = describe(value, dim, where)
    if rows != total:
        hint = ""
        if isinstance(value, list):
            hint = " (a list is read as rows: return several outputs as a tuple, not a list)"
        raise InvalidArgument(f"{where} has {rows} rows along batch dim {dim} but {total} were expected{hint}")
    return _split_checked(value, dim, sizes, where)


def _split_checked(value: Any, dim: int, sizes: Sequence[int], where: str) -> list[Any]:
    if len(sizes) == 1:
        return [value]
    if isinstance(value, (tuple, dict)):
        per_member = [_split_checked(member, dim, sizes, where) for _, member in _members(value)]
        return [_rebuild(value, list(pieces)) for pieces in zip(*per_member)]
    kind: _Kind = _kind_of(value)  # type: ignore[assignment]  # describe() already checked
    return kind.split(value, kind.axis(value, dim, where), sizes)


def _bounds(sizes: Sequence[int]) -> list[tuple[int, int]]:
    bounds = []
    start = 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return bounds
