"""Fully connected ReLU nets for the MNIST recipe, with dropout and max-norm.

The paper's teacher is ``784-1200-1200-10`` with dropout and a weight
constraint; its students are ``784-800-800-10`` (and ``784-30-30-10``) with no
regularisation. A max-norm constraint caps the L2 norm of each hidden unit's
incoming weight vector; :func:`apply_max_norm` renormalises after each step.

Example
-------
>>> import torch
>>> net = MLP([784, 30, 30, 10], dropout_input=0.2, dropout_hidden=0.5)
>>> net(torch.zeros(4, 784)).shape
torch.Size([4, 10])
>>> with torch.no_grad():
...     _ = net.layers[0].weight.mul_(100)
>>> apply_max_norm(net, 3.5)
>>> bool(net.layers[0].weight.norm(dim=1).max() <= 3.5 + 1e-5)
True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """ReLU MLP ``sizes[0] -> ... -> sizes[-1]``, optional input and hidden dropout.

    Args:
        sizes: layer widths, input first, classes last (e.g. ``[784, 800, 800, 10]``).
        dropout_input: drop probability on the input pixels (0: none).
        dropout_hidden: drop probability after each hidden ReLU (0: none).
    """

    def __init__(self, sizes: Sequence[int], dropout_input: float = 0.0, dropout_hidden: float = 0.0):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least input and output sizes, got {list(sizes)}")
        self.sizes = list(sizes)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.drop_in = nn.Dropout(dropout_input) if dropout_input > 0 else nn.Identity()
        self.drop_hidden = nn.Dropout(dropout_hidden) if dropout_hidden > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.drop_in(x)
        for layer in self.layers[:-1]:
            h = self.drop_hidden(torch.relu(layer(h)))
        return self.layers[-1](h)

    @property
    def output_bias(self) -> Tensor:
        """The bias of the logits (what the bias adjustment experiments change)."""
        last = self.layers[-1]
        assert isinstance(last, nn.Linear)
        return last.bias


@torch.no_grad()
def apply_max_norm(model: nn.Module, max_norm: float) -> None:
    """Rescale every ``nn.Linear``'s rows (a unit's incoming weights) to L2 norm <= ``max_norm``."""
    if max_norm is None or max_norm <= 0:
        return
    for module in model.modules():
        if isinstance(module, nn.Linear):
            w = module.weight
            # max_norm / 0 is inf, clamped to 1: an all-zero row stays as it is
            w.mul_((max_norm / torch.linalg.vector_norm(w, dim=1, keepdim=True)).clamp_(max=1.0))
