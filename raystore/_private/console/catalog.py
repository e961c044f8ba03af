"""What the console shows of a store: its models and their versions as summaries, read from each
version's `model.yaml` and `manifest.json` only, never from the model files.

A store of thousands of versions is read once: each version's summary is kept and read again only
when its `model.yaml` changes (a local store says so by its modification time), or, on object
storage, once it is older than `recheck_s`. Each request still lists the folders, so versions
saved, deleted or replaced by other processes show up on the next page load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from raystore._private.store import ModelInfo, ModelStore
from raystore.exceptions import InvalidArgument, InvalidTag, NotFound, StoreError
from raystore.tag import Tag

logger = logging.getLogger("raystore.console")

SORTS = ("name", "date", "size")
PER_PAGE = 50


@dataclass(frozen=True)
class VersionRow:
    """One committed version: its info, and its files' total size (None when the manifest cannot
    be read: the version is shown, its size is not)."""

    info: ModelInfo
    size: int | None

    @property
    def tag(self) -> Tag:
        return self.info.tag


@dataclass(frozen=True)
class ModelRow:
    """One model name and its versions, newest first."""

    name: str
    versions: tuple[VersionRow, ...]

    @property
    def newest(self) -> VersionRow:
        return self.versions[0]

    @property
    def framework(self) -> str:
        return self.newest.info.module

    @property
    def labels(self) -> dict[str, str]:
        """The newest version's labels."""
        return self.newest.info.labels

    @property
    def total_size(self) -> int:
        return sum(v.size or 0 for v in self.versions)

    def has_labels(self, wanted: dict[str, str | None]) -> bool:
        """Whether some version carries every wanted label (a None value: any value of that key)."""
        return any(_carries(v.info.labels, wanted) for v in self.versions)


@dataclass(frozen=True)
class Page:
    rows: list[ModelRow]
    number: int  # 1-based
    pages: int
    total: int  # models matching, over all pages


def parse_label_filter(text: str) -> dict[str, str | None]:
    """`owner=nlp_team stage=dev` (or comma-separated) as {key: value}; a bare `owner` asks only
    that the key be there."""
    wanted: dict[str, str | None] = {}
    for part in text.replace(",", " ").split():
        key, sep, value = part.partition("=")
        key = key.strip()
        if not key:
            raise InvalidArgument(f"label filter {part!r} has no key; write key=value, e.g. owner=nlp_team")
        wanted[key] = value.strip() if sep else None
    return wanted


def _carries(labels: dict[str, str], wanted: dict[str, str | None]) -> bool:
    return all(key in labels and (value is None or labels[key] == value) for key, value in wanted.items())


class Catalog:
    """The store as the console reads it, with each version's summary cached (see the module)."""

    def __init__(
        self,
        store: ModelStore,
        *,
        only: Collection[str] | None = None,
        recheck_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`only`: the model names it shows (a service's own); None: every model in the store."""
        self.store = store
        self._only = None if only is None else frozenset(only)
        self._recheck_s = recheck_s
        self._clock = clock
        # (name, version) -> (the info's stamp, when it was read, the row or None: not committed)
        self._cache: dict[tuple[str, str], tuple[object, float, VersionRow | None]] = {}
        self._lock = threading.Lock()  # the server's threads share one cache

    # ---- reading ----------------------------------------------------------------------------

    def models(self) -> list[ModelRow]:
        """Every model with at least one committed version, by name."""
        rows = []
        for name in self.store.names():
            if self._only is not None and name not in self._only:
                continue
            versions = self._versions(name)
            if versions:
                rows.append(ModelRow(name, versions))
        self._forget_except({(row.name, v.tag.version) for row in rows for v in row.versions})
        return rows

    def model(self, name: str) -> ModelRow:
        versions = self._versions(name)
        if not versions:
            raise NotFound(f"no model named {name!r} in {self.store.url}")
        return ModelRow(name, versions)

    def version(self, name: str, version: str) -> VersionRow:
        row = self._row(name, version)
        if row is None:
            raise NotFound(f"model {name}:{version} is not in {self.store.url} (deleted, or never saved)")
        return row

    def query(
        self,
        text: str = "",
        labels: dict[str, str | None] | None = None,
        sort: str = "name",
        page: int = 1,
        per_page: int = PER_PAGE,
    ) -> Page:
        """The models whose name contains `text` (any case) and that carry `labels`, sorted by
        name, by date (newest version first) or by size (largest first), one page of them."""
        if sort not in SORTS:
            raise InvalidArgument(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
        if page < 1 or per_page < 1:
            raise InvalidArgument(f"page and per_page must be >= 1, got {page} and {per_page}")
        rows: Iterable[ModelRow] = self.models()
        if text:
            needle = text.lower()
            rows = [r for r in rows if needle in r.name.lower()]
        if labels:
            rows = [r for r in rows if r.has_labels(labels)]
        rows = list(rows)
        if sort == "date":
            rows.sort(key=lambda r: (r.newest.info.creation_time, r.name), reverse=True)
        elif sort == "size":
            rows.sort(key=lambda r: (-r.total_size, r.name))
        pages = max(1, -(-len(rows) // per_page))
        number = min(page, pages)
        start = (number - 1) * per_page
        return Page(rows[start : start + per_page], number, pages, len(rows))

    # ---- the cache ----------------------------------------------------------------------------

    def _versions(self, name: str) -> tuple[VersionRow, ...]:
        if self._only is not None and name not in self._only:
            return ()
        rows = [row for version in self.store.version_names(name) if (row := self._row(name, version)) is not None]
        rows.sort(key=lambda r: (r.info.creation_time, r.tag.version), reverse=True)
        return tuple(rows)

    def _row(self, name: str, version: str) -> VersionRow | None:
        key = (name, version)
        stamp = self.store.info_stamp(name, version)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            cached_stamp, read_at, row = cached
            if stamp is not None and stamp == cached_stamp:
                return row
            if stamp is None and not self.store.is_local and now - read_at < self._recheck_s:
                return row
        if stamp is None and self.store.is_local:
            row = None  # no model.yaml: not committed (being written, or deleted)
        else:
            row = self._read(name, version)
        with self._lock:
            if row is None:
                self._cache.pop(key, None)  # what is not there is not kept: any URL may ask for it
            else:
                self._cache[key] = (stamp, now, row)
        return row

    def _read(self, name: str, version: str) -> VersionRow | None:
        try:
            info = self.store.read_info(name, version)
        except (StoreError, InvalidArgument, InvalidTag):
            return None  # a name or version that cannot be one, or a corrupt model.yaml
        except Exception as exc:  # what a hand-edited model.yaml can make YAML raise: one version, not the page
            logger.warning(
                "console: skipping %s:%s, its model.yaml cannot be read (%s: %s)",
                name,
                version,
                type(exc).__name__,
                exc,
            )
            return None
        if info is None:
            return None
        try:
            size: int | None = sum(entry.size for entry in self.store.read_manifest(info.tag))
        except (StoreError, NotFound):
            size = None
        return VersionRow(info, size)

    def _forget_except(self, present: set[tuple[str, str]]) -> None:
        with self._lock:
            for key in [key for key in self._cache if key not in present]:
                del self._cache[key]
