"""Elo ratings of model versions from pairwise outcomes: Bradley–Terry by maximum likelihood.

P(a beats b) = 1 / (1 + 10^((elo_b − elo_a) / 400)), the Elo scale of 400·log10 odds. Strengths
are fitted by Hunter's MM algorithm (`collection.agreement.bradley_terry`, shared with contractor
consensus) instead of sequential Elo updates, so the order of the games does not matter.

A tie counts as half a win each way. `bradley_terry` takes whole (winner, loser) pairs, so each
decisive game is passed twice and each tie once in each direction: the win matrix doubles, which
leaves the likelihood's maximum and every MM step unchanged, and the prior is halved to match.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from collection.agreement import bradley_terry

ELO_PER_NAT = 400 / math.log(10)  # natural log-odds → Elo points
BASE = 1000.0


@dataclass(frozen=True)
class Outcome:
    winner: Hashable  # with tie=True, just the first of the two versions
    loser: Hashable
    tie: bool = False


def win_probability(elo_a: float, elo_b: float) -> float:
    """The probability that a beats b under their Elo ratings."""
    return 1.0 / (1.0 + 10 ** ((elo_b - elo_a) / 400))


def elo_fit(
    outcomes: Sequence[Outcome | tuple], *, anchor: Hashable | None = None, prior: float = 0.1
) -> dict[Hashable, float]:
    """Elo rating of each version: the mean is 1000, or `anchor`'s rating is 1000 if named.

    `outcomes` are Outcome or (winner, loser[, tie]) tuples. `prior` is a symmetric pseudo-count
    of virtual wins each way between every two versions, which keeps an unbeaten version finite;
    0 gives the plain maximum-likelihood fit (then every version must win at least once).
    """
    outcomes = [o if isinstance(o, Outcome) else Outcome(*o) for o in outcomes]
    strengths = bradley_terry(_doubled(outcomes), prior=prior / 2)
    if anchor is not None and anchor not in strengths:
        raise ValueError(f"the anchor {anchor!r} played no game")
    zero = strengths[anchor] if anchor is not None else 0.0  # bradley_terry centres on mean 0
    return {v: BASE + ELO_PER_NAT * (s - zero) for v, s in strengths.items()}


def elo_ratings(
    outcomes: Sequence[Outcome | tuple],
    *,
    anchor: Hashable | None = None,
    prior: float = 0.1,
    resamples: int = 100,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Elo ratings with bootstrap intervals (games resampled with replacement, fixed seed).

    Returns {"ratings": {version: {"elo", "low", "high", "wins", "losses", "ties", "games"}},
    "anchor", "n_games", "resamples", "level", "prior"}, versions best first. A resample in
    which a version played no game (or the anchor none) leaves that version's interval out.
    """
    outcomes = [o if isinstance(o, Outcome) else Outcome(*o) for o in outcomes]
    estimate = elo_fit(outcomes, anchor=anchor, prior=prior)
    versions = list(estimate)
    rng = np.random.default_rng(seed)
    fits = np.full((resamples, len(versions)), np.nan)
    for r in range(resamples):
        sample = [outcomes[i] for i in rng.integers(0, len(outcomes), size=len(outcomes))]
        try:
            fitted = elo_fit(sample, anchor=anchor, prior=prior)
        except ValueError:  # the anchor, or with prior 0 a version's only wins, fell out
            continue
        fits[r] = [fitted.get(v, np.nan) for v in versions]
    tail = (1 - level) / 2
    with np.errstate(all="ignore"):
        low, high = np.nanquantile(fits, [tail, 1 - tail], axis=0)
    ratings = {}
    for i, v in sorted(enumerate(versions), key=lambda pair: -estimate[pair[1]]):
        games = [o for o in outcomes if v in (o.winner, o.loser)]
        ratings[v] = {
            "elo": estimate[v],
            "low": float(low[i]),
            "high": float(high[i]),
            "wins": sum(not o.tie and o.winner == v for o in games),
            "losses": sum(not o.tie and o.loser == v for o in games),
            "ties": sum(o.tie for o in games),
            "games": len(games),
        }
    return {
        "ratings": ratings,
        "anchor": anchor,  # None: the mean rating is 1000
        "n_games": len(outcomes),
        "resamples": resamples,
        "level": level,
        "prior": prior,
    }


def _doubled(outcomes: list[Outcome]) -> list[tuple[Hashable, Hashable]]:
    pairs = []
    for o in outcomes:
        if o.tie:
            pairs += [(o.winner, o.loser), (o.loser, o.winner)]
        else:
            pairs += [(o.winner, o.loser), (o.winner, o.loser)]
    return pairs
