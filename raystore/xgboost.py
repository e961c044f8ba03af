"""Public `raystore.xgboost`: XGBoost boosters and scikit-learn wrappers (`save_model`, `load_model`, `get`).

The adapter lives in `raystore._private.frameworks.xgboost`; models come back as `raystore.Model`.
"""

from raystore._private.frameworks.xgboost import FRAMEWORK
from raystore._private.runner.model import framework_functions

save_model, load_model, get = framework_functions(FRAMEWORK)

__all__ = ["get", "load_model", "save_model"]
