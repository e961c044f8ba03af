"""A service's models over the Open Inference Protocol (KServe V2 REST): which models and versions
it serves (those of its runners), their metadata, and the handlers of the protocol's routes.

Naming: each model is served under its store name, each version under its store version (a
unique prefix or `latest` also finds it). A model's default signature answers under the model's
name; every signature also answers under `NAME.SIGNATURE` (`iris_clf.predict_proba`), or with the
request parameter `"signature"`. The default is `__call__`, `predict` or `run` when the model has
one of them, else its first signature.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from raystore._private.runner.served import remote_cause
from raystore._private.runner.versions import VersionedRunner
from raystore._private.service.v2.codec import HEADER_LENGTH, Tensor, decode_request, encode_response
from raystore._private.version import __version__
from raystore.exceptions import BadInput, NotFound, RaystoreError

if TYPE_CHECKING:
    from raystore._private.runner.runner import Runner
    from raystore._private.service.service import Service

DEFAULT_SIGNATURES = ("__call__", "predict", "run")
EXTENSIONS = ["binary_tensor_data"]
# ONNX's element type names (as raystore.onnx records them) -> the protocol's datatypes
_ONNX_DATATYPES = {
    "BOOL": "BOOL",
    "UINT8": "UINT8",
    "UINT16": "UINT16",
    "UINT32": "UINT32",
    "UINT64": "UINT64",
    "INT8": "INT8",
    "INT16": "INT16",
    "INT32": "INT32",
    "INT64": "INT64",
    "FLOAT16": "FP16",
    "FLOAT": "FP32",
    "DOUBLE": "FP64",
    "STRING": "BYTES",
}


@dataclass
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


@dataclass
class ServedVersion:
    """One model version as the V2 routes serve it: its runner and what it says of its tensors."""

    name: str
    version: str
    platform: str
    runner: Runner
    signatures: list[str]
    default_signature: str
    created: float  # the version's creation time (seconds since the epoch): the newest is `latest`
    # A runner of every version of the model (`runner_for`): a request's version is resolved per
    # request, `version` and `created` being those of the version it was made from.
    every_version: bool = False
    inputs: dict[str, list[TensorSpec]] = field(default_factory=dict)  # by signature
    outputs: dict[str, list[TensorSpec]] = field(default_factory=dict)

    def metadata(self, signature: str) -> dict[str, Any]:
        return {
            "name": self.name if signature == self.default_signature else f"{self.name}.{signature}",
            "versions": [self.version],
            "platform": self.platform,
            "inputs": [t.to_dict() for t in self.inputs[signature]],
            "outputs": [t.to_dict() for t in self.outputs[signature]],
        }


def served_version(runner: Runner) -> ServedVersion | None:
    """What the V2 routes serve of a runner: its one model's version and signatures (None for a
    runner of several models, or of none: it has no one model to speak for)."""
    if len(runner.models) != 1:
        return None
    model = runner.models[0]
    signatures = list(runner.methods)
    served = ServedVersion(
        name=model.tag.name,
        version=model.tag.version,
        platform=f"raystore_{(model.info.context or {}).get('framework_name', 'model')}",
        runner=runner,
        signatures=signatures,
        default_signature=next((s for s in DEFAULT_SIGNATURES if s in signatures), signatures[0]),
        created=model.info.creation_time.timestamp(),
        every_version=isinstance(runner, VersionedRunner),
    )
    for signature in signatures:
        served.inputs[signature], served.outputs[signature] = _tensor_specs(model, signature)
    return served


def by_name(versions: Iterable[ServedVersion]) -> dict[str, list[ServedVersion]]:
    """Served versions by model name, newest first, as the store's `latest` orders them."""
    found: dict[str, list[ServedVersion]] = {}
    for served in versions:
        found.setdefault(served.name, []).append(served)
    for listed in found.values():
        listed.sort(key=lambda v: (v.created, v.version), reverse=True)
    return found


def _tensor_specs(model: Any, signature: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """What a signature takes and gives: its saved `input_spec`/`output_spec` (a list of
    {name, datatype, shape}), else what the framework recorded (an ONNX graph's tensors, a
    scikit-learn model's feature count), else one FP32 tensor of any shape each way."""
    info = model.info
    saved = info.signatures.get(signature)
    options = info.options or {}
    inputs = _specs(getattr(saved, "input_spec", None))
    outputs = _specs(getattr(saved, "output_spec", None))
    if inputs is None and "inputs" in options:  # ONNX
        inputs = [
            TensorSpec(t["name"], _ONNX_DATATYPES.get(t["datatype"], "BYTES"), list(t["shape"]))
            for t in options["inputs"]
        ]
    if outputs is None and "outputs" in options:
        outputs = [
            TensorSpec(t["name"], _ONNX_DATATYPES.get(t["datatype"], "BYTES"), list(t["shape"]))
            for t in options["outputs"]
        ]
    if inputs is None and isinstance(options.get("n_features_in"), int):  # scikit-learn
        inputs = [TensorSpec("input__0", "FP64", [-1, options["n_features_in"]])]
    return inputs or [TensorSpec("input__0", "FP32", [-1])], outputs or [TensorSpec("output__0", "FP32", [-1])]


def _specs(value: Any) -> list[TensorSpec] | None:
    if not isinstance(value, list) or not value:
        return None
    specs = []
    for item in value:
        if not isinstance(item, dict) or not {"name", "datatype", "shape"} <= set(item):
            return None
        specs.append(TensorSpec(str(item["name"]), str(item["datatype"]), [int(d) for d in item["shape"]]))
    return specs


class ModelRepository(Protocol):
    """The protocol's model repository extension, where a server offers it (`raystore serve
    --model`): the models of the store, and those loaded and unloaded while it runs."""

    async def loaded(self) -> list[Runner]:
        """Runners of the models loaded now (beside those the service was built with)."""
        ...

    async def index(self, served: Collection[str]) -> list[dict[str, str]]:
        """Every model version of the store and, for those not in `served` (NAME:VERSION of the
        service's own), its state: {name, version, state, reason}."""
        ...

    async def load(self, tag: str, own: Collection[str]) -> str:
        """Load the model `tag` names (NAME is its latest version) unless it is one of `own`;
        answers NAME:VERSION."""
        ...

    async def unload(self, tag: str, own: Collection[str]) -> list[str]:
        """Unload the loaded versions `tag` names (NAME: all of them; naming one of `own` is a
        `BadInput`); answers those unloaded."""
        ...


class V2Routes:
    """The handlers of the protocol's routes for one service: its runners' models, and with a
    `repository` the models loaded through it."""

    # Loaded models are looked up again when a request names one not known here, at most this often:
    # another ingress replica may have loaded (or unloaded) it.
    REFRESH_INTERVAL_S = 1.0
    STALE_AFTER_S = 5.0

    def __init__(self, service: Service, is_ready: Callable[[], Awaitable[bool]]):
        self.service = service
        self.is_ready = is_ready
        self.repository: ModelRepository | None = service.v2_repository
        self.own = [v for v in map(served_version, service.runners) if v is not None]
        self.models = by_name(self.own)
        self._loaded: dict[str, ServedVersion] = {}  # by NAME:VERSION
        self._refreshed = -math.inf
        self._refreshing: asyncio.Lock | None = None
        self._background: asyncio.Future | None = None

    # The infer route's paths: `ServiceApp` serves them with the body admitted as an API's is,
    # through `infer`. They come first in its router: inference is the traffic.
    INFER_PATHS = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")

    def routes(self) -> list[tuple[str, str, Callable[[Request], Awaitable[Response]]]]:
        """(method, path, handler) of the protocol's other routes: health, metadata, repository."""
        routes = [
            ("GET", "/v2", self.server_metadata),
            ("GET", "/v2/health/live", self.live),
            ("GET", "/v2/health/ready", self.ready),
            ("GET", "/v2/models/{name}", self.model_metadata),
            ("GET", "/v2/models/{name}/versions/{version}", self.model_metadata),
            ("GET", "/v2/models/{name}/ready", self.model_ready),
            ("GET", "/v2/models/{name}/versions/{version}/ready", self.model_ready),
        ]
        if self.repository is not None:
            routes += [
                ("POST", "/v2/repository/index", self.repository_index),
                ("POST", "/v2/repository/models/{name}/load", self.repository_load),
                ("POST", "/v2/repository/models/{name}/unload", self.repository_unload),
            ]
        return routes

    # ---- health and metadata --------------------------------------------------------------------

    async def server_metadata(self, request: Request) -> Response:
        extensions = EXTENSIONS + (["model_repository"] if self.repository is not None else [])
        return JSONResponse({"name": "raystore", "version": __version__, "extensions": extensions})

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = await self.is_ready()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def model_metadata(self, request: Request) -> Response:
        version = request.path_params.get("version")
        try:
            served, signature = await self.lookup(request.path_params["name"], version)
            metadata = served.metadata(signature)
            if served.every_version:  # the version asked for, or every one the store has
                runner: Any = served.runner
                versions = (
                    [await runner.resolve_version(version)]
                    if version not in (None, "")
                    else await asyncio.to_thread(runner.stored_versions)
                )
                metadata["versions"] = versions
        except (NotFound, BadInput) as exc:
            return _error(exc.http_status, str(exc))
        return JSONResponse(metadata)

    async def model_ready(self, request: Request) -> Response:
        version = request.path_params.get("version")
        try:
            served, _ = await self.lookup(request.path_params["name"], version)
            if served.every_version and version not in (None, ""):
                await served.runner.resolve_version(version)  # type: ignore[attr-defined]
        except (NotFound, BadInput) as exc:
            return _error(exc.http_status, str(exc))
        ready = await self.is_ready()
        return JSONResponse({"name": request.path_params["name"], "ready": ready}, status_code=200 if ready else 503)

    async def lookup(self, name: str, version: str | None, signature: str | None = None) -> tuple[ServedVersion, str]:
        """`find`, after looking for newly loaded models when the name or version is not known here.
        What other ingress replicas loaded or unloaded is also looked up now and then in the
        background (`STALE_AFTER_S`), so that `latest` and readiness follow them."""
        if self.repository is None:
            return self.find(name, version, signature)
        if time.monotonic() - self._refreshed > self.STALE_AFTER_S and (
            self._background is None or self._background.done()
        ):
            self._background = asyncio.ensure_future(self.refresh())
        try:
            return self.find(name, version, signature)
        except NotFound:
            await self.refresh()  # at most once a REFRESH_INTERVAL_S; another request's refresh counts too
        return self.find(name, version, signature)

    def find(self, name: str, version: str | None, signature: str | None = None) -> tuple[ServedVersion, str]:
        """The served version and signature a route names: `NAME` or `NAME.SIGNATURE`, and a
        version (a unique prefix, or `latest`: the newest served)."""
        versions = self.models.get(name)
        if versions is None and "." in name:
            base, _, named_signature = name.rpartition(".")
            if base in self.models:
                versions, signature = self.models[base], signature or named_signature
                name = base
        if versions is None:
            raise NotFound(f"no model {name!r} here; the models are {sorted(self.models)}")
        if version in (None, "", "latest") or versions[0].every_version:
            served = versions[0]
        else:
            matches = [v for v in versions if v.version.startswith(version)]
            known = [v.version for v in versions]
            if len(matches) > 1:
                raise BadInput(f"version {version!r} of model {name!r} matches {known}; give more characters")
            if not matches:
                raise NotFound(f"model {name!r} has no version {version!r} here (served: {known})")
            served = matches[0]
        signature = signature or served.default_signature
        if signature not in served.signatures:
            raise NotFound(f"model {name!r} has no signature {signature!r}; it has {served.signatures}")
        return served, signature

    async def refresh(self, force: bool = False) -> None:
        """Ask the repository which models are loaded now (unless asked less than
        `REFRESH_INTERVAL_S` ago, or `force`)."""
        assert self.repository is not None
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            if not force and time.monotonic() - self._refreshed < self.REFRESH_INTERVAL_S:
                return
            runners = await self.repository.loaded()
            loaded = {}
            for runner in runners:
                key = str(runner.models[0].tag)
                served = self._loaded.get(key)
                loaded[key] = served if served is not None else served_version(runner)
            self._loaded = loaded
            self.models = by_name([*self.own, *(v for v in loaded.values() if v is not None)])
            self._refreshed = time.monotonic()

    # ---- repository -----------------------------------------------------------------------------

    def _own_keys(self) -> list[str]:
        """NAME:VERSION of the versions the service serves itself; NAME:* where it serves them all."""
        return [f"{v.name}:*" if v.every_version else f"{v.name}:{v.version}" for v in self.own]

    async def repository_index(self, request: Request) -> Response:
        assert self.repository is not None
        try:
            options = await _json_object(request)
            ready_only = options.get("ready", False)
            if not isinstance(ready_only, bool):
                raise BadInput("'ready' must be true or false")
            entries = await self.repository.index(self._own_keys())
        except RaystoreError as exc:
            return _error(exc.http_status, str(exc))
        if ready_only:
            entries = [e for e in entries if e["state"] == "READY"]
        return JSONResponse(entries)

    async def repository_load(self, request: Request) -> Response:
        assert self.repository is not None
        try:
            await _json_object(request)  # parameters (a config, files) are Triton's; raystore loads from its store
            await self.repository.load(request.path_params["name"], self._own_keys())
            await self.refresh(force=True)
        except RaystoreError as exc:
            return _error(exc.http_status, str(exc))
        return Response(status_code=200)

    async def repository_unload(self, request: Request) -> Response:
        assert self.repository is not None
        try:
            await _json_object(request)
            await self.repository.unload(request.path_params["name"], self._own_keys())
            await self.refresh(force=True)
        except RaystoreError as exc:
            return _error(exc.http_status, str(exc))
        return Response(status_code=200)

    # ---- inference ------------------------------------------------------------------------------

    async def infer(self, request: Request, body: bytes) -> Response:
        """One inference request whose body the caller has read (and admitted)."""
        decoded = decode_request(body, request.headers.get(HEADER_LENGTH))
        asked = decoded.parameters.get("signature")
        if asked is not None and not isinstance(asked, str):
            raise BadInput("the 'signature' parameter must be a signature's name")
        served, signature = await self.lookup(request.path_params["name"], request.path_params.get("version"), asked)
        value = _call_value(served, signature, decoded.inputs)
        version = served.version
        options: dict[str, Any] = {}
        if served.every_version:
            version = options["version"] = await served.runner.resolve_version(  # type: ignore[attr-defined]
                request.path_params.get("version") or None
            )
        try:
            result = await getattr(served.runner, signature).async_run(value, **options)
        except Exception as exc:
            if self.repository is None or type(remote_cause(exc)).__name__ != "DeploymentUnavailableError":
                raise
            # Unloaded through another ingress replica since this one last looked.
            await self.refresh(force=True)
            raise NotFound(f"model {served.name}:{served.version} was unloaded") from None
        outputs = _outputs(served.outputs[signature], result)
        if decoded.outputs is not None:
            by_name = {t.name: t for t in outputs}
            unknown = sorted(o.name for o in decoded.outputs if o.name not in by_name)
            if unknown:
                raise BadInput(f"no outputs {unknown}; the model gives {sorted(by_name)}")
            outputs = [by_name[o.name] for o in decoded.outputs]
            binary: dict[str, bool] | bool = {
                o.name: decoded.binary_outputs if o.binary is None else o.binary for o in decoded.outputs
            }
        else:
            binary = decoded.binary_outputs
        public_name = served.name if signature == served.default_signature else f"{served.name}.{signature}"
        content, headers = encode_response(public_name, version, outputs, decoded.id, binary)
        return Response(content, headers=headers)


def _call_value(served: ServedVersion, signature: str, inputs: list[Tensor]) -> Any:
    """What the signature is called with: the one input's array, or a dict by input name (ONNX
    graphs of several inputs). Declared inputs are checked by name."""
    declared = [t.name for t in served.inputs[signature]]
    named = len(declared) > 1 or any(not d.startswith("input__") for d in declared)
    if named:
        given = [t.name for t in inputs]
        unknown, missing = sorted(set(given) - set(declared)), [d for d in declared if d not in given]
        if unknown or missing:
            raise BadInput(f"the model's inputs are {declared}; got unknown {unknown} and missing {missing}")
    if len(inputs) == 1:
        return inputs[0].array
    return {t.name: t.array for t in inputs}


def _outputs(declared: list[TensorSpec], result: Any) -> list[Tensor]:
    """A signature's result as named output tensors: a dict by its keys, else one tensor named as
    declared. Values that are not arrays of numbers (a pipeline's dicts) go as JSON text (BYTES)."""
    if isinstance(result, dict):
        return [Tensor(str(name), _array(value)) for name, value in result.items()]
    name = declared[0].name if len(declared) == 1 else "output__0"
    return [Tensor(name, _array(result))]


def _array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.dtype.kind != "O":
        return value
    if hasattr(value, "numpy") and callable(value.numpy):  # a torch tensor
        return value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        array = np.asarray([value], dtype=object)
    if array.dtype.kind == "O":
        flat = [v if isinstance(v, (str, bytes)) else json.dumps(v, default=str) for v in array.reshape(-1).tolist()]
        text = np.empty(len(flat), dtype=object)
        text[:] = flat
        return text.reshape(array.shape)
    return array


async def _json_object(request: Request) -> dict[str, Any]:
    """A repository request's body: empty, or a JSON object."""
    body = await request.body()
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise BadInput(f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadInput("the body must be a JSON object")
    return value


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)
