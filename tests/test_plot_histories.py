"""tools/plot_histories.py: several trainings' validation curves on one figure."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import plot_histories  # noqa: E402


def _history(path: Path, wers: list[float]) -> Path:
    rows = {str(e): {"train_loss": 1.0, "valid_loss": 2.0 / e, "valid_wer": w} for e, w in enumerate(wers, 1)}
    path.write_text(json.dumps(rows))
    return path


def test_curves_are_read_in_epoch_order_and_plotted(tmp_path):
    a = _history(tmp_path / "a.json", [0.9, 0.7, 0.6] + [0.5] * 8)  # epochs 1..11: "10" sorts before "2" as text
    b = _history(tmp_path / "b.json", [0.8, 0.75])
    label, epochs, loss, wer = plot_histories.read_curves(f"long run={a}")
    assert label == "long run" and epochs == list(range(1, 12)) and wer[:3] == pytest.approx([90, 70, 60])
    assert loss[1] == pytest.approx(1.0)
    out = tmp_path / "curves.png"
    assert plot_histories.main(["--out", str(out), f"a={a}", f"b={b}"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_a_bad_argument_names_the_fix(tmp_path):
    with pytest.raises(SystemExit, match="LABEL=PATH"):
        plot_histories.read_curves(str(tmp_path / "a.json"))
    with pytest.raises(SystemExit, match="history.json"):
        plot_histories.read_curves(f"x={tmp_path / 'missing.json'}")
