"""Wrong inputs a user gives each command: one line naming the file or key and the fix, exit 2,
no traceback, and nothing already finished is deleted."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_kd.asr.recipe import default_config_path
from asr_kd.cli import main
from asr_kd.data.features import GlobalCMVN
from asr_kd.data.tokenizer import train_tokenizer
from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel
from asr_kd.models.bundle import save_bundle

CONFIG = str(default_config_path("synth_en"))


def fails(capsys, *argv: str) -> str:
    """Run the CLI; it must exit 2 with one line on stderr and no traceback. Returns that line."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    (root / "audio").mkdir()
    sf.write(root / "audio" / "a.wav", (0.1 * np.random.default_rng(0).standard_normal(16000)).astype("float32"), 16000)
    sf.write(root / "audio" / "empty.wav", np.zeros(0, dtype="float32"), 16000)
    assert (root / "audio" / "empty.wav").stat().st_size == 44  # a valid header, zero samples
    (root / "audio" / "cut.wav").write_bytes((root / "audio" / "a.wav").read_bytes()[:2000])
    (root / "audio" / "text.wav").write_text("not audio")
    for name, texts in (("A", ["HELLO WORLD"]), ("B", ["XYZ"])):
        tok = train_tokenizer(texts, root / f"tok{name}", kind="char")
        model = CTCAcousticModel(
            AcousticConfig(num_classes=tok.vocab_size + 1, n_mels=80, conv_channels=4, hidden=4, layers=1)
        )
        cmvn = GlobalCMVN(80)
        cmvn.accumulate(torch.randn(1, 10, 80), torch.tensor([10]))
        cmvn.finalize()
        (root / f"model{name}").mkdir()
        save_bundle(
            root / f"model{name}" / "model.pt",
            model,
            cmvn,
            {"fingerprint": {"features": {"n_mels": 80}, "tokenizer": name}},
            tokenizer_dir=root / f"tok{name}",
        )
    (root / "m.csv").write_text(f"ID,duration,wav,spk_id,wrd\nu1,1.0,{root}/audio/a.wav,s,HELLO\n")
    (root / "other.csv").write_text("utt,path,text\nx,a.wav,HI\n")
    return root


# ----------------------------------------------------------------------------- prepare


def test_prepare_folder_skips_zero_length_truncated_and_non_audio_files_by_name(tmp_path, capsys):
    src = tmp_path / "corpus" / "spk"
    src.mkdir(parents=True)
    sf.write(src / "good.wav", np.zeros(8000, dtype="float32"), 16000)
    sf.write(src / "empty.wav", np.zeros(0, dtype="float32"), 16000)
    (src / "cut.wav").write_bytes((src / "good.wav").read_bytes()[:1000])
    (src / "junk.wav").write_text("hello")
    for name in ("good", "empty", "cut", "junk"):
        (src / f"{name}.txt").write_text("hello")
    assert main(["prepare", "folder", str(tmp_path / "corpus"), str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    rows = (tmp_path / "out" / "all.csv").read_text().splitlines()
    assert len(rows) == 2 and "good.wav" in rows[1]
    assert f"{src / 'empty.wav'}: zero-length audio" in err
    assert f"{src / 'cut.wav'}: truncated" in err
    assert f"{src / 'junk.wav'}: not a readable audio file" in err


@pytest.mark.parametrize(
    "kind, src, expect",
    [
        ("folder", "nonexist", "nonexist: not found"),
        ("folder", "audio/a.wav", "a file, not a folder"),
        ("csv", "nonexist.csv", "nonexist.csv: not found"),
        ("csv", "audio", "not a file"),
        ("csv", "other.csv", "no 'wav' column; map one with --map"),
    ],
)
def test_prepare_refuses_bad_sources(files, tmp_path, capsys, kind, src, expect):
    assert expect in fails(capsys, "prepare", kind, str(files / src), str(tmp_path / "out"))


# ----------------------------------------------------------------------------- synth, validate


def test_synth_refuses_a_missing_text_file_and_a_file_as_output(files, tmp_path, capsys):
    assert "nonexist.txt: text file not found" in fails(
        capsys, "synth", str(tmp_path / "s"), "--preset", "tiny", "--text", str(files / "nonexist.txt")
    )
    line = fails(capsys, "synth", str(files / "audio" / "a.wav"), "--preset", "tiny")
    assert "a.wav" in line and "choose another path" in line


def test_validate_accepts_a_model_as_tokenizer_and_refuses_a_missing_one(files, capsys):
    assert main(["validate", str(files / "m.csv"), "--tokenizer", str(files / "modelA"), "--quiet"]) == 0
    capsys.readouterr()
    assert "nonexist: tokenizer not found; give a tokenizer folder" in fails(
        capsys, "validate", str(files / "m.csv"), "--tokenizer", str(files / "nonexist")
    )


@pytest.mark.parametrize(
    "path, expect",
    [
        ("nonexist.csv", "manifest not found"),
        ("audio", "Is a directory"),
        ("audio/a.wav", "a binary file, not a CSV or JSONL manifest"),
        ("other.csv", "missing column(s)"),
    ],
)
def test_validate_names_what_is_wrong_with_the_file(files, capsys, path, expect):
    assert main(["validate", str(files / path), "--quiet"]) == 1
    assert expect in capsys.readouterr().out


# ----------------------------------------------------------------------------- run: config


def test_run_refuses_wrong_types_misspelt_keys_and_wrong_paths(files, tmp_path, capsys):
    exp = f"exp_dir={tmp_path / 'exp'}"
    line = fails(capsys, "run", CONFIG, "--preset", "tiny", "--set", exp, "--set", "train.epochs=six")
    assert "train.epochs: expected a number (like" in line and "got text 'six'" in line
    assert not (tmp_path / "exp").exists()  # refused before anything ran
    assert "unknown key 'train.epoch'" in fails(capsys, "run", CONFIG, "--set", "train.epoch=6")
    assert "expected true/false" in fails(capsys, "run", CONFIG, "--set", "progress=7")
    mine = tmp_path / "mine.yaml"
    mine.write_text(Path(CONFIG).read_text().replace("\n  train:", "\n  trian:", 1))
    line = fails(capsys, "run", str(mine), "--preset", "tiny")
    assert "mine.yaml" in line and "unknown key 'train'" in line and "'trian'" in line  # the preset's key
    assert "no such config file" in fails(capsys, "run", str(tmp_path / "nonexist.yaml"))
    assert "a folder, not a config file" in fails(capsys, "run", str(files / "audio"))
    assert "needs a top-level 'base:'" in fails(capsys, "run", str(files / "m.csv"))


def test_a_full_disk_mid_run_is_one_line_and_keeps_the_finished_stages(tmp_path, capsys, monkeypatch):
    from asr_kd.asr import train as train_mod

    args = ["run", CONFIG, "--preset", "tiny", "--set", f"exp_dir={tmp_path / 'exp'}", "--set", "threads=1"]
    assert main(args + ["--stop-stage", "prepare"]) == 0
    capsys.readouterr()
    marker = next((tmp_path / "exp" / "stages").glob("01-prepare.done"))
    # the stages' outputs (the top folder's command.txt and config.json describe the last command)
    before = {
        p: p.stat().st_mtime_ns for p in (tmp_path / "exp").rglob("*") if p.is_file() and p.parent != tmp_path / "exp"
    }
    assert len(before) > 5

    def full_disk(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "exp" / "models" / "x.pt"))

    monkeypatch.setattr(train_mod, "train_ctc", full_disk, raising=True)
    line = fails(capsys, *args, "--set", "parallel=1", "--stop-stage", "teacher-0")
    assert "No space left on device; the disk is full" in line and "x.pt" in line
    assert marker.exists()
    for path, mtime in before.items():  # nothing that was finished is deleted or rewritten
        assert path.exists() and path.stat().st_mtime_ns == mtime, path


# ----------------------------------------------------------------------------- evaluate, transcribe


def test_evaluate_refuses_bad_models_and_manifests(files, tmp_path, capsys):
    m, model = str(files / "m.csv"), str(files / "modelA")
    assert "no trained model here" in fails(capsys, "evaluate", str(files / "nonexist"), m)
    assert "not a model bundle of asr-kd" in fails(capsys, "evaluate", str(files / "audio" / "a.wav"), m)
    assert "made with another front end or tokenizer" in fails(capsys, "evaluate", f"{model},{files / 'modelB'}", m)
    assert "manifest not found; check the path" in fails(capsys, "evaluate", model, str(files / "nonexist.csv"))
    assert "missing column(s)" in fails(capsys, "evaluate", model, str(files / "other.csv"))
    assert "a file, not a folder" in fails(capsys, "evaluate", model, m, "--out", str(files / "audio" / "a.wav"))


@pytest.mark.parametrize(
    "audio, expect",
    [
        ("nonexist.wav", "no such audio file"),
        ("audio", "a folder, not an audio file"),
        ("audio/text.wav", "not a readable audio file"),
        ("audio/empty.wav", "zero-length audio"),
        ("audio/cut.wav", "truncated: the WAV header declares"),
    ],
)
def test_transcribe_names_the_bad_audio_file(files, capsys, audio, expect):
    line = fails(capsys, "transcribe", str(files / "modelA"), str(files / audio))
    assert expect in line and str(files / audio) in line


# ----------------------------------------------------------------------------- cache-info, mnist


def test_cache_info_and_mnist_refuse_wrong_paths(files, tmp_path, capsys):
    assert "no teacher cache here" in fails(capsys, "cache-info", str(files / "nonexist"))
    assert "a file, not a cache folder" in fails(capsys, "cache-info", str(files / "audio" / "a.wav"))
    assert "does not exist" in fails(
        capsys,
        "mnist",
        "--preset",
        "smoke",
        "--data-dir",
        str(files / "nonexist"),
        "--out-dir",
        str(tmp_path / "mnist"),
    )
    assert "no preset 'nonexist'" in fails(capsys, "mnist", "--preset", "nonexist")
    assert "expected a number" in fails(capsys, "mnist", "--preset", "smoke", "--set", "teacher.epochs=six")


def test_the_console_script_prints_no_traceback():
    """Through the real entry point (a subprocess), a wrong input is one line and exit status 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "asr_kd", "evaluate", "nonexist", "nonexist.csv"],
        capture_output=True,
        text=True,
        env={**os.environ, "ASR_KD_DEBUG": "0"},
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "asr-kd evaluate: error: nonexist: no trained model here; train it with `asr-kd run CONFIG` first"
    ]


def test_a_read_only_output_folder_is_one_line_with_the_fix(files, tmp_path, capsys, monkeypatch):
    """Root ignores permission bits, so the refusal the file system gives is injected."""
    from asr_kd.data import prepare as prepare_mod

    def read_only(path, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(prepare_mod, "write_manifest", read_only)
    src = tmp_path / "corpus" / "spk"
    src.mkdir(parents=True)
    sf.write(src / "good.wav", np.zeros(8000, dtype="float32"), 16000)
    (src / "good.txt").write_text("hello")
    line = fails(capsys, "prepare", "folder", str(tmp_path / "corpus"), str(tmp_path / "out"))
    assert "all.csv: Read-only file system; the file system is read-only; choose another output folder" in line
    assert (src / "good.wav").exists()  # the source is untouched
