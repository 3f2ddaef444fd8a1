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
from typing import Sequence

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
