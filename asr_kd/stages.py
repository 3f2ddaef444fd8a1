"""Numbered recipe stages that skip finished work and resume interrupted work.

A recipe is a list of :class:`Stage` s run in order (icefall's
``--stage`` / ``--stop-stage``). When a stage finishes, a marker file records
the stage's own config and a digest of the earlier stages' markers; a later
run skips the stage when both are unchanged, and reruns it otherwise (saying
which fields changed, or that an earlier stage ran again, so new teachers
mean a new cache and new students). A stage
killed midway leaves no marker and runs again; each stage's own work should
itself skip the items it already finished (trained checkpoints, cached
utterances), so the rerun resumes rather than restarts.

Example
-------
>>> import tempfile
>>> done = []
>>> stages = [Stage("prepare", lambda: done.append("prepare"), {"corpus": "tiny"}),
...           Stage("train", lambda: done.append("train"), {"epochs": 2})]
>>> exp = tempfile.mkdtemp()
>>> run_stages(stages, exp)
['prepare', 'train']
>>> run_stages(stages, exp)       # logs "stage 1 prepare: done already, skipped", ...
[]
>>> stage_status(stages, exp, 2)
'done'
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asr_kd import distributed
from asr_kd.io import dict_diff, read_json, write_json

log = logging.getLogger(__name__)


@dataclass
class Stage:
    """One step of a recipe.

    Args:
        name: short name, used in logs and marker files.
        run: does the work; should skip what an earlier, interrupted run finished.
        config: the settings this stage's outputs depend on.
    """

    name: str
    run: Callable[[], Any]
    config: Mapping[str, Any] = field(default_factory=dict)
    #: names of the earlier stages whose results this one uses (None: every earlier stage)
    depends: Sequence[str] | None = None
    #: files or folders this stage writes; removed before it starts over (config or inputs changed)
    outputs: Sequence[str | os.PathLike] = ()
    #: may run in a worker process at the same time as the neighbouring stages that also may
    #: (independent trainings: each needs only stages before the group)
    parallel: bool = False
    #: under torchrun, every process runs it together (data-parallel training, a cache split
    #: by utterance); any other stage runs on rank 0 while the others wait
    ddp: bool = False


def marker_path(exp_dir: str | os.PathLike, number: int, stage: Stage) -> Path:
    return Path(exp_dir) / "stages" / f"{number:02d}-{stage.name}.done"


def find_marker(exp_dir: str | os.PathLike, number: int, stage: Stage) -> Path:
    """The stage's marker, also one written when the stage had another number (a stage was
    added before it since), so adding a stage to a recipe does not rerun the stages after it."""
    marker = marker_path(exp_dir, number, stage)
    if not marker.exists():
        for old in sorted(marker.parent.glob(f"[0-9][0-9]-{glob.escape(stage.name)}.done")):
            return old
    return marker


def _upstream_digest(exp_dir: str | os.PathLike, earlier: Sequence[Stage], depends: Sequence[str] | None) -> str:
    """Digest of the markers of the earlier stages this one depends on (absent ones as such)."""
    h = hashlib.sha256()
    for number, stage in enumerate(earlier, 1):
        if depends is not None and stage.name not in depends:
            continue
        marker = find_marker(exp_dir, number, stage)
        h.update(marker.read_bytes() if marker.exists() else f"absent:{stage.name}".encode())
    return h.hexdigest()


def _remove_outputs(stage: Stage) -> None:
    for out in stage.outputs:
        path = Path(out)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        log.info(f"  removed old output {path}")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_json(path, data, indent=2, sort_keys=True)


def stage_status(stages: Sequence[Stage], exp_dir: str | os.PathLike, number: int) -> str:
    """What a run would do with stage ``number`` (1-based): ``"done"`` (skip it), ``""`` (never
    ran), ``"interrupted"`` (resume it), or why it would run again."""
    stage = stages[number - 1]
    marker = find_marker(exp_dir, number, stage)
    if not marker.exists():
        running = marker.with_name(marker.name.replace(".done", ".running"))
        return "interrupted" if running.exists() else ""
    stored = read_json(marker)
    diffs = dict_diff(stored["config"], stage.config, stored_label="last run")
    if diffs:
        return f"config changed since it ran ({'; '.join(diffs)})"
    if stored.get("upstream") != _upstream_digest(exp_dir, stages[: number - 1], stage.depends):
        return "an earlier stage it uses ran again since"
    return "done"


def is_done(stages: Sequence[Stage], exp_dir: str | os.PathLike, number: int) -> bool:
    """True when stage ``number`` (1-based) finished with its current config and inputs."""
    return stage_status(stages, exp_dir, number) == "done"


def _decide(stages: Sequence[Stage], exp_dir: str | os.PathLike, number: int, label: str) -> dict | None:
    """The state to record when stage ``number`` must run (its old outputs removed when stale),
    ``None`` when it is done already."""
    stage = stages[number - 1]
    marker = marker_path(exp_dir, number, stage)
    running = marker.with_name(marker.name.replace(".done", ".running"))
    upstream = _upstream_digest(exp_dir, stages[: number - 1], stage.depends)
    state = {"config": stage.config, "upstream": upstream}
    found = find_marker(exp_dir, number, stage)
    if found.exists():
        stored = read_json(found)
        diffs = dict_diff(stored["config"], stage.config, stored_label="last run")
        if not diffs and stored.get("upstream") == upstream:
            log.info(f"{label}: done already, skipped")
            return None
        reason = (
            f"config changed since it ran ({'; '.join(diffs)})" if diffs else "an earlier stage it uses ran again since"
        )
        log.info(f"{label}: {reason}, running again")
        found.unlink()
        _remove_outputs(stage)
    elif running.exists():
        if read_json(running) == state:
            log.info(f"{label}: resuming an interrupted run")
        else:
            log.info(f"{label}: config or inputs changed since an interrupted run; starting over")
            _remove_outputs(stage)
    elif any(Path(out).exists() for out in stage.outputs):
        # outputs with no record of how they were made (e.g. the stage had another number
        # in an older stage list): not trusted, so not resumed from
        log.info(f"{label}: outputs found without a record of the run that made them; starting over")
        _remove_outputs(stage)
    log.info(f"{label}: running")
    _write_json(running, state)
    return state


def _finish(exp_dir: str | os.PathLike, number: int, stage: Stage, state: dict, wall: float, cpu: float) -> None:
    """Record a finished stage: its marker replaces the running one (and any under an old number)."""
    marker = marker_path(exp_dir, number, stage)
    _write_json(marker, {**state, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "finished": time.time()})
    marker.with_name(marker.name.replace(".done", ".running")).unlink()
    for stale in marker.parent.glob(f"*-{stage.name}.done"):  # the same stage under an old number
        if stale != marker and stale.name.split("-", 1)[1] == f"{stage.name}.done":
            stale.unlink()


@contextlib.contextmanager
def _stage_lock(exp_dir: str | os.PathLike, number: int, stage: Stage, label: str) -> Iterator[None]:
    """Hold the stage's lock file (``flock``) while deciding, running and recording it.

    Two commands on one experiment folder (two machines sharing it, each with ``--teacher I``)
    never run one stage at once: the second waits, then finds it done. Under torchrun rank 0
    holds it for every process. The lock lives in the experiment folder; on a network file
    system it needs working ``flock`` (NFS v4, Lustre with ``flock`` mounted). A lock file that
    is a hard link (a folder copied with ``cp -al``, as the recipes' levers are) is first
    replaced by a file of this folder's own, so a copy and its source never wait on each other.
    """
    if not distributed.is_main():
        yield
        return
    path = marker_path(exp_dir, number, stage).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        if path.exists() and path.stat().st_nlink > 1:  # a hard-linked copy (cp -al) shares its source's lock
            fresh = path.with_name(f"{path.name}.{os.getpid()}")
            fresh.touch()
            os.replace(fresh, path)
        handle = open(path, "a")  # "a": an existing lock file is not modified
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(f"{label}: another process is running it; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        if os.fstat(handle.fileno()).st_ino == path.stat().st_ino:
            break
        handle.close()  # the file was replaced while we waited: lock the one in place now
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def run_stages(
    stages: Sequence[Stage],
    exp_dir: str | os.PathLike,
    start: int = 1,
    stop: int | None = None,
) -> list[str]:
    """Run stages ``start`` .. ``stop`` (1-based, inclusive); returns the names run.

    A stage that was interrupted resumes (its outputs are kept) when its config and inputs
    are what they were; when they changed, its declared ``outputs`` are removed first.
    """
    stop = len(stages) if stop is None else stop
    if not 1 <= start <= stop <= len(stages):
        raise ValueError(
            f"--stage {start} / --stop-stage {stop} out of range: stages are 1..{len(stages)} "
            f"({', '.join(f'{i}={s.name}' for i, s in enumerate(stages, 1))})"
        )
    for number, stage in enumerate(stages, 1):
        try:
            json.dumps(stage.config)
        except TypeError as err:
            raise TypeError(
                f"stage {number} {stage.name}: its config must be JSON data (str, numbers, lists, "
                f"dicts) to be recorded: {err}"
            ) from None
    ran = []
    for number, stage in enumerate(stages, 1):
        if not start <= number <= stop:
            continue
        label = f"stage {number} {stage.name}"
        with _stage_lock(exp_dir, number, stage, label):
            state = _decide(stages, exp_dir, number, label) if distributed.is_main() else None
            state = distributed.broadcast(state)  # under torchrun rank 0 decides for every process
            if state is None:
                continue
            began, cpu = time.time(), time.process_time()
            if stage.ddp or distributed.is_main():
                stage.run()
            distributed.barrier()
            wall, cpu = time.time() - began, time.process_time() - cpu  # cpu: this process, all its threads
            if distributed.is_main():
                _finish(exp_dir, number, stage, state, wall, cpu)
            log.info(f"{label}: finished in {wall:.1f} s")
            ran.append(stage.name)
    return ran
