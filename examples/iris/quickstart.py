"""The iris quickstart: train a classifier, save it to the store, load it back, predict.

Run with `make quickstart` (or `python examples/iris/quickstart.py` in the project's venv).
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_iris
from sklearn.svm import SVC

import raystore


def train_and_save() -> raystore.Model:
    X, y = load_iris(return_X_y=True)
    clf = SVC(gamma="scale").fit(X, y)
    return raystore.sklearn.save_model(
        "iris_clf",
        clf,
        labels={"owner": "quickstart", "stage": "dev"},
        metadata={"accuracy": float(clf.score(X, y)), "dataset": "sklearn iris"},
        custom_objects={"class_names": list(load_iris().target_names)},
        signatures={"predict": {"batchable": True, "batch_dim": 0}},
    )


def main() -> None:
    saved = train_and_save()
    print(f"Saved {saved} to {saved.path}")

    model = raystore.models.get("iris_clf:latest")
    clf = raystore.sklearn.load_model(model.tag)
    sample = np.array([[5.9, 3.0, 5.1, 1.8]])
    prediction = int(clf.predict(sample)[0])
    name = model.custom_objects["class_names"][prediction]
    print(f"Prediction for {sample.tolist()[0]}: {prediction} ({name})")


if __name__ == "__main__":
    main()
