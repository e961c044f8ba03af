"""Filesystems from URLs (local paths, `s3://`, `memory://`, ...) and clear errors for remote failures."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from raystore.config import settings
from raystore.exceptions import MissingDependency, StoreError

# Fail in seconds, not minutes, when an endpoint is down or silent: botocore retries a request once
# (its standard mode retries throttling, 5xx and timeouts) and s3fs adds no retries of its own, so
# a silent endpoint fails a request after two read timeouts (12 s by default), where botocore's and
# s3fs's defaults let one listing run for minutes. Some operations make two requests (s3fs's
# `info` lists when a HEAD fails): still under 30 s.
S3_RETRIES = 1
UPLOAD_BLOCK_SIZE = 16 * 1024 * 1024  # bytes buffered per file being written: keeps memory flat


def open_filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and root path for `url`. S3 uses the AWS variables plus `RAYSTORE_S3_ENDPOINT_URL`."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    options: dict[str, Any] = {}
    if protocol in ("s3", "s3a"):
        try:
            import s3fs  # noqa: F401
        except ImportError:
            raise MissingDependency(f"{url} needs the s3fs package: pip install 'raystore[s3]'") from None
        current = settings()
        options["config_kwargs"] = {
            "connect_timeout": current.s3_connect_timeout,
            "read_timeout": current.s3_read_timeout,
            "retries": {"max_attempts": S3_RETRIES, "mode": "standard"},  # retries, not attempts
        }
        options["default_block_size"] = UPLOAD_BLOCK_SIZE
        endpoint = current.s3_endpoint_url
        if endpoint:
            options["client_kwargs"] = {"endpoint_url": endpoint}
        # Explicit credentials also key fsspec's instance cache, so changed variables take effect.
        for option, variable in (
            ("key", "AWS_ACCESS_KEY_ID"),
            ("secret", "AWS_SECRET_ACCESS_KEY"),
            ("token", "AWS_SESSION_TOKEN"),
        ):
            if os.environ.get(variable):
                options[option] = os.environ[variable]
    try:
        fs, root = fsspec.core.url_to_fs(url, **options)
    except (ImportError, ValueError) as exc:
        raise StoreError(f"cannot open {url}: {exc}") from None
    if protocol in ("s3", "s3a"):
        fs.retries = 1  # s3fs's own retry loop, around botocore's: one attempt (see S3_RETRIES)
    return fs, root


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def create_exclusive(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Write `path` only if it does not exist yet, in one request (S3's conditional write,
    `If-None-Match: *`): True if this call created it, False if the object was there already or
    another writer's create won. A store that does not know conditional writes gets a plain write
    (True): there, the last of two racing writers wins, as before S3 had them."""
    try:
        fs.pipe_file(path, data, mode="create")
    except TypeError:  # a filesystem whose pipe_file takes no mode
        fs.pipe_file(path, data)
    except OSError as exc:  # FileExistsError among them
        code = _s3_error_code(exc)
        if isinstance(exc, FileExistsError) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        if code == "NotImplemented":
            fs.pipe_file(path, data)
        else:
            raise
    return True


def _s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an error s3fs translated (botocore's, on the chained cause)."""
    cause = exc.__cause__ or exc.__context__
    response = getattr(cause, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def describe(url: str) -> str:
    """`url`, plus the S3 endpoint when one is configured (the first thing to check when it fails)."""
    endpoint = settings().s3_endpoint_url
    return f"{url} (endpoint {endpoint})" if endpoint and url.startswith("s3") else url


@contextmanager
def remote_errors(url: str) -> Iterator[None]:
    """Turn the many ways a remote filesystem fails into one `StoreError` line that says what to do."""
    try:
        yield
    except StoreError:
        raise
    except FileNotFoundError as exc:
        if "bucket does not exist" in str(exc) or "NoSuchBucket" in str(exc):
            raise StoreError(f"the bucket of {describe(url)} does not exist; create it first") from None
        raise
    except PermissionError as exc:
        raise StoreError(
            f"access denied to {describe(url)} ({_first_line(exc)}); check AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY and the bucket's permissions"
        ) from None
    except Exception as exc:  # botocore/aiohttp errors have no common base we can import cheaply
        name = type(exc).__name__
        if name in ("ReadTimeoutError", "FSTimeoutError", "ServerTimeoutError") or isinstance(exc, TimeoutError):
            raise StoreError(
                f"{describe(url)} did not answer within {settings().s3_read_timeout:g} s, twice: "
                f"{_first_line(exc)}; check the endpoint, or raise s3_read_timeout (RAYSTORE_S3_READ_TIMEOUT)"
            ) from None
        if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError") or (
            isinstance(exc, OSError) and exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ETIMEDOUT)
        ):
            raise StoreError(
                f"cannot reach {describe(url)}: {_first_line(exc)}; check the endpoint and the network"
            ) from None
        if name in ("NoCredentialsError", "PartialCredentialsError"):
            raise StoreError(
                f"no credentials for {describe(url)}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from None
        if name == "ClientError" or name.endswith("ClientError"):
            raise StoreError(f"{describe(url)} refused the request: {_first_line(exc)}") from None
        if _is_remote_failure(exc):  # whatever else the server or the network did: say where
            raise StoreError(f"{describe(url)} failed: {name}: {_first_line(exc)}") from None
        raise


_REMOTE_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec", "urllib3")
_LOCAL_OS_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError)


def _is_remote_failure(exc: BaseException) -> bool:
    """An error of the remote's client libraries, or an OS error of the connection (not a local
    file's: those the callers handle)."""
    if type(exc).__module__.split(".")[0] in _REMOTE_MODULES:
        return True
    return isinstance(exc, OSError) and not isinstance(exc, _LOCAL_OS_ERRORS) and exc.errno is None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
