"""Whether each finding of an experiment reproduced, from its numbers only. Plain Python.

A side of a finding is an accuracy as counts: {"correct", "n"} and, where the suite keeps
them, "items" ({item key: right or not}). Two sides with the same items are compared paired:
Newcombe's method-10 interval for paired proportions (training.promotion, the interval the
promotion test uses); otherwise as independent proportions: Newcombe's hybrid score interval
(evals.stats). Both at 95 %. The tests:

* `better`: a beats b when the interval of a − b lies above 0;
* `not_worse`: a matches b (non-inferiority) when the interval's lower end is above −margin;
* `gain_shrinks`: a's gain over b at the smallest size exceeds its gain at the largest, when
  the interval of (gain at smallest − gain at largest) lies above 0. That interval combines
  the two differences' intervals by MOVER (Zou & Donner 2008), the principle behind
  Newcombe's own: d ± sqrt of the squared distances to the matching bounds.

A verdict says "yes" only when its interval says so; "no" otherwise, with why ("not
significant at this scale", "reversed").
"""

from __future__ import annotations

import math

from evals.stats import newcombe_difference_ci
from training.promotion import PairedCounts, newcombe_paired_interval

LABELS = {"better": ">", "not_worse": "≥", "gain_shrinks": "gain shrinks:"}


def difference(a: dict, b: dict) -> dict:
    """a − b in accuracy with its 95 % interval and the method used."""
    items_a, items_b = a.get("items"), b.get("items")
    if items_a and items_b and set(items_a) == set(items_b):
        keys = sorted(items_a)
        table = PairedCounts.from_outcomes([items_a[k] for k in keys], [items_b[k] for k in keys])
        low, high = newcombe_paired_interval(
            table.both, table.new_only, table.active_only, table.neither
        )
        estimate = (table.new_only - table.active_only) / table.n
        method = "Newcombe paired (method 10), same items"
    else:
        low, high = newcombe_difference_ci(a["correct"], a["n"], b["correct"], b["n"])
        estimate = a["correct"] / a["n"] - b["correct"] / b["n"]
        method = "Newcombe hybrid score (method 10), independent"
    return {"estimate": estimate, "low": low, "high": high, "method": method}


def mover(first: dict, second: dict) -> dict:
    """first − second for two independent differences with intervals (MOVER)."""
    d = first["estimate"] - second["estimate"]
    low = d - math.sqrt(
        (first["estimate"] - first["low"]) ** 2 + (second["high"] - second["estimate"]) ** 2
    )
    high = d + math.sqrt(
        (first["high"] - first["estimate"]) ** 2 + (second["estimate"] - second["low"]) ** 2
    )
    return {"estimate": d, "low": low, "high": high, "method": "MOVER of two Newcombe intervals"}


def _points(value: float) -> str:
    return f"{100 * value:+.1f}".replace("-", "−")


def verdict(finding: dict, sides: dict) -> dict:
    """The verdict on one finding. `sides`: for better / not_worse, {"a": counts, "b": counts};
    for gain_shrinks, {"a_small", "b_small", "a_large", "b_large"}. A side that is None (its
    cell has no number yet) gives reproduced None: "not measured"."""
    test = finding["test"]
    label = (
        f"{finding['a']['condition']} ({finding['a']['eval']}) {LABELS[test]} "
        f"{finding['b']['condition']} ({finding['b']['eval']})"
    )
    base = {"claim": finding["claim"], "test": test, "label": label}
    if any(side is None or not side.get("n") for side in sides.values()):
        return {**base, "reproduced": None, "text": f"{label}: not measured (a cell has no number)"}
    if test == "gain_shrinks":
        result = mover(
            difference(sides["a_small"], sides["b_small"]),
            difference(sides["a_large"], sides["b_large"]),
        )
        floor = 0.0
    else:
        result = difference(sides["a"], sides["b"])
        floor = -finding.get("margin", 0.05) if test == "not_worse" else 0.0
    reproduced = result["low"] > floor
    if reproduced:
        word = "yes"
    elif test != "not_worse" and result["high"] < 0:
        word = "no (reversed)"
    elif test == "not_worse" and result["high"] < floor:
        word = "no (worse by more than the margin)"
    else:
        word = "no (not significant at this scale)"
    margin = (
        f", margin {100 * finding.get('margin', 0.05):.1f} points" if test == "not_worse" else ""
    )
    text = (
        f"{label}: {word}, {_points(result['estimate'])} points "
        f"[{_points(result['low'])}, {_points(result['high'])}]{margin}"
    )
    return {**base, **result, "reproduced": reproduced, "text": text}
