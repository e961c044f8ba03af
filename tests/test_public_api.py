"""The public surface: lazy names that load neither Ray nor a framework, and the contract of
`raystore.exceptions` (one module, builtin bases, an HTTP status on every error)."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys

import pytest

import raystore
from raystore import exceptions


def test_every_public_name_resolves_without_ray_or_a_framework():
    code = (
        "import sys, raystore\n"
        "resolved = [getattr(raystore, name) for name in raystore.__all__]\n"
        "print(len(resolved), sorted(m for m in ('ray', 'torch', 'sklearn', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split(maxsplit=1) == [str(len(raystore.__all__)), "[]\n"]


def test_dir_lists_the_lazy_names():
    names = dir(raystore)
    assert {"Model", "Runner", "Runnable", "Service", "batch", "models", "sklearn", "io"} <= set(names)
    assert names == sorted(names)
    assert isinstance(raystore.models, type(raystore)) and raystore.Tag("a", "b").name == "a"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        raystore.nope  # noqa: B018


def _public_errors() -> list[type[exceptions.RaystoreError]]:
    return [
        value
        for value in vars(exceptions).values()
        if inspect.isclass(value) and issubclass(value, exceptions.RaystoreError)
    ]


def test_every_error_carries_an_http_status_and_the_fitting_builtin():
    errors = _public_errors()
    assert len(errors) >= 15
    for error in errors:
        assert 400 <= error.http_status < 600, error
    statuses = {error.__name__: error.http_status for error in errors}
    assert statuses["BadInput"] == 400 and statuses["PayloadTooLarge"] == 413
    assert statuses["UnsupportedMediaType"] == 415 and statuses["NotFound"] == 404
    assert statuses["ServiceUnavailable"] == 503 and statuses["StoreError"] == 500
    assert issubclass(exceptions.InvalidArgument, ValueError) and issubclass(exceptions.NotFound, LookupError)
    assert issubclass(exceptions.MissingDependency, ImportError) and issubclass(exceptions.InvalidOutput, TypeError)
    assert issubclass(exceptions.UnsupportedMediaType, exceptions.BadInput)


def test_service_unavailable_keeps_its_retry_time_across_processes():
    error = pickle.loads(pickle.dumps(raystore.ServiceUnavailable("queue full", retry_after_s=2.4)))
    assert isinstance(error, exceptions.ServiceUnavailable) and error.retry_after_s == 2.4
    assert error.http_headers() == {"Retry-After": "2"} and str(error) == "queue full"
    assert exceptions.ServiceUnavailable("x", retry_after_s=0.01).http_headers() == {"Retry-After": "1"}
    # a batch queue's rejection stays one: the ingress sheds on it
    full = pickle.loads(pickle.dumps(exceptions.QueueFull("queue full", retry_after_s=0.3)))
    assert type(full) is exceptions.QueueFull and full.retry_after_s == 0.3


# Exceptions used as signals inside one package, which never reach a caller.
_INTERNAL_SIGNALS = {"RunLater", "_Unusual"}


def test_no_error_class_is_defined_outside_the_exceptions_module():
    import ast
    import pathlib

    root = pathlib.Path(raystore.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "exceptions.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name not in _INTERNAL_SIGNALS:
                bases = [ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases]
                if any(base.endswith(("Error", "Exception")) for base in bases):
                    offenders.append(f"{path.relative_to(root)}: class {node.name}({', '.join(bases)})")
    assert offenders == []
