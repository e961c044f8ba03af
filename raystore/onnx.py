"""Public `raystore.onnx`: ONNX graphs, run with onnxruntime (`save_model`, `load_model`, `get`).

The adapter lives in `raystore._private.frameworks.onnx`; models come back as `raystore.Model`.
"""

from raystore._private.frameworks.onnx import FRAMEWORK
from raystore._private.runner.model import framework_functions

save_model, load_model, get = framework_functions(FRAMEWORK)

__all__ = ["get", "load_model", "save_model"]
