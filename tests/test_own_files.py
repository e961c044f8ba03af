"""Models that are not methods: plain objects in `raystore.picklable_model`, your own files through
`raystore.models.create`, and the warning when a model loads under another major version of its
framework."""

import logging
from pathlib import Path

import pytest
import yaml

import raystore
from raystore.exceptions import InvalidArgument


def test_a_plain_object_saves_with_no_signatures_and_cannot_become_a_runner():
    model = raystore.picklable_model.save_model("table", {"a": 1, "b": [1, 2]})
    assert model.info.signatures == {}
    assert raystore.picklable_model.load_model("table") == {"a": 1, "b": [1, 2]}
    with pytest.raises(InvalidArgument, match=r"has no signatures.*signatures=\{'predict'"):
        model.to_runner()


def test_default_signatures_keep_only_the_methods_an_object_has():
    class Scorer:
        def __call__(self, x):
            return x * 2

    assert set(raystore.picklable_model.save_model("scorer", Scorer()).info.signatures) == {"__call__"}
    with pytest.raises(InvalidArgument, match="has no method 'predict'"):
        raystore.picklable_model.save_model("scorer", Scorer(), signatures={"predict": {}})


def test_own_files_commit_when_the_block_ends(store_home):
    with raystore.models.create("vocab", labels={"lang": "fr"}, metadata={"size": 3}) as m:
        Path(m.path, "vocab.txt").write_text("le\nla\nles\n")
        Path(m.path, "sub").mkdir()
        m.path_of("sub/config.json").write_text('{"lower": true}')
        m.info.metadata["checked"] = True
        assert raystore.models.list("vocab") == []  # nothing visible before the block ends

    model = raystore.models.get("vocab")
    assert model.tag == m.tag and model.info.module == "raystore.models"
    assert model.path_of("vocab.txt").read_text().split() == ["le", "la", "les"]
    assert model.path_of("sub/config.json").read_text() == '{"lower": true}'
    assert model.info.labels == {"lang": "fr"} and model.info.metadata == {"size": 3, "checked": True}
    assert {e.path for e in model.manifest} >= {"vocab.txt", "sub/config.json", "model.yaml"}
    assert raystore.models.verify("vocab") == model
    assert yaml.safe_load(Path(model.path_of("model.yaml")).read_text())["module"] == "raystore.models"
    with pytest.raises(InvalidArgument, match="holds files of your own"):
        model.to_runner()


def test_own_files_that_raise_or_break_the_rules_leave_nothing(store_home):
    with pytest.raises(RuntimeError, match="tokenizer failed"), raystore.models.create("vocab") as m:
        Path(m.path, "half.txt").write_text("x")
        raise RuntimeError("tokenizer failed")
    reserved = pytest.raises(InvalidArgument, match="model.yaml is a file name raystore keeps")
    with reserved, raystore.models.create("vocab") as m:
        Path(m.path, "model.yaml").write_text("name: evil\n")
    with pytest.raises(InvalidArgument, match="labels are str to str"), raystore.models.create("vocab") as m:
        m.info.labels["stage"] = 3
    with pytest.raises(InvalidArgument, match="must be a non-empty"), raystore.models.create("vocab", labels={"": "x"}):
        pass
    assert raystore.models.list() == []
    leftovers = [p for p in store_home.rglob("*") if p.is_file()]
    assert leftovers == []


def test_loading_under_another_major_version_warns_once(caplog):
    model = raystore.picklable_model.save_model("old", [1, 2, 3])
    info = model.path_of("model.yaml")
    document = yaml.safe_load(info.read_text())
    document["context"]["framework_versions"]["cloudpickle"] = "0.1.0"
    info.write_text(yaml.safe_dump(document))
    with caplog.at_level(logging.WARNING, logger="raystore.frameworks"):
        assert raystore.picklable_model.load_model("old") == [1, 2, 3]
        assert raystore.picklable_model.load_model("old") == [1, 2, 3]
    warnings = [r.getMessage() for r in caplog.records if "saved with cloudpickle 0.1.0" in r.getMessage()]
    assert len(warnings) == 1 and "install cloudpickle==0.1.0" in warnings[0]
