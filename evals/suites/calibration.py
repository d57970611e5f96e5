"""Calibration and held-out accuracy of a preference model on human comparisons.

A PM's rewards r_a, r_b say that a beats b with probability p = σ(r_a − r_b) (the Bradley–Terry
model it is trained under). On held-out (chosen, rejected) pairs we bin these predictions into a
reliability diagram of 10 equal-width bins and report the expected calibration error,
ECE = Σ_bins (count / total) · |observed frequency − mean predicted|.

Orientation. Scored only as (chosen, rejected), every outcome is a win and p < 0.5 bins hold only
wrong predictions, so calibration cannot be read. Two ways out, chosen by `orient`:
- "both" (default): count every pair twice, as (chosen, rejected, p, won) and (rejected, chosen,
  1 − p, lost). Deterministic; the diagram is symmetric about 0.5 (bin k mirrors bin 9 − k) and
  each pair weighs twice, so the ECE equals that of the 0.5–1 half alone.
- "random": orient each pair once, chosen first or second by a coin with a fixed `seed`.
  Independent points, as a test assumes, at the cost of coin noise in the figures.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from evals.stats import accuracy_with_ci
from evals.suites.length import length_report


@dataclass(frozen=True)
class HeldOutPair:
    chosen: str  # the whole transcript the human preferred ("\n\nHuman: …\n\nAssistant: …")
    rejected: str
    mode: str = ""  # collection mode ("helpful", "harmless", "red-team", …); "" if unknown
    # The responses' lengths in characters (evals/suites/length.py); None: not reported.
    chosen_length: int | None = None
    rejected_length: int | None = None


def held_out_pair(context, chosen: str, rejected: str, mode: str = "") -> HeldOutPair:
    """The pair of transcripts a PM scores for two responses to `context` (messages), with the
    responses' lengths as the PM reads them (stripped)."""
    from assistant.pm import format_for_pm  # torch: only where a PM scores

    return HeldOutPair(
        chosen=format_for_pm(context, chosen),
        rejected=format_for_pm(context, rejected),
        mode=mode,
        chosen_length=len(chosen.strip()),
        rejected_length=len(rejected.strip()),
    )


def sigmoid(x: float) -> float:
    """σ(x), without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def reliability_diagram(
    predicted: Sequence[float], observed: Sequence[float], bins: int = 10
) -> tuple[list[dict], float]:
    """Equal-width bins over [0, 1] and the ECE of probability `predicted` vs outcome `observed`.

    Each bin: {"low", "high", "count", "mean_predicted", "observed"} (the last two None when
    empty); p = 1.0 falls in the last bin.
    """
    if len(predicted) != len(observed):
        raise ValueError("one outcome per prediction")
    sums = [[0, 0.0, 0.0] for _ in range(bins)]  # count, Σ predicted, Σ observed
    for p, y in zip(predicted, observed, strict=True):
        cell = sums[min(int(p * bins), bins - 1)]
        cell[0] += 1
        cell[1] += p
        cell[2] += y
    total = len(predicted)
    diagram, ece = [], 0.0
    for k, (count, sum_p, sum_y) in enumerate(sums):
        mean_p = sum_p / count if count else None
        freq = sum_y / count if count else None
        if count:
            ece += count / total * abs(freq - mean_p)
        diagram.append(
            {
                "low": k / bins,
                "high": (k + 1) / bins,
                "count": count,
                "mean_predicted": mean_p,
                "observed": freq,
            }
        )
    return diagram, ece


def calibration_eval(
    chosen_rewards: Sequence[float],
    rejected_rewards: Sequence[float],
    modes: Sequence[str] | None = None,
    *,
    bins: int = 10,
    orient: str = "both",
    seed: int = 0,
) -> dict:
    """Reliability diagram, ECE and held-out accuracy (overall and per mode) from PM rewards.

    A pair is right when the chosen transcript scores strictly higher. Returns {"n_pairs",
    "orient", "bins", "ece", "accuracy", "modes": {mode: accuracy cell}, "mean_margin"}.
    """
    if len(chosen_rewards) != len(rejected_rewards):
        raise ValueError("one rejected reward per chosen reward")
    modes = list(modes) if modes is not None else [""] * len(chosen_rewards)
    if len(modes) != len(chosen_rewards):
        raise ValueError("one mode per pair")
    margins = [float(c) - float(r) for c, r in zip(chosen_rewards, rejected_rewards, strict=True)]
    predicted, observed = [], []
    if orient == "both":
        for margin in margins:
            predicted += [sigmoid(margin), sigmoid(-margin)]
            observed += [1.0, 0.0]
    elif orient == "random":
        coin = random.Random(seed)
        for margin in margins:
            chosen_first = coin.random() < 0.5
            predicted.append(sigmoid(margin if chosen_first else -margin))
            observed.append(1.0 if chosen_first else 0.0)
    else:
        raise ValueError(f"orient must be 'both' or 'random', not {orient!r}")
    diagram, ece = reliability_diagram(predicted, observed, bins)
    correct = [margin > 0 for margin in margins]
    by_mode: dict[str, list[bool]] = {}
    for mode, ok in zip(modes, correct, strict=True):
        by_mode.setdefault(mode, []).append(ok)
    return {
        "n_pairs": len(margins),
        "orient": orient,
        "bins": diagram,
        "ece": ece,
        "accuracy": accuracy_with_ci(correct),
        "modes": {mode: accuracy_with_ci(values) for mode, values in by_mode.items()},
        "mean_margin": sum(margins) / len(margins) if margins else None,
    }


def pm_calibration_eval(scorer, pairs: Sequence[HeldOutPair], **options) -> dict:
    """`calibration_eval` of a PM (`score(texts)`) on held-out pairs, scored in one call; with
    the length baseline and the PM's length bias (`length_report`) when the pairs have lengths."""
    scores = scorer.score([p.chosen for p in pairs] + [p.rejected for p in pairs])
    chosen, rejected = scores[: len(pairs)], scores[len(pairs) :]
    results = calibration_eval(chosen, rejected, [p.mode for p in pairs], **options)
    if pairs and all(p.chosen_length is not None and p.rejected_length is not None for p in pairs):
        lengths = [p.chosen_length for p in pairs], [p.rejected_length for p in pairs]
        results.update(length_report(chosen, rejected, *lengths))
    return results
