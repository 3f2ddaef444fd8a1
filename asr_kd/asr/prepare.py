"""Stage ``prepare``: the corpus as manifests, validated; tokenizer; stored features; normalisation.

The corpus comes from ``corpus.kind``: synthesised (``synth``), given as manifests, or
prepared from a LibriSpeech, Common Voice or plain folder tree. Every split's log-Mel features
are computed once and stored by utterance ID, so every teacher and student reads the same
frames; the train split's mean and variance become the global normalisation.

Example
-------
    from asr_kd.asr.prepare import prepare
    prepare(ctx)        # ctx: asr_kd.asr.context.Context; writes EXP/data (and EXP/corpus)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from asr_kd.asr.context import Context
from asr_kd.asr.data import extract_features
from asr_kd.config import ConfigError
from asr_kd.data.features import FeatureConfig, cmvn_from_features
from asr_kd.io import write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


def prepare(ctx: Context) -> None:
    """Write the experiment's ``data/`` folder (and ``corpus/`` for generated corpora)."""
    from asr_kd.data.manifest import load_manifest
    from asr_kd.data.tokenizer import train_tokenizer

    s, exp = ctx.settings, ctx.exp
    manifests = corpus_manifests(ctx)
    entries = {split: load_manifest(manifests[split], skip_bad=s.corpus.skip_bad_rows) for split in SPLITS}
    tok = train_tokenizer(
        [e.wrd for e in entries["train"]],
        exp.tokenizer_dir,
        kind=s.tokenizer.kind,
        vocab_size=int(s.tokenizer.vocab_size),
    )
    feature_cfg = FeatureConfig(n_mels=int(s.features.n_mels))
    summary: dict = {"splits": {}, "tokenizer": s.tokenizer.to_dict(), "num_classes": tok.vocab_size}
    for split, rows in entries.items():
        feats = extract_features(
            rows, exp.feats_file(split), feature_cfg, desc=f"features {split}", progress=s.progress
        )
        exp.write_texts(split, {e.id: e.wrd for e in rows})
        frames = sum(len(f) for f in feats.values())
        hours = round(frames * feature_cfg.hop / feature_cfg.sample_rate / 3600, 3)
        summary["splits"][split] = {"manifest": str(manifests[split]), "utterances": len(rows), "hours": hours}
        log.info(f"  {split}: {len(rows)} utterances, {hours} h")
        if split == "train":
            cmvn_from_features(feats).save(exp.cmvn_file)
    summary["features"] = feature_cfg.fingerprint()
    write_json(exp.summary_file, summary)


def corpus_manifests(ctx: Context) -> dict[str, Path]:
    """The train/valid/test manifests of the configured corpus (made first when generated)."""
    corpus = ctx.settings.corpus
    kind = corpus.kind
    if kind == "manifests":
        paths = {split: corpus.manifests.get(split) for split in SPLITS}
        missing = [split for split, p in paths.items() if not p]
        if missing:
            raise ConfigError(
                f"corpus.kind is manifests but corpus.manifests.{missing[0]} is not set; "
                f"e.g. --set corpus.manifests.{missing[0]}=path/to/{missing[0]}.csv"
            )
        return {split: Path(str(p)) for split, p in paths.items()}
    out = ctx.exp.corpus
    if kind == "synth":
        return synthesise(ctx, out)
    src = corpus.src
    if not src or not Path(src).exists():
        raise ConfigError(
            f"corpus.kind is {kind} but corpus.src ({src!r}) is not an existing folder; "
            f"set it with --set corpus.src=/path/to/the/corpus"
        )
    from asr_kd.data import prepare as prep

    fn = {
        "librispeech": prep.prepare_librispeech,
        "commonvoice": prep.prepare_commonvoice,
        "folder": prep.prepare_folder,
    }[kind]
    made = fn(Path(src), out)
    result = {}
    for split in SPLITS:
        name = corpus.splits.get(split, split)
        if name not in made:
            raise ConfigError(
                f"the {kind} corpus in {src} has no split {name!r} (found: {sorted(made)}); "
                f"map it with --set corpus.splits.{split}=<one of those>"
            )
        result[split] = made[name]
    return result


def synthesise(ctx: Context, out: Path, **options: Any) -> dict[str, Path]:
    """The configured synthetic corpus (``corpus.synth``) in ``out``, with more ``options`` of
    :func:`asr_kd.data.synth.synthesize_corpus` (e.g. a transfer set only)."""
    from asr_kd.data.synth import synthesize_corpus

    sy = ctx.settings.corpus.synth
    return synthesize_corpus(
        out,
        preset=sy.preset,
        seed=int(sy.seed),
        noise_prob=float(sy.noise_prob),
        snr_db=tuple(sy.snr_db),
        reverb_prob=float(sy.reverb_prob),
        extra_voices=sy.extra_voices,
        jobs=int(ctx.settings.threads),
        progress=ctx.settings.progress,
        **options,
    )
