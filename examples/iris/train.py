"""Train the iris classifier and save it in the store as `iris_clf` (a new version each run).

python examples/iris/train.py
"""

from __future__ import annotations

from sklearn.datasets import load_iris
from sklearn.svm import SVC

import raystore


def train_and_save() -> raystore.Model:
    iris = load_iris()
    clf = SVC(gamma="scale").fit(iris.data, iris.target)
    return raystore.sklearn.save_model(
        "iris_clf",
        clf,
        labels={"owner": "quickstart", "stage": "dev"},
        metadata={"accuracy": float(clf.score(iris.data, iris.target)), "dataset": "sklearn iris"},
        custom_objects={"class_names": list(iris.target_names)},
        signatures={"predict": {"batchable": True, "batch_dim": 0}},
    )


if __name__ == "__main__":
    saved = train_and_save()
    print(f"Saved {saved} to {saved.path}")
