"""``asr-kd export MODEL OUT``: a trained model as one ONNX or TorchScript file, fp32 or int8.

The file holds the model with its feature normalisation, its tokenizer and its architecture
(:mod:`asr_kd.models.export`); ``asr-kd evaluate`` and ``transcribe`` take it like a bundle.

Example
-------
    asr-kd export recipes/synth_en/exp/full/models/student-kd student.onnx
    asr-kd export recipes/synth_en/exp/full/models/student-kd student-int8.onnx --int8
    asr-kd evaluate student-int8.onnx data/test.csv
"""

from __future__ import annotations

import argparse

from asr_kd.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained model to ONNX or TorchScript (fp32 or int8)")
    p.add_argument("model", help="model bundle (model.pt or its folder)")
    p.add_argument("out", help="the file to write (.onnx or .ts)")
    p.add_argument(
        "--format",
        choices=["onnx", "torchscript"],
        default=None,
        help="default: from OUT's suffix (.onnx: onnx, .ts: torchscript)",
    )
    p.add_argument("--int8", action="store_true", help="int8 weights (dynamic quantisation)")
    p.set_defaults(func=export)


def export(args: argparse.Namespace) -> int:
    from asr_kd.models.export import export_model

    try:
        r = export_model(args.model, args.out, args.format, args.int8)
    except ValueError as err:
        raise UserError(str(err)) from None
    kind = f"{r['format']} {'int8' if r['int8'] else 'fp32'}"
    print(
        f"{args.out}: {kind}, {r['bytes'] / 1e6:.2f} MB; against PyTorch on a random batch: max abs difference "
        f"of log-posteriors {r['max_abs_diff']:.2e}, frame argmax agreement {100 * r['argmax_agreement']:.1f}%"
    )
    return 0
