"""The MNIST report: tables, the gap closed and the temperature plot from a results.json."""

import json

from asr_kd.image.report import write_report


def _run(seed, name, width, temperature, errors):
    return {
        "seed": seed,
        "name": name,
        "sizes": [784, width, width, 10],
        "temperature": temperature,
        "test_errors": errors,
        "formula": "loss",
        "best_epoch": 1,
        "epochs": 2,
        "train_seconds": 60.0,
        "machine": "test machine",
        "experiment": "main",
    }


def _main_runs(seed, teacher, hard, soft):
    return [
        _run(seed, "teacher", 1200, None, teacher),
        _run(seed, "student800-hard", 800, None, hard),
        _run(seed, "student800-soft-T20", 800, 20.0, soft),
        _run(seed, "student800-soft+hard-T20", 800, 20.0, soft),
    ]


def test_main_table_only_gives_gap_and_no_plot(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"runs": _main_runs(0, 80, 150, 101) + _main_runs(1, 82, 146, 99)}))
    paths = write_report(results, tmp_path / "out")
    tables = (tmp_path / "out" / "tables.md").read_text()
    assert "81.0 ± 1.4 (n=2)" in tables  # teacher mean ± std
    # (150-101)/(150-80) = 70%, (146-99)/(146-82) = 73%; of the means (148-100)/(148-81) = 72%
    assert (
        "- student800-soft-T20: 70% / 73% (seeds 0 / 1); of the means: (148.0 - 100.0) / (148.0 - 81.0) = 72%" in tables
    )
    assert not any(p.suffix == ".png" for p in paths)


def test_sweep_gets_a_plot(tmp_path):
    runs = _main_runs(0, 80, 150, 101) + [_run(0, "student800-soft-T2", 800, 2.0, 120)]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"runs": runs}))
    paths = write_report(results, tmp_path / "out")
    assert (tmp_path / "out" / "temperature_sweep.png") in paths
    assert (tmp_path / "out" / "temperature_sweep.png").stat().st_size > 1000
    assert "| 784-800-800-10 | 150 (n=1) | 120 (n=1) | 101 (n=1) |" in (tmp_path / "out" / "tables.md").read_text()


def test_report_only_writes_to_the_presets_report_dir(tmp_path):
    """`--report-only` reads the preset's out_dir and writes to its report_dir, so the short
    schedule's tables (results/) and the main table's (results/main/) do not overwrite each other."""
    import shutil

    from asr_kd.image.cli import main
    from asr_kd.image.config import default_config_path, load_config

    config = tmp_path / "config.yaml"
    shutil.copy(default_config_path(), config)
    for preset, errors in (("short", 120), ("main", 101), ("paper", 89)):
        cfg = load_config(config, preset, ["device=cpu"])
        out = tmp_path / cfg["out_dir"]
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps({"runs": _main_runs(0, 80, 150, errors)}))
    for preset in ("short", "main", "paper"):  # paper says device: cuda; a report is made without a GPU too
        assert main(["--config", str(config), "--preset", preset, "--report-only"]) == 0
    assert "| 120 (n=1) |" in (tmp_path / "results" / "tables.md").read_text()
    assert "| 101 (n=1) |" in (tmp_path / "results" / "main" / "tables.md").read_text()
    assert "| 89 (n=1) |" in (tmp_path / "results" / "paper" / "tables.md").read_text()


def test_ensemble_section_lists_the_combined_teacher_first(tmp_path):
    runs = _main_runs(0, 80, 150, 101)
    for seed, errors in ((0, 90), (1, 94)):
        runs.append({**_run(seed, "student800-soft-T20-ens3", 800, 20.0, errors), "experiment": "ensemble"})
        runs.append(
            {
                **_run(seed, "teacher-ens3", 1200, None, 70),
                "experiment": "ensemble",
                "epochs": None,
                "formula": "geometric mean of the teachers of seeds [0, 1, 2]",
                "members": [0, 1, 2],
            }
        )
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"runs": runs}))
    write_report(results, tmp_path / "out")
    tables = (tmp_path / "out" / "tables.md").read_text()
    section = tables[tables.index("## Ensemble teacher") :]
    assert section.index("teacher-ens3: geometric mean") < section.index("student800-soft-T20-ens3")
    assert "| 70 | members 0,1,2 | – | – |" in section and "| 92.0 ± 2.8 (n=2) | 0,1 |" in section
    assert "-ens3" not in tables[: tables.index("## Ensemble teacher")]  # not in the main table
