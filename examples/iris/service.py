"""The iris service: one sklearn model behind a typed HTTP API.

    raystore serve service:svc --working-dir examples/iris

The model is tiny and CPU-only, so it runs embedded in the ingress replica: a separate model
deployment would add a hop that costs more than the prediction itself (see the README).
"""

import numpy as np

import raystore
from raystore.io import NumpyNdarray

iris_runner = raystore.models.get("iris_clf:latest").to_runner(embedded=True, max_batch_size=64, max_latency_ms=50)

svc = raystore.Service("iris_classifier", runners=[iris_runner])


@svc.api(input=NumpyNdarray(dtype="float64", shape=(-1, 4), enforce_shape=True), output=NumpyNdarray())
async def classify(features: np.ndarray) -> np.ndarray:
    """Predict iris classes (0 setosa, 1 versicolor, 2 virginica) for rows of 4 measurements."""
    return await iris_runner.predict.async_run(features)
