"""Recipe stages: ranges, skipping finished stages, rerunning changed or interrupted ones."""

import logging

import pytest

from asr_kd.stages import Stage, is_done, run_stages, stage_status


def make(log, configs=None, fail_at=None):
    configs = configs or {}

    def work(name):
        def run():
            if name == fail_at:
                raise KeyboardInterrupt(f"killed during {name}")
            log.append(name)

        return run

    return [Stage(n, work(n), configs.get(n, {"v": 1})) for n in ("prepare", "teachers", "students")]


def test_stage_range_and_skip(tmp_path):
    log = []
    assert run_stages(make(log), tmp_path, start=2, stop=2) == ["teachers"]
    # "teachers" ran before "prepare" existed: once "prepare" runs, it is stale
    assert run_stages(make(log), tmp_path) == ["prepare", "teachers", "students"]
    assert run_stages(make(log), tmp_path, start=2) == []
    assert log == ["teachers", "prepare", "teachers", "students"]
    with pytest.raises(ValueError, match="out of range"):
        run_stages(make(log), tmp_path, start=3, stop=2)


def test_interrupted_stage_reruns_and_changed_config_reruns(tmp_path, caplog):
    log = []
    caplog.set_level(logging.INFO, logger="asr_kd")
    with pytest.raises(KeyboardInterrupt):
        run_stages(make(log, fail_at="teachers"), tmp_path)
    assert log == ["prepare"]
    assert run_stages(make(log), tmp_path) == ["teachers", "students"]
    changed = make(log, configs={"students": {"v": 2}})
    assert run_stages(changed, tmp_path) == ["students"]
    assert any("field 'v': last run has 1, expected 2" in m for m in caplog.messages)


def test_rerunning_an_earlier_stage_reruns_the_later_ones(tmp_path, caplog):
    log = []
    caplog.set_level(logging.INFO, logger="asr_kd")
    run_stages(make(log), tmp_path)
    changed = make(log, configs={"teachers": {"v": 2}})
    assert run_stages(changed, tmp_path) == ["teachers", "students"]
    assert any("an earlier stage it uses ran again" in m for m in caplog.messages)
    assert run_stages(changed, tmp_path) == []


def test_config_that_cannot_be_recorded_is_refused_before_any_work(tmp_path):
    from pathlib import Path

    log = []
    stages = make(log, configs={"students": {"dir": Path("x")}})
    with pytest.raises(TypeError, match="stage 3 students: its config must be JSON"):
        run_stages(stages, tmp_path)
    assert log == []


def test_interrupted_stage_resumes_but_starts_over_when_its_config_changed(tmp_path, caplog):
    out = tmp_path / "model"
    calls = []

    def train(fail: bool):
        def run():
            calls.append(sorted(p.name for p in out.iterdir()) if out.exists() else [])
            out.mkdir(exist_ok=True)
            (out / f"epoch{len(calls)}").write_text("x")
            if fail:
                raise KeyboardInterrupt  # killed midway: no marker

        return run

    def stages(epochs, fail):
        return [Stage("train", train(fail), {"epochs": epochs}, outputs=[out])]

    with pytest.raises(KeyboardInterrupt):
        run_stages(stages(2, True), tmp_path)
    caplog.set_level(logging.INFO, logger="asr_kd")
    run_stages(stages(2, False), tmp_path)
    assert calls[1] == ["epoch1"]  # resumed: the interrupted run's output was kept
    assert any("resuming" in m for m in caplog.messages)
    with pytest.raises(KeyboardInterrupt):
        run_stages(stages(3, True), tmp_path)  # config changed: rerun
    assert calls[2] == []  # the old outputs were removed before it started over


def test_a_stage_reruns_only_when_a_stage_it_depends_on_ran_again(tmp_path):
    ran = []

    def stages(prep):
        return [
            Stage("prepare", lambda: ran.append("prepare"), {"v": prep}),
            Stage("teacher-0", lambda: ran.append("t0"), {}, depends=["prepare"]),
            Stage("teacher-1", lambda: ran.append("t1"), {}, depends=["prepare"]),
        ]

    run_stages(stages(1), tmp_path, start=1, stop=1)
    run_stages(stages(1), tmp_path, start=3, stop=3)  # teacher 1 alone, elsewhere
    run_stages(stages(1), tmp_path)
    assert ran == ["prepare", "t1", "t0"]  # teacher 1 was not redone after teacher 0 ran
    run_stages(stages(2), tmp_path)
    assert ran[3:] == ["prepare", "t0", "t1"]


def test_is_done_agrees_with_run_stages(tmp_path):
    log = []
    stages = make(log)
    assert not any(is_done(stages, tmp_path, k) for k in (1, 2, 3))
    run_stages(stages, tmp_path, stop=2)
    assert [is_done(stages, tmp_path, k) for k in (1, 2, 3)] == [True, True, False]
    changed = make(log, configs={"prepare": {"v": 2}})
    # prepare's config changed: prepare is not done; teachers still matches prepare's marker ...
    assert [is_done(changed, tmp_path, k) for k in (1, 2)] == [False, True]
    # ... until prepare runs again
    run_stages(changed, tmp_path, stop=1)
    assert [is_done(changed, tmp_path, k) for k in (1, 2)] == [True, False]


def test_a_stage_inserted_before_others_leaves_no_stale_markers(tmp_path):
    log = []
    first = [Stage("a", lambda: log.append("a")), Stage("b", lambda: log.append("b"))]
    run_stages(first, tmp_path)
    second = [first[0], Stage("new", lambda: log.append("new")), first[1]]
    assert run_stages(second, tmp_path) == ["new", "b"]
    assert sorted(p.name for p in (tmp_path / "stages").glob("*.done")) == ["01-a.done", "02-new.done", "03-b.done"]


def test_a_stage_inserted_before_another_that_does_not_use_it_leaves_that_one_done(tmp_path):
    log = []
    first = [Stage("a", lambda: log.append("a")), Stage("b", lambda: log.append("b"), depends=["a"])]
    run_stages(first, tmp_path)
    second = [first[0], Stage("new", lambda: log.append("new"), depends=["a"]), first[1]]
    assert stage_status(second, tmp_path, 3) == "done"  # its marker is found under its old number
    assert run_stages(second, tmp_path) == ["new"] and log == ["a", "b", "new"]
    assert is_done(second, tmp_path, 3)


def test_stage_status_says_what_a_run_would_do(tmp_path):
    log = []
    with pytest.raises(KeyboardInterrupt):
        run_stages(make(log, fail_at="teachers"), tmp_path)
    stages = make(log)
    assert [stage_status(stages, tmp_path, k) for k in (1, 2, 3)] == ["done", "interrupted", ""]
    changed = make(log, configs={"prepare": {"v": 2}})
    assert stage_status(changed, tmp_path, 1) == "config changed since it ran (field 'v': last run has 1, expected 2)"
    run_stages(changed, tmp_path, stop=1)
    run_stages(changed, tmp_path, start=2, stop=2)
    assert stage_status(changed, tmp_path, 2) == "done"
    run_stages(stages, tmp_path, stop=1)  # prepare back at v=1: teachers is stale
    assert stage_status(stages, tmp_path, 2) == "an earlier stage it uses ran again since"


def test_outputs_without_a_record_are_not_trusted(tmp_path, caplog):
    out = tmp_path / "scores"
    out.mkdir()
    (out / "old.json").write_text("{}")  # left by a run this experiment has no record of
    seen = []
    stage = Stage("score", lambda: seen.append(sorted(p.name for p in out.glob("*"))), outputs=[out])
    caplog.set_level(logging.INFO, logger="asr_kd")
    run_stages([stage], tmp_path)
    assert seen == [[]] and any("without a record" in m for m in caplog.messages)


RACE = """
import sys, time
from pathlib import Path
from asr_kd.stages import Stage, run_stages

exp, who = Path(sys.argv[1]), sys.argv[2]

def work():
    with open(exp / "ran.txt", "a") as f:
        f.write(who + "\\n")
    time.sleep(2)

print(run_stages([Stage("prepare", work, {"n": 1})], exp))
"""


def test_two_commands_on_one_folder_run_a_stage_once(tmp_path):
    """Two machines sharing an experiment folder: the second waits on the stage's lock, then
    finds the stage done (it neither runs it again nor removes the first one's outputs)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**__import__("os").environ, "PYTHONPATH": str(root)}
    procs = [
        subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), who], env=env, stdout=subprocess.PIPE, text=True)
        for who in ("a", "b")
    ]
    outs = [p.communicate(timeout=120)[0].strip().splitlines()[-1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert (tmp_path / "ran.txt").read_text().count("\n") == 1, "the stage ran twice"
    assert sorted(outs) == ["['prepare']", "[]"]


def test_a_hard_linked_copy_of_an_experiment_does_not_wait_on_its_source(tmp_path):
    """`cp -al exp/a exp/b` links the stage lock files too; a stage run in the copy must not wait
    for a command that holds the same stage in the source."""
    import fcntl
    import os
    import shutil
    import threading

    src, dst = tmp_path / "a", tmp_path / "b"
    run_stages([Stage("prepare", lambda: None, {"n": 1})], src)
    shutil.copytree(src, dst, copy_function=os.link)
    (lock,) = (src / "stages").glob("*.lock")
    assert lock.stat().st_nlink == 2
    ran: list[str] = []
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a command running the stage in the source
        copy = threading.Thread(target=lambda: ran.extend(run_stages([Stage("prepare", lambda: None, {"n": 2})], dst)))
        copy.start()
        copy.join(timeout=30)
        finished = not copy.is_alive()
        fcntl.flock(held, fcntl.LOCK_UN)
    copy.join()
    assert finished and ran == ["prepare"], "the copy waited on its source's lock"
    assert lock.stat().st_nlink == 1 and (dst / "stages" / lock.name).stat().st_nlink == 1
