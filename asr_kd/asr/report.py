"""The ASR recipe's report: ``results.json``, ``RESULTS.md`` and plots, from the scored run.

Every number comes from the experiment folder: the scores of the ``score`` stage, the
models' bundles and training histories, and the stage markers' wall times.

Example
-------
>>> summarise_targets({"teacher-0": {"wer": .30}, "teacher-1": {"wer": .34}, "ensemble": {"wer": .28},
...                    "student-scratch": {"wer": .40}, "student-kd": {"wer": .31}},
...                   teachers=["teacher-0", "teacher-1"], ensemble="ensemble")["recovered"]
0.75
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from asr_kd.asr.context import Context
from asr_kd.io import read_json, write_atomic, write_json, write_text

log = logging.getLogger(__name__)


def summarise_targets(
    scores: Mapping[str, Mapping[str, float]],
    teachers: Sequence[str],
    ensemble: str,
    student: str = "student-kd",
    scratch: str = "student-scratch",
    same_size: str | None = None,
) -> dict[str, Any]:
    """The issue's targets as numbers: ensemble gain, share of it recovered, student vs mean teacher.

    ``same_size`` names a distilled student as wide as a member (the paper's setting): its
    share of the ensemble's gain over the mean member is reported as well.
    """
    wers = [scores[t]["wer"] for t in teachers]
    mean_teacher = statistics.fmean(wers)
    out: dict[str, Any] = {
        "mean_teacher_wer": mean_teacher,
        "teacher_wer_sd": statistics.stdev(wers) if len(wers) > 1 else 0.0,
    }
    ens = scores[ensemble]["wer"]
    out["ensemble_wer"] = ens
    out["ensemble_relative_reduction"] = (mean_teacher - ens) / mean_teacher if mean_teacher else 0.0
    if student in scores and scratch in scores:
        gap = scores[scratch]["wer"] - ens
        out["recovered"] = round((scores[scratch]["wer"] - scores[student]["wer"]) / gap, 4) if gap else None
        out["student_le_mean_teacher"] = scores[student]["wer"] <= mean_teacher
    # a student as wide as a member: the members are its "from scratch"
    if same_size is not None and same_size in scores:
        gap = mean_teacher - ens
        out[f"{same_size}_recovered_of_mean_teacher_gap"] = (
            round((mean_teacher - scores[same_size]["wer"]) / gap, 4) if gap else None
        )
    return out


def student_pairs(
    scores: Mapping[str, Mapping[str, float]],
    pairs: Sequence[tuple[str, str]],
    ensemble: str,
    seeds: Sequence[str] = (),
) -> dict:
    """Distilled students beside their scratch twins (``(distilled, scratch)`` of the same size,
    seed and schedule): both WERs and the share of the ensemble's gain over the twin that
    distillation recovers; ``spread``: mean and sd of each over the distilled students ``seeds``
    (the same student from several seeds).

    >>> s = {"ensemble": {"wer": .5}, "scratch": {"wer": .7}, "kd": {"wer": .6},
    ...      "scratch-s1": {"wer": .8}, "kd-s1": {"wer": .6}}
    >>> p = student_pairs(s, [("kd", "scratch"), ("kd-s1", "scratch-s1")], "ensemble", ["kd", "kd-s1"])
    >>> p["kd-s1"]["recovered"], p["spread"]["recovered"]
    (0.6667, (0.5834, 0.1179))
    """
    out: dict[str, Any] = {}
    ens = scores[ensemble]["wer"]
    for kd, twin in pairs:
        if kd in scores and twin in scores:
            a, b = scores[twin]["wer"], scores[kd]["wer"]
            recovered = round((a - b) / (a - ens), 4) if a != ens else None
            out[kd] = {"scratch": twin, "scratch_wer": a, "wer": b, "recovered": recovered}
    group = [out[k] for k in seeds if k in out]
    if len(group) > 1 and all(v["recovered"] is not None for v in group):
        spread: dict[str, Any] = {"n": len(group)}
        for key in ("scratch_wer", "wer", "recovered"):
            values = [v[key] for v in group]
            spread[key] = (round(statistics.fmean(values), 4), round(statistics.stdev(values), 4))
        out["spread"] = spread
    return out


def _stage_walls(stages: Path) -> tuple[dict[str, float], float]:
    """Each stage's own wall time, and the time during which at least one stage ran (the
    union of their intervals: less than the sum when models trained in parallel, and without
    the pauses of a run that was stopped and resumed later)."""
    walls, spans = {}, []
    for marker in sorted(stages.glob("*.done")):
        m = read_json(marker)
        walls[marker.stem.split("-", 1)[1]] = m["wall_s"]
        spans.append((m["finished"] - m["wall_s"], m["finished"]))
    return walls, busy_seconds(spans)


def busy_seconds(spans: Sequence[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals.

    >>> busy_seconds([(0, 10), (5, 20), (100, 110)])
    30
    """
    total: float = 0
    end: float | None = None
    for a, b in sorted(spans):
        if end is None or a > end:
            total, end = total + (b - a), b
        elif b > end:
            total, end = total + (b - end), b
    return total


def _relative(path: str, exp: Path) -> str:
    """A path inside the experiment folder as relative to it (reports name no machine's folders)."""
    try:
        return str(Path(path).resolve().relative_to(exp.resolve()))
    except ValueError:
        return Path(path).name


def _plots(ctx: Context, names: Sequence[str], scores: Mapping[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = ctx.exp.plots
    out.mkdir(parents=True, exist_ok=True)
    made = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        h = ctx.exp.history(name)
        if not h:
            continue
        epochs = sorted(int(e) for e in h)
        style = "-" if name.startswith("teacher") or name.startswith("guided") else "--"
        axes[0].plot(epochs, [h[str(e)]["train_loss"] for e in epochs], style, label=name)
        axes[1].plot(epochs, [100 * h[str(e)]["valid_wer"] for e in epochs], style, label=name)
    axes[0].set(xlabel="epoch", ylabel="training loss", title="training loss (each model's own objective)")
    axes[1].set(xlabel="epoch", ylabel="valid WER (%)", title="validation WER (greedy)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, out / "training_curves.png")
    made.append("plots/training_curves.png")

    kd_t = float(ctx.settings.students.kd.temperature)
    points = {kd_t: scores["student-kd"]["wer"]} if "student-kd" in scores else {}
    for t in ctx.settings.students.temperatures:  # the temperature sweep's students
        name = f"student-kd-T{t:g}"
        if name in scores:
            points[float(t)] = scores[name]["wer"]
    if len(points) > 1:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ts = sorted(points)
        ax.plot(ts, [100 * points[t] for t in ts], "o-", label="distilled student")
        for ref, style in (("student-scratch", ":"), (ctx.plan.main_ensemble, "--")):
            if ref in scores:
                ax.axhline(100 * scores[ref]["wer"], linestyle=style, color="grey", label=ref)
        ax.set(xscale="log", xlabel="temperature T", ylabel="test WER (%)", title="student WER vs temperature")
        ax.set_xticks(ts, [f"{t:g}" for t in ts])
        ax.minorticks_off()
        ax.legend(fontsize=7)
        fig.tight_layout()
        _save(fig, out / "wer_vs_temperature.png")
        made.append("plots/wer_vs_temperature.png")
    plt.close("all")
    return made


def _online(ctx: Context, scores: Mapping[str, Any]) -> dict:
    from asr_kd.asr.online import summarise_online

    return summarise_online(ctx, dict(scores))


def _save(fig, path: Path) -> None:
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def write_report(ctx: Context) -> dict:
    """Write ``results.json``, ``RESULTS.md`` and ``plots/`` in the experiment folder."""
    import torch

    layout = ctx.exp
    exp = layout.root
    scores = layout.scores()
    summary = layout.summary()
    walls, elapsed = _stage_walls(layout.stages)
    command = layout.command_file.read_text().strip() if layout.command_file.exists() else "asr-kd run ..."
    rows = []
    for name, members in ctx.plan.rows():
        s = scores[name]
        infos = [layout.info(m) for m in members]
        hist = layout.history(name) if len(members) == 1 else {}
        rows.append(
            {
                "system": name,
                "members": members,
                "parameters": s["parameters"],
                "wer": s["wer"],
                "cer": s["cer"],
                "frame_agreement": s.get("frame_agreement"),
                "rtf": s["rtf"],
                "rtf_batched": s.get("rtf_batched"),
                "beam_wer": s.get("beam_wer"),
                "beam_cer": s.get("beam_cer"),
                "valid_wer": infos[0]["valid_wer"] if len(members) == 1 else None,
                "best_epoch": infos[0]["best_epoch"] if len(members) == 1 else None,
                "epochs": infos[0]["train"]["epochs"] if len(members) == 1 else None,
                "train_seconds": walls.get(name) if len(members) == 1 else None,
                "history_epochs": len(hist),
                "updates": sum(h["batches"] for h in hist.values()) if _counted(hist) else None,
            }
        )
    by_name = {r["system"]: r for r in rows}
    targets = {}
    for ens, members in ctx.plan.ensembles.items():
        student = "student-kd-guided" if ens == "ensemble-guided" else "student-kd"
        same_size = "student-kd-x1" if ens == ctx.plan.main_ensemble else None
        targets[ens] = summarise_targets(scores, members, ens, student=student, same_size=same_size)
        beamed = {k: {"wer": v["beam_wer"]} for k, v in scores.items() if v.get("beam_wer") is not None}
        if all(m in beamed for m in [*members, ens]):
            targets[ens]["beam"] = summarise_targets(beamed, members, ens, student=student, same_size=same_size)
        kds = [st for st in ctx.plan.students if st.ensemble == ens and st.twin]
        seeds = [st.name for st in kds if st.seed_pair]
        pairs = [(st.name, str(st.twin)) for st in kds]
        targets[ens]["pairs"] = student_pairs(scores, pairs, ens, seeds)
        teacher = by_name[members[0]]
        for s in ("student-scratch", student):
            if s in by_name:
                targets[ens][f"{s}_speedup_vs_teacher"] = teacher["rtf"] / by_name[s]["rtf"]
                targets[ens][f"{s}_speedup_vs_ensemble"] = by_name[ens]["rtf"] / by_name[s]["rtf"]
                if by_name[s]["rtf_batched"] and teacher["rtf_batched"] and by_name[ens]["rtf_batched"]:
                    batched = by_name[s]["rtf_batched"]
                    targets[ens][f"{s}_batched_speedup_vs_teacher"] = teacher["rtf_batched"] / batched
                    targets[ens][f"{s}_batched_speedup_vs_ensemble"] = by_name[ens]["rtf_batched"] / batched
    plots = _plots(ctx, [r["system"] for r in rows if len(r["members"]) == 1], scores)
    small = layout.score_dir / "small_data.json"  # stage small-data (the paper's Table 5)
    if ctx.settings.small_data.share > 0 and small.exists():
        plots.append("plots/small_data.png")
    spec = layout.score_dir / "specialists.json"  # stage specialists-table (the paper's Table 4)
    cfg = ctx.settings.to_dict()
    result = {
        "preset": ctx.raw.get("preset"),
        "command": command,
        "device": ctx.device,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores visible, torch {torch.__version__}",
        "threads": cfg["threads"],
        "wall_seconds": round(elapsed, 1),
        "rtf_batch": cfg["score"].get("rtf_batch"),
        "beam": cfg["score"].get("beam"),
        "stage_seconds_sum": round(sum(walls.values()), 1),
        "stage_seconds": walls,
        "corpus": {split: {**v, "manifest": _relative(v["manifest"], exp)} for split, v in summary["splits"].items()},
        "tokenizer": summary["tokenizer"],
        "num_classes": summary["num_classes"],
        "config": {
            k: cfg.get(k) for k in ("model", "train", "teachers", "ensemble", "students", "specaugment", "parallel")
        },
        "rows": rows,
        "targets": targets,
        "plots": plots,
        **({"small_data": read_json(small)} if "plots/small_data.png" in plots else {}),
        **({"online": _online(ctx, scores)} if ctx.plan.online else {}),
        **({"specialists": read_json(spec)} if ctx.plan.specialists and spec.exists() else {}),
    }
    write_json(layout.results_file, result)
    write_text(layout.results_md, render_markdown(result))
    log.info(f"  wrote {layout.results_md} and results.json")
    return result


def _counted(history: Mapping[str, Any]) -> bool:  # a history with batch counts (written since 2026-12-07)
    return bool(history) and all("batches" in h for h in history.values())


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def render_markdown(r: Mapping[str, Any]) -> str:
    """The results as Markdown (the same numbers as ``results.json``)."""
    c = r["corpus"]
    lines = [
        f"# ASR distillation results: preset `{r['preset']}`",
        "",
        f"Command: `{r['command']}`  ",
        f"Machine: {r['machine']}; device {r['device']}, torch threads {r['threads']}.  ",
        f"Wall time while stages ran: {r['wall_seconds'] / 60:.1f} min; "
        f"per stage ({r['config'].get('parallel', 1)} trained at a time, so these overlap; "
        f"sum {r['stage_seconds_sum'] / 60:.1f}): "
        f"{', '.join(f'{k} {v / 60:.1f}' for k, v in r['stage_seconds'].items())} min.  ",
        "Corpus: "
        + ", ".join(f"{s} {v['utterances']} utterances / {v['hours']} h" for s, v in c.items())
        + f"; tokenizer {r['tokenizer']['kind']} ({r['num_classes']} classes with blank).",
        "",
        "Test set, greedy CTC decoding, no LM. Frame agreement: share of test frames whose argmax equals the "
        "main ensemble's. RTF: decoding seconds per second of audio on one CPU thread (median of repeats), "
        f"one utterance at a time and, where timed, in length-sorted batches of {r.get('rtf_batch') or '–'}. "
        "Valid WER and best epoch: the checkpoint kept (best validation WER). Updates: optimiser steps over "
        "every epoch trained (a distilled student with a transfer set takes more per epoch than its scratch twin)."
        + (
            f" Beam: beam search (size {r['beam']['size']}) restricted to the words of the training transcripts, "
            f"with their {r['beam'].get('lm_order')}-gram LM (weight {r['beam'].get('lm_weight')}, word score "
            f"{r['beam'].get('word_score')})."
            if (r.get("beam") or {}).get("size")
            else ""
        ),
        "",
        "| system | parameters | WER % | CER % | WER beam+LM % | frame agreement % | RTF (1 thread) "
        "| RTF batched (1 thread) | valid WER % | best epoch / epochs | updates | train min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        epochs = "–" if row["best_epoch"] is None else f"{row['best_epoch']}/{row['epochs']}"
        minutes = "–" if not row["train_seconds"] else f"{row['train_seconds'] / 60:.1f}"
        updates = "–" if row.get("updates") is None else f"{row['updates']:,}"
        lines.append(
            f"| {row['system']} | {row['parameters']:,} | {_pct(row['wer'])} | {_pct(row['cer'])} | "
            f"{_pct(row.get('beam_wer'))} | "
            f"{_pct(row['frame_agreement'], 1)} | {row['rtf']:.4f} | "
            f"{'–' if row.get('rtf_batched') is None else format(row['rtf_batched'], '.4f')} | "
            f"{_pct(row['valid_wer'])} | {epochs} | {updates} | {minutes} |"
        )
    lines += ["", "## Targets", ""]
    for ens, t in r["targets"].items():
        lines.append(f"**{ens}** (members' mean WER {_pct(t['mean_teacher_wer'])} ± {_pct(t['teacher_wer_sd'])}):")
        lines.append(
            f"- ensemble WER {_pct(t['ensemble_wer'])}: relative reduction over the mean teacher "
            f"{_pct(t['ensemble_relative_reduction'], 1)}% (target: > 0)."
        )
        if t.get("recovered") is not None:
            lines.append(
                f"- distilled student recovers {_pct(t['recovered'], 0)}% of the ensemble's gain over the "
                "scratch student (target >= 80%); its WER "
                f"{'is' if t['student_le_mean_teacher'] else 'is not'} <= the mean teacher's."
            )
        if t.get("beam", {}).get("recovered") is not None:
            b = t["beam"]
            lines.append(
                f"- with beam search, lexicon and LM: ensemble {_pct(b['ensemble_wer'])} vs members' mean "
                f"{_pct(b['mean_teacher_wer'])} ({_pct(b['ensemble_relative_reduction'], 1)}% relative); the "
                f"distilled student recovers {_pct(b['recovered'], 0)}% of the gain; its WER "
                f"{'is' if b['student_le_mean_teacher'] else 'is not'} <= the mean teacher's."
            )
        for k, v in t.items():
            if k.endswith("_recovered_of_mean_teacher_gap") and v is not None:
                lines.append(
                    f"- {k[: -len('_recovered_of_mean_teacher_gap')]} (as wide as a member, the paper's "
                    f"setting) recovers {_pct(v, 0)}% of the ensemble's gain over the mean member."
                )
        pairs = t.get("pairs", {})
        for name, v in pairs.items():
            if name != "spread" and v["recovered"] is not None:
                lines.append(
                    f"- {name} vs {v['scratch']}: {_pct(v['scratch_wer'])} -> {_pct(v['wer'])}, "
                    f"{_pct(v['recovered'], 0)}% of the ensemble's gain over its scratch twin."
                )
        if "spread" in pairs:
            sp = pairs["spread"]
            lines.append(
                f"- over {sp['n']} student seeds (mean ± sd): scratch {_pct(sp['scratch_wer'][0])} ± "
                f"{_pct(sp['scratch_wer'][1])}, distilled {_pct(sp['wer'][0])} ± {_pct(sp['wer'][1])}, "
                f"recovered {_pct(sp['recovered'][0], 0)}% ± {_pct(sp['recovered'][1], 0)}%."
            )
        for k, v in t.items():
            if k.endswith("_speedup_vs_teacher") or k.endswith("_speedup_vs_ensemble"):
                lines.append(f"- {k.replace('_', ' ')}: {v:.2f}x")
        lines.append("")
    if r.get("online"):
        from asr_kd.asr.online import render_online

        lines += [*render_online(r["online"]), ""]
    if r.get("small_data"):
        from asr_kd.asr.small_data import render_small_data

        lines += [*render_small_data(r["small_data"]), ""]
    if r.get("specialists"):
        from asr_kd.asr.specialists_table import render_specialists

        lines += [*render_specialists(r["specialists"]), ""]
    for p in r["plots"]:
        lines.append(f"![{Path(p).stem}]({p})")
    return "\n".join(lines) + "\n"
