"""Aliases: `NAME:ALIAS` names a version wherever a tag is accepted; set, moved and removed
atomically; never shadowing a version or `latest`; guarding the versions they name from deletion;
listed; carried by push and pull; pinned by `raystore build`."""

import json
import os
import subprocess
import threading

import numpy as np
import pytest
from conftest import VENV_BIN
from sklearn.tree import DecisionTreeClassifier

import raystore
from raystore._private.deploy.build import build_config
from raystore._private.store import remote_store
from raystore.exceptions import InvalidArgument, InvalidTag, NotFound, StoreError


def run(*args, input=None):
    return subprocess.run([str(VENV_BIN / "raystore"), *args], capture_output=True, text=True, input=input, timeout=60)


@pytest.fixture
def two_versions(iris):
    """Two versions of iris_clf that answer differently: a stump and a deeper tree."""
    x, y = iris
    stump = DecisionTreeClassifier(max_depth=1).fit(x, y)
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y)
    signatures = {"predict": {"batchable": True}}
    first = raystore.sklearn.save_model("iris_clf", stump, signatures=signatures)
    second = raystore.sklearn.save_model("iris_clf", tree, signatures=signatures)
    assert not np.array_equal(stump.predict(x), tree.predict(x))
    return first, second


def test_an_alias_names_its_version_everywhere_a_tag_is_accepted(two_versions, iris, tmp_path):
    first, second = two_versions
    x, _ = iris
    assert raystore.models.set_alias(str(first.tag), "prod") == first.tag
    assert raystore.models.get("iris_clf:prod").tag == first.tag
    assert raystore.models.get("iris_clf").tag == second.tag  # latest is still the newest
    stump = raystore.sklearn.load_model("iris_clf:prod")
    np.testing.assert_array_equal(stump.predict(x), raystore.sklearn.load_model(first.tag).predict(x))
    runner = raystore.models.get("iris_clf:prod").to_runner().init_local()
    np.testing.assert_array_equal(runner.predict.run(x), stump.predict(x))
    where = raystore.models.export_model("iris_clf:prod", str(tmp_path), quiet=True)
    assert first.tag.version in where

    # listed with the versions they name
    assert raystore.models.aliases("iris_clf") == {"prod": first.tag.version}
    assert raystore.models.get(first.tag).aliases == ["prod"] and raystore.models.get(second.tag).aliases == []

    # moved: the same alias now names the other version
    raystore.models.set_alias("iris_clf:latest", "prod")
    assert raystore.models.get("iris_clf:prod").tag == second.tag
    assert raystore.models.remove_alias("iris_clf", "prod") == second.tag.version
    with pytest.raises(NotFound, match="has no version or alias 'prod'"):
        raystore.models.get("iris_clf:prod")
    with pytest.raises(NotFound, match="has no alias 'prod'"):
        raystore.models.remove_alias("iris_clf", "prod")


def test_an_alias_cannot_shadow_a_version_or_latest(two_versions):
    first, second = two_versions
    with pytest.raises(InvalidArgument, match="'latest'"):
        raystore.models.set_alias(str(first.tag), "latest")
    with pytest.raises(InvalidArgument, match="is a version"):
        raystore.models.set_alias(str(first.tag), second.tag.version)
    with pytest.raises(InvalidArgument, match="is the start of version"):
        raystore.models.set_alias(str(first.tag), second.tag.version[:4])
    with pytest.raises(InvalidTag, match="uppercase"):
        raystore.models.set_alias(str(first.tag), "Prod")
    with pytest.raises(NotFound):
        raystore.models.set_alias("no_such_model", "prod")
    assert raystore.models.aliases("iris_clf") == {}  # nothing was written on the way


def test_a_version_an_alias_names_is_deleted_only_when_asked(two_versions):
    first, second = two_versions
    raystore.models.set_alias(str(first.tag), "prod")
    with pytest.raises(InvalidArgument, match=f"iris_clf:prod -> {first.tag.version}"):
        raystore.models.delete(first.tag)
    with pytest.raises(InvalidArgument, match="aliases name what would be deleted"):
        raystore.models.delete_all("iris_clf")
    assert [m.tag for m in raystore.models.list("iris_clf")] == [second.tag, first.tag]  # both still there
    assert raystore.models.delete("iris_clf:prod", remove_aliases=True) == first.tag
    assert raystore.models.aliases("iris_clf") == {}
    assert [m.tag for m in raystore.models.list("iris_clf")] == [second.tag]


def test_a_dangling_or_corrupt_alias_is_a_clear_error(two_versions, store_home):
    first, _ = two_versions
    raystore.models.set_alias(str(first.tag), "prod")
    alias_file = store_home / "aliases" / "iris_clf" / "prod"
    alias_file.write_text("not a version!\n")
    with pytest.raises(StoreError, match="does not hold a version; set it again"):
        raystore.models.get("iris_clf:prod")
    alias_file.write_text("0000000000000000\n")
    with pytest.raises(NotFound, match="names version 0000000000000000, which is not in"):
        raystore.models.get("iris_clf:prod")


def test_readers_see_the_old_version_or_the_new_one_while_an_alias_moves(two_versions):
    first, second = two_versions
    raystore.models.set_alias(str(first.tag), "prod")
    seen, errors, stop = set(), [], threading.Event()

    def read():
        while not stop.is_set():
            try:
                seen.add(raystore.models.get("iris_clf:prod").tag.version)
            except Exception as exc:  # a torn or missing alias file
                errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    for i in range(200):
        raystore.models.set_alias(str((first, second)[i % 2].tag), "prod")
    stop.set()
    for reader in readers:
        reader.join()
    assert errors == [] and seen == {first.tag.version, second.tag.version}
    assert os.listdir(os.path.dirname(raystore.models.get("iris_clf:prod").path).replace("models", "aliases")) == [
        "prod"
    ]  # no temporary files left


def test_the_cli_sets_lists_and_removes_aliases_and_asks_before_deleting(two_versions):
    first, second = two_versions
    out = run("models", "alias", str(first.tag), "prod")
    assert out.returncode == 0 and out.stdout.strip() == f"iris_clf:prod -> {first.tag.version}"
    lines = run("models", "list").stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["Tag", "Aliases", "Module"]
    assert lines[2].split()[:2] == [str(first.tag), "prod"]
    assert json.loads(run("models", "list", "-o", "json").stdout)[1]["aliases"] == ["prod"]
    assert json.loads(run("models", "get", "iris_clf:prod", "-o", "json").stdout)["tag"] == str(first.tag)

    out = run("models", "delete", "iris_clf:prod", input="n\n")
    assert f"Delete {first.tag} and the aliases naming it (prod)?" in out.stdout and "Skipped" in out.stdout
    assert raystore.models.get("iris_clf:prod").tag == first.tag
    out = run("models", "delete", "iris_clf:prod", "-y")
    assert out.returncode == 1 and "pass --remove-aliases with -y" in out.stderr
    assert raystore.models.get("iris_clf:prod").tag == first.tag  # nothing deleted
    out = run("models", "alias", "iris_clf", "Prod")
    assert out.returncode == 1 and "uppercase" in out.stderr
    out = run("models", "alias", "iris_clf", "prod", "--remove")
    assert out.returncode == 0 and f"Removed alias iris_clf:prod (it named {first.tag.version})" in out.stdout
    assert raystore.models.aliases("iris_clf") == {}


def test_build_pins_what_an_alias_names_now(two_versions, monkeypatch):
    first, second = two_versions
    raystore.models.set_alias(str(first.tag), "prod")
    config = build_config(None, models=["iris_clf:prod"])
    (app,) = config["applications"]
    assert app["args"] == {"models": [str(first.tag)]}
    pins = json.loads(app["runtime_env"]["env_vars"]["RAYSTORE_PINS"])
    assert pins["iris_clf:prod"] == first.tag.version

    # on the cluster the alias keeps its built meaning after it moves
    raystore.models.set_alias(str(second.tag), "prod")
    monkeypatch.setenv("RAYSTORE_PINS", json.dumps(pins))
    assert raystore.models.get("iris_clf:prod").tag == first.tag


@pytest.mark.s3
def test_push_and_pull_carry_aliases(two_versions, s3_bucket, monkeypatch, tmp_path):
    first, second = two_versions
    monkeypatch.setenv("RAYSTORE_REMOTE", f"{s3_bucket}/remote")
    raystore.models.set_alias(str(first.tag), "prod")
    raystore.models.set_alias(str(first.tag), "blue")
    assert raystore.models.push("iris_clf:prod", quiet=True).tag == first.tag
    assert raystore.models.aliases("iris_clf", remote=True) == {"prod": first.tag.version, "blue": first.tag.version}
    raystore.models.push(second.tag, quiet=True)  # no alias names it: the remote's stay
    assert raystore.models.get("iris_clf:prod").tag == first.tag

    # another machine's store pulls by alias and gets the alias too
    monkeypatch.setenv("RAYSTORE_HOME", str(tmp_path / "other-machine"))
    assert raystore.models.pull("iris_clf:blue", quiet=True).tag == first.tag
    assert raystore.models.aliases("iris_clf") == {"prod": first.tag.version, "blue": first.tag.version}
    assert raystore.models.get("iris_clf:prod").tag == first.tag
    # the remote's alias moves; pulling by it moves the local one too
    remote_store().set_alias(str(second.tag), "prod")
    assert raystore.models.pull("iris_clf:prod", quiet=True).tag == second.tag
    assert raystore.models.aliases("iris_clf") == {"prod": second.tag.version, "blue": first.tag.version}
