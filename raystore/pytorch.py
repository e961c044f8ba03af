"""Public `raystore.pytorch`: PyTorch nn.Modules (`save_model`, `load_model`, `get`).

The adapter lives in `raystore._private.frameworks.pytorch`; models come back as `raystore.Model`.
"""

from raystore._private.frameworks.pytorch import FRAMEWORK
from raystore._private.runner.model import framework_functions

save_model, load_model, get = framework_functions(FRAMEWORK)

__all__ = ["get", "load_model", "save_model"]
