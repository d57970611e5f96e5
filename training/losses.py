"""Losses for preference models and their baselines (Askell et al. 2021; Bai et al. 2022).

Plain torch. Every function takes the rewards of ALL responses of a batch in one flat tensor plus
`ranks` (0 = best within its ranking; equal ranks are ties and make no pair) and `group` (which
ranking each response belongs to, ids in [0, number of rankings)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ordered_pairs(ranks: Tensor, group: Tensor) -> tuple[Tensor, Tensor]:
    """Indices (better, worse) of every ordered pair inside a ranking, ties left out."""
    same = group[:, None] == group[None, :]
    better = ranks[:, None] < ranks[None, :]
    return torch.nonzero(same & better, as_tuple=True)


def ranked_preference_loss(
    rewards: Tensor,
    ranks: Tensor,
    group: Tensor,
    margin: Tensor | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    """Ranked preference modelling: L = log(1 + exp(r_worse - r_better + margin)) (Askell et al.).

    Averaged over the ordered pairs of each ranking, then over rankings, so a ranking of k=4
    (6 pairs) weighs the same as a single pair; k=2 is the pairwise loss. `margin` has one entry
    per ranking (indexed by group id); rankings with no untied pair are left out. `weight`
    (one per ranking, e.g. its contractor's reliability) makes the mean over rankings a
    weighted mean; a batch whose weights are all 0 has loss 0.
    """
    better, worse = ordered_pairs(ranks, group)
    if better.numel() == 0:
        return rewards.sum() * 0.0  # keeps the graph, so backward() and DDP still work
    diff = rewards[worse] - rewards[better]
    pair_group = group[better]
    if margin is not None:
        diff = diff + margin.to(diff.dtype)[pair_group]
    losses = F.softplus(diff.float())
    num_groups = int(group.max()) + 1
    sums = losses.new_zeros(num_groups).index_add(0, pair_group, losses)
    counts = losses.new_zeros(num_groups).index_add(0, pair_group, torch.ones_like(losses))
    present = counts > 0
    per_ranking = sums[present] / counts[present]
    if weight is None:
        return per_ranking.mean()
    w = weight.to(per_ranking.device, per_ranking.dtype)[:num_groups][present]
    return (per_ranking * w).sum() / w.sum().clamp_min(1e-12)


@torch.no_grad()
def pairwise_accuracy(rewards: Tensor, ranks: Tensor, group: Tensor) -> float:
    """Fraction of ordered pairs where the better response gets the higher reward (ties: 1/2)."""
    better, worse = ordered_pairs(ranks, group)
    if better.numel() == 0:
        return float("nan")
    diff = rewards[better].float() - rewards[worse].float()
    return ((diff > 0).float() + 0.5 * (diff == 0).float()).mean().item()


def binary_labels(ranks: Tensor, group: Tensor) -> Tensor:
    """Good (1) for the best response(s) of each ranking, bad (0) for the rest."""
    best = torch.full_like(ranks, torch.iinfo(ranks.dtype).max).scatter_reduce(
        0, group, ranks, reduce="amin"
    )
    return (ranks == best[group]).float()


def binary_discrimination_loss(rewards: Tensor, labels: Tensor) -> Tensor:
    """Binary discrimination baseline: BCE-with-logits on each response, good (1) vs bad (0).

    Askell et al. 2021 compare it with ranked preference modelling: the PM scores each sample
    on its own, with no comparison inside the loss.
    """
    return F.binary_cross_entropy_with_logits(rewards.float(), labels.float())


def imitation_loss(lm_logits: Tensor, labels: Tensor) -> Tensor:
    """Imitation learning baseline: next-token cross-entropy on the preferred responses' tokens.

    `labels` holds the input ids on the preferred response's tokens and -100 everywhere else
    (context, padding, the other responses), as in Askell et al. 2021's imitation baseline.
    """
    logits = lm_logits[:, :-1].float()
    targets = labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def sequence_logprobs(lm_logits: Tensor, labels: Tensor) -> Tensor:
    """Sum of log p(token) over the labelled tokens of each row: how an LM "prefers" a response.

    Used as the reward of the imitation baseline, so `pairwise_accuracy` compares it with PMs.
    """
    logits = lm_logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = targets != -100
    picked = torch.gather(logits.log_softmax(-1), 2, targets.clamp(min=0).unsqueeze(-1))
    return (picked.squeeze(-1) * mask).sum(-1)
