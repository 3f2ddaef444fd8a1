"""Stage ``transfer``: a transfer set, audio the students learn from without its transcripts.

The paper distils on a transfer set labelled by the teachers' soft targets; noisy-student
training and icefall's distillation gained most where transcribed speech was scarce. Here the
transfer set is synthesised (``transfer.utterances``: the training voices, sentences of their
own, never the test voices) or read from a manifest (``transfer.manifest``, its transcripts
ignored). Its features are stored like a split's; the ``ensemble`` stage caches the ensemble's
posteriors and greedy transcripts of it by utterance ID, and distilled students (soft term only
on these utterances) and sequence-level students (the ensemble's transcripts) train on it.

Example
-------
    from asr_kd.asr.transfer import prepare_transfer
    prepare_transfer(ctx)      # writes EXP/transfer/feats/ and summary.json
"""

from __future__ import annotations

import logging
from pathlib import Path

from asr_kd.asr.context import Context
from asr_kd.asr.data import extract_features
from asr_kd.asr.prepare import synthesise
from asr_kd.data.features import FeatureConfig
from asr_kd.io import write_json

log = logging.getLogger(__name__)


def transfer_manifest(ctx: Context) -> Path:
    """The transfer set's manifest (synthesised first when ``transfer.utterances`` says so)."""
    t = ctx.settings.transfer
    if t.manifest:
        path = Path(t.manifest)
        if not path.exists():
            from asr_kd.config import ConfigError

            raise ConfigError(f"transfer.manifest: {path} does not exist; give a CSV or JSONL manifest of audio")
        return path
    from asr_kd.data.synth import TRANSFER

    made = synthesise(ctx, ctx.exp.transfer / "corpus", utterances=(0, 0, 0), transfer=int(t.utterances))
    return made[TRANSFER]


def prepare_transfer(ctx: Context) -> None:
    """Store the transfer set's features (IDs must not clash with the training set's)."""
    from asr_kd.data.manifest import load_manifest

    exp = ctx.exp
    path = transfer_manifest(ctx)
    rows = load_manifest(path, skip_bad=ctx.settings.corpus.skip_bad_rows)
    clash = sorted(set(e.id for e in rows) & set(exp.texts("train")))
    if clash:
        from asr_kd.errors import UserError

        raise UserError(
            f"{path}: {len(clash)} transfer utterance ID(s) are also training IDs, e.g. {clash[:3]}; "
            "give the transfer set IDs of its own"
        )
    feature_cfg = FeatureConfig(n_mels=int(ctx.settings.features.n_mels))
    feats = extract_features(
        rows, exp.feats_file("transfer"), feature_cfg, desc="features transfer", progress=ctx.settings.progress
    )
    frames = sum(len(f) for f in feats.values())
    hours = round(frames * feature_cfg.hop / feature_cfg.sample_rate / 3600, 3)
    write_json(exp.transfer_summary_file, {"manifest": str(path), "utterances": len(rows), "hours": hours})
    log.info(f"  transfer: {len(rows)} utterances, {hours} h ({path})")
