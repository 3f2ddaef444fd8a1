"""Ship a trained model: export a bundle to ONNX or TorchScript (fp32 or int8) and run it.

The exported file is one self-contained graph, ``(log-Mel features (B, T, n_mels), frames (B,))
-> (log-posteriors (B, T / 4, classes), output frames (B,))``, with the feature normalisation
inside it, plus a JSON record (the ``asr_kd`` entry of the ONNX file's metadata, or the
``asr_kd.json`` extra file of a TorchScript archive) holding the architecture, the front end's
settings, the bundle's ``info`` and its tokenizer's files. Running it needs onnxruntime (ONNX)
or plain torch (TorchScript), no training code; :func:`load_model` loads a bundle or an exported
file, so ``asr-kd evaluate`` / ``transcribe`` and :mod:`asr_kd.asr.inference` take both.

APIs used, and their status in torch 2.11: ONNX through ``torch.onnx.export(..., dynamo=False)``,
the TorchScript-based exporter (deprecated in favour of the ``torch.export`` one, which failed
here on the padded BiLSTM's data-dependent reversal, ``reverse_within``; a BiLSTM goes to ONNX
in its packed form, one bidirectional ``LSTM`` node per layer with ``sequence_lens``); int8 ONNX by
``onnxruntime.quantization.quantize_dynamic`` (int8 weights of LSTM and MatMul, activations
quantised per call; the small convolutions stay fp32); TorchScript by ``torch.jit.trace`` (TorchScript is in
maintenance mode) and int8 TorchScript by ``torch.ao.quantization.quantize_dynamic``
(``nn.LSTM`` and ``nn.Linear``; deprecated, to move to torchao).

Example
-------
>>> import tempfile, torch
>>> from asr_kd.data.features import GlobalCMVN
>>> from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel
>>> from asr_kd.models.bundle import load_bundle, save_bundle
>>> torch.manual_seed(0) and None
>>> folder = Path(tempfile.mkdtemp())
>>> net = CTCAcousticModel(AcousticConfig(num_classes=5, n_mels=8, hidden=4, conv_channels=2, packed=False))
>>> save_bundle(folder / "model.pt", net, GlobalCMVN(8), {"name": "student"})
>>> report = export_model(folder / "model.pt", folder / "student.onnx")
>>> report["max_abs_diff"] < 1e-4
True
>>> exported = load_model(folder / "student.onnx")
>>> lp, n = exported.log_probs(torch.randn(2, 40, 8), torch.tensor([40, 24]))
>>> lp.shape, n.tolist(), exported.info["name"]
(torch.Size([2, 10, 5]), [10, 6], 'student')
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from asr_kd.io import write_atomic
from asr_kd.models.acoustic import CTCAcousticModel
from asr_kd.models.bundle import BundleError, LoadedModel, load_bundle, tokenizer_from_files

FORMATS = ("onnx", "torchscript")
SUFFIXES = {".onnx": "onnx", ".ts": "torchscript", ".torchscript": "torchscript"}
RECORD = "asr_kd"  #: the metadata key (ONNX) / extra file stem (TorchScript) of the JSON record
FP32_TOLERANCE = 1e-4  #: max abs difference of log-posteriors, exported fp32 vs PyTorch
INT8_OPS = ["LSTM", "MatMul"]  #: ONNX operators whose weights int8 export quantises


class Deployable(nn.Module):
    """A bundle's model with its normalisation inside: raw features -> log-posteriors, frames."""

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__()
        self.model = loaded.model
        cmvn = loaded.norm.cmvn
        if cmvn is None:
            raise BundleError("this bundle holds no feature normalisation; it cannot be exported")
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", cmvn.mean.detach().clone().float())
        self.register_buffer("std", cmvn.std.detach().clone().float())

    def forward(self, feats: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        logits, out_frames = self.model((feats - self.mean) / self.std, frames)
        return logits.log_softmax(-1), out_frames


def export_model(
    bundle: str | os.PathLike, out: str | os.PathLike, fmt: str | None = None, int8: bool = False
) -> dict[str, Any]:
    """Export ``bundle`` (``model.pt`` or its folder) to ``out``; the format from ``fmt`` or the
    suffix (``.onnx``, ``.ts``). Checks the file against PyTorch on a random batch of two
    lengths and returns ``{"format", "int8", "bytes", "max_abs_diff", "argmax_agreement"}``.

    Raises:
        BundleError: ``bundle`` is not a model bundle.
        ValueError: an unknown format, or an fp32 export that differs from PyTorch by more
            than :data:`FP32_TOLERANCE`.
    """
    fmt = fmt or SUFFIXES.get(Path(out).suffix.lower())
    if fmt not in FORMATS:
        raise ValueError(f"{out}: give --format onnx or torchscript (or a .onnx / .ts file name), got {fmt!r}")
    loaded = _blstm_as(load_bundle(bundle), packed=fmt == "onnx")
    if int8 and fmt == "torchscript" and loaded.model.cfg.encoder != "blstm":
        raise ValueError(
            f"{out}: TorchScript int8 quantises plain nn.LSTM and nn.Linear modules only, so a "
            f"{loaded.model.cfg.encoder!r} encoder would stay fp32; export int8 as ONNX (a .onnx file)"
        )
    net = Deployable(loaded).eval()
    record = json.dumps(_record(loaded, fmt, int8))
    writer = _write_onnx if fmt == "onnx" else _write_torchscript
    write_atomic(out, lambda tmp: writer(net, tmp, record, int8, loaded.model.cfg.n_mels))
    exported = load_model(out)
    assert isinstance(exported, ExportedModel)
    check = compare(net, exported, loaded.model.cfg.n_mels)
    if not int8 and check["max_abs_diff"] > FP32_TOLERANCE:
        Path(out).unlink()
        raise ValueError(f"{out}: the exported model differs from PyTorch by {check['max_abs_diff']:.2e} (removed)")
    return {"format": fmt, "int8": int8, "bytes": Path(out).stat().st_size, **check}


def _blstm_as(loaded: LoadedModel, packed: bool) -> LoadedModel:
    """A BiLSTM bundle with its encoder packed or padded: the same function of the same weights
    (tested in test_asr_structure). ONNX takes the packed one: the exporter turns it into one
    bidirectional ``LSTM`` node per layer reading ``sequence_lens`` (measured 1.5-1.8x faster
    than the padded one's per-item reversals, see tools/results/deploy.md). TorchScript takes
    the padded one: int8 swaps each plain ``nn.LSTM`` for a quantised one."""
    cfg = loaded.model.cfg
    if cfg.encoder != "blstm" or cfg.packed == packed:
        return loaded
    other = CTCAcousticModel(replace(cfg, packed=packed))
    other.load_state_dict(loaded.model.state_dict())
    return replace(loaded, model=other.eval())


def _record(loaded: LoadedModel, fmt: str, int8: bool) -> dict[str, Any]:
    return {
        "format": fmt,
        "int8": int8,
        "architecture": loaded.architecture,
        "config": loaded.model.cfg.to_dict(),
        "parameters": loaded.parameters,
        "info": loaded.info,
        "tokenizer_files": {k: base64.b64encode(v).decode("ascii") for k, v in loaded.tokenizer_files.items()},
    }


def _example(n_mels: int) -> tuple[Tensor, Tensor]:
    return torch.randn(2, 203, n_mels, generator=torch.Generator().manual_seed(0)), torch.tensor([203, 117])


def _write_onnx(net: nn.Module, path: Path, record: str, int8: bool, n_mels: int) -> None:
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
            torch.onnx.export(
                net,
                _example(n_mels),
                str(fp32),
                input_names=["feats", "frames"],
                output_names=["log_probs", "out_frames"],
                dynamic_axes={
                    "feats": {0: "batch", 1: "time"},
                    "frames": {0: "batch"},
                    "log_probs": {0: "batch", 1: "steps"},
                    "out_frames": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        source = fp32
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            source = Path(tmp) / "int8.onnx"
            # Conv stays fp32: onnxruntime's ConvInteger ran slower than its fused fp32 Conv here,
            # and the convolutions hold under 1% of the weights
            quantize_dynamic(str(fp32), str(source), weight_type=QuantType.QInt8, op_types_to_quantize=INT8_OPS)
        model = onnx.load(str(source))
        onnx.helper.set_model_props(model, {RECORD: record})
        onnx.save(model, str(path))


def _write_torchscript(net: nn.Module, path: Path, record: str, int8: bool, n_mels: int) -> None:
    if int8:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
            net = torch.ao.quantization.quantize_dynamic(net, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic (traced, not constant); deprecation
        traced = torch.jit.trace(net, _example(n_mels), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={f"{RECORD}.json": record})


class ExportedModel:
    """An exported model loaded for inference; it quacks like :class:`LoadedModel` for
    :class:`~asr_kd.asr.inference.System` (``log_probs``, ``info``, ``tokenizer``, ``parameters``)."""

    def __init__(self, path: Path, record: dict[str, Any], run: Any) -> None:
        self.path, self.record, self._run = path, record, run
        self.info: dict = record["info"]
        self.tokenizer_files = {k: base64.b64decode(v) for k, v in record["tokenizer_files"].items()}
        self.device = "cpu"

    @property
    def architecture(self) -> dict:
        return dict(self.record["architecture"])

    @property
    def parameters(self) -> int:
        return int(self.record["parameters"])

    def tokenizer(self):
        return tokenizer_from_files(self.tokenizer_files)

    def to(self, device: str | torch.device) -> ExportedModel:
        self.device = str(device)
        return self

    @torch.no_grad()
    def log_probs(self, feats: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Raw log-Mel features -> ``(B, T / 4, classes)`` log-probabilities and output frames."""
        lp, n = self._run(feats.float().cpu(), frames.cpu())
        return lp.to(feats.device), n.to(feats.device)


def load_model(path: str | os.PathLike, device: str = "cpu") -> LoadedModel | ExportedModel:
    """A bundle (``model.pt`` or its folder) or an exported file (``.onnx``, ``.ts``)."""
    p = Path(path)
    fmt = SUFFIXES.get(p.suffix.lower())
    if fmt is None:
        return load_bundle(p, device=device)
    if not p.is_file():
        raise BundleError(f"{p}: no exported model here; make one with `asr-kd export MODEL {p.name}`")
    fix = f"give a file written by `asr-kd export` ({', '.join(SUFFIXES)})"
    if fmt == "torchscript" or zipfile.is_zipfile(p):
        return _load_torchscript(p, fix).to(device)
    return _load_onnx(p, fix).to(device)


def _load_onnx(p: Path, fix: str) -> ExportedModel:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
        record = json.loads(session.get_modelmeta().custom_metadata_map[RECORD])
    except Exception as err:  # noqa: BLE001 - a wrong or damaged file fails in many ways
        raise BundleError(f"{p}: not an ONNX model exported by asr-kd ({type(err).__name__}: {err}); {fix}") from None

    def run(feats: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        lp, n = session.run(None, {"feats": feats.numpy(), "frames": frames.numpy()})
        return torch.from_numpy(lp), torch.from_numpy(n)

    return ExportedModel(p, record, run)


def _load_torchscript(p: Path, fix: str) -> ExportedModel:
    extra = {f"{RECORD}.json": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice (module docstring)
            module = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
        record = json.loads(extra[f"{RECORD}.json"])
    except Exception as err:  # noqa: BLE001
        raise BundleError(
            f"{p}: not a TorchScript model exported by asr-kd ({type(err).__name__}: {err}); {fix}"
        ) from None
    module.eval()
    return ExportedModel(p, record, lambda feats, frames: module(feats, frames))


@torch.no_grad()
def compare(reference: nn.Module, exported: ExportedModel, n_mels: int) -> dict[str, float]:
    """Max abs difference of log-posteriors on real frames and argmax agreement, on a random
    batch of two other lengths than the export's example."""
    x, n = torch.randn(2, 161, n_mels, generator=torch.Generator().manual_seed(1)), torch.tensor([161, 90])
    ref, ref_n = reference(x, n)
    got, got_n = exported.log_probs(x, n)
    if not torch.equal(ref_n, got_n):
        raise ValueError(f"{exported.path}: the exported model counts other frames ({got_n.tolist()})")
    diffs, agree, total = [], 0, 0
    for b, k in enumerate(ref_n.tolist()):
        diffs.append((ref[b, :k] - got[b, :k]).abs().max().item())
        agree += int((ref[b, :k].argmax(-1) == got[b, :k].argmax(-1)).sum())
        total += k
    return {"max_abs_diff": max(diffs), "argmax_agreement": agree / total}
