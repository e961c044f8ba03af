"""Settings from the environment and `~/.raystore/config.yaml`, read when asked, never cached.

Reading at call time keeps `import raystore` free of side effects and lets tests and tools point
the store elsewhere by setting `RAYSTORE_HOME` at any moment.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from raystore.exceptions import ConfigError

DEFAULT_HOME = "~/raystore"
CONFIG_FILE_ENV = "RAYSTORE_CONFIG"
DEFAULT_CONFIG_FILE = "~/.raystore/config.yaml"


@dataclass(frozen=True)
class Settings:
    home: str  # the store root: a local path or an fsspec URL such as s3://bucket/prefix
    remote: str | None  # the bucket push/pull talk to
    cache_dir: str  # node-local cache of models read from a remote store
    s3_endpoint_url: str | None
    pins: dict[str, str]  # model name (or NAME:ALIAS) -> version it means (set by deployment configs)
    s3_connect_timeout: float = 5.0  # seconds to open a connection to S3
    s3_read_timeout: float = 6.0  # seconds S3 may stay silent mid-request before a retry, then an error


def config_file() -> Path:
    return Path(os.path.expanduser(os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE)))


def _file_settings() -> dict:
    path = config_file()
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {path}: {exc}; fix or remove the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping such as 'home: ~/raystore', not {type(data).__name__}")
    return data


def settings() -> Settings:
    """The current settings: environment variables win over the config file, which wins over defaults."""
    file = _file_settings()

    def pick(env: str, key: str, default: str | None) -> str | None:
        value = os.environ.get(env) or file.get(key) or default
        return None if value is None else str(value)

    home = pick("RAYSTORE_HOME", "home", DEFAULT_HOME)
    cache = pick("RAYSTORE_CACHE_DIR", "cache_dir", "~/.cache/raystore")
    return Settings(
        home=_expand(home),
        remote=pick("RAYSTORE_REMOTE", "remote", None),
        cache_dir=_expand(cache),
        s3_endpoint_url=pick("RAYSTORE_S3_ENDPOINT_URL", "s3_endpoint_url", None),
        pins=_pins(os.environ.get("RAYSTORE_PINS", "")),
        s3_connect_timeout=_seconds(pick("RAYSTORE_S3_CONNECT_TIMEOUT", "s3_connect_timeout", "5")),
        s3_read_timeout=_seconds(pick("RAYSTORE_S3_READ_TIMEOUT", "s3_read_timeout", "6")),
    )


def _seconds(text: str | None) -> float:
    try:
        value = float(text or "")
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"an S3 timeout must be a positive number of seconds, got {text!r}")
    return value


def _pins(text: str) -> dict[str, str]:
    """`RAYSTORE_PINS`: a JSON object of model name (what `latest` means) or `NAME:ALIAS` to version,
    written by `raystore build`."""
    if not text.strip():
        return {}
    try:
        pins = json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f'RAYSTORE_PINS is not JSON ({exc}); expected e.g. {{"iris_clf": "1m89jf14gkr0zn4z"}}'
        ) from None
    if not isinstance(pins, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in pins.items()):
        raise ConfigError("RAYSTORE_PINS must be a JSON object of model name to version")
    return pins


def _expand(location: str) -> str:
    """Expand `~` and make local paths absolute; leave URLs (`s3://...`) alone."""
    if "://" in location:
        return location
    return str(Path(os.path.expanduser(location)).resolve())
