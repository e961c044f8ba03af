"""ONNX graphs: an `onnx.ModelProto` or a `.onnx` file (its external data files kept beside it),
saved as the `.onnx` file itself (no pickle) and run with onnxruntime. One signature, `run`: an
array for a single-input graph or a dict `{input name: array}`; back comes the array of a
single-output graph, else a dict `{output name: array}`. It is batchable when every input and
output has a dynamic first axis."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from raystore._private.frameworks.base import Framework
from raystore._private.replica import assigned_gpu_ids
from raystore._private.store import StoredModel
from raystore.exceptions import BadInput, InvalidArgument, StoreError

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"  # where a large ModelProto's weights go
_EXTERNAL_ABOVE = 1 << 30  # protobuf cannot write one message over 2 GiB: big weights go beside it
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
logger = logging.getLogger("raystore.onnx")

# onnxruntime's type names, as `InferenceSession.get_inputs()` gives them, to numpy's
_NUMPY_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


class Onnx(Framework):
    name = "onnx"
    module = "raystore.onnx"
    packages = ("onnx", "onnxruntime")
    default_signatures = {"run": {}}
    gpu_capable = True

    def _onnx(self) -> Any:
        return self.import_or_explain("onnx", "onnx")

    def _ort(self) -> Any:
        return self.import_or_explain("onnxruntime", "onnx")

    def uses_gpu(self) -> bool:
        """Only with an onnxruntime that has the CUDA provider (onnxruntime-gpu)."""
        try:
            return CUDA in self._ort().get_available_providers()
        except ImportError:
            return False

    # ---- saving -------------------------------------------------------------------------------

    def check_model(self, model: object) -> None:
        self._graph(model)

    def _graph(self, model: object) -> Any:
        """The ModelProto (for a file: without its external data, which is only copied)."""
        onnx = self._onnx()
        if isinstance(model, onnx.ModelProto):
            return model
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if not path.is_file():
                raise InvalidArgument(f"{path} is not an ONNX file")
            try:
                return onnx.load(str(path), load_external_data=False)
            except Exception as exc:
                raise InvalidArgument(f"{path} is not a valid ONNX file: {exc}") from None
        raise InvalidArgument(
            f"{self.module}.save_model expects an onnx.ModelProto or the path of a .onnx file, got {type(model).__name__}"
        )

    def has_method(self, model: object, method: str) -> bool:
        return method == "run"

    def signatures_for(self, model: object) -> Mapping[str, Mapping[str, Any]]:
        graph = self._graph(model).graph
        initializers = {t.name for t in graph.initializer}
        tensors = [v for v in graph.input if v.name not in initializers] + list(graph.output)
        return {"run": {"batchable": bool(tensors) and all(_dynamic_first_axis(v) for v in tensors)}}

    def save_files(self, model: object, path: Path) -> dict[str, Any]:
        onnx = self._onnx()
        graph = self._graph(model)
        if isinstance(model, onnx.ModelProto):
            if _external_files(model):
                raise InvalidArgument(
                    "this ModelProto keeps weights in files of its own, which raystore cannot find from the proto: "
                    "save the .onnx file's path instead, or load it with onnx.load(path) (external data included)"
                )
            large = sum(len(t.raw_data) for t in model.graph.initializer) > _EXTERNAL_ABOVE
            if large:  # writing external data rewrites the proto: leave the caller's as it was
                copy = onnx.ModelProto()
                copy.CopyFrom(model)
                model = copy
            onnx.save_model(
                model,
                str(path / MODEL_FILE),
                save_as_external_data=large,
                all_tensors_to_one_file=True,
                location=DATA_FILE,
            )
        else:
            source = Path(model)  # type: ignore[arg-type]
            shutil.copyfile(source, path / MODEL_FILE)
            for location in _external_files(graph):
                target = path / location
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copyfile(source.parent / location, target)
                except FileNotFoundError:
                    raise InvalidArgument(
                        f"{source} keeps weights in {location}, which is not beside it in {source.parent}"
                    ) from None
        return {
            "opset": {entry.domain or "ai.onnx": entry.version for entry in graph.opset_import},
            "inputs": [
                _describe(v) for v in graph.graph.input if v.name not in {t.name for t in graph.graph.initializer}
            ],
            "outputs": [_describe(v) for v in graph.graph.output],
        }

    # ---- loading ------------------------------------------------------------------------------

    def load(self, model: StoredModel, providers: list[Any] | None = None) -> Any:
        """An `onnxruntime.InferenceSession`; `providers` as onnxruntime takes them, by default the
        CUDA provider where onnxruntime has it and a GPU is visible, then the CPU."""
        ort = self._ort()
        if providers is None:
            providers = self._default_providers(ort, gpu=bool(assigned_gpu_ids()) or _visible_gpus_unset())
        path = model.path_of(MODEL_FILE)
        try:  # an imported archive never went through save_model's checks
            _external_files(self._onnx().load(str(path), load_external_data=False))
        except InvalidArgument as exc:
            raise StoreError(f"model {model.tag}: {exc}") from None
        return ort.InferenceSession(str(path), providers=providers)

    def _default_providers(self, ort: Any, gpu: bool) -> list[Any]:
        if gpu and CUDA in ort.get_available_providers():
            return [(CUDA, {"device_id": 0}), CPU]  # Ray narrows CUDA_VISIBLE_DEVICES to the assigned GPU
        return [CPU]

    def load_for_runner(self, model: StoredModel) -> Any:
        ort = self._ort()
        gpu = bool(assigned_gpu_ids())
        providers = self._default_providers(ort, gpu)
        if gpu and providers == [CPU]:
            logger.warning(
                "a GPU is assigned (CUDA_VISIBLE_DEVICES=%s) but onnxruntime has no CUDA provider "
                "(install onnxruntime-gpu); running on CPU",
                os.environ.get("CUDA_VISIBLE_DEVICES"),
            )
        return _Session(self.load(model, providers=providers))

    def run_method(self, loaded: Any, method: str, args: tuple, kwargs: dict) -> Any:
        if method != "run":
            return getattr(loaded.session, method)(*args, **kwargs)
        return loaded.run(*args, **kwargs)


class _Session:
    """An InferenceSession with its inputs and outputs looked up once, and `run` as the signature
    promises: inputs checked and cast where no value changes kind, outputs unwrapped."""

    def __init__(self, session: Any):
        import numpy as np

        self.session = session
        self.inputs = {
            i.name: (np.dtype(_NUMPY_TYPES.get(i.type, "object")), i.shape, i.type) for i in session.get_inputs()
        }
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, *args: Any, **kwargs: Any) -> Any:
        feeds = self._feeds(args, kwargs)
        outputs = self.session.run(None, feeds)
        return outputs[0] if len(outputs) == 1 else dict(zip(self.output_names, outputs, strict=True))

    def _feeds(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        import numpy as np

        names = list(self.inputs)
        if len(args) == 1 and not kwargs and isinstance(args[0], Mapping):
            given = dict(args[0])
        elif len(args) == 1 and not kwargs and len(names) == 1:
            given = {names[0]: args[0]}
        elif not args and kwargs:
            given = kwargs
        else:
            raise BadInput(f"run() takes one array for a single-input graph, or a dict of {names}")
        unknown, missing = sorted(set(given) - set(names)), [n for n in names if n not in given]
        if unknown or missing:
            raise BadInput(f"the graph's inputs are {names}; got unknown {unknown} and missing {missing}")
        feeds = {}
        for name, value in given.items():
            dtype, shape, type_name = self.inputs[name]
            array = np.asarray(value)
            if array.dtype != dtype:
                array = _cast(np, array, dtype, f"input {name!r} takes {type_name} ({dtype})")
            if len(array.shape) != len(shape) or any(
                isinstance(want, int) and want != got for want, got in zip(shape, array.shape, strict=True)
            ):
                want = [d if isinstance(d, int) else -1 for d in shape]
                raise BadInput(f"input {name!r} takes shape {want} (-1: any), got {list(array.shape)}")
            feeds[name] = array
        return feeds


def _cast(np: Any, array: Any, dtype: Any, what: str) -> Any:
    """`array` as `dtype` when no value changes kind or range: any safe cast, integers to floats, and
    narrower floats or integers whose values still fit (JSON numbers arrive as float64 and int64)."""
    if np.can_cast(array.dtype, dtype, casting="safe") or (array.dtype.kind in "iub" and dtype.kind == "f"):
        return array.astype(dtype)
    if array.dtype.kind == dtype.kind == "f":
        with np.errstate(over="ignore"):  # an overflow is reported below, as the caller's mistake
            cast = array.astype(dtype)
        if np.array_equal(np.isfinite(cast), np.isfinite(array)):
            return cast
        raise BadInput(f"{what}: some values are out of its range")
    if array.dtype.kind in "iu" and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if array.size == 0 or (array.min() >= info.min and array.max() <= info.max):
            return array.astype(dtype)
        raise BadInput(f"{what}: some values are out of its range [{info.min}, {info.max}]")
    raise BadInput(f"{what}, got {array.dtype}")


def _dynamic_first_axis(value_info: Any) -> bool:
    dims = value_info.type.tensor_type.shape.dim
    return len(dims) > 0 and not dims[0].HasField("dim_value")


def _describe(value_info: Any) -> dict[str, Any]:
    tensor = value_info.type.tensor_type
    import onnx

    return {
        "name": value_info.name,
        "datatype": onnx.TensorProto.DataType.Name(tensor.elem_type) if tensor.elem_type else "UNDEFINED",
        "shape": [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim],
    }


def _external_files(model: Any) -> list[str]:
    """The files a graph's tensors keep their data in, each checked to be a plain relative path
    inside the graph's folder (a hostile graph could name /etc/passwd or ../../secret)."""
    import onnx

    found = []
    tensors = itertools.chain(_all_tensors(model.graph), *(_node_tensors(f.node) for f in model.functions))
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        pure = PurePosixPath(location)
        if not location or pure.is_absolute() or ".." in pure.parts or "\\" in location:
            raise InvalidArgument(f"tensor {tensor.name!r} keeps its data at {location!r}, outside the graph's folder")
        if location not in found and str(pure) not in (MODEL_FILE,):
            found.append(str(pure))
    return found


def _all_tensors(graph: Any) -> Any:
    """Every tensor of a graph that may hold weights: initializers (sparse ones too) and node
    attributes, in subgraphs as well."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Any) -> Any:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield from (attribute.sparse_tensor.values, attribute.sparse_tensor.indices)
            for sparse in attribute.sparse_tensors:
                yield from (sparse.values, sparse.indices)
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_tensors(subgraph)


def _visible_gpus_unset() -> bool:
    """Outside Ray, with CUDA_VISIBLE_DEVICES unset, every GPU of the machine is visible."""
    return os.environ.get("CUDA_VISIBLE_DEVICES") is None


FRAMEWORK = Onnx()
