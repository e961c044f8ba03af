"""A child process for the store's concurrency tests: saves, lists, loads and deletes one model name
at random, checks everything it observes, and writes what it did to a JSON file."""

import hashlib
import json
import os
import random
import sys
import time

import raystore
from raystore.exceptions import NotFound

NAME = "shared"


def check_loaded(model):
    obj = raystore.picklable_model.load_model(model)
    assert hashlib.sha256(obj["payload"]).hexdigest() == obj["digest"], f"{model.tag}: payload corrupt"
    assert model.custom_objects["digest"] == obj["digest"], f"{model.tag}: custom objects mismatch"
    assert model.info.labels["writer"] == obj["writer"], f"{model.tag}: info from another save"


def main(worker: int, iterations: int, start_file: str, result_file: str) -> None:
    rng = random.Random(worker)
    saved, deleted, loads, lists, not_found = [], [], 0, 0, 0
    while not os.path.exists(start_file):
        time.sleep(0.005)
    for _ in range(iterations):
        op = rng.choice(["save", "save", "list", "load", "delete"])
        try:
            if op == "save":
                payload = os.urandom(rng.randint(1, 400_000))
                digest = hashlib.sha256(payload).hexdigest()
                m = raystore.picklable_model.save_model(
                    NAME,
                    {"payload": payload, "digest": digest, "writer": str(worker)},
                    labels={"writer": str(worker)},
                    custom_objects={"digest": digest},
                    signatures={"get": {}},
                )
                saved.append(str(m.tag))
            elif op == "list":
                for m in raystore.models.list(NAME):  # listing itself must never fail
                    assert m.info.name == NAME
                    try:
                        assert m.size > 0
                    except NotFound:
                        pass  # deleted since it was listed
                lists += 1
            elif op == "load":
                check_loaded(raystore.models.get(f"{NAME}:latest"))
                loads += 1
            else:
                victims = raystore.models.list(NAME)
                if victims:
                    tag = rng.choice(victims).tag
                    raystore.models.delete(tag)
                    deleted.append(str(tag))
        except NotFound:
            not_found += 1  # deleted by another worker between our steps: allowed
    with open(result_file, "w") as f:
        json.dump({"saved": saved, "deleted": deleted, "loads": loads, "lists": lists, "not_found": not_found}, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
