"""Train a tiny CTC model with ``train_ctc``: alone (``python ddp_train.py OUT``) or under
``torchrun --nproc-per-node N ddp_train.py OUT``; tests/test_distributed.py compares the two.

The task: each token is a fixed 16-dim pattern held for some frames between silences.
No dropout and no SpecAugment, so one process and N processes compute the same function of
the same batches (the random masks would be drawn by different processes otherwise).
"""

import logging
import os
import sys
import time
from collections.abc import Mapping

import torch

from asr_kd import distributed
from asr_kd.asr.data import make_dataset
from asr_kd.asr.settings import TrainSettings
from asr_kd.asr.train import train_ctc
from asr_kd.data.features import GlobalCMVN
from asr_kd.models.acoustic import AcousticConfig

VOCAB, N_MELS = 6, 16


def utterance(seed: int) -> tuple[torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(VOCAB, N_MELS, generator=torch.Generator().manual_seed(0)) * 2
    tokens = torch.randint(1, VOCAB, (int(torch.randint(2, 5, (1,), generator=g)),), generator=g).tolist()
    parts = []
    for tok in tokens:
        parts.append(torch.zeros(int(torch.randint(4, 9, (1,), generator=g)), N_MELS))
        parts.append(patterns[tok].repeat(int(torch.randint(8, 17, (1,), generator=g)), 1))
    parts.append(torch.zeros(6, N_MELS))
    feats = torch.cat(parts)
    return (feats + 0.3 * torch.randn(feats.shape, generator=g)).half(), tokens


class Slow(Mapping):
    """Features that take ``DDP_TEST_SLOW`` seconds each to read (so a test can kill a run midway)."""

    def __init__(self, feats: dict, delay: float) -> None:
        self.feats, self.delay = feats, delay

    def __getitem__(self, key):
        time.sleep(self.delay)
        return self.feats[key]

    def __iter__(self):
        return iter(self.feats)

    def __len__(self) -> int:
        return len(self.feats)


def main(out: str, epochs: int = 3) -> None:
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    data = {f"u{i:03d}": utterance(i) for i in range(48)}
    feats = Slow({k: v[0] for k, v in data.items()}, float(os.environ.get("DDP_TEST_SLOW", "0")))
    train = {k: v[1] for k, v in list(data.items())[:40]}
    valid = {k: v[1] for k, v in list(data.items())[40:]}
    model = AcousticConfig(num_classes=VOCAB, n_mels=N_MELS, conv_channels=4, hidden=16, layers=1, dropout=0.0)
    train_ctc(
        out,
        model,
        make_dataset(feats, train),
        [len(feats[i]) for i in train],
        make_dataset(feats, valid),
        GlobalCMVN(N_MELS),
        TrainSettings(epochs=epochs, batch_size=8, lr=0.02, warmup=0.1),
        seed=0,
        info={"name": "ddp-test"},
        detokenize=lambda ids: " ".join("abcde"[int(i) - 1] for i in ids),
        augment=None,
        progress=False,
    )
    distributed.finish()
    distributed.leave(0)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
