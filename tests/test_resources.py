"""Resource specs: Ray and BentoML forms, "auto", and clear errors for impossible requests."""

import subprocess

import pytest
from conftest import VENV_BIN

from raystore._private.runner.resources import Resources, parse_resources
from raystore.exceptions import InvalidArgument


@pytest.mark.parametrize(
    "spec, gpu_capable, expected",
    [
        (None, False, Resources(1.0, 0.0)),
        ("auto", True, Resources(1.0, None)),
        ({"num_cpus": 0.5, "num_gpus": 0.25, "accelerator_type": "A100"}, True, Resources(0.5, 0.25, "A100")),
        ({"cpu": "500m", "nvidia.com/gpu": 1}, True, Resources(0.5, 1.0)),
        ({"cpu": "2"}, False, Resources(2.0, 0.0)),
        ({"cpu": 0.25}, True, Resources(0.25, None)),
        ({"memory": "2Gi"}, False, Resources(1.0, 0.0, None, 2 * 2**30)),
        ({"memory": "512M"}, False, Resources(1.0, 0.0, None, 512 * 10**6)),
        ({"memory": 1024}, False, Resources(1.0, 0.0, None, 1024)),
        ({"num_gpus": 2}, True, Resources(1.0, 2.0)),
    ],
)
def test_parse(spec, gpu_capable, expected):
    assert parse_resources(spec, gpu_capable=gpu_capable) == expected


@pytest.mark.parametrize(
    "spec, gpu_capable, words",
    [
        ({"num_cpus": -1}, False, "num_cpus must not be negative"),
        ({"num_gpus": -0.5}, True, "num_gpus must not be negative"),
        ({"gpus": 1}, True, "unknown keys ['gpus']"),
        ({"num_gpus": 1}, False, "runs on CPU only"),
        ({"nvidia.com/gpu": 0.5}, False, "runs on CPU only"),
        ({"num_gpus": 1.5}, True, "must be a whole number"),
        ({"cpu": "lots"}, False, "is not a CPU amount"),
        ({"memory": "2 parsecs"}, False, "is not an amount"),
        ({"cpu": 1, "num_cpus": 2}, False, "repeats 'num_cpus'"),
        ({"accelerator_type": "T4", "num_gpus": 0}, True, "needs num_gpus > 0"),
        ({"num_cpus": True}, False, "must be a number"),
        ([1], False, "must be a dict"),
    ],
)
def test_invalid_specs(spec, gpu_capable, words):
    with pytest.raises(InvalidArgument) as err:
        parse_resources(spec, gpu_capable=gpu_capable)
    assert words in str(err.value)


def test_auto_follows_the_cluster():
    auto = parse_resources("auto", gpu_capable=True)
    assert auto.resolve(gpu_capable=True, cluster_gpus=2).num_gpus == 1.0
    assert auto.resolve(gpu_capable=True, cluster_gpus=0).num_gpus == 0.0
    assert parse_resources(None, gpu_capable=False).resolve(gpu_capable=False, cluster_gpus=8).num_gpus == 0.0
    options = (
        parse_resources({"num_cpus": 0.5, "num_gpus": 0.5, "accelerator_type": "T4", "memory": "1Gi"}, gpu_capable=True)
        .resolve(gpu_capable=True, cluster_gpus=1)
        .ray_actor_options()
    )
    assert options == {"num_cpus": 0.5, "num_gpus": 0.5, "accelerator_type": "T4", "memory": 2**30}


def test_more_gpus_than_the_cluster_has_is_an_error():
    with pytest.raises(InvalidArgument, match="ask for 4 GPU.* the Ray cluster has 2"):
        parse_resources({"num_gpus": 4}, gpu_capable=True).resolve(gpu_capable=True, cluster_gpus=2)


def test_gpus_command_without_a_driver():
    out = subprocess.run([str(VENV_BIN / "raystore"), "gpus"], capture_output=True, text=True)
    assert out.returncode == 0
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except Exception:
        assert out.stdout.startswith("No NVIDIA GPU: ")
    else:
        assert out.stdout.splitlines()[0].split()[:2] == ["Index", "Name"]
