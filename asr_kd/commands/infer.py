"""``asr-kd evaluate MODEL MANIFEST`` and ``asr-kd transcribe MODEL AUDIO...``.

MODEL is a trained model bundle (``model.pt``, or the folder holding it, e.g.
``recipes/synth_en/exp/demo/models/student-kd``); it carries its architecture,
weights, feature normalisation and tokenizer, so it runs on any manifest or audio file.
An ensemble is an experiment's ensemble folder (``exp/demo/ensembles/ensemble``: decoded with
its configured combination method and weights) or several MODELs separated by commas
(``--method`` / ``--weights`` combine them; default: arithmetic mean of frame posteriors).
Both go through :mod:`asr_kd.asr.inference`, the path the recipe's score stage takes.

Example
-------
    asr-kd evaluate recipes/synth_en/exp/demo/models/student-kd data/test.csv --out scores/
    asr-kd transcribe recipes/synth_en/exp/demo/models/student-kd a.wav b.flac
    asr-kd evaluate MODEL data/test.csv --beam 32 --lm-text data/train.csv   # words + 3-gram LM of train
    asr-kd evaluate recipes/synth_en/exp/demo/ensembles/ensemble data/test.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

from asr_kd.errors import UserError
from asr_kd.io import write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a trained model (or ensemble) on a manifest: WER, CER")
    p.add_argument("model", help="model bundle (model.pt or its folder); several, comma-separated, form an ensemble")
    p.add_argument("manifest", help="CSV or JSONL manifest (ID,duration,wav,spk_id,wrd)")
    p.add_argument("--out", default=None, help="folder for trn files, alignments and scores.json")
    p.add_argument("--skip-bad-rows", action="store_true", help="score without bad manifest rows (listed)")
    _common(p)
    p.set_defaults(func=evaluate)
    t = sub.add_parser("transcribe", help="print the text a trained model hears in audio files")
    t.add_argument("model", help="model bundle (model.pt or its folder); several, comma-separated, form an ensemble")
    t.add_argument("audio", nargs="+", help="audio files (any sample rate or channel count)")
    t.add_argument(
        "--chunk-ms",
        type=int,
        default=0,
        help="decode as a stream, in chunks of this many ms of audio (a model with encoder: lstm; greedy); "
        "prints the latency and the text after each chunk with -v",
    )
    _common(t)
    t.set_defaults(func=transcribe)


def _common(p: argparse.ArgumentParser) -> None:
    from asr_kd.asr.settings import ENSEMBLE_METHODS, BeamSettings

    d = BeamSettings()
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    e = p.add_argument_group("ensemble (several comma-separated models)")
    e.add_argument(
        "--method",
        choices=ENSEMBLE_METHODS,
        default=None,
        help="combination of the members' posteriors (default: the ensemble folder's, else arithmetic)",
    )
    e.add_argument("--weights", default=None, help="comma-separated member weights (default: equal)")
    b = p.add_argument_group("beam search (default: greedy)")
    b.add_argument("--beam", type=int, default=0, help="beam size (torchaudio ctc_decoder); 0: greedy")
    b.add_argument(
        "--lm-text",
        default=None,
        help="manifest (CSV/JSONL) or text file (one transcript per line): its words become the "
        "lexicon and its n-gram LM (--lm-order) scores the hypotheses",
    )
    b.add_argument("--lexicon", default=None, help="lexicon file (word, then its tokens) instead of --lm-text's")
    b.add_argument("--lm", default=None, help="KenLM binary or ARPA file instead of --lm-text's")
    b.add_argument(
        "--lm-order", type=int, default=d.lm_order, help=f"n of --lm-text's n-gram LM (default {d.lm_order})"
    )
    b.add_argument("--lm-weight", type=float, default=d.lm_weight, help=f"default {d.lm_weight}")
    b.add_argument("--word-score", type=float, default=d.word_score, help=f"default {d.word_score}")


def _decoder(args: argparse.Namespace, tokenizer):
    """The decoding function of the options: greedy, or beam search with an optional lexicon and LM."""
    import tempfile

    from asr_kd.asr.inference import make_decoder, write_lm
    from asr_kd.asr.settings import BeamSettings

    if not args.beam and (args.lm_text or args.lexicon or args.lm):
        raise UserError("--lm-text, --lexicon and --lm need --beam N (e.g. --beam 32)")
    lexicon, lm = args.lexicon, args.lm
    beam = BeamSettings(size=args.beam, lm_weight=args.lm_weight, word_score=args.word_score)
    if not (args.beam and args.lm_text):
        return make_decoder(tokenizer, beam, lexicon=lexicon, lm=lm)
    with tempfile.TemporaryDirectory(prefix="asr-kd-lm-") as tmp:  # the decoder reads both files when it is made
        made_lexicon, made_lm = write_lm(_texts(args.lm_text), tokenizer, tmp, args.lm_order if lm is None else 0)
        return make_decoder(tokenizer, beam, lexicon=lexicon or made_lexicon, lm=lm or made_lm)


def _texts(path: str) -> list[str]:
    """Transcripts of a manifest (``.csv`` / ``.jsonl``) or of a text file, one per line."""
    from asr_kd.data.manifest import ManifestError, read_manifest

    if not Path(path).exists():
        raise UserError(f"--lm-text: no such file: {path}")
    if Path(path).suffix.lower() in (".csv", ".jsonl"):
        try:
            return [e.wrd for e in read_manifest(path)]
        except ManifestError as err:
            raise UserError(str(err)) from None
    texts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise UserError(f"--lm-text {path}: no text in it")
    return texts


def _load(args: argparse.Namespace):
    from asr_kd.asr.inference import load_system

    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise UserError(f"--weights {args.weights!r}: give numbers separated by commas, e.g. 0.6,0.4") from None
    return load_system(args.model, device=args.device, method=args.method, weights=weights)


def _decode(system, paths, args: argparse.Namespace) -> list[str]:
    from asr_kd.asr.data import load_wavs_features

    decode = _decoder(args, system.tokenizer())
    texts = []
    for start in range(0, len(paths), args.batch_size):
        x, n = load_wavs_features(paths[start : start + args.batch_size], system.feature_config())
        lp, out_n = system.log_probs(x.to(args.device), n.to(args.device))
        texts += decode(lp, out_n)
    return texts


def _stream(system, paths, args: argparse.Namespace) -> list[str]:
    """Greedy transcripts decoded chunk by chunk (:mod:`asr_kd.models.streaming`)."""
    import logging

    import torch

    from asr_kd.asr.data import load_wavs_features
    from asr_kd.asr.decode import greedy_decode
    from asr_kd.models.bundle import LoadedModel
    from asr_kd.models.streaming import Streamer

    model = system.members[0]
    if len(system.members) > 1 or not isinstance(model, LoadedModel) or args.beam:
        raise UserError("--chunk-ms streams one model bundle (not an ensemble or an exported file), greedy only")
    config = system.feature_config()
    chunk = max(1, round(args.chunk_ms / config.hop_ms))
    tokenizer, texts, log = system.tokenizer(), [], logging.getLogger(__name__)
    for path in paths:
        feats, _ = load_wavs_features([path], config)
        try:
            cmvn = model.norm.cmvn
            streamer = Streamer(model.model, *((cmvn.mean, cmvn.std) if cmvn is not None else (None, None)))
        except ValueError as err:
            raise UserError(f"--chunk-ms: {err}") from None
        pieces = []
        for start in range(0, feats.shape[1], chunk):
            pieces.append(streamer.accept(feats[0, start : start + chunk]))
            lp = torch.cat(pieces)
            partial = tokenizer.decode(greedy_decode(lp[None], torch.tensor([len(lp)]))[0])
            log.debug(f"{path} after {(start + chunk) * config.hop_ms:.0f} ms: {partial}")
        lp = torch.cat([*pieces, streamer.finish()])
        texts.append(tokenizer.decode(greedy_decode(lp[None], torch.tensor([len(lp)]))[0]))
    latency = streamer.latency_ms(chunk, config.hop_ms)
    log.info(f"streamed in {chunk * config.hop_ms:.0f} ms chunks: latency {latency:.0f} ms")
    return texts


def evaluate(args: argparse.Namespace) -> int:
    import torch

    from asr_kd.asr.score import error_rates, score_system
    from asr_kd.data.manifest import ManifestError, load_manifest

    if args.threads:
        torch.set_num_threads(args.threads)
    system = _load(args)
    try:
        entries = load_manifest(args.manifest, skip_bad=args.skip_bad_rows)
    except ManifestError as err:
        raise UserError(str(err)) from None
    hyps = _decode(system, [e.wav for e in entries], args)
    refs = {e.id: e.wrd for e in entries}
    hyp_map = {e.id: h for e, h in zip(entries, hyps, strict=False)}
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out}: a file, not a folder; give a folder for the trn files and scores.json")
        out.mkdir(parents=True, exist_ok=True)
        result = score_system(out, "model", refs, hyp_map)
        write_json(out / "scores.json", {"model": args.model, "manifest": args.manifest, **result})
    else:
        result = error_rates([refs[i] for i in refs], [hyp_map[i] for i in refs])
    print(f"{args.manifest}: {result['utterances']} utterances, {result['ref_words']} words")
    print(
        f"WER {100 * result['wer']:.2f}%  (S {result['substitutions']}, D {result['deletions']}, "
        f"I {result['insertions']})   CER {100 * result['cer']:.2f}%"
    )
    return 0


def transcribe(args: argparse.Namespace) -> int:
    import torch

    from asr_kd.data.audio import AudioError, check_audio

    if args.threads:
        torch.set_num_threads(args.threads)
    system = _load(args)
    missing = [a for a in args.audio if not Path(a).exists()]
    if missing:
        raise UserError(f"no such audio file: {missing[0]}")
    for path in args.audio:  # a folder, not audio, truncated or empty: named before any decoding
        try:
            check_audio(path)
        except AudioError as err:
            raise UserError(f"{err}; give WAV, FLAC, OGG or MP3 files that hold speech") from None
    try:
        texts = _stream(system, args.audio, args) if args.chunk_ms else _decode(system, args.audio, args)
    except (AudioError, RuntimeError) as err:
        raise UserError(f"could not read the audio: {err}") from None
    for path, text in zip(args.audio, texts, strict=False):
        print(f"{path}\t{text}")
    return 0
