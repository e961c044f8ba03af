"""`Tag`: a model's `name:version`, its validation, and new time-ordered versions; and the rule for
the names of runners and services, which name Serve deployments and applications."""

from __future__ import annotations

import os
import re
import threading
import time

from raystore.exceptions import InvalidArgument, InvalidTag

MAX_PART_LENGTH = 63
LATEST = "latest"
_PART_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?$")
RULE = (
    "lowercase letters, digits, '-', '_' and '.', starting and ending with a letter or digit, "
    f"at most {MAX_PART_LENGTH} characters, no '..'"
)

# Crockford-style base32 in ASCII order, so that versions sort by creation time as plain strings.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_TIME_CHARS = 9  # 45 bits of milliseconds: good until the year 3084
_RANDOM_CHARS = 7  # 35 bits: unique across processes and machines within one millisecond
VERSION_LENGTH = _TIME_CHARS + _RANDOM_CHARS


def validate_part(value: object, what: str) -> str:
    """Check one part of a tag (`what` is "name" or "version") and return it."""
    if not isinstance(value, str):
        raise InvalidTag(f"model {what} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidTag(f"model {what} is empty; it must be {RULE}")
    problem = None
    if len(value) > MAX_PART_LENGTH:
        problem = f"is {len(value)} characters long"
    elif ".." in value:
        problem = "contains '..'"
    elif not _PART_RE.fullmatch(value):
        problem = "contains characters or an ending that are not allowed"
        if value.lower() != value and _PART_RE.fullmatch(value.lower()):
            problem = f"has uppercase letters (did you mean {value.lower()!r}?)"
    if problem:
        raise InvalidTag(f"invalid model {what} {value!r}: it {problem}; it must be {RULE}")
    return value


def validate_version(value: object) -> str:
    """Check the version of a stored model: a tag part that is not `latest`, which names the newest."""
    version = validate_part(value, "version")
    if version == LATEST:
        raise InvalidTag(f"a stored version may not be named {LATEST!r}: that word means the newest version")
    return version


_SERVE_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")


def validate_serve_name(value: object, what: str, names: str) -> str:
    """Check the name of a runner or service (`what`), which names `names` in Serve, and return it."""
    if not isinstance(value, str) or not _SERVE_NAME_RE.fullmatch(value):
        raise InvalidArgument(
            f"{what} name {value!r} must be lowercase letters, digits, '-' and '_', starting and ending "
            f"with a letter or digit, at most 63 characters (it names {names})"
        )
    return value


class Tag:
    """A model name and, optionally, a version (`None` or `"latest"` mean "resolve the newest")."""

    __slots__ = ("name", "version")

    def __init__(self, name: str, version: str | None = None):
        self.name = validate_part(name, "name")
        self.version = None if version is None else validate_part(version, "version")

    @classmethod
    def from_str(cls, text: str) -> Tag:
        if not isinstance(text, str):
            raise InvalidTag(f"a tag must be a string like 'iris_clf:latest', got {type(text).__name__}")
        name, sep, version = text.partition(":")
        if sep and not version:
            raise InvalidTag(
                f"invalid tag {text!r}: empty version after ':'; use 'name', 'name:latest' or 'name:VERSION'"
            )
        if ":" in version:
            raise InvalidTag(f"invalid tag {text!r}: more than one ':'; use 'name' or 'name:version'")
        return cls(name, version or None)

    @classmethod
    def from_taglike(cls, value: str | Tag) -> Tag:
        return value if isinstance(value, Tag) else cls.from_str(value)

    @property
    def is_latest(self) -> bool:
        return self.version is None or self.version == LATEST

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"

    def __repr__(self) -> str:
        return f'Tag("{self}")'

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = Tag.from_str(other)
            except InvalidTag:
                return False
        return isinstance(other, Tag) and (self.name, self.version) == (other.name, other.version)

    def __hash__(self) -> int:
        return hash((self.name, self.version))

    def __lt__(self, other: Tag) -> bool:
        return (self.name, self.version or "") < (other.name, other.version or "")


_lock = threading.Lock()
_last = (0, 0)  # (milliseconds, random part) of the last version made in this process


def new_version() -> str:
    """A new 16-character version: milliseconds since the epoch, then random bits.

    Versions made by one process are strictly increasing (within one millisecond the random part
    is incremented); across processes and machines 35 random bits keep them apart.
    """
    global _last
    with _lock:
        ms = time.time_ns() // 1_000_000
        last_ms, last_rand = _last
        if ms <= last_ms:
            ms, rand = last_ms, last_rand + 1
            if rand >= 32**_RANDOM_CHARS:
                ms, rand = last_ms + 1, int.from_bytes(os.urandom(5), "big") >> 6
        else:
            rand = int.from_bytes(os.urandom(5), "big") >> 5  # 35 bits
        _last = (ms, rand)
    return _encode(ms, _TIME_CHARS) + _encode(rand, _RANDOM_CHARS)


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))
