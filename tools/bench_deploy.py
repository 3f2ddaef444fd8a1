"""Benchmark: what exporting a model buys. Each model as PyTorch fp32 (its bundle), ONNX fp32,
ONNX int8, TorchScript fp32 and TorchScript int8: size on disk, peak memory of a process that
loads it and decodes, real-time factor on one thread one utterance at a time, WER on a test set.

    python tools/bench_deploy.py --model teacher=EXP/models/teacher-0 \\
        --model ensemble=EXP/models/teacher-0,EXP/models/teacher-1,EXP/models/teacher-2,EXP/models/teacher-3 \\
        --model student=EXP/models/student-kd --manifest EXP/corpus/test.csv --out tools/results/deploy.md

RTFs are timed in turns (tools/benchkit.py) over the first ``--utterances`` test utterances
(features precomputed: the front end is the same for every variant and not part of the model).
Peak memory is the maximum resident set of a fresh process that imports only what the variant
needs (onnxruntime and numpy for ONNX, torch for the others), loads the model and decodes those
utterances. WER is greedy, on every utterance of ``--manifest``, through ``asr_kd.asr.inference``,
with the max abs difference of each variant's log-posteriors from PyTorch's on every real frame.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {  # name -> (exported file suffix, int8), None: the PyTorch bundle itself
    "PyTorch fp32": None,
    "ONNX fp32": (".onnx", False),
    "ONNX int8": (".onnx", True),
    "TorchScript fp32": (".ts", False),
    "TorchScript int8": (".ts", True),
}


def _child(spec: str, feats_file: str) -> None:
    """Load ``spec`` (comma-separated files), decode every utterance, print the peak RSS in MB."""
    import numpy as np

    feats = list(np.load(feats_file).values())
    paths = spec.split(",")
    if all(p.endswith(".onnx") for p in paths):  # no torch in this process
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        sessions = [ort.InferenceSession(p, options, providers=["CPUExecutionProvider"]) for p in paths]
        for x in feats:
            inputs = {"feats": x[None], "frames": np.array([len(x)], dtype=np.int64)}
            probs = sum(np.exp(s.run(None, inputs)[0]) for s in sessions)
            np.argmax(probs, -1)
    else:
        import torch

        from asr_kd.asr.inference import load_system

        torch.set_num_threads(1)
        system = load_system(spec)
        for x in feats:
            system.log_probs(torch.from_numpy(x)[None], torch.tensor([len(x)]))[0].argmax(-1)
    print(json.dumps({"peak_mb": _peak_rss_mb()}))


def _peak_rss_mb() -> float:
    """This process's peak resident set: VmHWM (Linux; reset by exec, unlike ru_maxrss, which a
    child started by fork + exec inherits from its parent), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_mb(spec: str, feats_file: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, __file__, "--child", spec, "--feats", feats_file], capture_output=True, text=True, env=env
    )
    if out.returncode:
        raise RuntimeError(f"measuring the memory of {spec} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def _exported(name: str, spec: str, suffix: str, int8: bool, work: Path) -> str:
    """Export each bundle of ``spec`` into ``work`` (named by the model's NAME and member index;
    written anew every run, so a reused --work folder never serves another model's file)."""
    from asr_kd.models.export import export_model

    files = []
    for i, bundle in enumerate(spec.split(",")):
        out = work / f"{name}-{i}{'-int8' if int8 else ''}{suffix}"
        export_model(bundle, out, int8=int8)
        files.append(str(out))
    return ",".join(files)


def _size(spec: str) -> int:
    return sum((Path(p) / "model.pt" if Path(p).is_dir() else Path(p)).stat().st_size for p in spec.split(","))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[], help="NAME=BUNDLE[,BUNDLE...] (several: an ensemble)")
    p.add_argument("--manifest", help="test manifest (CSV/JSONL): WER on all of it, RTF on its first utterances")
    p.add_argument("--utterances", type=int, default=40, help="utterances timed one at a time (default 40)")
    p.add_argument("--repeats", type=int, default=3, help="rounds of timing; the median is reported")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    p.add_argument("--work", default=None, help="folder for the exported files (default: a temporary one)")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown report here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--feats", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args.child, args.feats)

    import numpy as np
    import torch
    from benchkit import emit_report, interleaved_medians

    from asr_kd.asr.data import load_wavs_features
    from asr_kd.asr.decode import greedy_decode
    from asr_kd.asr.inference import load_system
    from asr_kd.asr.score import error_rates
    from asr_kd.data.manifest import read_manifest

    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="asr-kd-deploy-"))
    work.mkdir(parents=True, exist_ok=True)
    models = dict(m.split("=", 1) for m in args.model)
    chosen = [v for v in args.variants.split(",") if v]
    if chosen[0] != "PyTorch fp32" or set(chosen) - set(VARIANTS):
        p.error(f"--variants: PyTorch fp32 first (the reference), then any of {list(VARIANTS)[1:]}")
    specs, refused = {}, {}
    for name, spec in models.items():
        for v in chosen:
            try:
                specs[(name, v)] = spec if VARIANTS[v] is None else _exported(name, spec, *VARIANTS[v], work)
            except ValueError as err:  # a variant the exporter refuses for this model (said in the table)
                refused[(name, v)] = str(err).split(": ", 1)[-1]
    systems = {key: load_system(spec) for key, spec in specs.items()}
    first = next(iter(systems.values()))
    entries = read_manifest(args.manifest)
    feats: list[torch.Tensor] = []
    for start in range(0, len(entries), 32):
        x, n = load_wavs_features([e.wav for e in entries[start : start + 32]], first.feature_config())
        feats += [x[i, : n[i]] for i in range(len(n))]
    timed = feats[: args.utterances]
    audio_s = sum(len(x) for x in timed) * first.feature_config().hop_ms / 1000
    feats_file = str(work / "feats.npz")
    np.savez(feats_file, *[x.numpy() for x in timed])

    def decode_all(system):
        return lambda: [system.log_probs(x[None], torch.tensor([len(x)]))[0].argmax(-1) for x in timed]

    start = time.time()
    seconds = interleaved_medians({key: decode_all(s) for key, s in systems.items()}, args.repeats)
    tokenizer = first.tokenizer()
    rows, reference, diffs = [], {}, {}
    for key, system in systems.items():
        hyps, diff = [], 0.0
        for i in range(0, len(feats), 16):
            chunk = feats[i : i + 16]
            n = torch.tensor([len(x) for x in chunk])
            x = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
            lp, out_n = system.log_probs(x, n)
            hyps += [tokenizer.decode(h) for h in greedy_decode(lp, out_n)]
            if key[1] == "PyTorch fp32":  # the reference: the first variant of every model
                reference[(key[0], i)] = lp
            else:  # max abs difference of log-posteriors on real frames, over the whole test set
                ref = reference[(key[0], i)]
                diff = max(diff, *((lp[b, :k] - ref[b, :k]).abs().max().item() for b, k in enumerate(out_n.tolist())))
        diffs[key] = diff
        wer = error_rates([e.wrd for e in entries], hyps)["wer"]
        rows.append((key, _size(specs[key]), _peak_mb(specs[key], feats_file), seconds[key] / audio_s, wer))
    base = {name: next(r for r in rows if r[0][0] == name) for name in models}
    teacher = rows[0]
    same_variant = {key[1]: rtf for key, _, _, rtf, _ in rows if key[0] == teacher[0][0]}  # engine to engine
    lines = [
        "# Deployment: exported and int8 models",
        "",
        f"Command: `python tools/bench_deploy.py {' '.join(sys.argv[1:])}`",
        f"torch {torch.__version__}, onnxruntime {_ort_version()}; one CPU thread; RTF over {len(timed)} test "
        f"utterances ({audio_s:.0f} s of audio) one at a time, median of {args.repeats} rounds timed in turns; "
        f"WER greedy on {len(entries)} utterances; {time.time() - start:.0f} s.",
        "",
        "| model | variant | size on disk | peak memory | RTF | speed-up vs "
        f"{teacher[0][0]} {teacher[0][1]} | vs {teacher[0][0]} in the same variant | WER | WER vs its PyTorch fp32 "
        "| max abs diff of log-posteriors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, variant), size, peak, rtf, wer in rows:
        ref_wer = base[name][4]
        same = f"{same_variant[variant] / rtf:.2f}x" if variant in same_variant else "–"
        lines.append(
            f"| {name} | {variant} | {size / 1e6:.2f} MB | {peak:.0f} MB | {rtf:.5f} | {teacher[3] / rtf:.2f}x "
            f"| {same} | "
            f"{100 * wer:.2f} | {100 * (wer - ref_wer) / max(ref_wer, 1e-9):+.1f}% | {diffs[(name, variant)]:.1e} |"
        )
    for (name, variant), why in refused.items():
        lines += ["", f"{name}, {variant}: not made, the exporter refuses it: {why}"]
    emit_report(lines, args.out)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()
