"""Scoring: WER and CER with jiwer, sclite trn files, frame agreement; stage ``score``.

The ``score`` stage decodes every model and ensemble of the run on the test set (greedy and,
with ``score.beam.size`` > 0, beam search with the training transcripts' lexicon and LM),
writes each system's ``score/NAME.json`` (WER, CER as fractions; frame agreement with the main
ensemble; parameters; decoding real-time factor) and ``score/scores.json``.

Example
-------
>>> r = error_rates(["the cat sat", "a dog"], ["the cat sat down", ""])
>>> round(r["wer"], 4), r["insertions"], r["deletions"]
(0.6, 1, 2)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import jiwer
import torch
from torch import Tensor

from asr_kd.asr.context import Context
from asr_kd.asr.decode import greedy_decode
from asr_kd.asr.ensemble import describe_ensemble
from asr_kd.asr.inference import Decoder, System, make_decoder, write_lm
from asr_kd.asr.specialists import load_specialists
from asr_kd.asr.specs import SPECIALISTS
from asr_kd.io import read_json, write_json, write_text

log = logging.getLogger(__name__)


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
    write_text(path, "".join(f"{text} ({utt})\n" for utt, text in zip(ids, texts, strict=True)))


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
    pairs = [(i, r, h) for i, r, h in zip(ids, ref_list, hyp_list, strict=False) if r.strip()]
    words = jiwer.process_words([r for _, r, _ in pairs], [h if h.strip() else "" for _, _, h in pairs])
    lines = []
    text = jiwer.visualize_alignment(words, show_measures=False, skip_correct=False).split("\n")
    # visualize_alignment numbers sentences from 1 in order; put the utterance IDs beside them
    for line in text:
        if line.startswith("=== SENTENCE "):
            k = int(line.split()[2]) - 1
            line = f"=== {pairs[k][0]} ==="
        lines.append(line)
    write_text(out / f"{name}.align.txt", "\n".join(lines))
    if argmax is not None and reference_argmax is not None:
        same = total = 0
        for utt in ids:
            a, b = argmax[utt], reference_argmax[utt]
            n = min(len(a), len(b))
            same += int((a[:n] == b[:n]).sum())
            total += n
        result["frame_agreement"] = same / max(1, total)
    return result


def score_systems(ctx: Context) -> None:
    """Stage ``score``: every system of the run on the test set (a scored system is skipped)."""
    exp, s = ctx.exp, ctx.settings
    exp.score_dir.mkdir(parents=True, exist_ok=True)
    for name in ctx.plan.ensembles:  # experiments made before ensembles were described
        describe_ensemble(ctx, name)
    texts, tok = exp.texts("test"), exp.tokenizer()
    reference = _argmax(_system(ctx, ctx.plan.ensembles[ctx.plan.main_ensemble]), ctx)
    beam = _beam_decoder(ctx) if s.score.beam.size else None
    scores = {}
    for name, members in ctx.plan.rows():
        path = exp.score_file(name)
        if path.exists():
            scores[name] = read_json(path)
            continue
        system = _system(ctx, members)
        hyps: dict[str, str] = {}
        argmax: dict[str, Tensor] = {}
        beam_hyps: dict[str, str] = {}
        for ids, lp, n in system.batches(exp.feats("test"), device=ctx.device):
            for b, (utt, h) in enumerate(zip(ids, greedy_decode(lp, n), strict=False)):
                hyps[utt] = tok.decode(h)
                argmax[utt] = lp[b, : int(n[b])].argmax(-1).cpu()
            if beam is not None:
                beam_hyps.update(zip(ids, beam(lp, n), strict=False))
        result = score_system(exp.score_dir, name, texts, hyps, argmax, reference)
        if beam is not None:
            beamed = score_system(exp.score_dir, f"{name}.beam", texts, beam_hyps)
            result.update(beam_wer=beamed["wer"], beam_cer=beamed["cer"])
            log.info(f"  {name}: beam search with lexicon and LM: WER {100 * result['beam_wer']:.2f}")
        result["parameters"] = sum(exp.info(m)["parameters"] for m in members)
        result["members"] = members
        result["rtf"] = decoding_rtf(ctx, members)
        batch = int(s.score.rtf_batch or 0)
        result["rtf_batched"] = decoding_rtf(ctx, members, batch) if batch > 1 else None
        log.info(
            f"  {name}: WER {100 * result['wer']:.2f}  CER {100 * result['cer']:.2f}  "
            f"frame agreement {100 * result['frame_agreement']:.1f}%  RTF {result['rtf']:.4f}"
            + (f" (batches of {batch}: {result['rtf_batched']:.4f})" if batch > 1 else "")
        )
        write_json(path, result)
        scores[name] = result
    write_json(exp.scores_file, scores)


def _system(ctx: Context, members: Sequence[str], device: str | None = None) -> System:
    e = ctx.settings.ensemble
    if list(members) == ctx.plan.systems.get(SPECIALISTS):
        return load_specialists(ctx, device or ctx.device)
    return System([ctx.exp.load(m, device=device or ctx.device) for m in members], method=e.method, weights=e.weights)


def _argmax(system: System, ctx: Context) -> dict[str, Tensor]:
    out = {}
    for ids, lp, n in system.batches(ctx.exp.feats("test"), device=ctx.device):
        for b, utt in enumerate(ids):
            out[utt] = lp[b, : int(n[b])].argmax(-1).cpu()
    return out


def _beam_decoder(ctx: Context) -> Decoder:
    """Beam search over the words of the training transcripts, with their n-gram LM."""
    b, tok = ctx.settings.score.beam, ctx.exp.tokenizer()
    lexicon, lm = write_lm(list(ctx.exp.texts("train").values()), tok, ctx.exp.lm_dir, int(b.lm_order))
    return make_decoder(tok, b, lexicon=lexicon, lm=lm)


def decoding_rtf(ctx: Context, members: Sequence[str], batch: int = 1) -> float:
    """Decoding real-time factor on one CPU thread: seconds of compute per second of audio.

    ``batch`` 1 decodes one utterance at a time (as a server answering one request);
    larger batches (of utterances sorted by length) show the throughput of offline decoding,
    where the per-time-step overhead of the LSTM is shared by the batch.
    """
    feats = ctx.exp.feats("test")
    ids = sorted(feats)[: int(ctx.settings.score.rtf_utterances)]
    system = _system(ctx, members, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        for _ in range(int(ctx.settings.score.rtf_repeats)):
            began = time.perf_counter()
            for _, lp, n in system.batches(feats, ids, batch):
                greedy_decode(lp, n)
            times.append(time.perf_counter() - began)
    finally:
        torch.set_num_threads(threads)
    hop = ctx.exp.summary()["features"]["hop_ms"] / 1000
    audio = sum(len(feats[i]) for i in ids) * hop
    return sorted(times)[len(times) // 2] / audio
