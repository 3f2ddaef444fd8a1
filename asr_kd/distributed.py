"""Running under ``torchrun``: the process group, the rank, and one-process-at-a-time work.

``torchrun`` (PyTorch's launcher) starts N copies of a command with ``RANK``, ``LOCAL_RANK``
and ``WORLD_SIZE`` set. :func:`init_from_env` joins them into one process group (gloo on a
CPU, nccl on CUDA, one GPU per local rank); SpeechBrain's ``Brain`` then sees
``RANK``/``LOCAL_RANK`` and wraps its modules in ``DistributedDataParallel``. Outside torchrun
every helper here is a no-op: rank 0 of a world of 1.

Example
-------
>>> rank(), world_size(), is_main()
(0, 1, True)
>>> broadcast({"run": True})
{'run': True}
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import os
import sys
from typing import Any, NoReturn

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

#: how long a process waits for the others (a stage rank 0 runs alone can take hours)
TIMEOUT = datetime.timedelta(hours=24)


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (SpeechBrain's test: ``RANK`` and
    ``LOCAL_RANK`` set; then its ``Brain`` expects a process group, even for one process)."""
    return os.environ.get("RANK") is not None and os.environ.get("LOCAL_RANK") is not None


def active() -> bool:
    """Whether a process group is up (so collectives must be called by every rank)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def backend_for(device: str) -> str:
    """``nccl`` for CUDA, ``gloo`` for a CPU."""
    return "nccl" if device.startswith("cuda") else "gloo"


def init_from_env(device: str) -> str:
    """Join the torchrun process group when launched by torchrun; return this process's device.

    On CUDA each process takes the GPU of its ``LOCAL_RANK`` (``cuda:LOCAL_RANK``). Without
    torchrun the device is returned as it is and nothing else happens.
    """
    if not launched() or active():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if local >= torch.cuda.device_count():
            raise RuntimeError(
                f"torchrun started local rank {local} but torch sees {torch.cuda.device_count()} GPU(s); "
                "use --nproc-per-node <= the number of GPUs"
            )
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend_for(device), timeout=TIMEOUT)
    log.info(f"process {rank()} of {world_size()} ({backend_for(device)}, {device})")
    return device


def local_device(device: str) -> str:
    """This process's GPU under torchrun (``cuda`` -> ``cuda:LOCAL_RANK``); anything else as it is."""
    if device == "cuda" and active():
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def barrier() -> None:
    """Wait for every process (no-op outside torchrun)."""
    if active():
        dist.barrier()


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (any picklable object)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def finish() -> None:
    """Leave the process group in order: wait for every process, then destroy it.

    Without this each process tears its gloo connections down at interpreter exit; one that
    exits first can close a socket a peer's gloo thread still reads, and that peer aborts
    ("terminate called without an active exception") after the work is done. No-op outside
    torchrun; call it on the way out of a command that called :func:`init_from_env`.
    """
    if active():
        gc.collect()  # DDP wrappers caught in reference cycles go while their group is alive
        dist.barrier()
        dist.destroy_process_group()


def leave(code: int) -> NoReturn:
    """End a process that ``torchrun`` started, without the interpreter's teardown.

    Even after :func:`finish`, a gloo worker thread can still hold tensors; freeing them while
    the interpreter shuts down aborts the process ("terminate called without an active
    exception", SIGABRT) after its work is done, and torchrun reports the run as failed
    (seen once in about ten CI runs, under load). So logs and streams are flushed here and the
    process exits at once with ``code``. Call it last, after :func:`finish`.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def mean(value: float) -> float:
    """The mean of ``value`` over the processes (``value`` itself outside torchrun)."""
    if not active():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":  # nccl reduces CUDA tensors only
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / world_size()
