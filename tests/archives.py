"""Building raystore archives by hand, valid or hostile, for the import tests."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path


def read_archive(path: Path) -> tuple[str, dict[str, bytes]]:
    """The `<name>/<version>` prefix and the files (manifest excluded) of an archive."""
    files, prefix = {}, None
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            name, version, rel = member.name.split("/", 2)
            prefix = f"{name}/{version}"
            if rel != "manifest.json":
                files[rel] = tar.extractfile(member).read()
    return prefix, files


def manifest_for(files: dict[str, bytes]) -> bytes:
    entries = [
        {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for rel, data in sorted(files.items())
    ]
    return json.dumps({"files": entries}).encode()


def write_archive(
    path: Path,
    prefix: str,
    files: dict[str, bytes],
    *,
    manifest: bytes | None = None,
    extra: list[tarfile.TarInfo] = (),
    skip: set[str] = frozenset(),
) -> Path:
    """An archive with a manifest (recomputed unless given), the files in order, then `extra` members."""
    manifest = manifest_for(files) if manifest is None else manifest
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, f"{prefix}/manifest.json", manifest)
        for rel in sorted(files, key=lambda r: (r != "model.yaml", r)):
            if rel not in skip:
                _add(tar, f"{prefix}/{rel}", files[rel])
        for member in extra:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    return path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 1, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size if kind == tarfile.REGTYPE else 0
    info.linkname = linkname
    return info
