"""`raystore build`: a valid Serve config with the store and model versions pinned."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import VENV_BIN

import raystore
from raystore._private.deploy.build import build_config, validate_config
from raystore.exceptions import ConfigError, InvalidArgument, NotFound

ROOT = Path(__file__).resolve().parents[1]
IRIS = ROOT / "examples" / "iris"


def _save_iris():
    sys.path.insert(0, str(IRIS))
    try:
        from train import train_and_save
    finally:
        sys.path.remove(str(IRIS))
    return train_and_save()


def test_build_pins_latest_and_validates(store_home, monkeypatch):
    _save_iris()
    current = _save_iris()
    sys.modules.pop("service", None)  # the example module reads `latest` when imported
    config = build_config("service:svc", working_dir=str(IRIS))
    validate_config(config)
    (app,) = config["applications"]
    assert app["name"] == "iris_classifier" and app["route_prefix"] == "/"
    assert app["import_path"] == "raystore.serving:build_application" and app["args"] == {"service": "service:svc"}
    env = app["runtime_env"]["env_vars"]
    assert env["RAYSTORE_HOME"] == str(store_home) and env["PYTHONPATH"] == str(IRIS)
    assert json.loads(env["RAYSTORE_PINS"]) == {"iris_clf": current.tag.version}
    assert [d["name"] for d in app["deployments"]] == ["iris_classifier-ingress"]  # the runner is embedded

    newer = _save_iris()
    assert raystore.models.get("iris_clf:latest").tag == newer.tag
    monkeypatch.setenv("RAYSTORE_PINS", env["RAYSTORE_PINS"])
    assert raystore.models.get("iris_clf:latest").tag == current.tag  # what the deployment will load
    assert raystore.models.get(newer.tag).tag == newer.tag  # exact versions are not affected
    raystore.models.delete(current.tag)
    with pytest.raises(NotFound, match="pinned by RAYSTORE_PINS"):
        raystore.models.get("iris_clf")


def test_build_models_pins_each_tag_and_serves_them_over_v2(store_home):
    first = _save_iris()
    current = _save_iris()
    config = build_config(None, models=["iris_clf:latest", str(first.tag)])
    validate_config(config)
    (app,) = config["applications"]
    assert app["args"] == {"models": [str(current.tag), str(first.tag)]}  # latest, settled now
    names = {d["name"]: d for d in app["deployments"]}
    versioned = [f"iris_clf-{current.tag.version}", f"iris_clf-{first.tag.version}"]
    assert set(names) == {"models-ingress", *versioned}  # one deployment a model, every signature in it
    assert names[versioned[0]]["ray_actor_options"] == {"num_cpus": 1.0}
    with pytest.raises(InvalidArgument, match="not both"):
        build_config("service:svc", models=["iris_clf"])

    # a bare name: every version from one deployment, latest per request, so not pinned
    config = build_config(None, models=["iris_clf"], max_models_per_replica=3, gpu_memory_fraction=0.5)
    validate_config(config)
    (app,) = config["applications"]
    assert app["args"] == {"models": ["iris_clf"], "max_models_per_replica": 3, "gpu_memory_fraction": 0.5}
    assert json.loads(app["runtime_env"]["env_vars"]["RAYSTORE_PINS"]) == {}
    assert {d["name"] for d in app["deployments"]} == {"models-ingress", "iris_clf"}
    with pytest.raises(InvalidArgument, match="given more than once: a bare name serves every version"):
        build_config(None, models=["iris_clf", str(first.tag)])


def test_bad_pins_are_a_config_error(monkeypatch):
    monkeypatch.setenv("RAYSTORE_PINS", "{not json")
    with pytest.raises(ConfigError, match="RAYSTORE_PINS is not JSON"):
        raystore.models.get("anything")


def test_validation_catches_a_broken_config():
    with pytest.raises(Exception):
        validate_config({"applications": [{"name": "x", "import_path": 42, "deployments": "nope"}]})


def test_build_command(tmp_path, subprocess_env):
    _save_iris()
    out_file = tmp_path / "deployments" / "iris_classifier.yaml"
    out = subprocess.run(
        [str(VENV_BIN / "raystore"), "build", "service:svc", "--working-dir", str(IRIS), "-o", str(out_file)],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"Wrote {out_file}" in out.stderr
    config = yaml.safe_load(out_file.read_text())
    validate_config(config)
    assert config["applications"][0]["name"] == "iris_classifier"


def test_build_lists_runner_deployments_with_their_resources(tmp_path, monkeypatch):
    (tmp_path / "two_runners.py").write_text(
        "import raystore\n"
        "from raystore.io import JSON\n"
        "class R(raystore.Runnable):\n"
        "    SUPPORTED_RESOURCES = ('nvidia.com/gpu', 'cpu')\n"
        "    @raystore.Runnable.method(batchable=True)\n"
        "    def a(self, x): return x\n"
        "    @raystore.Runnable.method\n"
        "    def b(self, x): return x\n"
        "gpu = raystore.Runner(R, name='gpu', resources={'num_cpus': 0.5, 'num_gpus': 0.5}, max_batch_size=200, num_replicas=2)\n"
        "auto = raystore.Runner(R, name='auto', colocate=True, autoscaling={'min_replicas': 1, 'max_replicas': 3})\n"
        "svc = raystore.Service('two', runners=[gpu, auto])\n"
        "@svc.api(input=JSON(), output=JSON())\n"
        "async def echo(x): return await gpu.a.async_run([x])\n"
    )
    config = build_config("two_runners:svc", working_dir=str(tmp_path))
    validate_config(config)
    deployments = {d["name"]: d for d in config["applications"][0]["deployments"]}
    assert set(deployments) == {"two-ingress", "gpu-a", "gpu-b", "auto"}
    assert deployments["gpu-a"]["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.5}
    assert deployments["gpu-a"]["num_replicas"] == 2 and deployments["gpu-a"]["max_ongoing_requests"] == 400
    # "auto" GPUs are settled by the code at deploy time; Serve would replace its options by the config's
    assert "ray_actor_options" not in deployments["auto"]
    assert deployments["auto"]["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3}
    assert json.loads(config["applications"][0]["runtime_env"]["env_vars"]["RAYSTORE_PINS"]) == {}


def test_build_for_a_cluster_names_its_store_code_folder_and_route(store_home):
    _save_iris()
    sys.modules.pop("service", None)
    config = build_config(
        "service:svc",
        working_dir=str(IRIS),
        store="s3://bucket/store",
        pythonpath="/srv/examples/iris",
        route_prefix="/iris",
    )
    validate_config(config)
    (app,) = config["applications"]
    assert app["route_prefix"] == "/iris"
    env = app["runtime_env"]["env_vars"]
    assert (env["RAYSTORE_HOME"], env["PYTHONPATH"]) == ("s3://bucket/store", "/srv/examples/iris")
    with pytest.raises(InvalidArgument, match="must be a URL such as s3://"):
        build_config("service:svc", working_dir=str(IRIS), store="relative/store")
    with pytest.raises(InvalidArgument, match="absolute folder on the cluster"):
        build_config("service:svc", working_dir=str(IRIS), pythonpath="examples/iris")


@pytest.mark.parametrize("example", ["iris", "composition", "pytorch_gpu"])
def test_committed_deployment_is_what_make_deployments_builds(example, tmp_path, subprocess_env):
    """deployments/EXAMPLE.yaml matches a fresh build for cluster.yaml's cluster, except for the
    pinned versions, which name whatever the builder's store held."""
    import runpy

    committed = yaml.safe_load((ROOT / "deployments" / f"{example}.yaml").read_text())
    validate_config(committed)
    (app,) = committed["applications"]
    env = app["runtime_env"]["env_vars"]
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    mounts = {target for target, source in cluster["file_mounts"].items() if source.rstrip("/") == "./examples"}
    assert env["PYTHONPATH"] in {f"{target}/{example}" for target in mounts}
    assert any(f"RAYSTORE_HOME={env['RAYSTORE_HOME']} " in command for command in cluster["setup_commands"])

    if example == "iris":
        _save_iris()
    else:
        runpy.run_path(str(ROOT / "examples" / example / "train.py"), run_name="__main__")
    out_file = tmp_path / f"{example}.yaml"
    out = subprocess.run(
        [
            str(VENV_BIN / "raystore"),
            "build",
            "service:svc",
            "--working-dir",
            str(ROOT / "examples" / example),
            "--store",
            env["RAYSTORE_HOME"],
            "--pythonpath",
            env["PYTHONPATH"],
            "--route-prefix",
            app["route_prefix"],
            "-o",
            str(out_file),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    fresh = yaml.safe_load(out_file.read_text())
    fresh_env = fresh["applications"][0]["runtime_env"]["env_vars"]
    assert json.loads(fresh_env["RAYSTORE_PINS"]).keys() == json.loads(env["RAYSTORE_PINS"]).keys()
    env["RAYSTORE_PINS"] = fresh_env["RAYSTORE_PINS"]
    assert fresh == committed, "deployments/ is out of date: run `make deployments` (after training the examples)"
