"""Framework adapters: pytorch (importable classes and classes from a user's script), torchscript,
picklable objects, and external modules."""

import subprocess
import sys
import textwrap
import warnings

import pytest

import raystore
from raystore.exceptions import FrameworkMismatch, InvalidArgument, MissingDependency

torch = pytest.importorskip("torch")


def test_pytorch_importable_class_round_trip():
    from modeldefs import TinyNet

    torch.manual_seed(0)
    net = TinyNet().eval()
    m = raystore.pytorch.save_model("tiny", net, signatures={"__call__": {"batchable": True}, "embed": {}})
    assert m.info.module == "raystore.pytorch"
    assert m.info.context["framework_versions"]["torch"].startswith("2.")
    assert set(m.info.signatures) == {"__call__", "embed"}
    loaded = raystore.pytorch.load_model("tiny:latest", device_id="cpu")
    assert type(loaded).__name__ == "TinyNet"
    x = torch.randn(5, 4)
    torch.testing.assert_close(loaded(x), net(x))
    assert next(loaded.parameters()).device.type == "cpu"


def test_pytorch_default_signature_and_type_check():
    from modeldefs import TinyNet

    m = raystore.pytorch.save_model("tiny", TinyNet())
    assert {k: (s.batchable, s.batch_dim) for k, s in m.info.signatures.items()} == {"__call__": (False, (0, 0))}
    with pytest.raises(InvalidArgument, match="expects a torch.nn.Module"):
        raystore.pytorch.save_model("tiny", {"state": 1})
    with pytest.raises(InvalidArgument, match="has no method 'predict'"):
        raystore.pytorch.save_model("tiny", TinyNet(), signatures={"predict": {}})


def test_pytorch_runner_converts_inputs_to_the_models_floats_and_keeps_integers_as_ids():
    import numpy as np
    import pandas as pd
    from modeldefs import TinyEmbed, TinyNet

    torch.manual_seed(0)
    net = TinyNet().eval()
    runner = raystore.pytorch.save_model("tiny", net).to_runner().init_local()
    x = np.random.default_rng(0).standard_normal((5, 4))  # float64, numpy's default
    out = runner.run(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, net(torch.from_numpy(x).float()))
    torch.testing.assert_close(runner.run(pd.DataFrame(x, columns=list("abcd"))), out)  # a DataFrame too
    frozen = x.astype(np.float32)
    frozen.flags.writeable = False  # as arrays read off Ray's object store are
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "not writable" warning, once a process, is not raised
        torch.testing.assert_close(runner.run(frozen), out)
    assert frozen.flags.writeable is False and np.array_equal(frozen, x.astype(np.float32))
    with pytest.raises(InvalidArgument, match=r"computes in float32, but got int64 input.*x.astype\('float32'\)"):
        runner.run(np.arange(8).reshape(2, 4))
    with pytest.raises(InvalidArgument, match="column types .* cannot become one tensor"):
        runner.run(pd.DataFrame({"a": [1.0], "b": ["text"], "c": [1.0], "d": [1.0]}))

    embed = TinyEmbed().eval()
    ids = np.array([[1, 2, 3], [4, 5, 9]])  # int64 token ids: passed on as integers
    runner = raystore.pytorch.save_model("embed", embed).to_runner().init_local()
    torch.testing.assert_close(runner.run(ids), embed(torch.from_numpy(ids)))


def test_pytorch_bad_device_ids():
    from modeldefs import TinyNet

    raystore.pytorch.save_model("tiny", TinyNet())
    with pytest.raises(InvalidArgument, match="is not a torch device"):
        raystore.pytorch.load_model("tiny", device_id="tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(MissingDependency, match="no CUDA device is usable"):
            raystore.pytorch.load_model("tiny", device_id="cuda:0")


SCRIPT = textwrap.dedent(
    """
    import torch, raystore

    class ScriptNet(torch.nn.Module):  # defined in __main__: not importable by any other process
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.arange(12, dtype=torch.float32).reshape(4, 3))

        def forward(self, x):
            return x @ self.w + self.bonus()

        def bonus(self):
            return 0.5

    m = raystore.pytorch.save_model("script_net", ScriptNet())
    print(m.tag)
    """
)


def test_pytorch_class_defined_in_user_script(tmp_path, subprocess_env):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script)], env=subprocess_env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    tag = out.stdout.strip()
    loaded = raystore.pytorch.load_model(tag)  # this process has no ScriptNet class anywhere
    x = torch.ones(2, 4)
    torch.testing.assert_close(loaded(x), torch.full((2, 3), 0.5) + torch.tensor([18.0, 22.0, 26.0]))


def test_external_modules_are_saved_by_value(tmp_path, subprocess_env):
    (tmp_path / "my_model_def.py").write_text(
        textwrap.dedent(
            """
            import torch

            class Doubler(torch.nn.Module):
                def forward(self, x):
                    return 2 * x
            """
        )
    )
    (tmp_path / "train.py").write_text(
        "import raystore, my_model_def\n"
        "m = raystore.pytorch.save_model('doubler', my_model_def.Doubler(), external_modules=[my_model_def])\n"
        "print(m.tag)\n"
    )
    out = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, env=subprocess_env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "my_model_def" not in sys.modules
    loaded = raystore.pytorch.load_model(out.stdout.strip())
    torch.testing.assert_close(loaded(torch.tensor([1.0, 2.0])), torch.tensor([2.0, 4.0]))


def test_torchscript_round_trip():
    from modeldefs import TinyNet

    torch.manual_seed(1)
    scripted = torch.jit.script(TinyNet().eval())
    m = raystore.torchscript.save_model("ts", scripted)
    assert m.info.module == "raystore.torchscript"
    assert list(m.info.signatures) == ["__call__"]
    loaded = raystore.torchscript.load_model("ts")
    x = torch.randn(3, 4)
    torch.testing.assert_close(loaded(x), scripted(x))
    with pytest.raises(InvalidArgument, match="save it with raystore.torchscript"):
        raystore.pytorch.save_model("ts", scripted)
    with pytest.raises(InvalidArgument, match="expects a torch.jit.ScriptModule"):
        raystore.torchscript.save_model("ts", TinyNet())
    with pytest.raises(FrameworkMismatch, match="saved with raystore.torchscript, not raystore.pytorch"):
        raystore.pytorch.load_model("ts")


def test_picklable_model_round_trip():
    class Scorer:
        def __init__(self, k):
            self.k = k

        def __call__(self, x):
            return [v * self.k for v in x]

        def score(self, x):
            return sum(self(x))

    m = raystore.picklable_model.save_model("scorer", Scorer(3), signatures={"__call__": {}, "score": {}})
    loaded = raystore.picklable_model.load_model(m.tag)
    assert loaded([1, 2]) == [3, 6] and loaded.score([1, 2]) == 9
    with pytest.raises(TypeError, match="takes no options"):
        raystore.picklable_model.load_model(m.tag, device_id="cpu")


@pytest.mark.gpu
def test_pytorch_loads_onto_cuda():
    from modeldefs import TinyNet

    net = TinyNet().eval()
    raystore.pytorch.save_model("tiny", net)
    loaded = raystore.pytorch.load_model("tiny", device_id="cuda:0")
    assert next(loaded.parameters()).device.type == "cuda"
    x = torch.randn(4, 4)
    torch.testing.assert_close(loaded(x.cuda()).cpu(), net(x))
