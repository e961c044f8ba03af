"""Public `raystore.picklable_model` API; the adapter lives in `raystore.frameworks.picklable_model`."""

from raystore.frameworks.picklable_model import get, load_model, save_model

__all__ = ["get", "load_model", "save_model"]
