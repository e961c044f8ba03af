"""A version is complete or absent: under concurrent processes, and when a save is killed."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from store_worker import NAME, check_loaded

import raystore
from raystore._private.store import ModelStore


def test_eight_processes_save_list_load_delete(tmp_path, subprocess_env, store_home):
    start = tmp_path / "go"
    procs = []
    for worker in range(8):
        result = tmp_path / f"result-{worker}.json"
        cmd = [sys.executable, "-m", "store_worker", str(worker), "25", str(start), str(result)]
        procs.append((subprocess.Popen(cmd, env=subprocess_env, stderr=subprocess.PIPE, text=True), result))
    time.sleep(1.5)  # let every worker import raystore, then release them together
    start.touch()
    results = []
    for proc, result in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(result.read_text()))

    saved = {t for r in results for t in r["saved"]}
    deleted = [t for r in results for t in r["deleted"]]
    assert len(saved) == sum(len(r["saved"]) for r in results)  # no version was handed out twice
    assert len(deleted) == len(set(deleted))  # each version was deleted by exactly one worker
    assert set(deleted) <= saved
    assert sum(r["loads"] for r in results) > 0 and sum(r["lists"] for r in results) > 0
    print({k: sum(len(r[k]) if isinstance(r[k], list) else r[k] for r in results) for k in results[0]})

    store = ModelStore(str(store_home))
    visible = {str(m.tag) for m in raystore.models.list(NAME)}
    assert visible == saved - set(deleted)  # nothing lost, nothing resurrected
    for tag in visible:
        check_loaded(store.verify(tag))


SLOW_SAVE = textwrap.dedent(
    """
    import os, sys, time
    import raystore

    class Stall:
        def __reduce__(self):  # runs in the middle of writing saved_model.pkl
            open(sys.argv[1], "w").close()
            time.sleep(60)
            return (Stall, ())

    raystore.picklable_model.save_model(
        "victim", [os.urandom(3_000_000), Stall()], signatures={"__len__": {}}
    )
    """
)


def test_killed_mid_save_leaves_no_version(tmp_path, subprocess_env, store_home):
    raystore.picklable_model.save_model("victim", ["before"], signatures={"__len__": {}})
    script, marker = tmp_path / "slow_save.py", tmp_path / "writing"
    script.write_text(SLOW_SAVE)
    proc = subprocess.Popen([sys.executable, str(script), str(marker)], env=subprocess_env)
    deadline = time.time() + 60
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, "the save never reached the model file"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    # the half-written file exists, but only in the staging area
    partial = list((store_home / ".tmp").glob("stage-*/saved_model.pkl"))
    assert len(partial) == 1 and partial[0].stat().st_size >= 3_000_000
    assert [m.tag.name for m in raystore.models.list()] == ["victim"]
    assert raystore.picklable_model.load_model("victim:latest") == ["before"]
    after = raystore.picklable_model.save_model("victim", ["after"], signatures={"__len__": {}})
    assert raystore.models.get("victim").tag == after.tag


LOOP_SAVE = textwrap.dedent(
    """
    import os, raystore
    while True:
        raystore.picklable_model.save_model(
            "looped", os.urandom(2_000_000), custom_objects={"n": 1}, signatures={"__len__": {}}
        )
    """
)


def test_kill_at_random_moments_never_exposes_a_partial_version(tmp_path, subprocess_env, store_home):
    script = tmp_path / "loop_save.py"
    script.write_text(LOOP_SAVE)
    store = ModelStore(str(store_home))
    for delay in (0.9, 1.13, 1.37, 1.61, 1.89):
        proc = subprocess.Popen([sys.executable, str(script)], env=subprocess_env)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for model in raystore.models.list("looped"):
            store.verify(model.tag)
            assert len(raystore.picklable_model.load_model(model)) == 2_000_000
    assert len(raystore.models.list("looped")) >= 1
