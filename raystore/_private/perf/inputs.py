"""Request bodies for `raystore perf`: a file, or every file of a folder (sent round robin), each
with its content type, inferred from the file's suffix unless given."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from raystore.exceptions import InvalidArgument

CONTENT_TYPES = {
    ".json": "application/json",
    ".csv": "text/csv",
    ".txt": "text/plain",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".npy": "application/json",  # a numpy array, sent as the nested JSON lists NumpyNdarray reads
}
MAX_INPUTS = 10_000


@dataclass(frozen=True, eq=False)
class Body:
    """One request body as sent: its bytes, content type and any other headers it needs (the V2
    binary tensor extension's header length)."""

    data: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()

    def all_headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type, **dict(self.headers)}


def load_inputs(input_file: str | None, input_dir: str | None, content_type: str | None) -> list[Body]:
    return [_body(path, content_type) for path in input_paths(input_file, input_dir)]


def input_paths(input_file: str | None, input_dir: str | None) -> list[Path]:
    """The files `--input` or `--input-dir` name (a folder's in name order, hidden ones left out)."""
    if (input_file is None) == (input_dir is None):
        raise InvalidArgument("give the request body: --input FILE or --input-dir DIR (one of them)")
    if input_file is not None:
        paths = [Path(input_file)]
        if not paths[0].is_file():
            raise InvalidArgument(f"--input {input_file}: no such file")
    else:
        folder = Path(input_dir)  # type: ignore[arg-type]
        if not folder.is_dir():
            raise InvalidArgument(f"--input-dir {input_dir}: no such folder")
        paths = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))[:MAX_INPUTS]
        if not paths:
            raise InvalidArgument(f"--input-dir {input_dir} holds no files")
    return paths


def _body(path: Path, content_type: str | None) -> Body:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        import numpy as np

        try:
            array = np.load(path, allow_pickle=False)
            if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
                raise ValueError(f"an array of numbers is needed, got {getattr(array, 'dtype', type(array).__name__)}")
            text = json.dumps(array.tolist(), allow_nan=False)
        except Exception as exc:  # not an array file, not numbers, NaN or infinities (not JSON)
            raise InvalidArgument(f"{path}: cannot send it as a JSON array ({exc})") from None
        return Body(text.encode(), content_type or CONTENT_TYPES[".npy"])
    return Body(path.read_bytes(), content_type or CONTENT_TYPES.get(suffix, "application/octet-stream"))
