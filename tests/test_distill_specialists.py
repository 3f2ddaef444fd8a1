"""Specialist ensembles: class clustering, dustbin mapping, and the KL-minimising combination."""

import pytest
import torch

from asr_kd.distill.specialists import (
    active_specialists,
    cluster_classes,
    collapse_to_specialist,
    combine_specialists,
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


def test_labels_and_distributions_map_to_subset_plus_dustbin():
    labels = torch.tensor([0, 3, 5, 3, 9])
    assert specialist_labels(labels, [3, 5], 10).tolist() == [2, 0, 1, 0, 2]
    lp = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    torch.testing.assert_close(collapse_to_specialist(lp, [2, 0]).exp(), torch.tensor([[0.3, 0.1, 0.6]]))
    with pytest.raises(ValueError, match="outside"):
        specialist_labels(labels, [3, 12], 10)


def test_half_from_subset_sampling_and_dustbin_correction():
    labels = torch.arange(10).repeat(100)  # each class 10%
    idx, over = specialist_batch_indices(labels, [2, 3], 2000, torch.Generator().manual_seed(0))
    share = float(torch.isin(labels[idx], torch.tensor([2, 3])).float().mean())
    assert 0.55 < share < 0.65 and over == pytest.approx(share / 0.2)
    logits = torch.zeros(1, 3)
    assert raise_dustbin(logits, 2.0)[0, -1] == pytest.approx(torch.log(torch.tensor(2.0)))


def test_combination_optimum():
    torch.manual_seed(1)
    p_g = torch.log_softmax(torch.randn(4, 6), -1)
    subsets = [[0, 1, 2], [3, 4]]
    active = active_specialists(p_g, subsets, top_n=6)
    assert active.all()
    # specialists that agree with the generalist leave it unchanged
    agree = [collapse_to_specialist(p_g, s) for s in subsets]
    torch.testing.assert_close(combine_specialists(p_g, agree, subsets, active), p_g, atol=1e-4, rtol=0)
    # an inactive specialist has no effect, however confident
    sure = torch.log(torch.tensor([[0.97, 0.01, 0.01, 0.01]])).repeat(4, 1)
    off = torch.zeros(4, 2, dtype=torch.bool)
    torch.testing.assert_close(combine_specialists(p_g, [sure, agree[1]], subsets, off), p_g)
    # an active confident specialist moves mass onto its class, within its subset
    on = torch.tensor([[True, False]]).repeat(4, 1)
    q = combine_specialists(p_g, [sure, agree[1]], subsets, on).exp()
    assert torch.all(q[:, 0] > p_g.exp()[:, 0])
    torch.testing.assert_close(q.sum(-1), torch.ones(4))


def test_active_specialists_follow_the_generalists_top_class():
    p_g = torch.log(torch.tensor([[0.6, 0.2, 0.1, 0.1], [0.1, 0.1, 0.2, 0.6]]))
    assert active_specialists(p_g, [[0, 1], [2, 3], [1, 3]]).tolist() == [[True, False, False], [False, True, True]]
