"""Specialist ensembles: class clustering, dustbin mapping, and the KL-minimising combination."""

import math

import pytest
import torch

from asr_kd.distill.specialists import (
    active_specialists,
    cluster_classes,
    collapse_to_specialist,
    combine_specialists,
    dustbin_shift,
    raise_dustbin,
    specialist_batch_indices,
    specialist_labels,
)


def test_kmeans_on_covariance_recovers_confusable_groups():
    """Classes that the generalist confuses with each other end up in one subset."""
    torch.manual_seed(0)
    groups = [[0, 3, 7], [1, 4], [2, 5, 6, 8, 9]]
    rows = []
    for _ in range(3000):
        g = groups[int(torch.randint(3, (1,)))]
        logits = torch.full((10,), -4.0)
        logits[g] = torch.randn(len(g)) * 2  # mass spread inside the group only
        rows.append(torch.softmax(logits, -1))
    assert cluster_classes(torch.stack(rows), 3) == [[0, 3, 7], [1, 4], [2, 5, 6, 8, 9]]
    with pytest.raises(ValueError, match="num_clusters"):
        cluster_classes(torch.stack(rows), 11)


def test_balanced_kmeans_splits_the_classes_that_correlate_with_none():
    """Plain K-means puts every class that correlates with no other in one subset; balanced
    K-means caps a subset at ceil(C / K) classes and still keeps confusable pairs together."""
    torch.manual_seed(0)
    rows = []
    for _ in range(4000):
        k = int(torch.randint(10, (1,)))  # 0: the pair {0, 1}, 1: the pair {2, 3}, else one of 4..11
        logits = torch.full((12,), -6.0)
        if k < 2:
            logits[[2 * k, 2 * k + 1]] = torch.randn(2) * 2
        else:
            logits[int(torch.randint(4, 12, (1,)))] = 4.0
        rows.append(torch.softmax(logits, -1))
    probs = torch.stack(rows)
    plain = cluster_classes(probs, 3)
    assert max(len(s) for s in plain) >= 6  # the uncorrelated classes lumped together
    balanced = cluster_classes(probs, 3, balanced=True)
    assert sorted(c for s in balanced for c in s) == list(range(12)) and max(len(s) for s in balanced) <= 4
    assert any({0, 1} <= set(s) for s in balanced) and any({2, 3} <= set(s) for s in balanced)


def test_labels_and_distributions_map_to_subset_plus_dustbin():
    labels = torch.tensor([0, 3, 5, 3, 9])
    assert specialist_labels(labels, [3, 5], 10).tolist() == [2, 0, 1, 0, 2]
    lp = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    torch.testing.assert_close(collapse_to_specialist(lp, [2, 0]).exp(), torch.tensor([[0.3, 0.1, 0.6]]))
    with pytest.raises(ValueError, match="outside"):
        specialist_labels(labels, [3, 12], 10)


def test_half_from_subset_sampling():
    labels = torch.arange(10).repeat(100)  # each class 10%
    idx, shift = specialist_batch_indices(labels, [2, 3], 4000, torch.Generator().manual_seed(0))
    share = float(torch.isin(labels[idx], torch.tensor([2, 3])).float().mean())
    assert 0.57 < share < 0.63  # expected 1/2 + 0.2/2 = 0.6
    assert shift == pytest.approx(dustbin_shift(0.2, 0.6))


def test_dustbin_shift_recovers_the_natural_posterior_by_bayes():
    """A specialist that is Bayes-optimal under the oversampled prior, once shifted,
    gives the natural-prior posterior collapsed to subset + dustbin."""
    torch.manual_seed(2)
    prior = torch.softmax(torch.randn(6), -1)
    subset = [1, 4]
    likelihood = torch.rand(5, 6)  # p(x | class) for 5 inputs
    n = float(prior[subset].sum())
    s = 0.5 + 0.5 * n
    scale = torch.full((6,), (1 - s) / (1 - n))
    scale[subset] = s / n
    natural = torch.log(prior * likelihood)
    sampled = torch.log(prior * scale * likelihood)
    specialist = collapse_to_specialist(sampled, subset)  # unnormalised logits
    corrected = torch.log_softmax(raise_dustbin(specialist, dustbin_shift(n, s)), -1)
    expected = collapse_to_specialist(torch.log_softmax(natural, -1), subset)
    torch.testing.assert_close(corrected, expected, atol=1e-5, rtol=1e-5)
    paper = torch.log_softmax(raise_dustbin(specialist, math.log(s / n)), -1)
    assert not torch.allclose(paper, expected, atol=1e-3)  # the paper's wording is approximate


def test_combination_optimum():
    torch.manual_seed(1)
    p_g = torch.log_softmax(torch.randn(4, 6), -1)
    subsets = [[0, 1, 2], [3, 4]]
    active = active_specialists(p_g, subsets, top_n=6)
    assert active.all()
    # specialists that agree with the generalist leave it unchanged
    agree = [collapse_to_specialist(p_g, s) for s in subsets]
    torch.testing.assert_close(combine_specialists(p_g, agree, subsets, active), p_g, atol=1e-4, rtol=0)
    # an inactive specialist has no effect, however confident (the other one is active)
    sure = torch.log(torch.tensor([[0.97, 0.01, 0.01, 0.01]])).repeat(4, 1)
    keen = torch.log(torch.tensor([[0.8, 0.1, 0.1]])).repeat(4, 1)
    second_only = torch.tensor([[False, True]]).repeat(4, 1)
    with_sure = combine_specialists(p_g, [sure, keen], subsets, second_only)
    with_other = combine_specialists(p_g, [agree[0], keen], subsets, second_only)
    torch.testing.assert_close(with_sure, with_other)
    assert not torch.allclose(with_sure, p_g, atol=1e-3)
    # an active confident specialist moves mass onto its class, within its subset
    on = torch.tensor([[True, False]]).repeat(4, 1)
    q = combine_specialists(p_g, [sure, agree[1]], subsets, on).exp()
    assert torch.all(q[:, 0] > p_g.exp()[:, 0])
    torch.testing.assert_close(q.sum(-1), torch.ones(4))


def test_active_specialists_follow_the_generalists_top_class():
    p_g = torch.log(torch.tensor([[0.6, 0.2, 0.1, 0.1], [0.1, 0.1, 0.2, 0.6]]))
    assert active_specialists(p_g, [[0, 1], [2, 3], [1, 3]]).tolist() == [[True, False, False], [False, True, True]]


def test_rows_with_no_active_specialist_keep_the_generalists_distribution():
    torch.manual_seed(2)
    p_g = torch.log_softmax(torch.randn(6, 5), -1)
    subsets = [[0, 1], [2, 3]]
    sure = [torch.log(torch.tensor([[0.98, 0.01, 0.01]])).repeat(6, 1)] * 2
    active = torch.tensor([[True, False], [False, False], [False, True], [False, False], [True, True], [False, False]])
    q = combine_specialists(p_g, sure, subsets, active)
    idle = ~active.any(1)
    torch.testing.assert_close(q[idle], p_g[idle], atol=1e-5, rtol=0)
    assert not torch.allclose(q[~idle], p_g[~idle], atol=1e-2)


def test_a_specialist_reaches_classes_outside_its_subset_only_through_the_dustbin():
    """The specialist term's gradient on an outside class is q_j (1 - p_dustbin / q_dustbin):
    the same for any specialist output with the same dustbin mass, so it cannot tell the outside
    classes apart, and zero on them when its dustbin agrees with q's."""
    torch.manual_seed(3)
    z = torch.randn(6, requires_grad=True)
    subset = [1, 4]
    outside = [0, 2, 3, 5]

    def grad(p_m: torch.Tensor) -> torch.Tensor:
        z.grad = None
        log_q_m = collapse_to_specialist(torch.log_softmax(z, -1), subset)
        (-(p_m * log_q_m).sum()).backward()
        return z.grad.clone()

    a = grad(torch.tensor([0.7, 0.1, 0.2]))
    b = grad(torch.tensor([0.1, 0.7, 0.2]))  # another split of the subset, the same dustbin mass
    torch.testing.assert_close(a[outside], b[outside])
    assert not torch.allclose(a[subset], b[subset])
    q = torch.softmax(z.detach(), -1)
    q_dust = q[outside].sum()
    torch.testing.assert_close(a[outside], q[outside] * (1 - 0.2 / q_dust))
    agree = grad(torch.tensor([0.6, 0.4 - float(q_dust), float(q_dust)]))
    torch.testing.assert_close(agree[outside], torch.zeros(4), atol=1e-6, rtol=0)


def test_the_fast_combination_equals_the_direct_kl_minimisation():
    """combine_specialists computes each term as a cross-entropy on its active rows only; the
    direct form (every KL on every row, weighted by the active mask) takes the same steps."""
    torch.manual_seed(4)
    n, c = 40, 12
    p_g = torch.log_softmax(torch.randn(n, c) * 2, -1)
    subsets = [[1, 2, 3], [4, 5, 6, 7, 8], [9, 10]]
    outs = [torch.log_softmax(torch.randn(n, len(s) + 1) * 2, -1) for s in subsets]
    active = active_specialists(p_g, subsets, top_n=2)
    assert active.any() and not active.all()

    def kl(log_p, log_q):
        return (log_p.exp() * (log_p - log_q)).sum(-1)

    z = p_g.double().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.1)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    for _ in range(100):
        log_q = torch.log_softmax(z, -1)
        loss = kl(p_g.double(), log_q)
        for m, s in enumerate(subsets):
            loss = loss + active[:, m].double() * kl(outs[m].double(), collapse_to_specialist(log_q, s))
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        decay.step()
    direct = torch.log_softmax(z.detach(), -1).float()
    torch.testing.assert_close(combine_specialists(p_g, outs, subsets, active, 100, 0.1), direct, atol=1e-6, rtol=0)
