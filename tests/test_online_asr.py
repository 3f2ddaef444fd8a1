"""Stage online (peers and a student in one pass): the plan, the gradients, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from speechbrain.dataio.batch import PaddedBatch

from asr_kd.asr.data import make_dataset
from asr_kd.asr.online import OnlineBrain
from asr_kd.asr.settings import AsrSettings
from asr_kd.asr.specs import ONLINE_ENSEMBLE, plan
from asr_kd.data.features import FeatureNorm, GlobalCMVN
from asr_kd.distill import DistillationLoss
from asr_kd.distill.online import OnlineDistillation
from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel


def test_the_peers_are_the_teachers_and_the_student_is_student_kd():
    s = AsrSettings.from_dict({"teachers": {"count": 3, "guidance": "none"}, "online": {"enabled": True}})
    p = plan(s)
    peers, student = p.online[:-1], p.online[-1]
    assert [m.name for m in peers] == ["online-peer-0", "online-peer-1", "online-peer-2"]
    for i, peer in enumerate(peers):
        teacher = p.spec(f"teacher-{i}")
        assert peer.seed == teacher.seed and peer.architecture(30, 80) == teacher.architecture(30, 80)
    kd = p.spec("student-kd")
    assert student.seed == kd.seed and student.architecture(30, 80) == kd.architecture(30, 80)
    assert student.ensemble == ONLINE_ENSEMBLE and student.twin == "student-scratch"
    rows = dict(p.rows())
    assert rows[ONLINE_ENSEMBLE] == [m.name for m in peers] and "online-student" in rows
    assert not plan(AsrSettings.from_dict({})).online  # off by default


def _brain(mutual: float = 0.0) -> tuple[OnlineBrain, PaddedBatch]:
    torch.manual_seed(0)
    cfg = AcousticConfig(num_classes=6, n_mels=8, hidden=6, conv_channels=2, dropout=0.0, packed=False)
    small = AcousticConfig(num_classes=6, n_mels=8, hidden=3, conv_channels=2, dropout=0.0, packed=False)
    modules = {"peer0": CTCAcousticModel(cfg), "peer1": CTCAcousticModel(cfg), "student": CTCAcousticModel(small)}
    cmvn = GlobalCMVN(8)
    cmvn.accumulate(torch.randn(2, 30, 8), torch.tensor([30, 30]))
    cmvn.finalize()
    modules["frontend"] = FeatureNorm(cmvn, None)  # no SpecAugment: the same input every call
    online = OnlineDistillation(DistillationLoss(2.0, 0.5, 1.0), mutual_weight=mutual)
    brain = OnlineBrain(
        modules=modules,
        opt_class=lambda params: torch.optim.SGD(params, lr=0.1),
        hparams={"names": ["peer0", "peer1", "student"], "online": online, "steps_per_epoch": 1},
        run_opts={"device": "cpu"},
    )
    brain._epoch, brain.step = 1, 1
    feats = {f"u{i}": torch.randn(40 + 9 * i, 8) for i in range(3)}
    ds = make_dataset(feats, {u: [1, 2, 3, 2][: 2 + i] for i, u in enumerate(feats)})
    return brain, PaddedBatch([ds[i] for i in range(3)])


def _grads(brain: OnlineBrain, batch: PaddedBatch, hard_only: bool = False) -> dict[str, list[torch.Tensor]]:
    import speechbrain as sb

    from asr_kd.asr.brain import absolute_lengths, ctc_loss

    for p in brain.modules.parameters():
        p.grad = None
    predictions = brain.compute_forward(batch, sb.Stage.TRAIN)
    if hard_only:  # each model's CTC alone
        tokens, rel = batch.tokens
        n = absolute_lengths(rel, tokens.shape[1])
        loss = sum(ctc_loss(lg.log_softmax(-1), tokens, k, n) for lg, k in predictions)
    else:
        loss = brain.compute_objectives(predictions, batch, sb.Stage.TRAIN)
    loss.backward()
    return {n: [p.grad.clone() for p in brain.modules[n].parameters()] for n in ("peer0", "peer1", "student")}


def test_the_student_learns_from_the_peers_and_never_teaches_them():
    brain, batch = _brain()
    full, hard = _grads(brain, batch), _grads(brain, batch, hard_only=True)
    for name in ("peer0", "peer1"):  # without mutual terms a peer's gradient is its CTC's alone
        for a, b in zip(full[name], hard[name], strict=True):
            torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(full["student"], hard["student"], strict=True))
    with torch.no_grad():  # another peer 0: another soft target, another student gradient
        for p in brain.modules["peer0"].parameters():
            p.add_(0.5 * torch.randn_like(p))
    moved = _grads(brain, batch)
    assert any(not torch.allclose(a, b) for a, b in zip(full["student"], moved["student"], strict=True))


def test_mutual_terms_make_each_peer_learn_from_the_others():
    brain, batch = _brain(mutual=1.0)
    full, hard = _grads(brain, batch), _grads(brain, batch, hard_only=True)
    for name in ("peer0", "peer1"):
        assert any(not torch.allclose(a, b) for a, b in zip(full[name], hard[name], strict=True))


def _run_online(exp, *extra: str) -> subprocess.Popen:
    from asr_kd.asr.recipe import default_config_path

    sets = [f"exp_dir={exp}", "threads=1", "train.epochs=5", "online.enabled=true", "teachers.guidance=none"]
    sets += ["online.burn_in=0.5"]
    cmd = [sys.executable, "-m", "asr_kd", "run", str(default_config_path("synth_en")), "--preset", "tiny"]
    cmd += [a for s in sets for a in ("--set", s)] + list(extra)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # two tiny online runs, one killed mid-epoch and resumed
def test_an_online_run_killed_mid_training_resumes_to_the_same_models(tmp_path):
    for exp in (tmp_path / "a", tmp_path / "b"):
        prep = _run_online(exp, "--stop-stage", "prepare")
        assert prep.wait(timeout=300) == 0, prep.stdout.read()
    reference = _run_online(tmp_path / "a", "--stage", "online", "--stop-stage", "online")
    assert reference.wait(timeout=600) == 0, reference.stdout.read()
    victim = _run_online(tmp_path / "b", "--stage", "online", "--stop-stage", "online")
    history = tmp_path / "b" / "models" / "online" / "history.json"
    deadline = time.time() + 400
    while time.time() < deadline:  # kill it once two epochs are checkpointed, in the middle of the third
        if history.exists() and len(json.loads(history.read_text() or "{}")) >= 2:
            break
        time.sleep(0.2)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "b" / "models" / "online-student" / "model.pt").exists(), "killed too late"
    resumed = _run_online(tmp_path / "b", "--stage", "online", "--stop-stage", "online")
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out
    assert "resuming an interrupted run" in out
    for name in ("online-peer-0", "online-peer-1", "online-student"):
        a = torch.load(tmp_path / "a" / "models" / name / "model.pt", weights_only=False)
        b = torch.load(tmp_path / "b" / "models" / name / "model.pt", weights_only=False)
        assert a["info"]["best_epoch"] == b["info"]["best_epoch"], name
        for key in a["state"]:
            assert torch.equal(a["state"][key], b["state"][key]), (name, key)


def test_the_online_preset_runs_the_two_pass_pipeline_and_the_online_stage():
    from asr_kd.asr.recipe import AsrRecipe, default_config_path, load_asr_config

    cfg = load_asr_config(default_config_path("synth_en"), "online")
    names = [s.name for s in AsrRecipe(cfg).stages()]
    assert names.index("ensemble") < names.index("student-kd") < names.index("online") < names.index("score")
    assert cfg["corpus"]["synth"]["preset"] == "full" and cfg["train"]["epochs"] == 10
