"""The `raystore` console script, run as users run it: a real process through its entry point."""

import json
import re
import subprocess

import pytest
import yaml
from conftest import VENV_BIN

import raystore


def run(*args, input=None, env=None):
    return subprocess.run(
        [str(VENV_BIN / "raystore"), *args], capture_output=True, text=True, input=input, env=env, timeout=60
    )


@pytest.fixture
def three_models(iris_clf):
    a1 = raystore.sklearn.save_model("iris_clf", iris_clf, labels={"stage": "dev"}).tag
    a2 = raystore.sklearn.save_model("iris_clf", iris_clf).tag
    b = raystore.picklable_model.save_model("other", {"x": 1}, signatures={"keys": {}}).tag
    return a1, a2, b


def test_list_table_json_yaml(three_models):
    a1, a2, b = three_models
    out = run("models", "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].split() == ["Tag", "Aliases", "Module", "Size", "Creation", "Time"]
    assert [line.split()[0] for line in lines[1:]] == [str(b), str(a2), str(a1)]  # newest first
    assert "raystore.sklearn" in lines[2] and "KiB" in lines[2]

    data = json.loads(run("models", "list", "-o", "json").stdout)
    assert [d["tag"] for d in data] == [str(b), str(a2), str(a1)]
    assert data[2]["labels"] == {"stage": "dev"} and data[2]["size"] > 0
    only = yaml.safe_load(run("models", "list", "iris_clf", "-o", "yaml").stdout)
    assert [d["tag"] for d in only] == [str(a2), str(a1)]


def test_list_empty_store(store_home):
    out = run("models", "list")
    assert out.returncode == 0 and f"No models in {store_home}" in out.stdout


def test_get_formats(three_models, store_home):
    a1, a2, _ = three_models
    info = yaml.safe_load(run("models", "get", "iris_clf").stdout)
    assert info["tag"] == str(a2) and info["module"] == "raystore.sklearn"
    assert info["signatures"]["predict"]["batch_dim"] == [0, 0]
    info = json.loads(run("models", "get", str(a1), "-o", "json").stdout)
    assert info["labels"] == {"stage": "dev"}
    path = run("models", "get", f"iris_clf:{a1.version}", "-o", "path").stdout.strip()
    assert path == str(store_home / "models" / "iris_clf" / a1.version)


@pytest.mark.parametrize(
    "args, words",
    [
        (["models", "get", "missing"], "no model named 'missing'"),
        (["models", "get", "iris_clf:zzzz"], "not found"),
        (["models", "get", "Bad/Tag"], "invalid model name"),
        (["models", "delete", "-y", "missing:abc"], "no model named 'missing'"),
    ],
)
def test_errors_are_one_line_and_nonzero(three_models, args, words):
    out = run(*args)
    assert out.returncode == 1
    assert out.stderr.startswith("Error: ") and words in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr


def test_delete_asks_and_respects_no(three_models):
    a1, a2, b = three_models
    out = run("models", "delete", "--all", "iris_clf", input="n\n")
    assert out.returncode == 0 and "Delete all 2 version(s) of iris_clf?" in out.stdout
    assert len(raystore.models.list("iris_clf")) == 2
    out = run("models", "delete", "--all", "iris_clf", str(b.name), input="y\ny\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("Deleted ") == 3
    assert raystore.models.list() == []


def test_delete_one_version_with_yes(three_models):
    a1, a2, _ = three_models
    out = run("models", "delete", "-y", str(a2))
    assert out.returncode == 0 and f"Deleted {a2}" in out.stdout
    assert [m.tag for m in raystore.models.list("iris_clf")] == [a1]


def test_bad_tag_in_delete_deletes_nothing(three_models):
    out = run("models", "delete", "-y", "iris_clf", "no_such_model")
    assert out.returncode == 1 and "no_such_model" in out.stderr
    assert len(raystore.models.list()) == 3


def test_bad_config_and_bad_root_are_one_line(tmp_path, store_home):
    import os

    bad_config = tmp_path / "config.yaml"
    bad_config.write_text("- just\n- a list\n")
    env = {**os.environ, "RAYSTORE_CONFIG": str(bad_config)}
    out = run("models", "list", env=env)
    assert out.returncode == 1 and "must hold a mapping" in out.stderr and "Traceback" not in out.stderr
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    out = run("models", "list", env={**os.environ, "RAYSTORE_HOME": str(a_file)})
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and "Traceback" not in out.stderr
    out = run("models", "list", env={**os.environ, "RAYSTORE_S3_READ_TIMEOUT": "soon"})
    assert out.returncode == 1 and "S3 timeout must be a positive number of seconds, got 'soon'" in out.stderr


def test_help_and_version():
    out = run("--help")
    assert out.returncode == 0 and "models" in out.stdout
    assert run("version").stdout.strip() == raystore.__version__


def test_a_bare_name_means_the_newest_version_as_in_the_library(three_models):
    a1, a2, _ = three_models
    out = run("models", "delete", "-y", "iris_clf")
    assert out.returncode == 0 and f"Deleted {a2}" in out.stdout
    assert [m.tag for m in raystore.models.list("iris_clf")] == [a1]
    assert raystore.models.delete("iris_clf") == a1  # the library: the same rule
    out = run("models", "delete", "-y", "--all", f"other:{three_models[2].version}")
    assert out.returncode == 1 and "--all deletes every version of a name; give other" in out.stderr


def test_version_completion_and_export_refusals(three_models, tmp_path):
    assert run("--version").stdout.strip() == raystore.__version__
    assert "--install-completion" in run("--help").stdout
    missing = run("models", "export", "iris_clf", str(tmp_path / "nope" / "x.raymodel"))
    assert missing.returncode == 1 and "does not exist; create it first" in missing.stderr
    target = tmp_path / "x.raymodel"
    target.write_text("keep me")
    refused = run("models", "export", "iris_clf", str(target))
    assert refused.returncode == 1 and "exists already; pass force=True (--force)" in refused.stderr
    assert target.read_text() == "keep me"
    assert run("models", "export", "iris_clf", str(target), "--force").returncode == 0
    assert target.stat().st_size > 1024


def test_gc_lists_then_removes_a_dead_process_staging(store_home):
    import subprocess
    import sys
    import uuid

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    from raystore._private.store.gc import _host

    stale = store_home / ".tmp" / f"stage-{_host()}-{gone.pid}-{uuid.uuid4().hex}"
    stale.mkdir(parents=True)
    (stale / "part.bin").write_bytes(b"x" * 2048)
    out = run("models", "gc", "--dry-run")
    assert out.returncode == 0 and "staging of a process that died" in out.stdout and str(stale) in out.stdout
    assert re.search(r"Would remove \d+ leftovers? \(", out.stdout) and stale.exists()
    out = run("models", "gc")
    assert out.returncode == 0 and "Removed " in out.stdout and not stale.exists()
    assert "Nothing to clean" in run("models", "gc").stdout
    out = run("models", "gc", "--older-than", "soon")
    assert out.returncode == 2 and "'soon' is not a duration" in out.stderr
