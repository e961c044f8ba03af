"""Child processes for the S3 tests: save into, or load from, the store the environment names."""

import json
import sys


def save(name: str) -> None:
    import numpy as np

    import raystore

    m = raystore.picklable_model.save_model(
        name, {"weights": np.arange(1000.0)}, custom_objects={"k": 3}, signatures={"keys": {}}
    )
    print(m.tag)


def load(tag: str) -> None:
    """Load through the node cache and report whether this process did the download."""
    import raystore
    from raystore._private.store import default_store
    from raystore._private.store.cache import NodeCache

    store = default_store()
    model = store.get(tag)
    path, downloaded = NodeCache.default().fetch(store, model.tag)
    obj = raystore.picklable_model.load_model(model)
    print(json.dumps({"path": str(path), "downloaded": downloaded, "sum": float(obj["weights"].sum())}))


def push_forever(tag: str, force: str = "") -> None:
    import raystore

    print("start", flush=True)
    raystore.models.push(tag, quiet=True, force=force == "force")
    print("done", flush=True)


if __name__ == "__main__":
    {"save": save, "load": load, "push": push_forever}[sys.argv[1]](*sys.argv[2:])
