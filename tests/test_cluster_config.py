"""cluster.yaml is a valid Ray cluster-launcher config with a CPU head and autoscaling GPU workers."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_passes_rays_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(dict(config)))  # defaults filled in as `ray up` does; raises on errors
    types = config["available_node_types"]
    assert config["head_node_type"] == "head"
    assert types["gpu_worker"]["min_workers"] == 0 and types["gpu_worker"]["max_workers"] >= 1
    assert "accelerator_type:T4" in types["gpu_worker"]["resources"]
    setup = " ".join(config["setup_commands"])
    assert "RAYSTORE_HOME=s3://" in setup and "ray[serve]==2.60.0" in setup and "raystore[" in setup


def test_the_validation_does_catch_mistakes():
    import pytest
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["max_workers"] = "many"
    with pytest.raises(Exception):
        validate_config(prepare_config(config))
