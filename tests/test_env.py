"""tools/check_env.py: the installed environment against tools/requirements.lock."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "tools" / "check_env.py"
sys.path.insert(0, str(CHECK.parent))
import check_env  # noqa: E402


def test_the_lock_pins_the_pair_that_loads_and_this_environment_matches_it():
    pins = check_env.read_lock()
    assert pins["torch"] == "2.11.0" and pins["torchaudio"] == "2.11.0"
    have = check_env.installed()
    assert check_env.version_problems(pins, have, strict=False) == []


def test_markers_choose_the_entries_of_this_interpreter(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "# comment\nnumpy==1.0 ; python_full_version < '3.0' \\\n    --hash=sha256:aa\n"
        "numpy==2.0 ; python_full_version >= '3.0' \\\n    --hash=sha256:bb\nPyYAML==6.0.4 \\\n"
        "    --hash=sha256:cc\n"
    )
    assert check_env.read_lock(lock) == {"numpy": "2.0", "pyyaml": "6.0.4"}


def test_a_version_that_differs_from_the_lock_is_named_with_exit_status_3(tmp_path):
    text = (ROOT / "tools" / "requirements.lock").read_text()
    lock = tmp_path / "lock.txt"
    lock.write_text(text.replace("\ntorchaudio==2.11.0", "\ntorchaudio==2.11.1"))
    proc = subprocess.run([sys.executable, str(CHECK), "versions", "--lock", str(lock)], capture_output=True, text=True)
    assert proc.returncode == 3
    assert "torchaudio: locked 2.11.1, installed 2.11.0" in proc.stderr
    assert "torch:" not in proc.stderr  # only what differs


def test_a_package_installed_by_hand_counts_only_when_strict():
    pins = {"torch": "2.11.0"}
    have = {"torch": "2.11.0", "pip": "23.2", "asr-kd": "0.1.0", "onnx": "1.23"}
    assert check_env.version_problems(pins, have, strict=False) == []
    assert check_env.version_problems(pins, have, strict=True) == [
        "onnx: installed 1.23, not in the lock (installed by hand?)"
    ]


def test_the_compiled_parts_load():
    proc = subprocess.run([sys.executable, str(CHECK), "imports"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "torchaudio" in proc.stdout
