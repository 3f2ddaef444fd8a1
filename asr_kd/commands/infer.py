"""``asr-kd evaluate MODEL MANIFEST`` and ``asr-kd transcribe MODEL AUDIO...``.

MODEL is a trained model bundle (``model.pt``, or the folder holding it, e.g.
``recipes/synth_en/exp/demo/models/student-kd``); it carries its architecture,
weights, feature normalisation and tokenizer, so it runs on any manifest or audio file.
Several MODELs separated by commas decode as an ensemble (mean of frame posteriors).

Example
-------
    asr-kd evaluate recipes/synth_en/exp/demo/models/student-kd data/test.csv --out scores/
    asr-kd transcribe recipes/synth_en/exp/demo/models/student-kd a.wav b.flac
    asr-kd evaluate MODEL data/test.csv --beam 32 --lm-text data/train.csv   # words + 3-gram LM of train
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from asr_kd.errors import UserError


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
    _common(t)
    t.set_defaults(func=transcribe)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    b = p.add_argument_group("beam search (default: greedy)")
    b.add_argument("--beam", type=int, default=0, help="beam size (torchaudio ctc_decoder); 0: greedy")
    b.add_argument("--lm-text", default=None,
                   help="manifest (CSV/JSONL) or text file (one transcript per line): its words become the "
                        "lexicon and its 3-gram LM scores the hypotheses")
    b.add_argument("--lexicon", default=None, help="lexicon file (word, then its tokens) instead of --lm-text's")
    b.add_argument("--lm", default=None, help="KenLM binary or ARPA file instead of --lm-text's")
    b.add_argument("--lm-weight", type=float, default=0.5)
    b.add_argument("--word-score", type=float, default=0.0)


def _beam(args: argparse.Namespace, tokenizer):
    """The decoding function of the options: greedy, or beam search with an optional lexicon and LM."""
    import tempfile

    from asr_kd.asr.decode import BeamDecoder, greedy_decode
    from asr_kd.asr.lm import decoder_tokens, write_arpa, write_lexicon

    if not args.beam:
        if args.lm_text or args.lexicon or args.lm:
            raise UserError("--lm-text, --lexicon and --lm need --beam N (e.g. --beam 32)")
        return lambda lp, n: [tokenizer.decode(h) for h in greedy_decode(lp, n)]
    lexicon, lm = args.lexicon, args.lm
    if args.lm_text:
        texts = _texts(args.lm_text)
        folder = Path(tempfile.mkdtemp(prefix="asr-kd-lm-"))
        if lexicon is None:
            lexicon = str(folder / "lexicon.txt")
            write_lexicon(texts, tokenizer, lexicon)
        if lm is None:
            lm = str(folder / "lm.arpa")
            write_arpa(texts, lm, order=3)
    for path in (lexicon, lm):
        if path and not Path(path).exists():
            raise UserError(f"no such file: {path}")
    decoder = BeamDecoder(decoder_tokens(tokenizer), beam_size=args.beam, lexicon=lexicon, lm=lm,
                          lm_weight=args.lm_weight, word_score=args.word_score)
    if lexicon:
        return decoder.words
    return lambda lp, n: [tokenizer.decode(h) for h in decoder(lp, n)]


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


def _load(spec: str, device: str):
    from asr_kd.asr.train import load_bundle

    models = []
    for path in spec.split(","):
        models.append(load_bundle(path, device=device))  # BundleError names a wrong path
    base = models[0].info.get("fingerprint", {})
    for path, m in zip(spec.split(","), models):
        if m.info.get("fingerprint", {}) != base:
            raise UserError(f"{path}: made with another front end or tokenizer than {spec.split(',')[0]}; "
                            "an ensemble needs models of one recipe")
    return models


def _decode(models, paths, batch_size: int, device: str, args: argparse.Namespace) -> list[str]:
    import torch

    from asr_kd.asr.data import load_wavs_features
    from asr_kd.asr.recipe import Normalised
    from asr_kd.data.features import FeatureConfig
    from asr_kd.distill import combine

    feats_cfg = models[0].info.get("fingerprint", {}).get("features", {})
    config = FeatureConfig(**{k: v for k, v in feats_cfg.items() if k != "features"})
    decode = _beam(args, models[0].tokenizer())
    nets = [Normalised(m) for m in models]
    texts = []
    for start in range(0, len(paths), batch_size):
        x, n = load_wavs_features(paths[start : start + batch_size], config)
        x, n = x.to(device), n.to(device)
        with torch.no_grad():
            outs = [net(x, n) for net in nets]
            out_n = outs[0][1]
            mask = torch.arange(outs[0][0].shape[1], device=x.device)[None, :] < out_n[:, None]
            lp = outs[0][0] if len(outs) == 1 else combine([o[0] for o in outs], mask=mask)
        texts += decode(lp, out_n)
    return texts


def evaluate(args: argparse.Namespace) -> int:
    import torch

    from asr_kd.asr.score import error_rates, score_system
    from asr_kd.data.manifest import ManifestError, load_manifest

    if args.threads:
        torch.set_num_threads(args.threads)
    models = _load(args.model, args.device)
    try:
        entries = load_manifest(args.manifest, skip_bad=args.skip_bad_rows)
    except ManifestError as err:
        raise UserError(str(err)) from None
    hyps = _decode(models, [e.wav for e in entries], args.batch_size, args.device, args)
    refs = {e.id: e.wrd for e in entries}
    hyp_map = {e.id: h for e, h in zip(entries, hyps)}
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out}: a file, not a folder; give a folder for the trn files and scores.json")
        out.mkdir(parents=True, exist_ok=True)
        result = score_system(out, "model", refs, hyp_map)
        (out / "scores.json").write_text(json.dumps({"model": args.model, "manifest": args.manifest, **result}, indent=1))
    else:
        result = error_rates([refs[i] for i in refs], [hyp_map[i] for i in refs])
    print(f"{args.manifest}: {result['utterances']} utterances, {result['ref_words']} words")
    print(f"WER {100 * result['wer']:.2f}%  (S {result['substitutions']}, D {result['deletions']}, "
          f"I {result['insertions']})   CER {100 * result['cer']:.2f}%")
    return 0


def transcribe(args: argparse.Namespace) -> int:
    import torch

    from asr_kd.data.audio import AudioError, check_audio

    if args.threads:
        torch.set_num_threads(args.threads)
    models = _load(args.model, args.device)
    missing = [a for a in args.audio if not Path(a).exists()]
    if missing:
        raise UserError(f"no such audio file: {missing[0]}")
    for path in args.audio:  # a folder, not audio, truncated or empty: named before any decoding
        try:
            check_audio(path)
        except AudioError as err:
            raise UserError(f"{err}; give WAV, FLAC, OGG or MP3 files that hold speech") from None
    try:
        texts = _decode(models, args.audio, args.batch_size, args.device, args)
    except (AudioError, RuntimeError) as err:
        raise UserError(f"could not read the audio: {err}") from None
    for path, text in zip(args.audio, texts):
        print(f"{path}\t{text}")
    return 0
