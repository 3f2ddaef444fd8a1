"""What every stage of an ASR recipe run works with: settings, experiment folder, plan, device.

A :class:`Context` is made once per run (and once in each worker process) from the config;
stage functions take it and read or write only through its :class:`Experiment`.

Example
-------
>>> from asr_kd.asr.settings import AsrSettings
>>> ctx = Context(AsrSettings.from_dict({"device": "cpu"}), Experiment("exp/x"))
>>> ctx.device, ctx.plan.main_ensemble, ctx.subsampling
('cpu', 'ensemble-guided', 4)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from asr_kd.asr.experiment import Experiment
from asr_kd.asr.settings import AsrSettings
from asr_kd.asr.specs import ModelSpec, Plan, plan
from asr_kd.config import ConfigError
from asr_kd.io import digest
from asr_kd.models.acoustic import AcousticConfig


def resolve_device(want: str) -> str:
    """``auto`` -> cuda when torch sees a GPU, else cpu; ``cuda`` without one is refused."""
    if want == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but torch sees no CUDA device; use --set device=cpu")
    return want


@dataclass
class Context:
    """One run: its settings, its experiment folder, its models, its device.

    Args:
        raw: the config as read (with ``preset``, ``overrides``, ``config_path``): what a
            worker process needs to make the same context.
    """

    settings: AsrSettings
    exp: Experiment
    raw: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.settings.device)
        self.plan: Plan = plan(self.settings)

    @property
    def subsampling(self) -> int:
        return AcousticConfig(num_classes=2).subsampling

    def architecture(self, spec: ModelSpec) -> AcousticConfig:
        return spec.architecture(self.exp.summary()["num_classes"], self.settings.features.n_mels)

    def fingerprint(self) -> dict:
        """What must match between teachers, their cached posteriors and students."""
        s = self.exp.summary()
        return {
            "features": s["features"],
            "subsampling": self.subsampling,
            "num_classes": s["num_classes"],
            "tokenizer": self.exp.tokenizer_meta(),
            "train_ids": digest(sorted(self.exp.texts("train"))),
        }

    def transfer_ids(self) -> list[str]:
        """The transfer set's utterance IDs (none when no transfer set is configured)."""
        return list(self.exp.feats("transfer")) if self.settings.transfer.active else []

    def cache_fingerprint(self, ensemble: str) -> dict:
        """The fingerprint of an ensemble's cache: the run's, its members' bundles, how they combine."""
        e = self.settings.ensemble
        members = self.plan.systems[ensemble]
        out = {
            **self.fingerprint(),
            "members": {m: self.exp.info_digest(m) for m in members},
            "method": e.method,
            "top_k": int(e.top_k),
        }
        if self.settings.transfer.active:
            out["transfer_ids"] = digest(sorted(self.transfer_ids()))
        if e.weights is not None:
            out["weights"] = list(e.weights)
        if ensemble not in self.plan.ensembles:  # the generalist + specialists: how they combine
            out["specialists"] = self.settings.specialists.to_dict()
        return out

    def ensemble_cache(self, name: str):
        from asr_kd.distill import TeacherCache

        return TeacherCache(self.exp.cache_dir(name), fingerprint=self.cache_fingerprint(name))
