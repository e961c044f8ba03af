"""A model served over the Open Inference Protocol (KServe V2, as Triton and raystore speak it) as
the sweep's target: its infer URL, found through the model's metadata, and request bodies made
from the input files: a V2 JSON infer request sent as it is, or arrays (`.npy` for a model of one
input, `.npz` with an array per input name) made into one, as JSON tensors or, with `binary`, in
the binary tensor data extension."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from raystore._private.perf.inputs import Body, input_paths
from raystore._private.service.v2.codec import DTYPES, Tensor, encode_request
from raystore.exceptions import InvalidArgument

TIMEOUT_S = 30.0
DEFAULT_INPUT = "input__0"  # the name of a model's one input when its metadata names none


def model_url(server: str, model: str, version: str | None = None) -> str:
    """`SERVER/v2/models/MODEL[/versions/VERSION]`; `server` may end in `/v2` or `/`."""
    if not server.startswith(("http://", "https://")):
        raise InvalidArgument(f"--v2 must be the server's http:// or https:// URL, got {server!r}")
    base = server.rstrip("/")
    base = base[: -len("/v2")] if base.endswith("/v2") else base
    url = f"{base}/v2/models/{quote(model, safe='')}"
    return f"{url}/versions/{quote(version, safe='')}" if version else url


def model_metadata(url: str) -> dict[str, Any]:
    """The model's metadata (GET on its URL): a model the server does not serve, or a server that
    is not there, is an error saying so."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            document = json.loads(response.read())
    except urllib.error.HTTPError as err:
        answer = err.read()[:300].decode("utf-8", errors="replace")
        try:
            answer = json.loads(answer).get("error", answer)
        except (ValueError, AttributeError):
            pass
        raise InvalidArgument(f"{url} answered {err.code}: {answer}; check --v2, --model and --model-version") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InvalidArgument(f"cannot reach {url}: {reason!r}; is a V2 server running there?") from None
    except ValueError:
        raise InvalidArgument(f"{url} did not answer with the model's metadata (JSON): is it a V2 server?") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"{url} did not answer with the model's metadata: is it a V2 server?")
    return document


def v2_bodies(
    input_file: str | None, input_dir: str | None, metadata: dict[str, Any], binary: bool = False
) -> list[Body]:
    """A request body per input file, checked against the model's declared inputs."""
    return [_body(path, metadata, binary) for path in input_paths(input_file, input_dir)]


def _body(path: Path, metadata: dict[str, Any], binary: bool) -> Body:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _json_request(path, binary)
    if suffix not in (".npy", ".npz"):
        raise InvalidArgument(
            f"{path}: a V2 input is an infer request (.json), an array (.npy) or arrays by input name (.npz)"
        )
    import numpy as np

    declared = {spec["name"]: spec for spec in metadata.get("inputs") or [] if isinstance(spec, dict)}
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = dict(loaded.items()) if suffix == ".npz" else None
        array = loaded if suffix == ".npy" else None
    except Exception as exc:  # not an array file, or one that needs pickle
        raise InvalidArgument(f"{path}: cannot read it as {suffix} ({exc})") from None
    if arrays is None:
        if len(declared) > 1:
            raise InvalidArgument(
                f"{path}: the model has inputs {sorted(declared)}; give a .npz with an array named for each"
            )
        arrays = {next(iter(declared), DEFAULT_INPUT): array}
    elif declared and set(arrays) != set(declared):
        raise InvalidArgument(f"{path}: holds arrays {sorted(arrays)}; the model's inputs are {sorted(declared)}")
    tensors = [Tensor(name, _as_declared(path, name, value, declared.get(name))) for name, value in arrays.items()]
    try:
        data, headers = encode_request(tensors, binary=binary)
    except Exception as exc:  # an array the protocol has no datatype for
        raise InvalidArgument(f"{path}: cannot send it over the V2 protocol ({exc})") from None
    content_type = headers.pop("Content-Type")
    return Body(data, content_type, tuple(headers.items()))


def _as_declared(path: Path, name: str, array: Any, spec: dict[str, Any] | None) -> Any:
    """The array in the datatype the model declares for the input (float64 from numpy's defaults
    sent as the FP32 a model takes), when that loses no kind of meaning."""
    import numpy as np

    if array.dtype.kind not in "biuf":
        raise InvalidArgument(f"{path}: input {name!r} must be numbers, got {array.dtype}")
    wanted = DTYPES.get(str((spec or {}).get("datatype")))
    if wanted is None or wanted == array.dtype or wanted.kind == "O":
        return array
    if not np.can_cast(array.dtype, wanted, casting="same_kind"):
        raise InvalidArgument(f"{path}: input {name!r} is {array.dtype}; the model takes {spec['datatype']}")  # type: ignore[index]
    return array.astype(wanted)


def _json_request(path: Path, binary: bool) -> Body:
    if binary:
        raise InvalidArgument(f"{path}: --binary makes requests from arrays (.npy, .npz); a .json is sent as it is")
    data = path.read_bytes()
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise InvalidArgument(f"{path}: not JSON ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise InvalidArgument(f'{path}: a V2 infer request is a JSON object with "inputs", a list of tensors')
    return Body(data, "application/json")
