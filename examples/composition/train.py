"""Train and save the two models the composition example serves: a feature scaler and a classifier
trained on scaled features.

    python examples/composition/train.py
"""

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import raystore


def main() -> None:
    X, y = load_iris(return_X_y=True)
    scaler = StandardScaler().fit(X)
    clf = LogisticRegression(max_iter=500).fit(scaler.transform(X), y)
    print(raystore.sklearn.save_model("iris_scaler", scaler, signatures={"transform": {"batchable": True}}))
    print(
        raystore.sklearn.save_model(
            "iris_logreg", clf, signatures={"predict": {"batchable": True}, "predict_proba": {"batchable": True}}
        )
    )


if __name__ == "__main__":
    main()
