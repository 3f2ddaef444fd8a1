"""Stage ``small-data``: the paper's Table 5 in speech, soft targets as a regulariser.

Hinton et al. (2015, Table 5) trained their speech model on 3% of the data: with hard targets
it overfitted (early stopping: 44.5% test frame accuracy), with the full-data model's soft
targets it did not (57.0%, no early stopping), against 58.9% for the model trained on all of
it. Here (``small_data.share`` > 0) ``small-hard`` and ``small-soft`` (:mod:`asr_kd.asr.specs`)
are teacher 0's model, seed and optimiser on the same small share of the transcribed training
utterances; this stage sets them beside teacher 0 (100% of the data, hard labels) and the
ensemble whose soft targets ``small-soft`` learnt:

- test WER (greedy; beam + LM), from the ``score`` stage;
- frame accuracy, the CTC counterpart of the paper's: the share of frames where a model's
  argmax is the label of teacher 0's forced alignment of the transcript
  (:func:`asr_kd.asr.guidance.forced_frames`), on the small share (its "train") and the test set;
  ``small_data.align_with: teacher-1`` takes the labels from another full-data teacher, one
  that is none of the three rows compared (teacher 0 otherwise grades itself);
- argmax agreement with teacher 0, frame by frame;
- the share of the hard-target model's gap to the 100% model that the soft targets recover;
- the validation curves over epochs (``plots/small_data.png``): does either model overfit?

Example
-------
>>> import torch
>>> lp = torch.tensor([[[0.0, -9.0], [-9.0, 0.0], [0.0, -9.0]]])
>>> frame_hits(lp, torch.tensor([3]), torch.tensor([[0, 1, 1]]))
(2, 3)
>>> round(recovered(hard=44.5, soft=57.0, full=58.9), 3)
0.868
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from asr_kd.asr.context import Context
from asr_kd.asr.data import draw_subset, encode_transcripts
from asr_kd.asr.guidance import IGNORE, aligned_frames
from asr_kd.asr.inference import System
from asr_kd.io import write_atomic, write_json

log = logging.getLogger(__name__)

REFERENCE = "teacher-0"  #: the full-data model: its forced alignments are the frame labels
MODELS = ("small-hard", "small-soft")


def frame_hits(log_probs: Tensor, lengths: Tensor, labels: Tensor) -> tuple[int, int]:
    """``(frames whose argmax is the label, labelled frames)`` of a batch; ``labels``
    ``(batch, frames)`` with ``IGNORE`` where there is no label."""
    mask = labels != IGNORE
    mask &= torch.arange(labels.shape[1])[None, :] < lengths.cpu()[:, None]
    pred = log_probs.argmax(-1).cpu()
    return int((pred[mask] == labels[mask]).sum()), int(mask.sum())


def recovered(hard: float, soft: float, full: float) -> float | None:
    """The share of the gap from the hard-target small model to the full-data model that the
    soft-target one closes (any measure, higher or lower better alike); None without a gap."""
    return None if full == hard else (soft - hard) / (full - hard)


def small_train_ids(ctx: Context) -> list[str]:
    """The transcribed training utterances the small models learn from (the same draw as
    :func:`asr_kd.asr.train.train_spec`)."""
    sd = ctx.settings.small_data
    return draw_subset(list(ctx.exp.texts("train")), sd.share, sd.seed)


def _frame_scores(
    ctx: Context, systems: Mapping[str, System], labeller: System, split: str, ids: Sequence[str]
) -> dict[str, dict]:
    """Frame accuracy against ``labeller``'s forced alignments, and argmax agreement with
    teacher 0, of every system on utterances ``ids`` of ``split``."""
    exp = ctx.exp
    feats = {u: exp.feats(split)[u] for u in ids}
    tokens = encode_transcripts({u: exp.texts(split)[u] for u in ids}, exp.tokenizer().encode, skip=log.warning)
    labels = aligned_frames(labeller, feats, tokens, ctx.device)
    ref_argmax: dict[str, Tensor] = {}
    out = {}
    for name, system in systems.items():  # the reference first: its argmax is the others' yardstick
        hits = total = agree = frames = 0
        for chunk, lp, n in system.batches(feats, list(tokens), device=ctx.device):
            pad = torch.nn.utils.rnn.pad_sequence([labels[u] for u in chunk], batch_first=True, padding_value=IGNORE)
            h, t = frame_hits(lp[:, : pad.shape[1]], n, pad)
            hits, total = hits + h, total + t
            for b, u in enumerate(chunk):
                argmax = lp[b, : int(n[b])].argmax(-1).cpu()
                ref_argmax.setdefault(u, argmax)
                agree += int((argmax == ref_argmax[u]).sum())
                frames += int(n[b])
        out[name] = {"frame_accuracy": hits / max(1, total), "agreement": agree / max(1, frames), "frames": total}
    return out


def score_small_data(ctx: Context) -> None:
    """Stage ``small-data``: ``EXP/score/small_data.json`` and ``EXP/plots/small_data.png``."""
    exp, plan = ctx.exp, ctx.plan
    members = plan.ensembles[plan.main_ensemble]
    e = ctx.settings.ensemble
    systems = {name: System([exp.load(name, device=ctx.device)]) for name in (REFERENCE, *MODELS)}
    systems[plan.main_ensemble] = System(
        [exp.load(m, device=ctx.device) for m in members], method=e.method, weights=e.weights
    )
    align_with = ctx.settings.small_data.align_with
    labeller = systems.get(align_with) or System([exp.load(align_with, device=ctx.device)])
    train_ids = small_train_ids(ctx)
    log.info(
        f"  small-data: frame accuracy on {len(train_ids)} training and the test utterances, {align_with}'s labels"
    )
    splits = {"train": _frame_scores(ctx, systems, labeller, "train", train_ids)}
    splits["test"] = _frame_scores(ctx, systems, labeller, "test", list(exp.texts("test")))
    scores = exp.scores()
    kd = plan.spec("small-soft").kd
    soft = "soft + hard" if kd is None or kd.hard_weight else "soft"
    rows = []
    for name in systems:
        info = exp.info(name) if name in (REFERENCE, *MODELS) else {}
        rows.append(
            {
                "system": name,
                "data": f"{100 * ctx.settings.small_data.share:g}%" if name in MODELS else "100%",
                "targets": soft if name == "small-soft" else ("-" if name == plan.main_ensemble else "hard"),
                "epoch": f"{info.get('best_epoch')} ({info.get('selected', 'best')})" if info else "-",
                "wer": scores.get(name, {}).get("wer"),
                "beam_wer": scores.get(name, {}).get("beam_wer"),
                **{f"{split}_{k}": v[name][k] for split, v in splits.items() for k in ("frame_accuracy", "agreement")},
            }
        )
    by = {r["system"]: r for r in rows}
    gap = {
        key: recovered(by["small-hard"][key], by["small-soft"][key], by[REFERENCE][key])
        for key in ("test_frame_accuracy", "wer", "beam_wer")
        if all(by[n][key] is not None for n in (REFERENCE, *MODELS))
    }
    result = {"share": ctx.settings.small_data.share, "utterances": len(train_ids), "labels": align_with}
    result.update(rows=rows, recovered=gap)
    write_json(exp.score_dir / "small_data.json", result)
    _plot(ctx)
    log.info(f"  small-data: soft targets recover {gap} of the gap (test frame accuracy; WER; beam WER)")


def _plot(ctx: Context) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, style in ((REFERENCE, "-"), ("small-hard", "--"), ("small-soft", "-.")):
        h = ctx.exp.history(name)
        epochs = sorted(int(e) for e in h)
        axes[0].plot(epochs, [h[str(e)]["valid_loss"] for e in epochs], style, label=name)
        axes[1].plot(epochs, [100 * h[str(e)]["valid_wer"] for e in epochs], style, label=name)
    axes[0].set(xlabel="epoch", ylabel="valid CTC loss", title="validation loss", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="valid WER (%)", title="validation WER (greedy)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    ctx.exp.plots.mkdir(parents=True, exist_ok=True)
    write_atomic(ctx.exp.plots / "small_data.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def render_small_data(r: Mapping[str, Any]) -> list[str]:
    """The Markdown section of the report (``r``: ``score/small_data.json``)."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}"

    lines = [
        "",
        f"## Soft targets as a regulariser (the paper's Table 5): {pct(r['share'])}% of the training "
        f"set ({r['utterances']} utterances)",
        "",
        f"Frame accuracy: the share of frames whose argmax is the label of {r.get('labels', REFERENCE)}'s forced "
        "alignment of the transcript; train = the small share, which every row learnt from.",
        "",
        "| system | data | targets | epoch kept | train frame acc. | test frame acc. | "
        "test agreement with teacher-0 | test WER | beam+LM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['system']} | {row['data']} | {row['targets']} | {row['epoch']} | "
            f"{pct(row['train_frame_accuracy'])} | {pct(row['test_frame_accuracy'])} | "
            f"{pct(row['test_agreement'])} | {pct(row['wer'])} | {pct(row['beam_wer'])} |"
        )
    names = {"test_frame_accuracy": "test frame accuracy", "wer": "test WER", "beam_wer": "beam+LM WER"}
    share = ", ".join(f"{names[k]} {pct(v)}%" for k, v in r["recovered"].items() if v is not None)
    lines += ["", f"Gap from small-hard to the 100% model closed by soft targets: {share}."]
    return lines
