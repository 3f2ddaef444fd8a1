"""The model bundle: one file that holds everything needed to run a trained acoustic model.

``model.pt`` holds the architecture (config with the encoder's name, subsampling factor),
the weights, the feature normalisation, the tokenizer's files (so the bundle decodes to text
anywhere) and ``info`` (name, fingerprint, best epoch, validation WER as a fraction, ...).
Every model, however it was trained, leaves as a bundle; scoring, ``asr-kd evaluate``,
``transcribe`` and the ensemble all take bundles. Bundles written before the architecture
was recorded (format 1) still load: they are BiLSTM models whose ``valid_wer`` is a percentage.

Example
-------
>>> import tempfile, torch
>>> from asr_kd.data.features import GlobalCMVN
>>> model = CTCAcousticModel(AcousticConfig(num_classes=5, n_mels=8, hidden=4, conv_channels=2))
>>> path = Path(tempfile.mkdtemp()) / "model.pt"
>>> save_bundle(path, model, GlobalCMVN(8), {"name": "teacher-0", "valid_wer": 0.5})
>>> loaded = load_bundle(path)
>>> loaded.info["valid_wer"], loaded.architecture["encoder"], loaded.architecture["subsampling"]
(0.5, 'blstm', 4)
>>> lp, n = loaded.log_probs(torch.randn(1, 40, 8), torch.tensor([40]))
>>> lp.shape, n.tolist()
(torch.Size([1, 10, 5]), [10])
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from asr_kd.data.features import FeatureNorm, GlobalCMVN
from asr_kd.errors import UserError
from asr_kd.io import write_atomic
from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel, count_parameters

FORMAT = 2  #: 2: architecture recorded, valid_wer a fraction; 1 (no "format" key): before that


class BundleError(UserError):
    """A path that does not hold a usable model bundle; the message names it and the fix."""


def save_bundle(
    path: str | os.PathLike,
    model: CTCAcousticModel,
    cmvn: GlobalCMVN,
    info: Mapping[str, Any],
    tokenizer_dir: str | os.PathLike | None = None,
) -> None:
    """Write a self-contained model file (atomically)."""
    files = {}
    if tokenizer_dir is not None:
        files = {p.name: p.read_bytes() for p in Path(tokenizer_dir).iterdir() if p.name.startswith("tokenizer")}
    bundle = {
        "format": FORMAT,
        "architecture": {"model": type(model).__name__, "encoder": model.cfg.encoder, "subsampling": model.subsampling},
        "config": model.cfg.to_dict(),
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "cmvn": {"mean": cmvn.mean.cpu(), "std": cmvn.std.cpu()},
        "tokenizer_files": files,
        "info": dict(info),
    }
    write_atomic(path, lambda tmp: torch.save(bundle, tmp))


def _bundle_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    p = p / "model.pt" if p.is_dir() else p
    if not p.exists():
        raise BundleError(f"{p}: no trained model here; train it with `asr-kd run CONFIG` first")
    return p


def _read(p: Path) -> dict:
    try:
        bundle = torch.load(p, map_location="cpu", weights_only=False)
        AcousticConfig.from_dict(bundle["config"])
        bundle["state"], bundle["cmvn"], bundle["info"]
    except Exception as err:  # noqa: BLE001 - unpickling fails in many ways on a wrong file
        raise BundleError(
            f"{p}: not a model bundle of asr-kd ({type(err).__name__}: {err}); give the model.pt "
            "written by `asr-kd run` (models/NAME/model.pt) or its folder"
        ) from None
    return bundle


def _normalised_info(bundle: Mapping[str, Any]) -> dict:
    info = dict(bundle["info"])
    if bundle.get("format", 1) < 2 and info.get("valid_wer") is not None:
        info["valid_wer"] = info["valid_wer"] / 100  # format 1 stored a percentage
    return info


@lru_cache(maxsize=256)
def _stored_info(path: str, mtime_ns: int) -> tuple[dict, dict, int]:
    bundle = _read(Path(path))
    return dict(bundle["info"]), _normalised_info(bundle), int(bundle.get("format", 1))


def read_info(path: str | os.PathLike, stored: bool = False) -> dict:
    """A bundle's ``info`` (``valid_wer`` as a fraction); ``stored``: exactly as written in the file
    (what fingerprints digest, so those of older bundles stay what they were)."""
    p = _bundle_file(path)
    raw, normalised, _ = _stored_info(str(p.resolve()), p.stat().st_mtime_ns)
    return dict(raw if stored else normalised)


def read_format(path: str | os.PathLike) -> int:
    """The bundle's :data:`FORMAT` (1: written before the architecture was recorded)."""
    p = _bundle_file(path)
    return _stored_info(str(p.resolve()), p.stat().st_mtime_ns)[2]


@dataclass
class LoadedModel:
    """A model bundle loaded for inference."""

    model: CTCAcousticModel
    norm: FeatureNorm
    info: dict
    tokenizer_files: dict

    @property
    def architecture(self) -> dict:
        return {
            "model": type(self.model).__name__,
            "encoder": self.model.cfg.encoder,
            "subsampling": self.model.subsampling,
        }

    def tokenizer(self):
        """The tokenizer the model was trained with (from the bundle's own copy)."""
        return tokenizer_from_files(self.tokenizer_files)

    @property
    def parameters(self) -> int:
        return count_parameters(self.model)

    def to(self, device: str | torch.device) -> LoadedModel:
        self.model.to(device)
        self.norm.to(device)
        return self

    @torch.no_grad()
    def log_probs(self, feats: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw log-Mel features -> ``(B, T, classes)`` log-probabilities and output frame counts."""
        self.model.eval()
        x = self.norm(feats, frames, augment=False)
        logits, n = self.model(x, frames.to(x.device))
        return logits.log_softmax(-1), n


def tokenizer_from_files(files: Mapping[str, bytes]):
    """The tokenizer stored as ``{file name: bytes}`` in a bundle or an exported model."""
    from asr_kd.data.tokenizer import load_tokenizer

    if not files:
        raise BundleError("this model holds no tokenizer; save its bundle with tokenizer_dir")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        return load_tokenizer(tmp)


def load_bundle(path: str | os.PathLike, device: str = "cpu") -> LoadedModel:
    """Load a ``model.pt`` bundle (or a folder holding one).

    Raises:
        BundleError: no bundle there, or the file is not one (another file, truncated, or
            written by an incompatible version).
    """
    p = _bundle_file(path)
    bundle = _read(p)
    model = CTCAcousticModel(AcousticConfig.from_dict(bundle["config"]))
    try:
        model.load_state_dict(bundle["state"])
    except RuntimeError as err:
        raise BundleError(
            f"{p}: its weights do not fit its architecture; the file is damaged, train it again "
            f"({str(err).splitlines()[0]})"
        ) from None
    cmvn = GlobalCMVN(len(bundle["cmvn"]["mean"]))
    cmvn.load_state_dict({"mean": bundle["cmvn"]["mean"], "std": bundle["cmvn"]["std"]}, strict=False)
    return LoadedModel(
        model, FeatureNorm(cmvn, augment=None), _normalised_info(bundle), dict(bundle.get("tokenizer_files", {}))
    ).to(device)
