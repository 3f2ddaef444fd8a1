"""The ASR recipe end to end on the tiny synthetic corpus, a killed stage resumed, LibriSpeech layout."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from asr_kd.asr.recipe import AsrRecipe, default_config_path, load_asr_config
from asr_kd.cli import main
from asr_kd.data.manifest import read_manifest
from asr_kd.distill import TeacherCache
from asr_kd.models.acoustic import CTCAcousticModel
from asr_kd.models.bundle import load_bundle

CONFIG = str(default_config_path("synth_en"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    exp = tmp_path_factory.mktemp("tiny")
    overrides = [f"exp_dir={exp}", "threads=2", "students.kd.hint_weight=0.5"]  # hints on: tested end to end
    assert main(["run", CONFIG, "--preset", "tiny", *[a for o in overrides for a in ("--set", o)]]) == 0
    cfg = load_asr_config(CONFIG, "tiny", overrides)
    return AsrRecipe(cfg)


@pytest.mark.slow  # an end-to-end recipe run
def test_teachers_learn_and_every_row_is_reported(tiny):
    for name in ("teacher-0", "teacher-1", "guided-1"):
        h = json.loads((tiny.exp / "models" / name / "history.json").read_text())
        epochs = sorted(int(e) for e in h)
        assert epochs == list(range(1, tiny.cfg["train"]["epochs"] + 1))
        assert h[str(epochs[-1])]["train_loss"] < 0.8 * h["1"]["train_loss"], h
    results = json.loads((tiny.exp / "results.json").read_text())
    systems = [r["system"] for r in results["rows"]]
    assert systems == [name for name, _ in tiny.model_rows()]
    assert {
        "teacher-0",
        "teacher-1",
        "guided-1",
        "ensemble",
        "ensemble-guided",
        "student-scratch",
        "student-kd",
        "student-kd-guided",
        "student-sequence",
        "student-kd-x1",
    } == set(systems)
    for row in results["rows"]:
        assert 0 <= row["wer"] <= 5 and 0 <= row["cer"] <= 5 and row["rtf"] > 0 and row["parameters"] > 0
        assert 0 <= row["beam_wer"] <= 5 and row["rtf_batched"] > 0
    teacher, student = results["rows"][0], results["rows"][systems.index("student-kd")]
    assert student["parameters"] < 0.5 * teacher["parameters"]  # half the width: about a third of the weights
    assert results["rows"][systems.index("student-kd-x1")]["parameters"] == teacher["parameters"]
    h0 = json.loads((tiny.exp / "models" / "teacher-0" / "history.json").read_text())
    assert teacher["updates"] == sum(e["batches"] for e in h0.values()) > 0  # optimiser steps, every epoch
    assert results["rows"][systems.index("ensemble")]["updates"] is None
    assert set(results["targets"]) == {"ensemble", "ensemble-guided"}
    t = results["targets"]["ensemble"]
    wers = {r["system"]: r["wer"] for r in results["rows"]}
    gap = t["mean_teacher_wer"] - wers["ensemble"]  # 0 when the tiny models transcribe nothing right
    recovered = t["student-kd-x1_recovered_of_mean_teacher_gap"]
    if gap:
        assert recovered == pytest.approx((t["mean_teacher_wer"] - wers["student-kd-x1"]) / gap, abs=1e-4)
    else:
        assert recovered is None
    assert "student-kd-x1_recovered_of_mean_teacher_gap" not in results["targets"]["ensemble-guided"]
    md = (tiny.exp / "RESULTS.md").read_text()
    assert all(f"| {s} |" in md for s in systems)
    assert (tiny.exp / "plots" / "training_curves.png").stat().st_size > 1000
    assert (tiny.exp / "score" / "student-kd.hyp.trn").read_text().count("(") == 10
    # beam search only outputs words of the training transcripts
    train_words = {w for t in tiny.texts("train").values() for w in t.split()}
    beam_words = {
        w
        for line in (tiny.exp / "score" / "student-kd.beam.hyp.trn").read_text().splitlines()
        for w in line.rsplit("(", 1)[0].split()
    }
    assert beam_words <= train_words


@pytest.mark.slow  # an end-to-end recipe run
def test_cache_keys_are_the_training_manifest_ids(tiny):
    train_ids = {e.id for e in read_manifest(tiny.exp / "corpus" / "train.csv")}
    for name in ("ensemble", "ensemble-guided"):
        cache = TeacherCache(tiny.exp / "ensembles" / name / "cache", fingerprint=tiny.cache_fingerprint(name))
        assert set(cache.ids()) == train_ids
        feats = tiny.feats("train")
        assert {i: cache.num_frames(i) for i in train_ids} == {i: _subsampled(len(feats[i])) for i in train_ids}


@pytest.mark.slow  # an end-to-end recipe run
def test_a_transfer_set_is_cached_by_id_and_taught_to_the_students(tiny, tmp_path, monkeypatch):
    import shutil

    from asr_kd.asr import brain

    exp = tmp_path / "exp"
    shutil.copytree(tiny.exp, exp, copy_function=os.link)  # every file is replaced by a rename, never edited
    overrides = [f"exp_dir={exp}", "threads=2", "transfer.utterances=6"]
    recipe = AsrRecipe(load_asr_config(CONFIG, "tiny", overrides))
    status = dict(recipe.status())
    assert status["teacher-0"] == status["student-scratch"] == "done"  # nothing upstream of the transfer set
    assert status["transfer"] != "done" and status["student-kd"] != "done" and status["student-sequence"] != "done"
    scratch = (exp / "models" / "student-scratch" / "model.pt").stat().st_mtime_ns
    seen: list[str] = []
    real_loss = brain.CTCBrain._distillation_loss

    def spy(self, logits, out_lengths, ctc, ids):
        seen.extend(ids)
        return real_loss(self, logits, out_lengths, ctc, ids)

    monkeypatch.setattr(brain.CTCBrain, "_distillation_loss", spy)
    sets = [a for o in overrides for a in ("--set", o)]
    assert main(["run", CONFIG, "--preset", "tiny", *sets, "--stop-stage", "student-sequence"]) == 0

    transfer_ids = {e.id for e in read_manifest(exp / "transfer" / "corpus" / "transfer.csv")}
    train_ids = set(recipe.texts("train"))
    assert len(transfer_ids) == 6 and not transfer_ids & train_ids
    train_voices = {e.spk_id for e in read_manifest(exp / "corpus" / "train.csv")}
    assert {e.spk_id for e in read_manifest(exp / "transfer" / "corpus" / "transfer.csv")} <= train_voices
    cache = TeacherCache(exp / "ensembles" / "ensemble" / "cache", fingerprint=recipe.cache_fingerprint("ensemble"))
    assert set(cache.ids()) == train_ids | transfer_ids
    feats = recipe.ctx.exp.feats("transfer")
    assert {i: cache.num_frames(i) for i in transfer_ids} == {i: _subsampled(len(feats[i])) for i in transfer_ids}
    assert transfer_ids <= set(seen) and train_ids <= set(seen)  # the distilled students read both by ID
    assert transfer_ids <= set(recipe.ctx.exp.train_hyps("ensemble"))  # the sequence student's transcripts
    assert (exp / "models" / "student-scratch" / "model.pt").stat().st_mtime_ns == scratch
    assert recipe.ctx.plan.spec("student-kd").transfer and not recipe.ctx.plan.spec("student-scratch").transfer


@pytest.mark.slow  # an end-to-end recipe run on the tiny experiment
def test_small_data_and_online_stages_end_to_end(tiny, tmp_path, monkeypatch):
    import shutil

    from asr_kd.asr import brain
    from asr_kd.asr.data import draw_subset
    from asr_kd.io import read_json

    exp = tmp_path / "exp"
    shutil.copytree(tiny.exp, exp, copy_function=os.link)  # every file is replaced by a rename, never edited
    overrides = [f"exp_dir={exp}", "threads=2", "students.kd.hint_weight=0.5"]
    overrides += [
        "small_data.share=0.25",
        "small_data.epochs=3",
        "online.enabled=true",
        "small_data.kd={targets: live, hard_weight: 0.0, mixup: 1.0}",
        "small_data.align_with=teacher-1",  # frame labels from a full-data model outside the compared rows
    ]
    recipe = AsrRecipe(load_asr_config(CONFIG, "tiny", overrides))
    status = dict(recipe.status())
    assert status["student-kd"] == status["teacher-0"] == "done" and status["small-hard"] != "done"
    seen: list[str] = []
    live: list[tuple[str, bool, float]] = []  # (model, its soft targets came from live teachers, their mixup)
    real_step = brain.CTCBrain.compute_objectives

    def spy(self, predictions, batch, stage):
        if stage == brain.sb.Stage.TRAIN:
            seen.extend(batch.id)
            if getattr(self.hparams, "kd", None) is not None:
                live.append((self.hparams.name, self._live is not None, getattr(self.hparams, "live_mixup", 0.0)))
        return real_step(self, predictions, batch, stage)

    monkeypatch.setattr(brain.CTCBrain, "compute_objectives", spy)
    sets = [a for o in overrides for a in ("--set", o)]
    assert main(["run", CONFIG, "--preset", "tiny", *sets]) == 0

    drawn = draw_subset(list(recipe.texts("train")), 0.25, 0)
    assert len(drawn) == 10 and set(seen) == set(drawn)  # both models, only the drawn utterances
    assert set(live) == {("small-soft", True, 1.0)}  # small_data.kd's live mixup, for small-soft alone
    soft, hard = recipe.ctx.exp.info("small-soft"), recipe.ctx.exp.info("small-hard")
    assert soft["selected"] == "last" and soft["best_epoch"] == 3 and "selected" not in hard
    table = read_json(exp / "score" / "small_data.json")
    rows = {r["system"]: r for r in table["rows"]}
    assert set(rows) == {"teacher-0", "small-hard", "small-soft", "ensemble"} and table["labels"] == "teacher-1"
    for r in rows.values():
        assert 0 <= r["train_frame_accuracy"] <= 1 and 0 <= r["test_agreement"] <= 1
    assert rows["teacher-0"]["test_agreement"] == 1.0  # teacher 0 against itself
    assert rows["small-hard"]["wer"] == read_json(exp / "score" / "small-hard.json")["wer"]
    assert "Table 5" in (exp / "RESULTS.md").read_text() and (exp / "plots" / "small_data.png").exists()
    results = read_json(exp / "results.json")  # the online peers, their ensemble and student are scored rows
    scored = {r["system"] for r in results["rows"]}
    assert {"online-peer-0", "online-peer-1", "online-ensemble", "online-student"} <= scored
    online = results["online"]
    assert online["student_wer"] == read_json(exp / "score" / "online-student.json")["wer"]
    assert online["cpu_s"]["online"] > 0 and "Online distillation" in (exp / "RESULTS.md").read_text()
    assert (
        load_bundle(exp / "models" / "online-student").parameters
        == load_bundle(exp / "models" / "student-kd").parameters
    )


def _conv_out(n: int, kernel: int = 3, stride: int = 2, padding: int = 1) -> int:
    """Output length of one convolution along time: floor((n + 2 * padding - kernel) / stride) + 1."""
    return (n + 2 * padding - kernel) // stride + 1


def _subsampled(n: int) -> int:
    """Frames after the acoustic model's two (kernel 3, stride 2, padding 1) convolutions."""
    return _conv_out(_conv_out(n))


def test_subsampling_frame_count_follows_the_conv_arithmetic():
    from asr_kd.models.acoustic import AcousticConfig

    model = CTCAcousticModel(AcousticConfig(num_classes=5, n_mels=8, conv_channels=2, hidden=4, layers=1)).eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [(3, 2, 1)] * 2
    lengths = [1, 2, 3, 4, 5, 7, 8, 9, 13, 100, 101, 102, 103]
    assert [_subsampled(n) for n in lengths] == [1, 1, 1, 1, 2, 2, 2, 3, 4, 25, 26, 26, 26]
    with torch.no_grad():
        for n in lengths:  # one utterance alone: the padded batch is exactly its length
            logits, out = model(torch.randn(1, n, 8), torch.tensor([n]))
            assert logits.shape[1] == out.item() == _subsampled(n), n
        logits, out = model(torch.randn(len(lengths), max(lengths), 8), torch.tensor(lengths))
    assert out.tolist() == [_subsampled(n) for n in lengths]
    assert logits.shape[1] == _subsampled(max(lengths))


def _test_ctc_loss(recipe: AsrRecipe, model) -> float:
    tok = recipe.tokenizer()
    feats, texts = recipe.feats("test"), recipe.texts("test")
    losses = []
    for utt, x in feats.items():
        lp, n = model.log_probs(x[None].float(), torch.tensor([len(x)]))
        target = torch.tensor([tok.encode(texts[utt])])
        losses.append(float(F.ctc_loss(lp.transpose(0, 1), target, n, torch.tensor([target.shape[1]]))))
    return sum(losses) / len(losses)


@pytest.mark.slow  # an end-to-end recipe run
def test_distilled_student_beats_an_untrained_one(tiny):
    student = load_bundle(tiny.exp / "models" / "student-kd")
    untrained = load_bundle(tiny.exp / "models" / "student-kd")
    torch.manual_seed(0)
    untrained.model = CTCAcousticModel(untrained.model.cfg)
    trained_loss, untrained_loss = _test_ctc_loss(tiny, student), _test_ctc_loss(tiny, untrained)
    assert trained_loss < 0.8 * untrained_loss, (trained_loss, untrained_loss)


@pytest.mark.slow  # an end-to-end recipe run
def test_evaluate_and_transcribe_a_trained_model(tiny, tmp_path, capsys, monkeypatch):
    import tempfile

    model = str(tiny.exp / "models" / "student-kd")
    manifest = str(tiny.exp / "corpus" / "test.csv")
    assert main(["evaluate", model, manifest, "--out", str(tmp_path / "scores")]) == 0
    out = capsys.readouterr().out
    assert "10 utterances" in out and "WER" in out
    scores = json.loads((tmp_path / "scores" / "scores.json").read_text())
    expected = json.loads((tiny.exp / "score" / "student-kd.json").read_text())
    assert scores["wer"] == pytest.approx(expected["wer"])  # the same model scores the same on the same set
    train = str(tiny.exp / "corpus" / "train.csv")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    assert main(["evaluate", model, manifest, "--beam", "8", "--lm-text", train]) == 0
    assert "10 utterances" in capsys.readouterr().out
    assert not list((tmp_path / "tmp").iterdir())  # the lexicon and LM made for it are gone
    assert main(["evaluate", model, manifest, "--lm-text", train]) == 2
    assert "need --beam" in capsys.readouterr().err
    wavs = [e.wav for e in read_manifest(manifest)[:2]]
    ensemble = f"{tiny.exp / 'models' / 'teacher-0'},{tiny.exp / 'models' / 'teacher-1'}"
    assert main(["transcribe", ensemble, *wavs]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert [line.split("\t")[0] for line in lines] == wavs
    assert main(["evaluate", model, str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err


@pytest.mark.slow  # an end-to-end recipe run
def test_an_exported_student_scores_what_its_bundle_scores(tiny, tmp_path, capsys):
    model, manifest = str(tiny.exp / "models" / "student-kd"), str(tiny.exp / "corpus" / "test.csv")
    expected = json.loads((tiny.exp / "score" / "student-kd.json").read_text())
    train = str(tiny.exp / "corpus" / "train.csv")
    for out in ("student.onnx", "student.ts"):
        assert main(["export", model, str(tmp_path / out)]) == 0
        assert main(["evaluate", str(tmp_path / out), manifest, "--out", str(tmp_path / out[-4:])]) == 0
        assert json.loads((tmp_path / out[-4:] / "scores.json").read_text())["wer"] == pytest.approx(expected["wer"])
    assert main(["export", model, str(tmp_path / "int8.onnx"), "--int8"]) == 0
    assert main(["evaluate", str(tmp_path / "int8.onnx"), manifest, "--beam", "8", "--lm-text", train]) == 0
    wavs = [e.wav for e in read_manifest(manifest)[:2]]
    assert main(["transcribe", str(tmp_path / "student.onnx"), *wavs]) == 0
    capsys.readouterr()


def _run(exp: Path, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "asr_kd",
        "run",
        CONFIG,
        "--preset",
        "tiny",
        "--set",
        f"exp_dir={exp}",
        "--set",
        "threads=1",
        "--set",
        "train.epochs=6",
        "--stop-stage",
        "teacher-0",
        *extra,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # an end-to-end recipe run
def test_a_teacher_killed_mid_training_resumes_to_the_same_model(tmp_path):
    reference = _run(tmp_path / "a")
    assert reference.wait(timeout=300) == 0, reference.stdout.read()
    victim = _run(tmp_path / "b")
    history = tmp_path / "b" / "models" / "teacher-0" / "history.json"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill it once two epochs are checkpointed, in the middle of the third
        if history.exists() and len(json.loads(history.read_text() or "{}")) >= 2:
            break
        time.sleep(0.2)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "b" / "models" / "teacher-0" / "model.pt").exists(), "killed too late to test resuming"
    resumed = _run(tmp_path / "b")
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert "resuming an interrupted run" in out and "stage 1 prepare: done already" in out
    a = torch.load(tmp_path / "a" / "models" / "teacher-0" / "model.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "models" / "teacher-0" / "model.pt", weights_only=False)
    assert a["info"]["best_epoch"] == b["info"]["best_epoch"]
    for key in a["state"]:
        assert torch.equal(a["state"][key], b["state"][key]), key


@pytest.mark.slow  # an end-to-end recipe run
def test_librispeech_config_on_a_tiny_librispeech_tree(tmp_path):
    from asr_kd.data.audio import resample
    from asr_kd.data.espeak import Espeak

    tts = Espeak()
    sentences = [
        "the cat sat on the mat",
        "a dog ran home",
        "we like green apples",
        "it is cold today",
        "she reads a book",
        "they walk to school",
    ]
    src = tmp_path / "LibriSpeech"
    for split, spk in (("train-clean-5", "19"), ("dev-clean-2", "84"), ("test-clean-2", "61")):
        ch = src / split / spk / "198"
        ch.mkdir(parents=True)
        lines = []
        for i, text in enumerate(sentences):
            wav, sr = tts.synth(text, voice="en-us+m1", rate=180)
            uid = f"{spk}-198-{i:04d}"
            sf.write(ch / f"{uid}.flac", resample(wav.astype(np.float32) / 32768, sr, 16000), 16000)
            lines.append(f"{uid} {text.upper()}")
        (ch / f"{spk}-198.trans.txt").write_text("\n".join(lines) + "\n")
    config = str(default_config_path("librispeech"))
    sets = [
        f"exp_dir={tmp_path / 'exp'}",
        f"corpus.src={src}",
        "corpus.splits.train=train-clean-5",
        "corpus.splits.valid=dev-clean-2",
        "corpus.splits.test=test-clean-2",
    ]
    assert main(["run", config, "--preset", "smoke", *[a for s in sets for a in ("--set", s)]]) == 0
    results = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert [r["system"] for r in results["rows"]] == [
        "teacher-0",
        "teacher-1",
        "ensemble",
        "student-scratch",
        "student-kd",
    ]
    assert results["corpus"]["train"]["utterances"] == 6
    # the smoke preset trains two models at a time in worker processes, each logging to its file
    assert "stage 2 teacher-0: finished" in (tmp_path / "exp" / "logs" / "teacher-0.log").read_text()
    assert (tmp_path / "exp" / "logs" / "student-kd.log").exists()
    # a wrong split name is refused with the names that exist
    bad = sets[:-1] + ["corpus.splits.test=test-other", f"exp_dir={tmp_path / 'exp2'}"]
    assert main(["run", config, "--preset", "smoke", *[a for s in bad for a in ("--set", s)]]) == 2
