"""Scoring: WER and CER with jiwer, sclite trn files, frame agreement.

Example
-------
>>> r = error_rates(["the cat sat", "a dog"], ["the cat sat down", ""])
>>> round(r["wer"], 4), r["insertions"], r["deletions"]
(0.6, 1, 2)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import jiwer
import torch
from torch import Tensor


def error_rates(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """Corpus WER and CER (as fractions) with the word error counts.

    Empty hypotheses count as deletions; an empty reference contributes its
    hypothesis words as insertions (WER over all references' words).
    """
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("nothing to score: no references")
    words = jiwer.process_words(list(refs), list(hyps))
    chars = jiwer.process_characters(list(refs), list(hyps))
    ref_words = words.hits + words.substitutions + words.deletions
    return {
        "wer": words.wer,
        "cer": chars.cer,
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
        "ref_words": ref_words,
        "utterances": len(refs),
    }


def write_trn(path: str | os.PathLike, ids: Sequence[str], texts: Sequence[str]) -> None:
    """Write ``text (id)`` lines, sclite's trn format, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for utt, text in zip(ids, texts, strict=True):
            f.write(f"{text} ({utt})\n")
    os.replace(tmp, path)


def frame_agreement(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """Share of (real) frames where two ``(batch, frames)`` label tensors agree."""
    same = a == b
    if mask is not None:
        return float(same[mask].float().mean()) if mask.any() else float("nan")
    return float(same.float().mean())


def score_system(
    out_dir: str | os.PathLike,
    name: str,
    refs: Mapping[str, str],
    hyps: Mapping[str, str],
    argmax: Mapping[str, Tensor] | None = None,
    reference_argmax: Mapping[str, Tensor] | None = None,
) -> dict:
    """Score one system's hypotheses against the references, by utterance ID.

    Writes ``NAME.ref.trn`` and ``NAME.hyp.trn`` (sclite's format, for ``sclite -r ... -h ...``)
    and ``NAME.align.txt`` (jiwer's per-utterance word alignments) in ``out_dir``; returns the
    error rates plus, when frame argmaxes are given, the share of frames whose argmax equals
    the reference system's (e.g. the ensemble's).
    """
    missing = sorted(set(refs) - set(hyps))
    if missing:
        raise ValueError(f"{name}: no hypothesis for {len(missing)} utterance(s), e.g. {missing[:3]}")
    out = Path(out_dir)
    ids = sorted(refs)
    ref_list, hyp_list = [refs[i] for i in ids], [hyps[i] for i in ids]
    result = error_rates(ref_list, hyp_list)
    write_trn(out / f"{name}.ref.trn", ids, ref_list)
    write_trn(out / f"{name}.hyp.trn", ids, hyp_list)
    # jiwer cannot align an empty reference; those utterances are listed as such
    pairs = [(i, r, h) for i, r, h in zip(ids, ref_list, hyp_list) if r.strip()]
    words = jiwer.process_words([r for _, r, _ in pairs], [h if h.strip() else "" for _, _, h in pairs])
    lines = []
    text = jiwer.visualize_alignment(words, show_measures=False, skip_correct=False).split("\n")
    # visualize_alignment numbers sentences from 1 in order; put the utterance IDs beside them
    for line in text:
        if line.startswith("=== SENTENCE "):
            k = int(line.split()[2]) - 1
            line = f"=== {pairs[k][0]} ==="
        lines.append(line)
    tmp = out / f".{name}.align.txt.tmp"
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, out / f"{name}.align.txt")
    if argmax is not None and reference_argmax is not None:
        same = total = 0
        for utt in ids:
            a, b = argmax[utt], reference_argmax[utt]
            n = min(len(a), len(b))
            same += int((a[:n] == b[:n]).sum())
            total += n
        result["frame_agreement"] = same / max(1, total)
    return result
