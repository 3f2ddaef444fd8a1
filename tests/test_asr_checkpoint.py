"""Checkpoints appear whole or not at all."""

import pytest
import torch

from asr_kd.asr.checkpoint import STAGING, AtomicCheckpointer


class Exploding(torch.nn.Module):
    """A recoverable whose save dies halfway, as a kill mid-save would."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.explode = False

    def state_dict(self, *args, **kwargs):
        if self.explode:
            raise KeyboardInterrupt("killed mid-save")
        return super().state_dict(*args, **kwargs)


def test_interrupted_save_leaves_no_checkpoint_and_recovery_uses_the_last_whole_one(tmp_path):
    model, late = torch.nn.Linear(2, 2), Exploding()
    ckpt = AtomicCheckpointer(tmp_path, recoverables={"model": model, "late": late})
    with torch.no_grad():
        model.weight.fill_(1.0)
    ckpt.save_checkpoint(meta={"epoch": 1})
    with torch.no_grad():
        model.weight.fill_(2.0)
    late.explode = True
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(meta={"epoch": 2})
    late.explode = False
    assert [c.meta["epoch"] for c in ckpt.list_checkpoints()] == [1]

    fresh_model, fresh_late = torch.nn.Linear(2, 2), Exploding()
    again = AtomicCheckpointer(tmp_path, recoverables={"model": fresh_model, "late": fresh_late})
    again.recover_if_possible()
    assert torch.all(fresh_model.weight == 1.0)
    again.save_checkpoint(meta={"epoch": 2})  # the stale staging dir is cleared
    assert not (tmp_path / STAGING).exists()
    assert sorted(c.meta["epoch"] for c in again.list_checkpoints()) == [1, 2]
