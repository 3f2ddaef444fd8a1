"""MNIST: read the standard idx files (gzip or plain), split, jitter.

The four files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``) are read from a
directory the user gives. Images become one float tensor in ``[0, 1]``,
``(N, 784)``, loaded once; training indexes it directly (no DataLoader).

Example
-------
>>> import torch
>>> x = torch.zeros(1, 784); x[0, 0] = 1.0        # top-left pixel lit
>>> y = jitter(x, max_shift=2, generator=torch.Generator().manual_seed(0))
>>> float(y.sum()) in (0.0, 1.0)                   # shifted (maybe off the edge), never wrapped
True
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: Where the shared copy lives, relative to the repository root.
SHARED_RELATIVE = Path("..") / "shared" / "data" / "mnist"


class MnistNotFound(FileNotFoundError):
    """The MNIST idx files are not where they were looked for."""


def repo_root() -> Path:
    """The repository root (the directory holding the ``asr_kd`` package)."""
    return Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """``<repo root>/../shared/data/mnist``, the shared copy (may not exist)."""
    return (repo_root() / SHARED_RELATIVE).resolve()


def _open(directory: Path, stem: str):
    for name in (stem + ".gz", stem):
        path = directory / name
        if path.exists():
            return path, (gzip.open(path, "rb") if name.endswith(".gz") else open(path, "rb"))
    raise MnistNotFound(
        f"MNIST file {stem}[.gz] not found in {directory}. Put the four standard idx files "
        f"({', '.join(f + '.gz' for f in FILES.values())}) there, or point the recipe at a "
        "directory that has them with --data-dir DIR."
    )


def read_idx(path: str | os.PathLike) -> Tensor:
    """Read one idx file (``.gz`` or plain) as a uint8 tensor of its stored shape.

    Raises ``ValueError`` naming the file when the header is not an unsigned-byte idx.

    >>> import gzip, struct, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "t-idx1-ubyte.gz")
    >>> with gzip.open(p, "wb") as f:
    ...     _ = f.write(struct.pack(">HBBI", 0, 8, 1, 3) + bytes([7, 8, 9]))
    >>> read_idx(p).tolist()
    [7, 8, 9]
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    return _parse_idx(data, path)


def _parse_idx(data: bytes, path: Path) -> Tensor:
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an idx header ({len(data)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file (magic {data[:4].hex()}); re-download it")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    expected = 1
    for s in shape:
        expected *= s
    if len(body) != expected:
        raise ValueError(f"{path}: header says {shape} = {expected} bytes, file has {len(body)}; truncated?")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


@dataclass
class Mnist:
    """MNIST as float images ``(N, 784)`` in [0, 1] and int64 labels, per split."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


def load_raw(data_dir: str | os.PathLike) -> dict[str, Tensor]:
    """The four idx arrays of ``data_dir`` (images flattened to float, labels int64)."""
    directory = Path(data_dir)
    if not directory.is_dir():
        raise MnistNotFound(
            f"MNIST directory {directory} does not exist. Download the four standard idx files "
            "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            "t10k-labels-idx1-ubyte.gz) into a directory and pass it with --data-dir DIR."
        )
    out = {}
    for key, stem in FILES.items():
        path, f = _open(directory, stem)
        with f:
            arr = _parse_idx(f.read(), path)
        if key.endswith("images"):
            out[key] = arr.reshape(arr.shape[0], -1).float().div_(255.0)
        else:
            out[key] = arr.long()
    for split in ("train", "test"):
        if len(out[f"{split}_images"]) != len(out[f"{split}_labels"]):
            raise ValueError(f"{directory}: {split} images and labels differ in count")
    return out


def load_mnist(
    data_dir: str | os.PathLike,
    val_size: int = 10_000,
    split_seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> Mnist:
    """Load MNIST and carve a validation split out of the 60k training images.

    Args:
        data_dir: directory with the four idx files.
        val_size: images moved from training to validation (chosen by ``split_seed``).
        split_seed: seed of the train/validation permutation (fixed across runs).
        train_limit: keep only this many training images after the split (smoke runs).
        test_limit: keep only the first this-many test images (smoke runs).
    """
    raw = load_raw(data_dir)
    n = len(raw["train_labels"])
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be in (0, {n}), got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    val, train = perm[:val_size], perm[val_size:]
    if train_limit is not None:
        train = train[:train_limit]
    test_x, test_y = raw["test_images"], raw["test_labels"]
    if test_limit is not None:
        test_x, test_y = test_x[:test_limit], test_y[:test_limit]
    return Mnist(
        raw["train_images"][train],
        raw["train_labels"][train],
        raw["train_images"][val],
        raw["train_labels"][val],
        test_x,
        test_y,
    )


def jitter(x: Tensor, max_shift: int = 2, generator: torch.Generator | None = None) -> Tensor:
    """Shift each 28x28 image by up to ``max_shift`` pixels in x and y, zero-filled.

    One random ``(dx, dy)`` per image, each uniform in ``[-max_shift, max_shift]``;
    pixels shifted past an edge are dropped (pad + crop, not a wrap-around).

    Args:
        x: ``(B, 784)`` images, on any device.
        generator: source of the shifts; it must live on ``x``'s device.
    """
    if max_shift <= 0:
        return x
    b = x.shape[0]
    side = 28
    dev = x.device
    padded = torch.nn.functional.pad(x.view(b, side, side), (max_shift,) * 4)
    shifts = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator, device=dev)
    ar = torch.arange(side, device=dev)
    rows = shifts[0].view(b, 1) + ar.view(1, side)  # (B, 28)
    cols = shifts[1].view(b, 1) + ar.view(1, side)
    out = padded[torch.arange(b, device=dev).view(b, 1, 1), rows.view(b, side, 1), cols.view(b, 1, side)]
    return out.reshape(b, side * side)
