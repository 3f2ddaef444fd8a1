"""Worker processes of the ASR recipe: they do not outlive their parent."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from asr_kd.asr.workers import train_in_workers

    def target(raw, name, threads):
        Path(raw["pid_file"]).write_text(str(os.getpid()))
        time.sleep(120)

    if __name__ == "__main__":
        train_in_workers(target, {"pid_file": sys.argv[1]}, ["a"], 1, 1, Path(sys.argv[2]))
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state  # a zombie has stopped running


def test_a_worker_ends_when_its_parent_is_killed(tmp_path):
    script, pid_file = tmp_path / "parent.py", tmp_path / "worker.pid"
    script.write_text(SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file), str(tmp_path / "logs")])
    try:
        deadline = time.time() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.time() < deadline, "the worker never started"
            assert parent.poll() is None, "the parent ended before its worker started"
            time.sleep(0.2)
        worker = int(pid_file.read_text())
        assert _alive(worker)
        os.kill(parent.pid, signal.SIGKILL)  # no clean-up runs in the parent
        parent.wait()
        deadline = time.time() + 15
        while _alive(worker) and time.time() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), "the worker went on training after its parent was killed"
    finally:
        parent.kill()
