"""A PyTorch classifier served with batching along dim 0, on a GPU when the Ray cluster has one.

    python examples/pytorch_gpu/train.py
    raystore serve service:svc --working-dir examples/pytorch_gpu

resources="auto" (the default for PyTorch) asks for one GPU when the cluster has GPUs and for the
CPU otherwise, so the same code runs on a laptop and on a GPU node. On a GPU the replica loads the
model onto the device Ray assigned and moves each batch there and back.
"""

import numpy as np

import raystore
from raystore.io import NumpyNdarray

runner = raystore.models.get("iris_torch:latest").to_runner(
    name="iris_torch", resources="auto", max_batch_size=128, max_latency_ms=50
)
svc = raystore.Service("iris_torch", runners=[runner])


@svc.api(input=NumpyNdarray(dtype="float32", shape=(-1, 4), enforce_shape=True), output=NumpyNdarray())
async def probabilities(features: np.ndarray):
    """Class probabilities (setosa, versicolor, virginica) for rows of 4 measurements."""
    return await runner.async_run(features)
