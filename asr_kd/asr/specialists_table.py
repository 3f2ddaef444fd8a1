"""Stage ``specialists-table``: what the frame-level specialists (:mod:`asr_kd.asr.specialists`) gained.

After ``score``, :func:`score_specialists` writes ``EXP/score/specialists.json``: the paper's
Table 4 per frame on the test set (:func:`~asr_kd.distill.specialists.table4`), its labels the
plain ensemble's forced alignment of the transcripts (neither compared system's own), beside the
WER of the generalist, the combination, their students and the plain ensemble, and each
specialist alone against the generalist on the frames of its own pieces (:func:`own_pieces`);
:func:`render_specialists` turns it into the report's section.

Example
-------
>>> kept_shares({"teacher-0": 40.0, "specialists": 38.0, "student-kd-spec": 39.5})
{'vs_generalist': 0.25, 'vs_scratch': None}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from asr_kd.asr.data import encode_transcripts, padded_batches
from asr_kd.asr.guidance import IGNORE, aligned_frames
from asr_kd.asr.inference import System
from asr_kd.asr.lm import decoder_tokens
from asr_kd.asr.specialists import load_specialists
from asr_kd.asr.specs import GENERALIST, SPECIALISTS
from asr_kd.distill.specialists import table4
from asr_kd.io import write_json

log = logging.getLogger(__name__)


def score_specialists(ctx) -> None:
    """Stage ``specialists-table``: ``EXP/score/specialists.json``, the paper's Table 4 per test
    frame (frames labelled blank in a row of their own) and the systems' WERs side by side."""
    exp, plan, e = ctx.exp, ctx.plan, ctx.settings.ensemble
    feats, texts = exp.feats("test"), exp.texts("test")
    tokens = encode_transcripts(texts, exp.tokenizer().encode, skip=log.warning)
    reference = System(
        [exp.load(m, device=ctx.device) for m in plan.ensembles[plan.main_ensemble]], e.method, e.weights
    )
    labels = aligned_frames(reference, feats, tokens, ctx.device)
    system = load_specialists(ctx, ctx.device)
    gen, comb, act, ys, own = [], [], [], [], []
    for chunk, x, n in padded_batches(feats, list(tokens), 32):
        lp_g, lp_c, active, out_n = system.parts(x.to(ctx.device), n.to(ctx.device))
        picks = system.specialist_choices(x.to(ctx.device), n.to(ctx.device))
        y = torch.nn.utils.rnn.pad_sequence([labels[u] for u in chunk], batch_first=True, padding_value=IGNORE)
        y = y[:, : lp_g.shape[1]].to(lp_g.device)
        keep = (y != IGNORE) & (torch.arange(y.shape[1], device=y.device)[None, :] < out_n[:, None])
        gen.append(lp_g[:, : y.shape[1]][keep].argmax(-1).cpu())
        comb.append(lp_c[:, : y.shape[1]][keep].argmax(-1).cpu())
        act.append(active[:, : y.shape[1]][keep].cpu())
        own.append(picks[:, : y.shape[1]][keep].cpu())
        ys.append(y[keep].cpu())
    g, c, a, y = torch.cat(gen), torch.cat(comb), torch.cat(act), torch.cat(ys)
    alone = own_pieces(g, torch.cat(own), system.subsets, y)
    blank = y == 0
    rows = table4(g[~blank], c[~blank], a[~blank], system.subsets, y[~blank])
    gb, cb = int((g[blank] == 0).sum()), int((c[blank] == 0).sum())
    rows.insert(
        0,
        {
            "covering": "blank",
            "cases": int(blank.sum()),
            "generalist_correct": gb,
            "combined_correct": cb,
            "correct_gain": cb - gb,
            "relative_accuracy_change": (cb - gb) / gb if gb else None,
        },
    )
    scores = exp.scores()
    wer = {
        name: scores[name]["wer"]
        for name in (GENERALIST, SPECIALISTS, plan.main_ensemble, "student-scratch", "student-kd", "student-kd-spec")
        if name in scores
    }
    beam = {name: scores[name].get("beam_wer") for name in wer}
    pieces = decoder_tokens(exp.tokenizer())
    result = {
        "reference": plan.main_ensemble,
        "subsets": [[pieces[p] for p in s] for s in system.subsets],
        "frames": len(y),
        "active_share": float(a.any(1).float().mean()) if len(y) else 0.0,
        "frame_accuracy": {GENERALIST: float((g == y).float().mean()), SPECIALISTS: float((c == y).float().mean())},
        "changed_argmax_share": float((g != c).float().mean()),
        "table4": rows,
        "own_pieces": alone,
        "wer": wer,
        "beam_wer": beam,
        "kept": kept_shares(wer),
    }
    write_json(exp.score_dir / "specialists.json", result)
    log.info(f"  specialists-table: {len(y)} test frames; frame accuracy {result['frame_accuracy']}")


def own_pieces(generalist: Tensor, picks: Tensor, subsets: Sequence[Sequence[int]], labels: Tensor) -> list[dict]:
    """Each specialist alone on the frames labelled with a piece of its subset: how many frames,
    and how many of them the generalist's argmax and the specialist's (``picks[:, m]``, a class of
    the full vocabulary, -1 for its dustbin) get right. A specialist that does not beat the
    generalist here has nothing to add to the combination.

    >>> labels, generalist = torch.tensor([1, 1, 2, 3]), torch.tensor([1, 2, 2, 3])
    >>> own_pieces(generalist, torch.tensor([[1], [1], [2], [-1]]), [[1, 2]], labels)
    [{'specialist': 0, 'pieces': 2, 'frames': 3, 'generalist_correct': 2, 'specialist_correct': 3}]
    """
    rows = []
    for m, subset in enumerate(subsets):
        mine = torch.isin(labels, torch.tensor(list(subset), dtype=labels.dtype))
        rows.append(
            {
                "specialist": m,
                "pieces": len(subset),
                "frames": int(mine.sum()),
                "generalist_correct": int((generalist[mine] == labels[mine]).sum()),
                "specialist_correct": int((picks[mine, m] == labels[mine]).sum()),
            }
        )
    return rows


def kept_shares(wer: Mapping[str, float]) -> dict[str, float | None]:
    """How much of the combination's gain ``student-kd-spec`` keeps: over the generalist
    ``(g - s) / (g - c)``, and over its scratch twin ``(scratch - s) / (scratch - c)`` (None
    where a WER is missing or the combination gains nothing).

    >>> kept_shares({"teacher-0": 40.0, "specialists": 38.0, "student-kd-spec": 39.0, "student-scratch": 48.0})
    {'vs_generalist': 0.5, 'vs_scratch': 0.9}
    """
    c, s = wer.get(SPECIALISTS), wer.get("student-kd-spec")

    def share(base: str) -> float | None:
        b = wer.get(base)
        if b is None or c is None or s is None or b <= c:
            return None
        return round((b - s) / (b - c), 6)

    return {"vs_generalist": share(GENERALIST), "vs_scratch": share("student-scratch")}


def render_specialists(r: Mapping[str, Any]) -> list[str]:
    """The Markdown section of the report (``r``: ``score/specialists.json``)."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}"

    lines = ["", "## Specialists (the paper's Section 5, per frame)", ""]
    lines += [
        f"- specialist-{i}: {len(s)} pieces: {' '.join(s[:16])}{' ...' if len(s) > 16 else ''}"
        for i, s in enumerate(r["subsets"])
    ]
    lines += [
        "",
        "| system | WER | beam+LM |",
        "|---|---|---|",
        *(f"| {name} | {pct(w)} | {pct(r['beam_wer'].get(name))} |" for name, w in r["wer"].items()),
        "",
        f"Share of the combination's WER gain kept by student-kd-spec: over the generalist "
        f"{pct(r['kept']['vs_generalist'])}%, over its scratch twin {pct(r['kept']['vs_scratch'])}%.",
        "",
        f"Table 4 per frame ({r['frames']} labelled test frames, labels: {r['reference']}'s forced alignment; "
        f"a specialist active on {pct(r['active_share'])}% of them; the argmax changed on "
        f"{pct(r['changed_argmax_share'])}%). Frame accuracy: generalist {pct(r['frame_accuracy'][GENERALIST])}%, "
        f"combination {pct(r['frame_accuracy'][SPECIALISTS])}%.",
        "",
        "| active specialists covering the true piece | frames | generalist correct | combination correct | "
        "gain | relative change |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["table4"]:
        rel = row["relative_accuracy_change"]
        lines.append(
            f"| {row['covering']} | {row['cases']} | {row['generalist_correct']} | {row['combined_correct']} "
            f"| {row['correct_gain']:+d} | {'-' if rel is None else f'{100 * rel:+.2f}%'} |"
        )
    if r.get("own_pieces"):
        lines += [
            "",
            "Each specialist alone on the frames labelled with a piece of its subset (its argmax; dustbin: wrong):",
            "",
            "| specialist | pieces | frames | generalist correct | specialist correct |",
            "|---|---|---|---|---|",
            *(
                f"| specialist-{o['specialist']} | {o['pieces']} | {o['frames']} | {o['generalist_correct']} "
                f"| {o['specialist_correct']} |"
                for o in r["own_pieces"]
            ),
        ]
    return lines
