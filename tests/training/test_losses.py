"""The preference losses by hand on tiny tensors."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import (
    binary_discrimination_loss,
    binary_labels,
    imitation_loss,
    pairwise_accuracy,
    ranked_preference_loss,
    sequence_logprobs,
)


def naive_ranked_loss(rewards, ranks, group, margin=None):
    """The definition, one Python loop per ranking and pair."""
    per_ranking = []
    for g in sorted(set(group.tolist())):
        members = [i for i in range(len(group)) if group[i] == g]
        losses = []
        for i, j in itertools.permutations(members, 2):
            if ranks[i] < ranks[j]:  # i better than j
                m = 0.0 if margin is None else float(margin[g])
                losses.append(math.log1p(math.exp(float(rewards[j] - rewards[i]) + m)))
        if losses:
            per_ranking.append(sum(losses) / len(losses))
    return sum(per_ranking) / len(per_ranking)


def test_pair_is_softplus_of_worse_minus_better():
    rewards = torch.tensor([0.3, 1.5])  # the second is the better one
    loss = ranked_preference_loss(rewards, torch.tensor([1, 0]), torch.tensor([0, 0]))
    assert loss.item() == pytest.approx(F.softplus(torch.tensor(0.3 - 1.5)).item())


def test_k3_averages_its_three_pairs():
    rewards = torch.tensor([2.0, 0.0, -1.0])
    loss = ranked_preference_loss(rewards, torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0]))
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(math.log1p(math.exp(rewards[w] - rewards[b])) for b, w in pairs) / 3
    assert loss.item() == pytest.approx(expected)


def test_rankings_of_different_k_weigh_equally():
    # A pair with loss softplus(0) = log 2, and a k=4 ranking with 6 pairs.
    pair = torch.tensor([0.0, 0.0])
    four = torch.tensor([3.0, 1.0, -1.0, -3.0])
    rewards = torch.cat([pair, four])
    ranks = torch.tensor([0, 1, 0, 1, 2, 3])
    group = torch.tensor([0, 0, 1, 1, 1, 1])
    loss_pair = ranked_preference_loss(pair, ranks[:2], group[:2])
    loss_four = ranked_preference_loss(four, ranks[2:], group[2:] - 1)
    both = ranked_preference_loss(rewards, ranks, group)
    assert both.item() == pytest.approx((loss_pair.item() + loss_four.item()) / 2)
    # Not the mean over the 7 pairs, which would let the k=4 ranking dominate.
    assert both.item() != pytest.approx((loss_pair.item() + 6 * loss_four.item()) / 7)


def test_margin_shifts_each_ranking_by_its_own_margin():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
    ranks, group = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    loss = ranked_preference_loss(rewards, ranks, group, margin=torch.tensor([0.0, 1.0]))
    expected = (F.softplus(torch.tensor(-1.0)) + F.softplus(torch.tensor(0.0))) / 2
    assert loss.item() == pytest.approx(expected.item())
    assert loss > ranked_preference_loss(rewards, ranks, group)


def test_vectorised_equals_the_naive_loop_with_ties_and_margins():
    torch.manual_seed(0)
    sizes = [2, 3, 4, 2, 5]
    group = torch.cat([torch.full((k,), g) for g, k in enumerate(sizes)])
    ranks = torch.cat([torch.randint(0, k, (k,)) for k in sizes])  # ties included
    ranks[:2] = torch.tensor([0, 1])  # at least one ranking has a pair
    rewards = torch.randn(len(group), requires_grad=True)
    margin = torch.rand(len(sizes))
    loss = ranked_preference_loss(rewards, ranks, group, margin)
    assert loss.item() == pytest.approx(
        naive_ranked_loss(rewards.detach(), ranks, group, margin), rel=1e-5
    )
    loss.backward()
    assert rewards.grad is not None and rewards.grad.abs().sum() > 0


def test_all_tied_batch_gives_zero_loss_that_backpropagates():
    rewards = torch.tensor([0.5, -0.5], requires_grad=True)
    loss = ranked_preference_loss(rewards, torch.tensor([0, 0]), torch.tensor([0, 0]))
    loss.backward()
    assert loss.item() == 0.0 and rewards.grad is not None


def test_pairwise_accuracy_counts_pairs_and_half_for_ties():
    rewards = torch.tensor([2.0, 1.0, 0.0, 1.0, 1.0])
    ranks = torch.tensor([0, 1, 2, 0, 1])
    group = torch.tensor([0, 0, 0, 1, 1])
    # Ranking 0: all 3 pairs right; ranking 1: one tie (1/2).
    assert pairwise_accuracy(rewards, ranks, group) == pytest.approx(3.5 / 4)
    assert pairwise_accuracy(-rewards[:3], ranks[:3], group[:3]) == 0.0


def test_binary_discrimination_is_bce_on_best_vs_rest():
    ranks, group = torch.tensor([1, 0, 0, 1, 2]), torch.tensor([0, 0, 1, 1, 1])
    labels = binary_labels(ranks, group)
    assert labels.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    rewards = torch.tensor([0.2, -0.1, 0.4, 0.0, 1.0])
    expected = (
        -sum(
            math.log(torch.sigmoid(r).item()) if y else math.log(1 - torch.sigmoid(r).item())
            for r, y in zip(rewards, labels, strict=True)
        )
        / 5
    )
    assert binary_discrimination_loss(rewards, labels).item() == pytest.approx(expected)


def test_imitation_loss_reads_only_labelled_tokens_and_logprob_prefers():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, 5, 6]])
    labels = ids.clone()
    labels[:, :2] = -100  # the context
    labels[1] = -100  # the worse response: not imitated
    log_probs = logits.log_softmax(-1)
    expected = -(log_probs[0, 1, 3] + log_probs[0, 2, 4]) / 2
    assert imitation_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)

    response = ids.masked_fill(torch.tensor([[1, 1, 0, 0]] * 2, dtype=torch.bool), -100)
    scores = sequence_logprobs(logits, response)
    assert scores[1].item() == pytest.approx((log_probs[1, 1, 5] + log_probs[1, 2, 6]).item())
    # The helper "prefers" the response with the higher log-probability.
    ranks = torch.tensor([0, 1]) if scores[0] > scores[1] else torch.tensor([1, 0])
    assert pairwise_accuracy(scores, ranks, torch.tensor([0, 0])) == 1.0
