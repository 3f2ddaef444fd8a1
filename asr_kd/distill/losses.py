"""Soft-target and logit-matching losses (Hinton, Vinyals & Dean 2015).

All losses take tensors shaped ``(..., C)``: any leading positions (batch,
frames) and classes last. An optional boolean ``mask`` shaped like the leading
dims marks real positions (``True``) and padding (``False``). Padded positions
contribute nothing, not even gradient, and every loss is a mean over the real
positions, so a padded batch gives the same loss as its items unpadded and
concatenated.

Example
-------
>>> import torch
>>> student = torch.zeros(2, 3, 5, requires_grad=True)   # (batch, frames, classes)
>>> teacher = torch.randn(2, 3, 5)
>>> mask = torch.tensor([[True, True, True], [True, False, False]])
>>> loss = soft_target_loss(student, teacher, temperature=2.0, mask=mask)
>>> loss.backward()
>>> bool(student.grad[1, 1:].abs().sum() == 0)   # padding gets no gradient
True
"""

from __future__ import annotations

import torch
from torch import Tensor

from .targets import TopK


def masked_mean(per_position: Tensor, mask: Tensor | None = None, weights: Tensor | None = None) -> Tensor:
    """Mean of ``per_position`` over the positions where ``mask`` is True.

    With ``weights`` (non-negative, same shape), the weighted mean
    ``sum(w * x) / sum(w)`` over real positions: e.g. to down-weight the
    blank-dominated frames of a CTC teacher. Padded positions are selected away
    with ``torch.where`` (not multiplied by zero), so a NaN or inf computed
    there cannot leak into the result or its gradient. An all-padding batch gives 0.
    """
    for name, t in (("mask", mask), ("weights", weights)):
        if t is not None and t.shape != per_position.shape:
            raise ValueError(
                f"{name} shape {tuple(t.shape)} must equal the leading (position) dims "
                f"{tuple(per_position.shape)} of the loss input"
            )
    if mask is None and weights is None:
        return per_position.mean()
    zero = per_position.new_zeros(())
    keep = torch.ones_like(per_position, dtype=torch.bool) if mask is None else mask.to(torch.bool)
    w = keep.to(per_position.dtype) if weights is None else torch.where(keep, weights.to(per_position.dtype), zero)
    total = torch.where(keep, per_position * w, zero).sum()
    return total / w.sum().clamp(min=torch.finfo(per_position.dtype).tiny)


def _zero_padding(mask: Tensor | None, *tensors: Tensor) -> tuple[Tensor, ...]:
    """Replace padded positions of ``(..., C)`` tensors by 0 before any arithmetic.

    Selecting the per-position loss away is not enough: a NaN in the padding
    would still reach the gradient (0 * NaN). Selecting the inputs gives the
    padding an exactly-zero gradient and finite values.
    """
    if mask is None:
        return tensors
    if mask.shape != tensors[0].shape[:-1]:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} must equal the leading (position) dims "
            f"{tuple(tensors[0].shape[:-1])} of the loss input"
        )
    keep = mask.to(torch.bool).unsqueeze(-1)
    return tuple(torch.where(keep, t, t.new_zeros(())) for t in tensors)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _as_float(x: Tensor) -> Tensor:
    """float32 for half / bfloat16 / integer inputs; float64 stays float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


#: Below this a log-probability is 0 in float32 and float64 alike (exp(-1e4) == 0); clamping
#: -inf to it keeps 0 * log 0 at 0 without changing any value.
_LOG_FLOOR = -1e4


class _SoftKL(torch.autograd.Function):
    """Per-position ``KL(p_T || q_T)`` with a closed-form backward, ``(q - p) / T``.

    ``p_T`` comes from dense teacher logits, or from top-k teacher
    log-probabilities already softened and renormalised (then ``p`` is zero off
    the kept classes and the same gradient formula holds). The forward pass
    computes the gradient factor and keeps only that for backward. On the CPU
    rows are processed in chunks that fit the processor cache: the dense soft
    loss then costs well under 2x cross-entropy instead of 3.5x through plain
    autograd (tools/results/distill_bench.md); on CUDA everything is one chunk.
    """

    CHUNK_ELEMENTS = 1 << 16

    @staticmethod
    def forward(
        ctx,
        student: Tensor,
        teacher: Tensor | None,
        top_log_p: Tensor | None,
        top_idx: Tensor | None,
        temperature: float,
    ) -> Tensor:
        classes = student.shape[-1]
        s2 = student.reshape(-1, classes)
        rows = s2.shape[0]
        if teacher is not None:
            t2 = teacher.reshape(-1, classes)
        else:
            assert top_log_p is not None and top_idx is not None, "a dense teacher or a top-k one"
            k = top_idx.shape[-1]
            lp2, ix2 = top_log_p.reshape(-1, k), top_idx.reshape(-1, k)
        step = rows if student.is_cuda else max(1, _SoftKL.CHUNK_ELEMENTS // classes)
        kl = s2.new_empty(rows)
        factor = torch.empty_like(s2)
        for a in range(0, rows, step):
            rs = slice(a, a + step)
            log_q = torch.log_softmax(s2[rs] / temperature, dim=-1)
            if teacher is not None:
                log_p = torch.log_softmax(t2[rs] / temperature, dim=-1)
                p = log_p.exp()
                # clamp: a -inf teacher log-prob (p = 0) would make 0 * -inf = NaN
                kl[rs] = torch.einsum("rc,rc->r", p, log_p.clamp_(min=_LOG_FLOOR).sub_(log_q))
                grad = log_q.exp_().sub_(p)
            else:
                log_p, idx = lp2[rs], ix2[rs]
                p = log_p.exp()
                kl[rs] = torch.einsum("rk,rk->r", p, log_p.clamp(min=_LOG_FLOOR) - log_q.gather(-1, idx))
                grad = log_q.exp_().scatter_add_(-1, idx, -p)
            torch.div(grad, temperature, out=factor[rs])
        ctx.save_for_backward(factor.view(student.shape))
        return kl.view(student.shape[:-1])

    @staticmethod
    def backward(ctx, grad_kl: Tensor):
        (factor,) = ctx.saved_tensors
        return factor * grad_kl.unsqueeze(-1), None, None, None, None


def soft_target_kl(student_logits: Tensor, teacher: Tensor | TopK, temperature: float = 1.0) -> Tensor:
    """Per-position ``KL(teacher_T || student_T)``, shape ``student_logits.shape[:-1]``.

    Args:
        student_logits: ``(..., C)`` student logits.
        teacher: ``(..., C)`` teacher logits or log-probabilities (the two give the
            same softened distribution), or a :class:`TopK` target.
        temperature: ``T``; both distributions are ``softmax(x / T)``.
    """
    _check_temperature(temperature)
    student = _as_float(student_logits)
    if isinstance(teacher, TopK):
        log_p = teacher.softened(temperature).to(student.dtype)
        return _SoftKL.apply(student, None, log_p, teacher.indices.long(), float(temperature))
    if teacher.shape != student_logits.shape:
        raise ValueError(
            f"teacher {tuple(teacher.shape)} and student {tuple(student_logits.shape)} outputs must have the same shape"
        )
    return _SoftKL.apply(student, _as_float(teacher.detach()).to(student.dtype), None, None, float(temperature))


def soft_target_loss(
    student_logits: Tensor,
    teacher: Tensor | TopK,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """Hinton's soft term: ``T^2 * KL(teacher_T || student_T)``, mean over real positions.

    Its gradient w.r.t. a student logit is ``T^2 * (1/T) * (q_i - p_i)`` per
    position (divided by the number of real positions), so the ``T^2`` factor
    keeps the soft term's scale independent of ``T``. The KL differs from the
    paper's soft cross-entropy by the teacher's entropy, a constant. Optional
    ``weights`` make it a weighted mean over positions (:func:`masked_mean`).

    Example
    -------
    >>> import torch
    >>> z = torch.tensor([[1.0, 0.0, -1.0]])
    >>> float(soft_target_loss(z, z, temperature=4.0))
    0.0
    """
    if isinstance(teacher, TopK):
        student_logits, log_probs, indices = _zero_padding(mask, student_logits, teacher.log_probs, teacher.indices)
        teacher = TopK(log_probs, indices)
    else:
        student_logits, teacher = _zero_padding(mask, student_logits, teacher)
    kl = soft_target_kl(student_logits, teacher, temperature)
    return temperature**2 * masked_mean(kl, mask, weights)


def logit_matching_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | TopK,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """Squared error between zero-meaned student and teacher logits (Caruana).

    Per position: ``1/(2C) * sum_i (z_i - v_i)^2`` with ``z`` and ``v`` zero-meaned
    over the ``C`` classes; then the mean over real positions. Its gradient,
    ``(z_i - v_i) / C``, is the high-temperature limit of the ``T^2``-scaled
    soft term's gradient (the paper's Section 2.1).

    Example
    -------
    >>> import torch
    >>> float(logit_matching_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, 2.0]])))
    0.0
    """
    if isinstance(teacher_logits, TopK):
        raise TypeError("logit matching needs dense teacher logits, not a TopK target")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher {tuple(teacher_logits.shape)} and student "
            f"{tuple(student_logits.shape)} logits must have the same shape"
        )
    z, v = _zero_padding(mask, _as_float(student_logits), _as_float(teacher_logits.detach()))
    diff = (z - z.mean(-1, keepdim=True)) - (v - v.mean(-1, keepdim=True))
    per_position = diff.pow(2).sum(-1) / (2 * z.shape[-1])
    return masked_mean(per_position, mask, weights)
