"""Validation curves of several ASR trainings on one figure (loss and greedy WER over epochs).

Each model folder of an experiment keeps ``history.json`` (epoch -> train/valid loss, valid WER);
this plots any number of them side by side, e.g. the same model trained over 100, 300 and 600
epochs. Nothing is trained or scored here.

Example (from the repository root)::

    python tools/plot_histories.py --out curves.png \\
        "mixup 1.0, 300 epochs=recipes/synth_en/exp/t5-mix1-e300/models/small-soft/history.json" \\
        "small-hard=recipes/synth_en/exp/t5-mix1-e300/models/small-hard/history.json"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from asr_kd.io import write_atomic


def read_curves(spec: str) -> tuple[str, list[int], list[float], list[float]]:
    """``LABEL=PATH`` -> (label, epochs, valid losses, valid WERs in %)."""
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        raise SystemExit(f"expected LABEL=PATH/history.json, got {spec!r}")
    try:
        history = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"{path}: cannot read a history ({err}); give a model folder's history.json") from None
    epochs = sorted(int(e) for e in history)
    return (
        label,
        epochs,
        [history[str(e)]["valid_loss"] for e in epochs],
        [100 * history[str(e)]["valid_wer"] for e in epochs],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("curves", nargs="+", help="LABEL=PATH of a model's history.json")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--title", default="", help="a title over both panels")
    args = parser.parse_args(argv)
    curves = [read_curves(c) for c in args.curves]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, epochs, loss, wer in curves:
        axes[0].plot(epochs, loss, label=label)
        axes[1].plot(epochs, wer, label=label)
    axes[0].set(xlabel="epoch", ylabel="valid loss", title="validation loss", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="valid WER (%)", title="validation WER (greedy)", ylim=(None, 100))
    axes[1].legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    write_atomic(Path(args.out), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
