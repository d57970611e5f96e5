"""Length, the confound of human-preference data: the baseline that reads only length, and how
much a preference model's scores follow it.

On public human-preference sets "the longer response wins" alone scores 0.56–0.72, so a PM's
accuracy means little until it is set against that baseline on the same pairs:

- `length_baseline`: the longer response of each pair wins; a pair of equal lengths counts as
  half a win (the expected score of a coin toss: the baseline keeps every pair, so it is scored
  on the same n as the PM); a 95% Wilson interval around the share.
- `length_bias`: Spearman's rank correlation of the PM's score with the response's length, over
  every scored response (n = all of them; the two of one pair are not independent, so the
  p-value is approximate). Ranks, not values: a reward scale has no meaning, only its order.
- `versus_length`: PM accuracy − the stronger length rule's (longer wins, or shorter wins where
  that scores more) on the same pairs, with Newcombe's paired interval (training.promotion, the
  one the promotion test uses); a PM whose interval does not lie above 0 does not beat length:
  it may have learned length rather than preference.

Length is counted in characters of the response (stripped, as the PM reads it): the same for any
tokenizer. Plain Python and scipy, no Django.
"""

from __future__ import annotations

from collections.abc import Sequence

from evals.stats import binomial_ci
from training.promotion import newcombe_paired_interval

TIES = "counted as half a win"


def _baseline_outcomes(chosen_lengths: Sequence[int], rejected_lengths: Sequence[int]):
    """Per pair: 1 when the chosen response is longer, 0 when shorter, 0.5 when as long."""
    if len(chosen_lengths) != len(rejected_lengths):
        raise ValueError("one rejected length per chosen length")
    return [
        1.0 if c > r else 0.0 if c < r else 0.5
        for c, r in zip(chosen_lengths, rejected_lengths, strict=True)
    ]


def length_baseline(chosen_lengths: Sequence[int], rejected_lengths: Sequence[int]) -> dict:
    """ "The longer response wins": an accuracy cell ({"accuracy", "n", "correct", "low",
    "high"}; `correct` may end in .5) with the number of `ties` and how they count."""
    outcomes = _baseline_outcomes(chosen_lengths, rejected_lengths)
    n, wins = len(outcomes), sum(outcomes)
    low, high = binomial_ci(wins, n)
    return {
        "accuracy": wins / n if n else None,
        "n": n,
        "correct": wins,
        "low": low,
        "high": high,
        "ties": sum(1 for outcome in outcomes if outcome == 0.5),
        "ties_rule": TIES,
    }


def length_bias(scores: Sequence[float], lengths: Sequence[int]) -> dict:
    """{"method": "spearman", "rho", "p", "n"}: rho and p are None when fewer than 3 responses
    or when the scores or the lengths are all equal (no order to correlate)."""
    from scipy.stats import spearmanr  # a well-kept rank correlation (ties get average ranks)

    if len(scores) != len(lengths):
        raise ValueError("one length per score")
    n = len(scores)
    cell = {"method": "spearman", "rho": None, "p": None, "n": n, "of": "score vs characters"}
    if n < 3 or len(set(scores)) < 2 or len(set(lengths)) < 2:
        return cell
    result = spearmanr(scores, lengths)
    return {**cell, "rho": float(result.statistic), "p": float(result.pvalue)}


def versus_length(
    pm_correct: Sequence[bool], chosen_lengths: Sequence[int], rejected_lengths: Sequence[int]
) -> dict:
    """PM − the stronger length rule on the same pairs: {"rule", "baseline", "difference",
    "low", "high", "verdict"}; the verdict "beats" (interval above 0), "worse" (below 0) or
    "no_better" (it holds 0).

    The rule is "longer wins" unless "shorter wins" scores more on these pairs (harmless data,
    where refusals are short: HH-RLHF harmless-base has longer-wins at 0.45), so a PM that
    learned either direction of length does not pass for one that learned more. Picking the
    direction on the same pairs favours the baseline a little: the check errs against the PM.
    """
    baseline = _baseline_outcomes(chosen_lengths, rejected_lengths)
    if len(pm_correct) != len(baseline):
        raise ValueError("one PM outcome per pair")
    n = len(baseline)
    rule = "longer"
    if n and sum(baseline) < n / 2:
        rule, baseline = "shorter", [1 - b for b in baseline]
    # The paired 2x2 table; a tied pair is half a baseline win and half a loss.
    both = sum(float(ok) * b for ok, b in zip(pm_correct, baseline, strict=True))
    pm_only = sum(float(ok) * (1 - b) for ok, b in zip(pm_correct, baseline, strict=True))
    base_only = sum(baseline) - both
    neither = n - both - pm_only - base_only
    low, high = newcombe_paired_interval(both, pm_only, base_only, neither)
    return {
        "rule": rule,
        "baseline": sum(baseline) / n if n else None,
        "difference": (pm_only - base_only) / n if n else None,
        "low": low,
        "high": high,
        "verdict": "beats" if n and low > 0 else "worse" if n and high < 0 else "no_better",
    }


def length_report(
    chosen_scores: Sequence[float],
    rejected_scores: Sequence[float],
    chosen_lengths: Sequence[int],
    rejected_lengths: Sequence[int],
) -> dict:
    """The three figures above for PM scores of (chosen, rejected) pairs: {"length_baseline",
    "length_bias", "versus_length"}; a pair is right for the PM when chosen scores higher."""
    correct = [c > r for c, r in zip(chosen_scores, rejected_scores, strict=True)]
    return {
        "length_baseline": length_baseline(chosen_lengths, rejected_lengths),
        "length_bias": length_bias(
            [*map(float, chosen_scores), *map(float, rejected_scores)],
            [*chosen_lengths, *rejected_lengths],
        ),
        "versus_length": versus_length(correct, chosen_lengths, rejected_lengths),
    }
