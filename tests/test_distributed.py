"""Data-parallel training under torchrun (gloo, 2 CPU processes) against one process.

tests/scripts/ddp_train.py trains a tiny CTC model with ``train_ctc``, with no dropout and
no SpecAugment. Two processes split every global batch of 8 into two shares of 4, and DDP
averages their gradients: the mean of two equal-sized shares' mean losses is the batch's mean
loss, so each step's gradient is one process's gradient up to the order of floating-point
sums (all-reduce adds the shares' gradients in another order). Such differences are ~1e-7
relative per step; after the 15 steps here they stay far below 1e-4, the tolerance used.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "ddp_train.py"
EPOCHS = 3


def _env(slow: float = 0.0) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "DDP_TEST_SLOW": str(slow)}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def _torchrun(out: Path, epochs: int = EPOCHS, slow: float = 0.0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.Popen(
        [*cmd, str(SCRIPT), str(out), str(epochs)],
        env=_env(slow),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> None:
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _weights(out: Path) -> dict:
    return torch.load(out / "model.pt", weights_only=False)["state"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    two = _torchrun(root / "two")
    one = subprocess.run(
        [sys.executable, str(SCRIPT), str(root / "one"), str(EPOCHS)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-2000:]
    _finish(two)
    return root


def test_two_processes_follow_the_loss_curve_of_one_with_the_same_global_batch(runs):
    one = json.loads((runs / "one" / "history.json").read_text())
    two = json.loads((runs / "two" / "history.json").read_text())
    assert sorted(one) == sorted(two) == [str(e) for e in range(1, EPOCHS + 1)]
    for epoch in one:
        for key in ("train_loss", "valid_loss"):
            assert two[epoch][key] == pytest.approx(one[epoch][key], rel=1e-4), (epoch, key)
    assert one["1"]["train_loss"] > one[str(EPOCHS)]["train_loss"] * 1.5, "the model did not learn"
    a, b = _weights(runs / "one"), _weights(runs / "two")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_weights(runs, tmp_path):
    out = tmp_path / "killed"
    proc = _torchrun(out, slow=0.05)  # ~1 s per epoch, so the kill lands mid-run
    deadline = time.time() + 300
    while time.time() < deadline:  # kill every process once an epoch is checkpointed
        hist = out / "history.json"
        if hist.exists() and len(json.loads(hist.read_text())) >= 1 and list((out / "ckpt").glob("CKPT+*")):
            break
        time.sleep(0.05)
    for pid in [proc.pid, *_descendants(proc.pid)]:  # as a node failure would: no clean-up anywhere
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()
    assert not (out / "model.pt").exists(), "killed too late to test resuming"
    assert len(json.loads((out / "history.json").read_text())) < EPOCHS
    _finish(_torchrun(out))
    a, b = _weights(runs / "two"), _weights(out)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow  # an end-to-end recipe run under torchrun
def test_the_tiny_recipe_runs_under_torchrun(tmp_path):
    """Two processes: rank 0 prepares, both train each teacher and student together, each
    caches half of the ensemble's utterances and rank 0 joins the halves."""
    from asr_kd.asr.recipe import AsrRecipe, default_config_path, load_asr_config
    from asr_kd.distill import TeacherCache

    config, sets = str(default_config_path("synth_en")), [f"exp_dir={tmp_path}", "threads=1", "train.epochs=3"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "asr_kd"]
    cmd += ["run", config, "--preset", "tiny", *[a for s in sets for a in ("--set", s)], "--stop-stage", "student-kd"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recipe = AsrRecipe(load_asr_config(config, "tiny", sets))
    status = dict(recipe.status())
    assert status["teacher-0"] == status["ensemble"] == status["student-kd"] == "done"
    cache = TeacherCache(
        tmp_path / "ensembles" / "ensemble" / "cache", fingerprint=recipe.cache_fingerprint("ensemble")
    )
    assert sorted(cache.ids()) == sorted(recipe.texts("train"))
    assert not (tmp_path / "ensembles" / "ensemble" / "cache" / "parts").exists()
    hyps = json.loads((tmp_path / "ensembles" / "ensemble" / "train_hyps.json").read_text())
    assert sorted(hyps) == sorted(recipe.texts("train"))
    assert (tmp_path / "models" / "student-kd" / "model.pt").exists()
    assert "waiting" not in proc.stderr  # no process waited on a stage lock of its own run
    # online distillation: two peers and a student, every model data-parallel over both processes
    online = ["--stage", "online", "--stop-stage", "online", "--set", "online.enabled=true"]
    proc = subprocess.run([*cmd[:-2], *online], env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    history = json.loads((tmp_path / "models" / "online" / "history.json").read_text())
    assert sorted(history) == ["1", "2", "3"]
    assert all((tmp_path / "models" / n / "model.pt").exists() for n in ("online-peer-0", "online-student"))
