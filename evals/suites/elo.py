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
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from collection.agreement import bradley_terry, bradley_terry_fit

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
    counts: Counter = Counter()
    for o in outcomes:
        o = o if isinstance(o, Outcome) else Outcome(*o)
        counts[(o.winner, o.loser, o.tie)] += 1
    return elo_ratings_counted(
        counts, anchor=anchor, prior=prior, resamples=resamples, seed=seed, level=level
    )


def elo_ratings_counted(
    counts: Mapping[tuple[Hashable, Hashable, bool], int],
    *,
    anchor: Hashable | None = None,
    prior: float = 0.1,
    resamples: int = 100,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """`elo_ratings` of games given as counts: (winner, loser, tie) → how many such games.

    The cost grows with the number of distinct cells, not of games, so a million judgements'
    games fit in milliseconds. A resample draws as many games as there are from the cells in
    proportion to their counts (one multinomial draw), which is resampling the games with
    replacement. Versions are ordered by first appearance in `counts`.
    """
    cells = [(win, lose, bool(t), n) for (win, lose, t), n in counts.items() if n > 0]
    versions = list(dict.fromkeys(v for win, lose, _, _ in cells for v in (win, lose)))
    if anchor is not None and anchor not in versions:
        raise ValueError(f"the anchor {anchor!r} played no game")
    position = {v: i for i, v in enumerate(versions)}
    winners = np.array([position[w] for w, _, _, _ in cells], dtype=int)
    losers = np.array([position[lose] for _, lose, _, _ in cells], dtype=int)
    ties = np.array([t for _, _, t, _ in cells], dtype=bool)
    n = np.array([c for _, _, _, c in cells], dtype=float)
    fit = _CountedFit(len(versions), winners, losers, ties, prior, position.get(anchor))
    estimate = fit(n)
    rng = np.random.default_rng(seed)
    fits = np.full((resamples, len(versions)), np.nan)
    total = int(n.sum())
    for r in range(resamples):
        try:
            fits[r] = fit(rng.multinomial(total, n / total).astype(float))
        except ValueError:  # the anchor, or with prior 0 a version's only wins, fell out
            continue
    tail = (1 - level) / 2
    with np.errstate(all="ignore"):
        low, high = np.nanquantile(fits, [tail, 1 - tail], axis=0)
    ratings = {}
    for i in sorted(range(len(versions)), key=lambda i: -estimate[i]):
        played = (winners == i) | (losers == i)
        ratings[versions[i]] = {
            "elo": float(estimate[i]),
            "low": float(low[i]),
            "high": float(high[i]),
            "wins": int(n[(winners == i) & ~ties].sum()),
            "losses": int(n[(losers == i) & ~ties].sum()),
            "ties": int(n[played & ties].sum()),
            "games": int(n[played].sum()),
        }
    return {
        "ratings": ratings,
        "anchor": anchor,  # None: the mean rating is 1000
        "n_games": total,
        "resamples": resamples,
        "level": level,
        "prior": prior,
    }


class _CountedFit:
    """The Elo of every version from per-cell game counts, as `elo_fit` computes it: decisive
    games doubled, a tie half a win each way, the prior halved (see the module's docstring);
    NaN for a version that played no game in these counts."""

    def __init__(self, size, winners, losers, ties, prior, anchor):
        self.size, self.winners, self.losers, self.ties = size, winners, losers, ties
        self.prior, self.anchor = prior, anchor

    def __call__(self, n: np.ndarray) -> np.ndarray:
        wins = np.zeros((self.size, self.size))
        decisive = ~self.ties
        np.add.at(wins, (self.winners[decisive], self.losers[decisive]), 2 * n[decisive])
        np.add.at(wins, (self.winners[self.ties], self.losers[self.ties]), n[self.ties])
        np.add.at(wins, (self.losers[self.ties], self.winners[self.ties]), n[self.ties])
        present = np.flatnonzero((wins + wins.T).sum(axis=1) > 0)
        if self.anchor is not None and self.anchor not in present:
            raise ValueError("the anchor played no game")
        log_p = bradley_terry_fit(wins[np.ix_(present, present)], 10_000, self.prior / 2, 1e-10)
        zero = log_p[np.searchsorted(present, self.anchor)] if self.anchor is not None else 0.0
        elo = np.full(self.size, np.nan)
        elo[present] = BASE + ELO_PER_NAT * (log_p - zero)
        return elo


def _doubled(outcomes: list[Outcome]) -> list[tuple[Hashable, Hashable]]:
    pairs = []
    for o in outcomes:
        if o.tie:
            pairs += [(o.winner, o.loser), (o.loser, o.winner)]
        else:
            pairs += [(o.winner, o.loser), (o.winner, o.loser)]
    return pairs
