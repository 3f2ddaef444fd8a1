"""Training several models at once: worker processes, each with its share of the CPU threads.

Small LSTMs use 2 cores better as 2 processes x 1 thread than as 1 process x 2 threads, so
consecutive stages that may run side by side (``Stage.parallel``: the teachers, the students)
go to ``parallel`` worker processes (``multiprocessing``, spawned). Each worker makes the same
recipe from the same config (with its thread count), runs its one stage and logs to
``EXP/logs/NAME.log``; the parent then records the stages as done through the stage runner.

Example
-------
>>> worker_waves(3, 2)     # 3 trainings on 2 workers: 1 alone with every thread, then 2 side by side
[(1, 1), (2, 2)]
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def worker_waves(n: int, jobs: int) -> list[tuple[int, int]]:
    """Plan ``n`` equal trainings on ``jobs`` workers: ``(workers at once, trainings)`` per wave.

    The remainder of ``n / jobs`` goes first, on fewer workers with more threads each;
    the rest follows ``jobs`` at a time (a finished worker's place is taken at once).

    >>> worker_waves(4, 2)
    [(2, 4)]
    >>> worker_waves(7, 3)
    [(1, 1), (3, 6)]
    >>> worker_waves(0, 2)
    []
    """
    odd, rest = n % jobs, n - n % jobs
    return [w for w in ((odd, odd), (jobs, rest)) if w[1]]


#: ``(raw config, stage name, threads) -> None``: runs one stage of a recipe (a module-level function)
StageRunner = Callable[[dict, str, int], None]


def _exit_with_parent(parent: int, every: float = 2.0) -> None:
    """End this worker as soon as its parent is gone (killed, say): a daemon thread polls the
    parent's PID, so no orphaned training writes on into an experiment another run now owns."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _work(
    target: StageRunner, raw: dict[str, Any], name: str, threads: int, log_file: str, parent: int | None = None
) -> None:
    """A worker process: ``target`` runs stage ``name`` with ``threads`` threads, logging to ``log_file``."""
    import torch

    from asr_kd import logs

    if parent is not None:
        _exit_with_parent(parent)

    with open(log_file, "a", encoding="utf-8") as out:
        logs.setup(logging.INFO, stream=out)
        try:
            torch.set_num_threads(threads)
            target(raw, name, threads)
        except BaseException:
            log.exception(f"{name}: failed")
            out.flush()
            raise SystemExit(1) from None


def train_in_workers(
    target: StageRunner, raw: dict[str, Any], names: Sequence[str], jobs: int, threads: int, logs_dir: Path
) -> None:
    """Run the stages ``names`` (all unfinished) in ``jobs`` worker processes at a time: each
    calls ``target(raw, name, threads)``.

    When they do not split evenly into ``jobs`` (3 teachers on 2 jobs), the odd ones run first
    with the threads shared among fewer processes, so no core idles behind a lone worker.
    """
    context = multiprocessing.get_context("spawn")
    logs_dir.mkdir(parents=True, exist_ok=True)
    pending, failed = list(names), []
    for width, count in worker_waves(len(pending), jobs):
        share = max(1, threads // width)
        wave = pending[:count]
        running: list[tuple[str, Any, Path]] = []
        pending = pending[count:]
        while wave or running:
            while wave and len(running) < width:
                name = wave.pop(0)
                log_file = logs_dir / f"{name}.log"
                proc = context.Process(
                    target=_work, args=(target, raw, name, share, str(log_file), os.getpid()), daemon=True
                )
                proc.start()
                log.info(f"{name}: training in a worker process ({share} thread(s)), log {log_file}")
                running.append((name, proc, log_file))
            time.sleep(1)
            for item in list(running):
                name, proc, log_file = item
                if proc.is_alive():
                    continue
                running.remove(item)
                proc.join()
                tail = log_file.read_text(errors="replace").strip().splitlines()
                if proc.exitcode != 0:
                    failed.append(name)
                    log.error(f"{name}: FAILED (exit {proc.exitcode}); end of its log:\n  " + "\n  ".join(tail[-15:]))
                else:
                    log.info(f"{name}: {tail[-2] if len(tail) > 1 else 'done'}")
    if failed:
        raise RuntimeError(f"training failed in worker process(es) {failed}; see {logs_dir}")
