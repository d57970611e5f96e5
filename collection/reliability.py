"""Each contractor's reliability, from the evidence the quality page already counts (issue 14).

Evidence: gold items (correct / answered) and agreement with other contractors on the turns they
both judged (agreeing pairs / pairs), pooled into one success rate. A contractor with little
evidence should sit near everyone's mean, so the rate is the posterior mean under a Beta prior
centred on the pooled rate of all contractors with `prior_strength` pseudo-observations.

`weight` is the log-odds of that rate, log(r / (1 − r)), cut to [0, MAX_WEIGHT]: the weight of a
vote in a weighted majority (Nitzan & Paroush 1982 give log-odds weights as the optimal rule for
independent judges), 0 for a contractor no better than a coin. Snapshots carry it per judgement,
the PM loss can use it (`PreferenceTrainingConfig.weighted`), and consensus can weight by it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .models import Campaign

PRIOR_STRENGTH = 20.0
MAX_WEIGHT = 3.0


@dataclass(frozen=True)
class Reliability:
    contractor_id: int
    username: str
    successes: float
    trials: float
    rate: float  # posterior mean of the success rate
    weight: float  # log-odds vote weight, 0 … MAX_WEIGHT


def reliability_from_counts(
    counts: dict[int, tuple[str, float, float]], *, prior_strength: float = PRIOR_STRENGTH
) -> dict[int, Reliability]:
    """contractor id → Reliability, from contractor id → (username, successes, trials)."""
    total_successes = sum(s for _, s, _ in counts.values())
    total_trials = sum(t for _, _, t in counts.values())
    mean = total_successes / total_trials if total_trials else 0.5
    alpha, beta = prior_strength * mean, prior_strength * (1 - mean)
    result = {}
    for contractor_id, (username, successes, trials) in counts.items():
        rate = (successes + alpha) / (trials + alpha + beta) if trials + alpha + beta else 0.5
        rate = min(max(rate, 1e-6), 1 - 1e-6)
        weight = min(max(math.log(rate / (1 - rate)), 0.0), MAX_WEIGHT)
        result[contractor_id] = Reliability(
            contractor_id, username, successes, trials, rate, weight
        )
    return result


def contractor_reliability(
    *, campaign: Campaign | None = None, prior_strength: float = PRIOR_STRENGTH
) -> dict[int, Reliability]:
    """Every contractor who judged (in `campaign`, or everywhere): their Reliability."""
    from .quality import contractor_stats

    counts = {}
    for row in contractor_stats(campaign=campaign):
        agreeing = (row["agreement"] or 0.0) * row["overlap_pairs"]
        counts[row["contractor_id"]] = (
            row["username"],
            row["gold_correct"] + agreeing,
            row["gold_judged"] + row["overlap_pairs"],
        )
    return reliability_from_counts(counts, prior_strength=prior_strength)


def judgement_weights(judgements, *, campaign: Campaign | None = None) -> dict[int, float]:
    """judgement id → its contractor's vote weight (imported judgements: 1.0)."""
    reliability = contractor_reliability(campaign=campaign)
    return {
        judgement_id: (reliability[contractor_id].weight if contractor_id in reliability else 1.0)
        for judgement_id, contractor_id in judgements
    }
