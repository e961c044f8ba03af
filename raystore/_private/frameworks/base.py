"""`Framework`: the one shared implementation of `save_model`, `load_model` and `get`.

A framework adapter is thin: it says how to check, write and read its model objects, and how a
loaded model runs in a runner replica (`load_for_runner`, `run_method`). The public framework
modules (`raystore.sklearn`, ...) expose one adapter's functions; the runner layer builds the
Runnable that calls `load_for_runner` and `run_method`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import platform
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, ClassVar

import cloudpickle

from raystore._private.store import ModelInfo, StoredModel, default_store
from raystore._private.store.info import has_method, validate_labels, validate_metadata, validate_signatures
from raystore._private.store.stored_model import CUSTOM_OBJECTS_FILE
from raystore._private.version import __version__
from raystore.exceptions import BadInput, FrameworkMismatch, InvalidArgument, MissingDependency, NotFound
from raystore.tag import Tag, new_version

logger = logging.getLogger("raystore.frameworks")


class Framework:
    name: ClassVar[str]  # "sklearn"
    module: ClassVar[str]  # public module recorded in model.yaml, e.g. "raystore.sklearn"
    packages: ClassVar[tuple[str, ...]] = ()  # distributions whose versions the context records
    default_signatures: ClassVar[Mapping[str, Mapping[str, Any]]]
    gpu_capable: ClassVar[bool] = False
    has_loader: ClassVar[bool] = True  # False: the user's own files, which only their own code reads

    # ---- what each framework provides ------------------------------------------------------

    def check_model(self, model: object) -> None:
        """Raise `InvalidArgument` when `model` is not something this framework can save."""

    def signatures_for(self, model: object) -> Mapping[str, Mapping[str, Any]]:
        """The signatures a save without `signatures=` records: the defaults the model has."""
        return {method: value for method, value in self.default_signatures.items() if self.has_method(model, method)}

    def has_method(self, model: object, method: str) -> bool:
        """Whether a signature named `method` can call `model` (a method of it, by default)."""
        return has_method(model, method)

    def check_booster_or_wrapper(
        self, model: object, package: Any, booster: type, wrapper: type, example: str, booster_of: str
    ) -> bool:
        """For the tree frameworks: `model` is a booster (False) or one of the package's own
        scikit-learn wrappers (True); anything else, a subclass of a wrapper included, is refused
        (a pickle-free file can only name the package's own classes)."""
        if isinstance(model, booster):
            return False
        if not isinstance(model, wrapper):
            raise InvalidArgument(
                f"{self.module}.save_model expects {package.__name__}.{booster.__name__} or a scikit-learn wrapper "
                f"such as {example}, got {type(model).__name__}"
            )
        if getattr(package, type(model).__name__, None) is not type(model):
            raise InvalidArgument(
                f"{type(model).__name__} is not one of {package.__name__}'s own classes, which is all a pickle-free "
                f"file can name: save {booster_of}, or the object with raystore.picklable_model"
            )
        return True

    def uses_gpu(self) -> bool:
        """Whether a runner asks for a GPU with `resources="auto"` (on a cluster that has GPUs)."""
        return self.gpu_capable

    def save_files(self, model: object, path: Path, **options: Any) -> dict[str, Any]:
        """Write the model's files into `path`; return the options to record in model.yaml.
        `options` are the caller's extra `save_model` arguments: a framework that takes none refuses them."""
        raise NotImplementedError

    def load(self, model: StoredModel, **kwargs: Any) -> Any:
        """Read the model object back from `model.local_path`."""
        raise NotImplementedError

    def load_for_runner(self, model: StoredModel) -> Any:
        """Load the model in a runner replica (frameworks with devices place it on the assigned one)."""
        return self.load(model)

    def run_method(self, loaded: Any, method: str, args: tuple, kwargs: dict) -> Any:
        """Call one signature of a loaded model (frameworks with devices move inputs and outputs)."""
        return getattr(loaded, method)(*args, **kwargs)

    # ---- the shared API --------------------------------------------------------------------

    def save_model(
        self,
        name: str,
        model: object,
        *,
        labels: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        custom_objects: Mapping[str, Any] | None = None,
        signatures: Mapping[str, Mapping[str, Any]] | None = None,
        external_modules: Sequence[types.ModuleType] | None = None,
        **options: Any,
    ) -> StoredModel:
        """Save `model` as a new version of `name` and return it.

        `external_modules`: modules (e.g. the user's own `model_def.py`) whose classes and functions
        are saved by value, so that loading needs neither the module nor its file. `options`: what
        this framework's `save_files` takes beside the model (a tokenizer, ...).

        Without `signatures`, the framework's default methods that the model has are recorded; a
        model with none (plain data) is saved all the same, and cannot become a runner.
        """
        tag = Tag(name, new_version())
        self.check_model(model)
        try:
            inspect.signature(self.save_files).bind(model, Path(), **options)
        except TypeError:
            raise InvalidArgument(f"{self.module}.save_model got unexpected arguments {sorted(options)}") from None
        if signatures is None:
            signatures = self.signatures_for(model)
        sigs = validate_signatures(signatures, functools.partial(self.has_method, model), f"the {type(model).__name__}")
        for module in external_modules or ():
            if not isinstance(module, types.ModuleType):
                raise InvalidArgument(f"external_modules must hold imported modules, got {module!r}")
        objects = checked_custom_objects(custom_objects)
        info = self.new_info(tag, labels, metadata, sigs)
        info.to_yaml()  # fail here, before any file is written, if something cannot be represented
        store = default_store()
        with store.create(info) as staging, _pickled_by_value(external_modules or ()):
            info.options = self.save_files(model, staging, **options)
            write_custom_objects(staging, objects)
        return StoredModel(store, info)

    def get(self, tag: str | Tag | StoredModel) -> StoredModel:
        """The stored model `tag`, checked to be one this framework saved."""
        model = tag if isinstance(tag, StoredModel) else default_store().get(tag)
        if model.info.module != self.module:
            raise FrameworkMismatch(
                f"model {model.tag} was saved with {model.info.module}, not {self.module}; "
                f"use {model.info.module}.load_model or raystore.models.get"
            )
        return model

    def load_model(self, tag: str | Tag | StoredModel, **kwargs: Any) -> Any:
        model = self.get(tag)
        self.warn_on_other_versions(model)
        try:
            return self.load(model, **kwargs)
        except FileNotFoundError as exc:
            raise NotFound(f"model {model.tag} was deleted while loading ({exc.filename})") from None

    def new_info(
        self, tag: Tag, labels: Mapping[str, str] | None, metadata: Mapping[str, Any] | None, signatures: dict
    ) -> ModelInfo:
        """The model.yaml of a new version saved by this framework, its fields checked."""
        return ModelInfo(
            name=tag.name,
            version=tag.version,
            module=self.module,
            labels=validate_labels(labels),
            metadata=validate_metadata(metadata),
            context=self.context(),
            signatures=signatures,
        )

    def warn_on_other_versions(self, model: StoredModel) -> None:
        """Warn (once per model and package) when a package the model was saved with has another
        major version here: its file format or behaviour may have changed."""
        saved = (model.info.context or {}).get("framework_versions")
        if not isinstance(saved, Mapping):
            return
        for package, version in saved.items():
            here = _version_of(package)
            key = (str(model.tag), package)
            if _major(version) != _major(here) and "unknown" not in (version, here) and key not in _WARNED:
                _WARNED.add(key)
                logger.warning(
                    "model %s was saved with %s %s and loads with %s %s; if it misbehaves, install %s==%s",
                    model.tag,
                    package,
                    version,
                    package,
                    here,
                    package,
                    version,
                )

    # ---- helpers ---------------------------------------------------------------------------

    def context(self) -> dict[str, Any]:
        return {
            "framework_name": self.name,
            "framework_versions": {pkg: _version_of(pkg) for pkg in self.packages},
            "raystore_version": __version__,
            "python_version": platform.python_version(),
        }

    def import_or_explain(self, module: str, extra: str) -> types.ModuleType:
        """Import an optional dependency, or say which extra installs it. This runs on every model
        call, so an imported module comes straight from `sys.modules`."""
        loaded = sys.modules.get(module)
        if loaded is not None:
            return loaded
        try:
            return importlib.import_module(module)
        except ImportError:
            raise MissingDependency(
                f"raystore.{self.name} needs the '{module}' package: pip install 'raystore[{extra}]'"
            ) from None


def checked_custom_objects(custom_objects: Mapping[str, Any] | None) -> dict[str, Any]:
    """A save's `custom_objects`, checked before anything is written."""
    if custom_objects is not None and not isinstance(custom_objects, Mapping):
        raise InvalidArgument(f"custom_objects must be a dict of name to object, got {type(custom_objects).__name__}")
    return dict(custom_objects or {})


def write_custom_objects(folder: Path, objects: dict[str, Any]) -> None:
    """The version's custom objects file, as `StoredModel.custom_objects` reads it back."""
    with open(folder / CUSTOM_OBJECTS_FILE, "wb") as f:
        cloudpickle.dump(objects, f)


def check_feature_rows(x: Any, expected: int | None) -> None:
    """For the tree frameworks: `x` is rows of `expected` features, else a `BadInput` saying so
    plainly (the libraries' own messages come from deep in their C++ and read like a crash)."""
    shape = getattr(x, "shape", None)
    if shape is None or hasattr(x, "num_row"):  # not an array, or XGBoost's DMatrix: the library knows better
        return
    if len(shape) != 2:
        raise BadInput(f"the model takes a 2-D array of rows x features, got shape {tuple(shape)}")
    if expected is not None and shape[1] != expected:
        raise BadInput(f"the model takes {expected} features per row, got rows of {shape[1]} (input shape {shape})")


def plain_value(value: Any) -> Any:
    """numpy scalars as Python ones, for model.yaml."""
    return value.item() if hasattr(value, "item") else value


def plain_params(params: Mapping[str, Any], framework: str, refuse_functions: bool) -> dict[str, Any]:
    """A scikit-learn wrapper's params that model.yaml can hold (numpy scalars as Python ones).
    Others (a class_weight dict, NaN for "missing": the default) only steer training or are the
    default, and are left out; a function that shapes predictions cannot be written, so with
    `refuse_functions` it is refused."""
    plain = {}
    for key, value in params.items():
        if callable(value):
            if refuse_functions:
                raise InvalidArgument(
                    f"{key} is a Python function, which a pickle-free file cannot hold: save the booster, or the "
                    f"object with raystore.picklable_model ({framework})"
                )
            continue
        value = plain_value(value)
        if isinstance(value, float) and value != value:
            continue
        if value is None or isinstance(value, (str, int, float, bool)):
            plain[key] = value
    return plain


_WARNED: set[tuple[str, str]] = set()


def _major(version: str) -> str:
    return str(version).split(".", 1)[0]


def _version_of(package: str) -> str:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


@contextmanager
def _pickled_by_value(modules: Sequence[types.ModuleType]) -> Iterator[None]:
    already = set(cloudpickle.list_registry_pickle_by_value())
    registered = []
    try:
        for module in modules:
            if module.__name__ in already:
                continue
            cloudpickle.register_pickle_by_value(module)
            registered.append(module)
        yield
    finally:
        for module in registered:
            cloudpickle.unregister_pickle_by_value(module)
