"""Two models composed through handles in one service: a scaler on a small CPU slice feeds a
classifier; the scaler's response goes to the classifier without passing through the ingress.

    python examples/composition/train.py
    raystore serve service:svc --working-dir examples/composition
"""

from typing import Literal

import numpy as np
import pydantic

import raystore
from raystore.io import JSON, NumpyNdarray

scaler = raystore.models.get("iris_scaler:latest").to_runner(name="scaler", resources={"num_cpus": 0.1})
classifier = raystore.models.get("iris_logreg:latest").to_runner(
    name="classifier", resources={"num_cpus": 0.2}, max_batch_size=64, max_latency_ms=100
)

svc = raystore.Service("iris_composed", runners=[scaler, classifier])
NAMES = ["setosa", "versicolor", "virginica"]


class Prediction(pydantic.BaseModel):
    species: Literal["setosa", "versicolor", "virginica"]
    probability: float = pydantic.Field(ge=0, le=1, description="the classifier's probability of that species")


class Predictions(pydantic.RootModel[list[Prediction]]):
    """One prediction per row, in the rows' order."""


@svc.api(input=NumpyNdarray(dtype="float64", shape=(-1, 4), enforce_shape=True), output=JSON(Predictions))
async def classify(features: np.ndarray) -> list[dict]:
    """Scale, then classify; answers each row's species and its probability."""
    scaled = scaler.transform.remote(features)  # a response, not yet materialised here
    probabilities = await classifier.predict_proba.async_run(scaled)
    best = probabilities.argmax(axis=1)
    return [{"species": NAMES[i], "probability": round(float(p[i]), 4)} for i, p in zip(best, probabilities)]
