"""Whether a newly trained PM replaces the active one: a paired test on the same held-out pairs.

Both PMs score every ordered pair of the new run's held-out rankings; a pair is *correct* for a
PM when it gives the better response the strictly higher reward (a tie in reward is not
correct). The pairs where exactly one PM is correct decide:

* an exact McNemar test (a two-sided sign test on the discordant pairs: under "equally good",
  each discordant pair is new-right/active-wrong with probability 1/2);
* Newcombe's interval (1998, method 10: Wilson intervals of both accuracies combined through
  their correlation) for the accuracy difference new − active, at 1 − alpha.

The rule (`decide`), with alpha = TRAINING_PROMOTION_ALPHA and the tolerance
TRAINING_PROMOTION_TOLERANCE (absolute accuracy):

* held-out set smaller than TRAINING_PROMOTION_MIN_HELD_OUT pairs: kept, whatever the numbers;
* no active PM: promoted when its accuracy is above chance by an exact one-sided sign test
  (p < alpha), else kept;
* significantly better (McNemar p < alpha, more new-right than active-right pairs): promoted;
* significantly worse: kept, whatever the tolerance;
* no significant difference (a tie): promoted only when the interval's lower end is at least
  −tolerance, i.e. the data rule out that the new PM is worse by more than the tolerance
  (non-inferiority); otherwise kept, as the active PM was promoted on evidence of its own.

Pairs of one ranking are counted as separate items (a ranking of k gives k(k−1)/2), as the
held-out accuracy counts them; with big rankings the test is somewhat too confident.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

TEST_NAME = "exact McNemar test (two-sided sign test on the discordant pairs)"
INTERVAL_NAME = "Newcombe's paired interval (method 10)"
# z for a two-sided 1 - alpha interval, for the alphas a setting is likely to hold; others are
# computed by bisection on the normal CDF.
_Z = {0.05: 1.959963984540054, 0.01: 2.5758293035489004, 0.1: 1.6448536269514722}


def _z(alpha: float) -> float:
    if alpha in _Z:
        return _Z[alpha]
    low, high = 0.0, 10.0
    target = 1 - alpha / 2
    for _ in range(100):
        mid = (low + high) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < target:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def binomial_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (math.comb; no scipy needed)."""
    if n == 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(0, max(-1, k) + 1)) / 2**n


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for `b` and `c` discordant pairs (1 when there are none)."""
    return min(1.0, 2 * binomial_tail(min(b, c), b + c))


def wilson(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """The Wilson score interval of a proportion; (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    z = _z(alpha)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_paired_interval(
    both: int, b: int, c: int, neither: int, alpha: float = 0.05
) -> tuple[float, float]:
    """Newcombe's (1998) method-10 interval for p1 − p2 on paired data.

    `both`: pairs both got right; `b`: only the first (new) got right; `c`: only the second
    (active); `neither`. The correlation term uses Newcombe's continuity correction.
    """
    n = both + b + c + neither
    if n == 0:
        return -1.0, 1.0
    p1, p2 = (both + b) / n, (both + c) / n
    l1, u1 = wilson(both + b, n, alpha)
    l2, u2 = wilson(both + c, n, alpha)
    product = (both + b) * (c + neither) * (both + c) * (b + neither)
    phi = 0.0
    if product > 0:
        cross = both * neither - b * c
        corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
        phi = corrected / math.sqrt(product)
    d = p1 - p2
    lower = d - math.sqrt(
        max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    )
    upper = d + math.sqrt(
        max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    )
    return max(-1.0, lower), min(1.0, upper)


@dataclass(frozen=True)
class PairedCounts:
    """The 2x2 table of the two PMs' correctness on the same n pairs."""

    both: int
    new_only: int  # new right, active wrong
    active_only: int  # new wrong, active right
    neither: int

    @property
    def n(self) -> int:
        return self.both + self.new_only + self.active_only + self.neither

    @classmethod
    def from_outcomes(cls, new: Sequence[bool], active: Sequence[bool]) -> PairedCounts:
        if len(new) != len(active):
            raise ValueError(f"{len(new)} outcomes of the new PM but {len(active)} of the active")
        table = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
        for pair in zip(map(bool, new), map(bool, active), strict=True):
            table[pair] += 1
        return cls(table[True, True], table[True, False], table[False, True], table[False, False])


def decide(
    new: Sequence[bool],
    active: Sequence[bool] | None,
    *,
    min_held_out: int,
    alpha: float,
    tolerance: float,
) -> dict:
    """The promotion decision (see the module's docstring) as the JSON the run stores.

    `new` and `active`: per held-out pair, whether each PM ranks it right, in the same order;
    `active` is None when no PM is active.
    """
    n = len(new)
    correct = sum(map(bool, new))
    accuracy = correct / n if n else None
    facts = {
        "held_out": n,
        "min_held_out": min_held_out,
        "alpha": alpha,
        "tolerance": tolerance,
        "new_accuracy": accuracy,
    }
    if n < min_held_out:
        shown = f"{accuracy:.3f}" if accuracy is not None else "not measured"
        return {
            "decision": "kept",
            **facts,
            "reason": (
                f"the held-out set has {n} comparison{'s' if n != 1 else ''}, fewer than the "
                f"{min_held_out} needed to decide (TRAINING_PROMOTION_MIN_HELD_OUT); registered, "
                f"not promoted (held-out accuracy {shown})"
            ),
        }
    if active is None:
        return _first_pm(correct, n, alpha, facts)
    return _against_active(PairedCounts.from_outcomes(new, active), alpha, tolerance, facts)


def _first_pm(correct: int, n: int, alpha: float, facts: dict) -> dict:
    """No PM is active: promoted when the accuracy is above chance (a one-sided sign test)."""
    accuracy = correct / n
    # One-sided sign test against chance: P(X >= correct) under p = 1/2.
    p_value = 1.0 - binomial_tail(correct - 1, n)
    low, high = wilson(correct, n, alpha)
    facts = facts | {
        "test": "exact one-sided sign test against chance (accuracy 0.5)",
        "p_value": p_value,
        "interval": [low, high],
        "interval_of": f"held-out accuracy, Wilson {100 * (1 - alpha):g}%",
    }
    if p_value < alpha:
        return {
            "decision": "promoted",
            **facts,
            "reason": (
                f"first PM: held-out accuracy {accuracy:.3f} on {n} comparisons "
                f"[{low:.3f}, {high:.3f}] is above chance (p = {p_value:.3g} < {alpha})"
            ),
        }
    return {
        "decision": "kept",
        **facts,
        "reason": (
            f"first PM, but held-out accuracy {accuracy:.3f} on {n} comparisons "
            f"[{low:.3f}, {high:.3f}] is not above chance (p = {p_value:.3g} ≥ {alpha})"
        ),
    }


def _against_active(counts: PairedCounts, alpha: float, tolerance: float, facts: dict) -> dict:
    """The paired test against the active PM: better, worse, or a tie within the tolerance."""
    n = counts.n
    accuracy = (counts.both + counts.new_only) / n
    active_accuracy = (counts.both + counts.active_only) / n
    p_value = mcnemar_exact_p(counts.new_only, counts.active_only)
    low, high = newcombe_paired_interval(
        counts.both, counts.new_only, counts.active_only, counts.neither, alpha
    )
    difference = accuracy - active_accuracy
    facts = facts | {
        "test": TEST_NAME,
        "active_accuracy": active_accuracy,
        "difference": difference,
        "both_right": counts.both,
        "new_only_right": counts.new_only,
        "active_only_right": counts.active_only,
        "both_wrong": counts.neither,
        "p_value": p_value,
        "interval": [low, high],
        "interval_of": f"accuracy difference new − active, {INTERVAL_NAME}, {100 * (1 - alpha):g}%",
    }
    numbers = (
        f"held-out accuracy {accuracy:.3f} vs active {active_accuracy:.3f} on the same {n} "
        f"comparisons; discordant {counts.new_only} (new right) / {counts.active_only} "
        f"(active right), p = {p_value:.3g}; difference {difference:+.3f} "
        f"[{low:+.3f}, {high:+.3f}]"
    )
    if p_value < alpha:
        better = counts.new_only > counts.active_only
        words = "better than" if better else "worse than"
        return {
            "decision": "promoted" if better else "kept",
            "outcome": "better" if better else "worse",
            **facts,
            "reason": f"significantly {words} the active PM: {numbers}",
        }
    if low >= -tolerance:
        return {
            "decision": "promoted",
            "outcome": "tie",
            **facts,
            "reason": (
                f"no significant difference, and the interval rules out a loss of more than "
                f"the tolerance {tolerance}: {numbers}"
            ),
        }
    return {
        "decision": "kept",
        "outcome": "tie",
        **facts,
        "reason": (
            f"no significant difference, and a loss of more than the tolerance {tolerance} is "
            f"not ruled out, so the active PM stays: {numbers}"
        ),
    }


def pair_outcomes(model, tokenizer, rankings, config, *, device=None) -> list[bool]:
    """Per ordered held-out pair, in a fixed order (ranking by ranking, then the better
    response's index, then the worse one's), whether `model` gives the better response the
    strictly higher reward. The same order for any PM, whatever its tokenizer or packing."""
    import torch

    from assistant.hardware import bf16_autocast

    from .loop import loss_and_rewards, ranking_collator

    device = torch.device(device or next(model.parameters()).device)
    collate = ranking_collator(model, tokenizer, config)
    was_training = model.training
    model.eval()
    autocast = bf16_autocast(config.bf16, device)
    outcomes: list[bool] = []
    try:
        with torch.no_grad():
            for start in range(0, len(rankings), config.batch_size):
                chunk = rankings[start : start + config.batch_size]
                batch = {key: value.to(device) for key, value in collate(chunk).items()}
                with autocast:
                    _, rewards = loss_and_rewards(model, batch, config.loss)
                rewards = rewards.float().cpu().tolist()
                offset = 0
                for ranking in chunk:
                    scores = rewards[offset : offset + len(ranking.responses)]
                    offset += len(ranking.responses)
                    for i, rank_i in enumerate(ranking.ranks):
                        for j, rank_j in enumerate(ranking.ranks):
                            if rank_i < rank_j:
                                outcomes.append(scores[i] > scores[j])
    finally:
        model.train(was_training)
    return outcomes
