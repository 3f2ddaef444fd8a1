"""The experiment folder: every path and stored file of an ASR recipe run, and nowhere else.

::

    EXP/config.json, command.txt     the settings and command of the last run
    EXP/stages/NN-NAME.done          stage markers (asr_kd.stages)
    EXP/corpus/                      synthesised or prepared manifests
    EXP/data/                        features (feats/SPLIT/), transcripts (SPLIT.text.json),
                                     tokenizer/, cmvn.json, summary.json
    EXP/models/NAME/                 model.pt (bundle), history.json, ckpt/
    EXP/transfer/                    the transfer set: corpus/ (when synthesised), feats/, summary.json
    EXP/guidance/spikes.pt           teacher 0's forced spikes (guided teachers)
    EXP/ensembles/NAME/              ensemble.json (members, method, weights), cache/, train_hyps.json
    EXP/score/                       NAME.json, trn files, alignments, lm/, scores.json
    EXP/logs/NAME.log                worker processes' logs
    EXP/results.json, RESULTS.md, plots/

Reading goes through the methods here (stored features, transcripts, tokenizer, normalisation,
bundles' info), cached per object, so the stored formats are known in one place.

Example
-------
>>> exp = Experiment("exp/demo")
>>> exp.bundle("student-kd").as_posix(), exp.cache_dir("ensemble").as_posix()
('exp/demo/models/student-kd/model.pt', 'exp/demo/ensembles/ensemble/cache')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from asr_kd.io import digest, read_json, write_json


class Experiment:
    """The layout of one experiment folder ``root``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._memo: dict[str, Any] = {}

    # -- paths
    @property
    def data(self) -> Path:
        return self.root / "data"

    corpus = property(lambda self: self.root / "corpus")
    stages = property(lambda self: self.root / "stages")
    logs = property(lambda self: self.root / "logs")
    score_dir = property(lambda self: self.root / "score")
    lm_dir = property(lambda self: self.root / "score" / "lm")
    plots = property(lambda self: self.root / "plots")
    guidance = property(lambda self: self.root / "guidance")
    transfer = property(lambda self: self.root / "transfer")
    transfer_summary_file = property(lambda self: self.root / "transfer" / "summary.json")
    ensembles = property(lambda self: self.root / "ensembles")
    models = property(lambda self: self.root / "models")
    spikes_file = property(lambda self: self.root / "guidance" / "spikes.pt")
    tokenizer_dir = property(lambda self: self.root / "data" / "tokenizer")
    cmvn_file = property(lambda self: self.root / "data" / "cmvn.json")
    summary_file = property(lambda self: self.root / "data" / "summary.json")
    config_file = property(lambda self: self.root / "config.json")
    command_file = property(lambda self: self.root / "command.txt")
    results_file = property(lambda self: self.root / "results.json")
    results_md = property(lambda self: self.root / "RESULTS.md")
    scores_file = property(lambda self: self.root / "score" / "scores.json")

    def feats_file(self, split: str) -> Path:
        """Stored features of a corpus split, or of the transfer set (``split="transfer"``): a
        sharded store (:mod:`asr_kd.data.feature_store`), or the one file of older experiments."""
        folder = self.transfer / "feats" if split == "transfer" else self.data / "feats" / split
        legacy = folder.with_suffix(".pt")
        return legacy if legacy.exists() and not folder.exists() else folder

    def texts_file(self, split: str) -> Path:
        return self.data / f"{split}.text.json"

    def model_dir(self, name: str) -> Path:
        return self.models / name

    def bundle(self, name: str) -> Path:
        return self.model_dir(name) / "model.pt"

    def history_file(self, name: str) -> Path:
        return self.model_dir(name) / "history.json"

    def ensemble_dir(self, name: str) -> Path:
        return self.ensembles / name

    def cache_dir(self, name: str) -> Path:
        return self.ensemble_dir(name) / "cache"

    def train_hyps_file(self, ensemble: str) -> Path:
        return self.ensemble_dir(ensemble) / "train_hyps.json"

    def ensemble_file(self, ensemble: str) -> Path:
        return self.ensemble_dir(ensemble) / "ensemble.json"

    def score_file(self, name: str) -> Path:
        return self.score_dir / f"{name}.json"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    # -- stored data
    def summary(self) -> dict:
        """What the prepare stage recorded: splits, tokenizer, classes, feature settings."""
        return read_json(self.summary_file)

    def feats(self, split: str) -> Mapping[str, Tensor]:
        """``{id: (frames, n_mels) float16}`` raw log-Mels of ``split``, memory-mapped (opened once)."""
        from asr_kd.asr.data import load_features

        key = f"feats:{split}"
        if key not in self._memo:
            self._memo[key] = load_features(self.feats_file(split))
        return self._memo[key]

    def texts(self, split: str) -> dict[str, str]:
        return read_json(self.texts_file(split))

    def write_texts(self, split: str, texts: dict[str, str]) -> None:
        write_json(self.texts_file(split), texts)

    def tokenizer(self):
        from asr_kd.data.tokenizer import load_tokenizer

        if "tok" not in self._memo:
            self._memo["tok"] = load_tokenizer(self.tokenizer_dir)
        return self._memo["tok"]

    def tokenizer_meta(self) -> dict:
        return read_json(self.tokenizer_dir / "tokenizer.json")

    def cmvn(self):
        from asr_kd.data.features import GlobalCMVN

        return GlobalCMVN.load(self.cmvn_file)

    def info(self, name: str, stored: bool = False) -> dict:
        """Model ``name``'s bundle info (:func:`asr_kd.models.bundle.read_info`)."""
        from asr_kd.models.bundle import read_info

        return read_info(self.bundle(name), stored=stored)

    def info_digest(self, name: str) -> str:
        """A digest of model ``name``'s stored info: it changes when the model is trained again."""
        return digest(self.info(name, stored=True))

    def load(self, name: str, device: str = "cpu"):
        from asr_kd.models.bundle import load_bundle

        return load_bundle(self.model_dir(name), device=device)

    def history(self, name: str) -> dict:
        """``{epoch: {train_loss, valid_loss, valid_wer}}`` of model ``name`` (WER as a fraction)."""
        from asr_kd.models.bundle import read_format

        path = self.history_file(name)
        history = read_json(path) if path.exists() else {}
        if history and self.bundle(name).exists() and read_format(self.bundle(name)) < 2:
            history = {e: {**h, "valid_wer": h["valid_wer"] / 100} for e, h in history.items()}  # a percentage then
        return history

    def train_hyps(self, ensemble: str) -> dict[str, str]:
        return read_json(self.train_hyps_file(ensemble))

    def scores(self) -> dict:
        return read_json(self.scores_file)
