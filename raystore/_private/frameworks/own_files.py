"""Models made of the user's own files (`raystore.models.create`): a framework raystore does not
know, a config, a vocabulary. raystore writes none of the files and has no loader for them: they
are read back with `model.path_of("file")`, and a Runnable of the user's loads them for serving."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from raystore._private.frameworks.base import Framework, checked_custom_objects, write_custom_objects
from raystore._private.store import ModelInfo, StoredModel, default_store
from raystore._private.store.info import validate_labels, validate_metadata, validate_signatures
from raystore._private.store.manifest import INFO_FILE, MANIFEST_FILE
from raystore._private.store.stored_model import CUSTOM_OBJECTS_FILE
from raystore.exceptions import InvalidArgument
from raystore.tag import Tag, new_version


class OwnFiles(Framework):
    name = "own_files"
    module = "raystore.models"
    default_signatures: Mapping[str, Mapping[str, Any]] = {}
    has_loader = False

    def load(self, model: StoredModel, **kwargs: Any) -> Any:
        raise InvalidArgument(
            f"model {model.tag} holds files of your own (raystore.models.create): read them with "
            f"raystore.models.get({str(model.tag)!r}).path_of('FILE')"
        )


FRAMEWORK = OwnFiles()


class NewModel:
    """The version being written inside `raystore.models.create(...)`: write files under `path`;
    `info.labels` and `info.metadata` may still change until the block ends."""

    def __init__(self, info: ModelInfo, path: Path):
        self.info, self.path = info, str(path)

    @property
    def tag(self) -> Tag:
        return self.info.tag

    def path_of(self, relpath: str) -> Path:
        return Path(self.path) / relpath

    def __repr__(self) -> str:
        return f'NewModel(tag="{self.tag}", path="{self.path}")'


@contextmanager
def create(
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    signatures: Mapping[str, Mapping[str, Any]] | None = None,
    custom_objects: Mapping[str, Any] | None = None,
) -> Iterator[NewModel]:
    """A new version of `name` made of your own files:

        with raystore.models.create("tokenizer", labels={"lang": "fr"}) as m:
            (Path(m.path) / "vocab.txt").write_text(...)

    It is committed with its manifest when the block exits cleanly and is absent if the block
    raises; read the files back with `raystore.models.get(m.tag).path_of("vocab.txt")`."""
    tag = Tag(name, new_version())
    objects = checked_custom_objects(custom_objects)
    info = FRAMEWORK.new_info(tag, labels, metadata, validate_signatures(signatures or {}))
    info.to_yaml()  # fail before the block runs if something cannot be represented
    with default_store().create(info) as staging:
        yield NewModel(info, staging)
        # what the block changed is checked as a save would check it, before anything commits
        info.labels = validate_labels(info.labels)
        info.metadata = validate_metadata(info.metadata)
        for reserved in (CUSTOM_OBJECTS_FILE, INFO_FILE, MANIFEST_FILE):
            if (staging / reserved).exists():
                raise InvalidArgument(f"{reserved} is a file name raystore keeps for itself; name your file otherwise")
        write_custom_objects(staging, objects)
