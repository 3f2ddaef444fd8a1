"""Tables and the temperature plot of the MNIST recipe, from its ``results.json``.

Example
-------
>>> mean_spread([67, 71, 70])
'69.3 ± 2.1 (n=3)'
>>> mean_spread([74])
'74 (n=1)'
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PAPER_MAIN = {"teacher": 67, "hard": 146, "soft": 74}


def mean_spread(values: Sequence[float]) -> str:
    """``mean ± sample std (n=...)``; a single value is printed as is."""
    if len(values) == 1:
        return f"{values[0]:g} (n=1)"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} (n={len(values)})"


def _by_name(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(runs, key=lambda r: r["seed"]):
        out[r["name"]].append(r)
    return out


def _seeds(rs: list[dict[str, Any]]) -> str:
    return ",".join(str(r["seed"]) for r in rs)


def _wall(rs: list[dict[str, Any]]) -> str:
    return " / ".join(f"{r['train_seconds'] / 60:.1f}" for r in rs)


def main_names(runs: list[dict[str, Any]]) -> list[str]:
    """The main table's models: teacher, then the widest student's hard / soft / soft+hard runs.

    The soft run is the one at the temperature of the soft+hard run (the config's main T);
    students distilled on jittered transfer images (``...-jitterJ``) come last.

    >>> runs = [{"name": n, "sizes": [784, w, w, 10], "temperature": t} for n, w, t in [
    ...     ("teacher", 1200, None), ("student800-hard", 800, None), ("student800-soft-T2", 800, 2.0),
    ...     ("student800-soft-T20", 800, 20.0), ("student800-soft+hard-T20", 800, 20.0),
    ...     ("student30-soft-T20", 30, 20.0), ("student800-soft-T20-jitter2", 800, 20.0)]]
    >>> main_names(runs)
    ['teacher', 'student800-hard', 'student800-soft-T20', 'student800-soft+hard-T20', 'student800-soft-T20-jitter2']
    >>> main_names([runs[0], runs[-1]])  # a run of some of main's students only (distill.variants)
    ['teacher', 'student800-soft-T20-jitter2']
    >>> main_names([runs[0], {**runs[-1], "name": "student800-soft-T20-jitter2-trainval"}])  # on all 60,000
    ['teacher', 'student800-soft-T20-jitter2-trainval']
    """
    names = {r["name"] for r in runs}
    both = sorted((r for r in runs if "-soft+hard-T" in r["name"]), key=lambda r: -r["sizes"][1])
    out = ["teacher"] if "teacher" in names else []
    if both:
        w, t = both[0]["sizes"][1], both[0]["temperature"]
        out += [f"student{w}-hard", f"student{w}-soft-T{t:g}", f"student{w}-soft+hard-T{t:g}"]
        out += sorted(n for n in names if n.startswith(f"student{w}-soft-T{t:g}-jitter"))
    else:  # distill.variants left the soft+hard student out: main's students that are there
        out += sorted(
            n for n in names if re.fullmatch(r"student\d+-(hard|soft(\+hard)?-T[\d.]+)(-jitter\d+)?(-trainval)?", n)
        )
    return [n for n in out if n in names]


def main_table(runs: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: paper vs ours for teacher, hard-label and distilled students."""
    named = _by_name(runs)
    rows = [
        "| model | paper (test errors) | ours: test errors, mean ± std over seeds | seeds | "
        "best epoch / epochs | train wall time per seed (min) |",
        "|---|---|---|---|---|---|",
    ]
    for name in main_names(runs):
        rs = named[name]
        kind = "teacher" if name == "teacher" else ("hard" if name.endswith("-hard") else name.split("-")[1])
        desc_extra = ""
        if jitter := re.search(r"-jitter(\d+)", name):
            kind = "jittered transfer set (not in the paper)"
            desc_extra = f"; transfer images jittered by up to {jitter.group(1)} px"
        if name.endswith("-trainval"):
            desc_extra += "; transfer set: all 60,000 training images"
        paper = PAPER_MAIN.get(kind, "–")
        desc = f"{name}: {'-'.join(map(str, rs[0]['sizes']))}; {rs[0]['formula']}{desc_extra}".replace("|", "\\|")
        epochs = ", ".join(f"{r['best_epoch'] + 1}/{r['epochs']}" for r in rs)
        errors = mean_spread([r["test_errors"] for r in rs])
        rows.append(f"| {desc} | {paper} | {errors} | {_seeds(rs)} | {epochs} | {_wall(rs)} |")
    return rows


def gap_closed(runs: list[dict[str, Any]]) -> list[str]:
    """How much of the hard-label student's gap to the teacher each distilled student closes.

    ``(hard - distilled) / (hard - teacher)`` for every seed that has all three models, and
    of the means over those seeds (the issue's ">= 80% of the gap" target).

    >>> runs = [{"seed": s, "name": n, "sizes": [784, w, w, 10], "temperature": t, "test_errors": e}
    ...         for s, (te, h, d) in enumerate([(82, 157, 94), (90, 150, 110)])
    ...         for n, w, t, e in [("teacher", 1200, None, te), ("student800-hard", 800, None, h),
    ...                            ("student800-soft-T20", 800, 20.0, d), ("student800-soft+hard-T20", 800, 20.0, d)]]
    >>> gap_closed(runs)[0]
    '- student800-soft-T20: 84% / 67% (seeds 0 / 1); of the means: (153.5 - 102.0) / (153.5 - 86.0) = 76%'
    """
    named = {name: {r["seed"]: r["test_errors"] for r in rs} for name, rs in _by_name(runs).items()}
    names = main_names(runs)
    if len(names) < 3 or names[0] != "teacher":
        return []
    teacher, hard = named["teacher"], named[names[1]]
    lines = []
    for name in names[2:]:
        seeds = sorted(set(teacher) & set(hard) & set(named[name]))
        if not seeds:
            continue
        per = " / ".join(f"{(hard[s] - named[name][s]) / (hard[s] - teacher[s]):.0%}" for s in seeds)
        t, h, d = (statistics.mean(m[s] for s in seeds) for m in (teacher, hard, named[name]))
        lines.append(
            f"- {name}: {per} (seeds {' / '.join(map(str, seeds))}); of the means: "
            f"({h:.1f} - {d:.1f}) / ({h:.1f} - {t:.1f}) = {(h - d) / (h - t):.0%}"
        )
    return lines


def experiment_rows(runs: list[dict[str, Any]], experiment: str) -> list[str]:
    """Markdown rows of the ``ensemble`` or ``online`` experiment: teachers, then students."""
    named = _by_name([r for r in runs if r.get("experiment") == experiment])
    if not named:
        return []
    rows = [
        "| model | test errors, mean ± std over seeds | seeds | best epoch / epochs | train wall time per seed (min) |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(named, key=lambda n: ("student" in n, n)):
        rs = named[name]
        desc = f"{name}: {rs[0]['formula']}".replace("|", "\\|")
        if name.startswith("teacher-ens"):  # one combined model, recorded again by every seed's run
            members = ",".join(map(str, rs[0].get("members", [])))
            rows.append(f"| {desc} | {rs[0]['test_errors']} | members {members} | – | – |")
            continue
        epochs = ", ".join(f"{r['best_epoch'] + 1}/{r['epochs']}" for r in rs)
        rows.append(
            f"| {desc} | {mean_spread([r['test_errors'] for r in rs])} | {_seeds(rs)} | {epochs} | {_wall(rs)} |"
        )
    return rows


def _percent(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.1f}%"


def specialist_rows(runs: list[dict[str, Any]]) -> list[str]:
    """Markdown of the ``specialists`` experiment: the combination, the paper's Table 4, students.

    Students are picked per size by validation errors over T; the share of the combination's
    gain they keep is ``(generalist - student) / (generalist - combination)`` in test errors.
    """
    mine = [r for r in runs if r.get("experiment") == "specialists"]
    combos = [r for r in mine if r["name"] == "generalist+specialists"]
    if not combos:
        return []
    lines = []
    for c in sorted(combos, key=lambda r: r["seed"]):
        gen, comb, ms = c["generalist_test_errors"], c["test_errors"], c["ms_per_case"]
        lines += [
            f"Seed {c['seed']}: {c['formula']}.",
            "",
            "| model | test errors | time per test case (ms, batched) |",
            "|---|---|---|",
            f"| generalist alone | {gen} | {ms['generalist']:.3f} |",
            f"| generalist + specialists | {comb} | {ms['combination']:.3f} |",
            "",
            f"The paper's Table 4 for this run ({c['active_per_case']:.2f} active specialists per case on average):",
            "",
            "| active specialists covering the true class | test cases | generalist correct | combined correct | "
            "gain | relative accuracy change |",
            "|---|---|---|---|---|---|",
        ]
        for row in c["table4"]:
            lines.append(
                f"| {row['covering']} | {row['cases']} | {row['generalist_correct']} | {row['combined_correct']} | "
                f"{row['correct_gain']:+d} | {_percent(row['relative_accuracy_change'])} |"
            )
        if c.get("own_space"):
            lines += [
                "",
                "Each specialist at its own task (test errors over its subset + dustbin; the generalist's "
                "distribution collapsed to the same classes):",
                "",
                "| specialist's subset | test cases in it | generalist errors (in the subset) | "
                "specialist errors (in the subset) |",
                "|---|---|---|---|",
            ]
            for o in c["own_space"]:
                lines.append(
                    f"| {o['subset']} | {o['cases_in_subset']} | {o['generalist_errors']} "
                    f"({o['generalist_errors_in_subset']}) | {o['specialist_errors']} "
                    f"({o['specialist_errors_in_subset']}) |"
                )
        students = [r for r in mine if r["seed"] == c["seed"] and r["name"].startswith("student")]
        lines += [
            "",
            "| student | soft targets from | T | valid errors | test errors | share of the combination's gain kept |",
            "|---|---|---|---|---|---|",
        ]
        picked: dict[tuple[int, Any], dict[str, Any]] = {}
        for r in sorted(students, key=lambda r: (-r["sizes"][1], r.get("source", ""), r["temperature"])):
            w = r["sizes"][1]
            kept = f"{(gen - r['test_errors']) / (gen - comb):.0%}" if gen > comb else "– (no gain to keep)"
            lines.append(
                f"| {'-'.join(map(str, r['sizes']))} | {r.get('source')} | {r['temperature']:g} | {r['val_errors']} | "
                f"{r['test_errors']} | {kept} |"
            )
            key = (w, r.get("source"))
            if key not in picked or r["val_errors"] < picked[key]["val_errors"]:
                picked[key] = r
        lines += ["", "Picked on validation (lowest valid errors over T):", ""]
        for (w, source), r in sorted(picked.items(), key=lambda kv: (-kv[0][0], str(kv[0][1]))):
            lines.append(f"- width {w}, from the {source}: T={r['temperature']:g}, {r['test_errors']} test errors")
        lines.append("")
    return lines


def sweep_rows(runs: list[dict[str, Any]]) -> tuple[list[str], dict[int, dict[float, list[int]]], dict[int, list[int]]]:
    """Markdown rows of the temperature sweep, and the data for the plot."""
    soft: dict[int, dict[float, list[int]]] = defaultdict(lambda: defaultdict(list))
    hard: dict[int, list[int]] = defaultdict(list)
    for r in runs:
        width = r["sizes"][1]
        if r["name"] == f"student{width}-hard":
            hard[width].append(r["test_errors"])
        elif r.get("temperature") is not None and r["name"] == f"student{width}-soft-T{r['temperature']:g}":
            soft[width][r["temperature"]].append(r["test_errors"])
    temps = sorted({t for w in soft for t in soft[w]})
    rows = [
        "| student | hard labels | " + " | ".join(f"T={t:g}" for t in temps) + " |",
        "|---|---|" + "---|" * len(temps),
    ]
    for width in sorted(soft, reverse=True):
        cells = [mean_spread(soft[width][t]) if soft[width].get(t) else "not run yet" for t in temps]
        h = mean_spread(hard[width]) if hard.get(width) else "not run yet"
        rows.append(f"| 784-{width}-{width}-10 | {h} | " + " | ".join(cells) + " |")
    return rows, soft, hard


def transfer_rows(runs: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in sorted((r for r in runs if r.get("experiment") == "omit3"), key=lambda r: r["seed"]):
        rows.append(
            f"| omit 3s, seed {r['seed']} | 206 errors, 133 on 3s | {r['test_errors']} errors, "
            f"{r['test_errors_on_3s']} of {r['test_3s']} 3s wrong | +3.5 (on test) | {r['bias_shift']:+g} | "
            f"109 errors, 14 on 3s | {r['test_errors_adjusted']} errors, {r['test_errors_on_3s_adjusted']} on 3s "
            f"({100 * (1 - r['test_errors_on_3s_adjusted'] / r['test_3s']):.1f}% of 3s right) |"
        )
    for r in sorted((r for r in runs if r.get("experiment") == "only78"), key=lambda r: r["seed"]):
        n = r["test_n"]
        rows.append(
            f"| only 7s and 8s, seed {r['seed']} | 47.3% | {100 * r['test_errors'] / n:.1f}% "
            f"({r['test_errors']}) | -7.6 (on test) | {r['bias_shift']:+g} | 13.2% | "
            f"{100 * r['test_errors_adjusted'] / n:.1f}% ({r['test_errors_adjusted']}) |"
        )
    if not rows:
        return ["not run yet"]
    head = [
        "| transfer set | paper before | ours before | paper bias shift | our shift (tuned on validation) | "
        "paper after | ours after |",
        "|---|---|---|---|---|---|---|",
    ]
    return head + rows


def plot_sweep(soft: dict[int, dict[float, list[int]]], hard: dict[int, list[int]], path: Path) -> None:
    """Test errors vs temperature, one line per student width (mean, min-max bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(soft), figsize=(5 * len(soft), 3.8), squeeze=False)
    for ax, width in zip(axes[0], sorted(soft, reverse=True), strict=True):
        temps = sorted(soft[width])
        means = [statistics.mean(soft[width][t]) for t in temps]
        lo = [m - min(soft[width][t]) for m, t in zip(means, temps, strict=True)]
        hi = [max(soft[width][t]) - m for m, t in zip(means, temps, strict=True)]
        ax.errorbar(temps, means, yerr=[lo, hi], marker="o", capsize=3, label="distilled (soft targets)")
        if hard.get(width):
            ax.axhline(statistics.mean(hard[width]), color="gray", ls="--", label="hard labels")
        ax.set_xscale("log")
        ax.set_xticks(temps)
        ax.set_xticklabels([f"{t:g}" for t in temps])
        ax.set_xlabel("temperature T")
        ax.set_ylabel("test errors (of 10,000)")
        ax.set_title(f"student 784-{width}-{width}-10")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``tables.md`` and ``temperature_sweep.png`` into ``out_dir``; return their paths."""
    results = Path(results)
    if not results.exists():
        raise FileNotFoundError(f"{results}: no results yet; run the recipe first")
    runs = json.loads(results.read_text())["runs"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    srows, soft, hard = sweep_rows(runs)
    machines = sorted({r["machine"] for r in runs})
    gaps = gap_closed(runs)
    if gaps:
        gaps = ["", "Gap closed, (hard-label - distilled) / (hard-label - teacher), test errors:", "", *gaps]
    lines = [
        "## Main table",
        "",
        *main_table(runs),
        *gaps,
        "",
        "## Temperature sweep (test errors)",
        "",
        *srows,
        "",
        "## Transfer-set experiments",
        "",
        *transfer_rows(runs),
        "",
    ]
    ens = experiment_rows(runs, "ensemble")
    if ens:
        lines += ["## Ensemble teacher (not in the paper's MNIST section)", "", *ens, ""]
    online = experiment_rows(runs, "online")
    if online:
        lines += ["## Online distillation: teacher and student trained together", "", *online, ""]
    spec = specialist_rows(runs)
    if spec:
        lines += ["## Specialists: generalist + specialists with a dustbin class, distilled into one net", "", *spec]
    lines += ["Machines: " + "; ".join(machines), ""]
    paths = [out / "tables.md"]
    paths[0].write_text("\n".join(lines), encoding="utf-8")
    if any(len(temps) > 1 for temps in soft.values()):  # a sweep, not just the main table's T
        paths.append(out / "temperature_sweep.png")
        plot_sweep(soft, hard, paths[-1])
    (out / "results.json").write_text(results.read_text(), encoding="utf-8")
    paths.append(out / "results.json")
    return paths
