"""The seed workflow and the store's rules: versions, latest, prefixes, validation, deletion."""

import datetime as dt
import json
import time

import numpy as np
import pytest
import yaml

import raystore
from raystore._private.store import ModelStore
from raystore.exceptions import AmbiguousTag, FrameworkMismatch, InvalidArgument, InvalidTag, NotFound, StoreError


def _nested(depth):
    value = {}
    for _ in range(depth):
        value = {"x": value}
    return value


def _save_iris(clf, **kwargs):
    return raystore.sklearn.save_model(
        "iris_clf",
        clf,
        labels={"owner": "nlp_team", "stage": "dev"},
        metadata={"acc": np.float64(0.97), "dataset_version": "20210820", "confusion": np.eye(2, dtype=int)},
        custom_objects={"tokenizer": lambda s: s.lower().split(), "classes": ["setosa", "versicolor", "virginica"]},
        signatures={"predict": {"batchable": True, "batch_dim": 0}},
        **kwargs,
    )


def test_seed_workflow(iris, iris_clf, store_home):
    X, _ = iris
    saved = _save_iris(iris_clf)
    assert saved.tag.name == "iris_clf" and len(saved.tag.version) == 16

    clf = raystore.sklearn.load_model("iris_clf:latest")
    np.testing.assert_array_equal(clf.predict(X[:20]), iris_clf.predict(X[:20]))

    bm = raystore.models.get("iris_clf:latest")
    assert bm.tag == saved.tag
    assert bm.info.labels == {"owner": "nlp_team", "stage": "dev"}
    assert bm.info.metadata == {"acc": 0.97, "dataset_version": "20210820", "confusion": [[1, 0], [0, 1]]}
    assert type(bm.info.metadata["acc"]) is float
    assert bm.custom_objects["tokenizer"]("Hello World") == ["hello", "world"]
    assert bm.custom_objects["classes"][2] == "virginica"
    sig = bm.info.signatures["predict"]
    assert (sig.batchable, sig.batch_dim) == (True, (0, 0))
    assert bm.info.module == "raystore.sklearn"
    assert bm.info.api_version == "v1"
    ctx = bm.info.context
    assert ctx["framework_name"] == "sklearn"
    assert ctx["framework_versions"]["scikit-learn"].count(".") >= 1
    assert ctx["raystore_version"] == raystore.__version__
    assert ctx["python_version"].startswith("3.")
    assert abs((dt.datetime.now(dt.UTC) - bm.info.creation_time).total_seconds()) < 60

    folder = store_home / "models" / "iris_clf" / saved.tag.version
    assert bm.path == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "custom_objects.pkl",
        "manifest.json",
        "model.yaml",
        "saved_model.pkl",
    ]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {f["path"] for f in manifest["files"]} == {"custom_objects.pkl", "model.yaml", "saved_model.pkl"}
    assert bm.size == sum(f["size"] for f in manifest["files"]) > 0
    on_disk = yaml.safe_load((folder / "model.yaml").read_text())
    assert on_disk["signatures"]["predict"] == {"batchable": True, "batch_dim": [0, 0]}
    ModelStore(str(store_home)).verify(saved.tag)

    assert [m.tag for m in raystore.models.list()] == [saved.tag]
    assert raystore.models.delete("iris_clf:latest") == saved.tag
    assert raystore.models.list() == []
    with pytest.raises(NotFound, match="no model named 'iris_clf'"):
        raystore.sklearn.load_model("iris_clf")


def test_latest_is_newest_and_follows_deletes(iris_clf):
    tags = [raystore.sklearn.save_model("m", iris_clf).tag for _ in range(3)]
    assert raystore.models.get("m").tag == tags[-1]
    assert [m.tag for m in raystore.models.list("m")] == tags[::-1]
    raystore.models.delete(tags[-1])
    assert raystore.models.get("m:latest").tag == tags[1]
    raystore.models.delete("m")  # a bare name means the latest version
    assert raystore.models.get("m").tag == tags[0]
    assert raystore.models.delete_all("m") == [tags[0]]
    with pytest.raises(NotFound):
        raystore.models.get("m")


def test_list_filters_by_name_and_sorts_newest_first(iris_clf):
    a = raystore.sklearn.save_model("a", iris_clf).tag
    b = raystore.picklable_model.save_model("b", {"k": 1}, signatures={"get": {}}).tag
    assert [m.tag for m in raystore.models.list()] == [b, a]
    assert [m.tag for m in raystore.models.list("a")] == [a]
    assert [m.tag for m in raystore.models.list(str(b))] == [b]
    assert raystore.models.list("zzz") == []


def test_version_prefix(iris_clf):
    t1 = raystore.sklearn.save_model("p", iris_clf).tag
    time.sleep(0.002)
    t2 = raystore.sklearn.save_model("p", iris_clf).tag
    common = 0
    while t1.version[common] == t2.version[common]:
        common += 1
    assert raystore.models.get(f"p:{t1.version[: common + 1]}").tag == t1
    assert raystore.models.get(f"p:{t2.version[: common + 1]}").tag == t2
    with pytest.raises(AmbiguousTag) as err:
        raystore.models.get(f"p:{t1.version[:common]}")
    assert str(t1) in str(err.value) and str(t2) in str(err.value)
    with pytest.raises(NotFound, match="raystore models list p"):
        raystore.models.get("p:zzzz")


def test_framework_mismatch(iris_clf):
    raystore.sklearn.save_model("iris_clf", iris_clf)
    with pytest.raises(FrameworkMismatch, match="saved with raystore.sklearn, not raystore.pytorch"):
        raystore.pytorch.get("iris_clf:latest")
    with pytest.raises(FrameworkMismatch):
        raystore.picklable_model.load_model("iris_clf")
    assert raystore.sklearn.get("iris_clf").info.module == "raystore.sklearn"


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"labels": {"owner": 3}}, "labels are str to str"),
        ({"labels": ["a"]}, "labels must be a dict"),
        ({"metadata": {"obj": object()}}, "metadata['obj'] is a builtins.object"),
        ({"metadata": {1: "x"}}, "key 1 must be a string"),
        ({"metadata": {"nested": [{"deep": {1, 2}}]}}, "metadata['nested'][0]['deep']"),
        ({"signatures": {"transform_me": {}}}, "has no method 'transform_me'"),
        ({"signatures": {"predict": {"batchable": "yes"}}}, "'batchable' must be True or False"),
        ({"signatures": {"predict": {"batch_dim": (0, 1, 2)}}}, "'batch_dim' must be an int or a pair"),
        ({"signatures": {"predict": {"batch": True}}}, "unknown keys ['batch']"),
        ({"shoe_size": 42}, "got unexpected arguments ['shoe_size']"),
        ({"custom_objects": [1]}, "custom_objects must be a dict"),
        ({"external_modules": ["json"]}, "external_modules must hold imported modules"),
        ({"metadata": {"loss": float("nan")}}, "metadata['loss'] is nan, which JSON cannot represent"),
        ({"metadata": {"deep": _nested(100)}}, "nested more than 64 levels"),
        ({"signatures": {"predict": {"input_spec": object()}}}, "input_spec is a builtins.object"),
    ],
)
def test_bad_arguments_are_clear_and_leave_store_unchanged(iris_clf, store_home, kwargs, words):
    with pytest.raises(InvalidArgument) as err:
        raystore.sklearn.save_model("iris_clf", iris_clf, **kwargs)
    assert words in str(err.value)
    assert raystore.models.list() == []
    assert not (store_home / "models").exists() or not any((store_home / "models").iterdir())


def test_batch_dim_pair_and_defaults(iris_clf):
    m = raystore.sklearn.save_model(
        "d", iris_clf, signatures={"decision_function": {"batchable": True, "batch_dim": (1, 0)}}
    )
    assert m.info.signatures["decision_function"].batch_dim == (1, 0)
    numpy_dim = raystore.sklearn.save_model(
        "d", iris_clf, signatures={"predict": {"batchable": True, "batch_dim": np.int64(1)}}
    )
    assert raystore.models.get(numpy_dim.tag).info.signatures["predict"].batch_dim == (1, 1)  # plain ints on disk
    default = raystore.sklearn.save_model("d", iris_clf)
    assert list(default.info.signatures) == ["predict"]
    assert default.info.signatures["predict"].batchable is False


def test_bad_names_and_wrong_model_types(iris_clf):
    with pytest.raises(InvalidTag, match="did you mean 'iris'"):
        raystore.sklearn.save_model("Iris", iris_clf)
    with pytest.raises(InvalidTag):
        raystore.sklearn.save_model("../evil", iris_clf)
    with pytest.raises(InvalidArgument, match="expects a scikit-learn estimator"):
        raystore.sklearn.save_model("x", {"not": "a model"})
    with pytest.raises(InvalidTag):
        raystore.models.get("bad name")


def test_failed_save_leaves_nothing(store_home):
    class Unpicklable:
        def __call__(self):
            return 1

        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle this"):
        raystore.picklable_model.save_model("broken", Unpicklable())
    assert raystore.models.list() == []
    assert list((store_home / ".tmp").iterdir()) == []


def test_custom_objects_load_lazily(iris_clf, store_home):
    m = raystore.sklearn.save_model("lazy", iris_clf, custom_objects={"x": 1})
    fresh = raystore.models.get(m.tag)
    assert "custom_objects" not in vars(fresh)
    assert fresh.custom_objects == {"x": 1}


def test_corrupt_model_yaml_is_a_clear_error(iris_clf, store_home):
    m = raystore.sklearn.save_model("c", iris_clf)
    (store_home / "models" / "c" / m.tag.version / "model.yaml").write_text("name: [unclosed")
    with pytest.raises(StoreError, match="model.yaml is corrupt"):
        raystore.models.get(m.tag)


def test_verify_detects_changed_and_extra_files(iris_clf, store_home):
    m = raystore.sklearn.save_model("v", iris_clf)
    store = ModelStore(str(store_home))
    folder = store_home / "models" / "v" / m.tag.version
    data = bytearray((folder / "saved_model.pkl").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "saved_model.pkl").write_bytes(bytes(data))
    (folder / "extra.bin").write_bytes(b"x")
    with pytest.raises(StoreError) as err:
        store.verify(m.tag)
    assert "saved_model.pkl: sha256 differs" in str(err.value)
    assert "extra.bin: not in the manifest" in str(err.value)


def test_store_on_an_fsspec_memory_filesystem(iris_clf, monkeypatch):
    monkeypatch.setenv("RAYSTORE_HOME", "memory://raystore-test")
    m = raystore.sklearn.save_model("mem", iris_clf, labels={"a": "b"})
    assert m.path.startswith("memory://")
    assert [x.tag for x in raystore.models.list()] == [m.tag]
    assert raystore.models.get("mem").info.labels == {"a": "b"}
    raystore.models.delete(m.tag)
    assert raystore.models.list() == []


def test_import_raystore_is_light():
    import subprocess
    import sys

    code = "import sys, raystore; print(sorted(m for m in ('ray', 'torch', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_values_are_normalised_to_plain_types(iris_clf):
    import enum

    import pandas as pd

    class Stage(str, enum.Enum):
        DEV = "dev"

    m = raystore.sklearn.save_model(
        "plain",
        iris_clf,
        labels={np.str_("owner"): np.str_("me"), "stage": Stage.DEV},
        metadata={
            "stage": Stage.DEV,
            "when": pd.Timestamp("2024-01-02T03:04:05"),
            "day": dt.date(2024, 1, 2),
            "n": np.int64(7),
            "flags": np.array([True, False]),
            "t": (1, "a"),
        },
    )
    info = raystore.models.get(m.tag).info
    assert info.labels == {"owner": "me", "stage": "dev"}
    assert info.metadata == {
        "stage": "dev",
        "when": dt.datetime(2024, 1, 2, 3, 4, 5),
        "day": dt.date(2024, 1, 2),
        "n": 7,
        "flags": [True, False],
        "t": [1, "a"],
    }
    assert type(info.metadata["stage"]) is str and type(info.metadata["n"]) is int


def test_corrupt_version_is_skipped_by_list_and_can_be_deleted(iris_clf, store_home):
    good = raystore.sklearn.save_model("c", iris_clf).tag
    bad = raystore.sklearn.save_model("c", iris_clf).tag
    (store_home / "models" / "c" / bad.version / "model.yaml").write_text("name: c\n")
    assert [m.tag for m in raystore.models.list()] == [good]
    assert raystore.models.get("c:latest").tag == good
    with pytest.raises(StoreError, match="is corrupt"):
        raystore.models.get(bad)
    assert raystore.models.delete(bad) == bad
    assert not (store_home / "models" / "c" / bad.version).exists()


def test_list_with_latest_gives_one_version(iris_clf):
    raystore.sklearn.save_model("l", iris_clf)
    newest = raystore.sklearn.save_model("l", iris_clf).tag
    assert [m.tag for m in raystore.models.list("l:latest")] == [newest]
    assert raystore.models.list("nothere:latest") == []


def test_model_yaml_with_ampersands_and_stars_in_its_values_reads_back():
    """Text with `&` or `*` takes the checking YAML loader, the rest libyaml's: both read the same."""
    from raystore._private.store.info import ModelInfo

    saved = raystore.picklable_model.save_model(
        "symbols", {"x": 1}, labels={"team": "r-and-d"}, metadata={"note": "a & b * c", "plain": "x"}
    )
    loaded = raystore.models.get(saved.tag)
    assert loaded.info.metadata == {"note": "a & b * c", "plain": "x"}
    plain = ModelInfo.from_yaml(saved.info.to_yaml().replace("a & b * c", "a and b"), "here")
    assert plain.metadata["note"] == "a and b" and plain.creation_time == saved.info.creation_time
