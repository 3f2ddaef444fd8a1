"""The `asr-kd` command line: help, version, the demo, and honest refusals."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import asr_kd
from asr_kd.cli import COMMAND_MODULES, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr_kd.cli", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_every_subcommand():
    out = run_cli("--help")
    assert out.returncode == 0
    for name in ("demo", "run"):
        assert re.search(rf"^\s+{name}\s", out.stdout, re.M), out.stdout
    assert len(COMMAND_MODULES) >= 2


def test_version():
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"asr-kd {asr_kd.__version__}"


def test_run_refuses_bad_configs_and_overrides_without_traceback(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "no such config file" in capsys.readouterr().err
    config = str(Path(asr_kd.__file__).parents[1] / "recipes/synth_en/config.yaml")
    assert main(["run", config, "--preset", "huge"]) == 2
    assert "no preset 'huge'" in capsys.readouterr().err
    assert main(["run", config, "--preset", "tiny", "--set", "train.epoch=3"]) == 2
    assert "unknown key 'train.epoch'" in capsys.readouterr().err
    assert main(["run", config, "--preset", "tiny", "--set", "teachers.guidance=maybe"]) == 2
    assert "teachers.guidance must be one of" in capsys.readouterr().err
    assert main(["run", config, "--preset", "tiny", "--set", f"exp_dir={tmp_path}", "--list"]) == 0
    out = capsys.readouterr().out
    assert " 1 prepare" in out and "student-kd-guided" in out and "report" in out


@pytest.mark.slow
def test_demo_soft_targets_beat_hard_labels(capsys):
    """The demo's measured numbers: the distilled student beats the hard-label one."""
    assert main(["demo", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    acc = {m.group(1).strip(): float(m.group(2)) for m in re.finditer(r"^\s+(.+?)\s+([\d.]+)%$", out, re.M)}
    teacher = acc["teacher (20,000 labels)"]
    hard = acc["student, 300 hard labels"]
    soft = acc["student, 300 soft targets T=4"]
    assert teacher > 95 and soft > hard + 2, acc


def test_cache_info_reports_size_and_refuses_a_missing_cache(tmp_path, capsys):
    import torch

    from asr_kd.distill import CacheWriter

    with CacheWriter(tmp_path / "c", num_classes=100, k=16, fingerprint={"n_mels": 80}) as w:
        w.add("utt1", torch.randn(50, 100))
    assert main(["cache-info", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "1 IDs, 50 frames" in out and "top-16 of 100" in out and '"n_mels": 80' in out
    assert main(["cache-info", str(tmp_path / "nothing")]) == 2
    assert "meta.json missing" in capsys.readouterr().err


def test_output_into_a_closed_pipe_is_not_a_traceback(tmp_path):
    rows = ["ID,duration,wav,spk_id,wrd"] + [f"u{i},1.0,missing/{i}.wav,s,HELLO" for i in range(3000)]
    (tmp_path / "big.csv").write_text("\n".join(rows) + "\n")
    proc = subprocess.run(
        f"{sys.executable} -m asr_kd validate {tmp_path / 'big.csv'} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "3000 error(s)" in proc.stdout
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
