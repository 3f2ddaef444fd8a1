"""Atomic checkpoints on top of SpeechBrain's ``Checkpointer``.

SpeechBrain writes a checkpoint's ``CKPT.yaml`` first and its parameter files
after, so a process killed mid-save leaves a directory that looks complete
but holds truncated files, and the next run's recovery fails on it.
:class:`AtomicCheckpointer` saves each checkpoint into a staging directory and
renames it into place once every file is written: a checkpoint either exists
whole or not at all. Everything else (recovery, keeping the best, intra-epoch
checkpoints in ``Brain``) is SpeechBrain's.

Example
-------
>>> import tempfile, torch
>>> model = torch.nn.Linear(2, 2)
>>> ckpt = AtomicCheckpointer(tempfile.mkdtemp(), recoverables={"model": model})
>>> saved = ckpt.save_checkpoint(meta={"wer": 12.5})
>>> saved.path.name.startswith("CKPT+"), sorted(p.name for p in saved.path.iterdir())
(True, ['CKPT.yaml', 'model.ckpt'])
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from speechbrain.utils.checkpoints import Checkpoint, Checkpointer

from asr_kd import distributed

STAGING = ".staging"


class AtomicCheckpointer(Checkpointer):
    """A ``Checkpointer`` whose checkpoints appear only when completely written."""

    checkpoints_dir: Path  # set by Checkpointer.__init__

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):  # noqa: B006
        """Save into the staging folder, then rename it into place (rank 0 writes, under torchrun)."""
        main = distributed.is_main()
        final_parent = self.checkpoints_dir
        staging = final_parent / STAGING
        if main:
            shutil.rmtree(staging, ignore_errors=True)  # left by a run killed mid-save
            staging.mkdir(parents=True)
        self.checkpoints_dir = staging
        try:  # every rank calls it: SpeechBrain broadcasts the folder; only rank 0's hooks write
            ckpt = super().save_checkpoint(meta=meta, end_of_epoch=end_of_epoch, name=name, verbosity=verbosity)
        finally:
            self.checkpoints_dir = final_parent
        if not main:
            distributed.barrier()  # until rank 0 has renamed it
            return None
        final = final_parent / ckpt.path.name
        suffix = 0
        while final.exists():  # two saves within one second
            suffix += 1
            final = final_parent / f"{ckpt.path.name}-{suffix}"
        os.replace(ckpt.path, final)
        shutil.rmtree(staging, ignore_errors=True)
        distributed.barrier()
        return Checkpoint(final, ckpt.meta, {k: final / v.name for k, v in ckpt.paramfiles.items()})
