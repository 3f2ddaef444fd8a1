"""The package's shape: no import cycle, no upward import, no module over 400 lines."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_import_cycle_and_no_upward_import():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "check_imports.py")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout


def test_the_checker_finds_a_cycle(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import check_imports
    finally:
        sys.path.pop(0)
    pkg = tmp_path / "asr_kd" / "data"
    pkg.mkdir(parents=True)
    (tmp_path / "asr_kd" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from asr_kd.data import b\n")
    (pkg / "b.py").write_text("from asr_kd.data.a import f\nfrom asr_kd.cli import main\n")
    (tmp_path / "asr_kd" / "cli.py").write_text("")
    monkeypatch.setattr(check_imports, "ROOT", tmp_path)
    assert check_imports.main() == 1


def test_no_module_over_400_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "asr_kd").rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert not long, long
