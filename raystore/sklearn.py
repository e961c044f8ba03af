"""Public `raystore.sklearn` API; the adapter lives in `raystore.frameworks.sklearn`."""

from raystore.frameworks.sklearn import get, load_model, save_model

__all__ = ["get", "load_model", "save_model"]
