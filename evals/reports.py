"""What an eval run's page says about its results, worked out for the template: the length
report (evals/suites/length.py) of any run where a PM scored pairs of responses."""

from __future__ import annotations


def _cell(label: str, accuracy, low, high, n, note: str = "") -> dict:
    return {
        "label": label,
        "accuracy": 100 * accuracy if accuracy is not None else None,
        "low": 100 * low,
        "high": 100 * high,
        "n": n,
        "note": note,
    }


def _verdict(versus: dict) -> tuple[bool, str]:
    rule = f"“the {versus['rule']} response wins”"
    if versus.get("difference") is None:
        return False, "No pair was scored."
    points = (
        f"{100 * versus['difference']:+.1f} points "
        f"[{100 * versus['low']:+.1f}, {100 * versus['high']:+.1f}]"
    )
    if versus["verdict"] == "beats":
        return True, f"The PM beats {rule} by {points}: it has learned more than length."
    return False, (
        f"The PM does not beat {rule} ({points}): it may have learned length rather than "
        "preference."
    )


def length_summary(results: dict) -> dict | None:
    """{"rows", "beats", "verdict", "bias"} for the page, or None for a run without them
    (an LM's); only "bias" for a run that scored answers, not pairs."""
    baseline, versus = results.get("length_baseline"), results.get("versus_length")
    bias = results.get("length_bias")
    if not bias:
        return None
    if not baseline or not versus:  # answers scored without pairs (TruthfulQA): the bias alone
        return {"rows": [], "beats": None, "verdict": "", "bias": _bias(bias)}
    overall = results.get("overall") or {}
    rows = []
    if overall.get("accuracy") is not None:
        rows.append(
            _cell("this PM", overall["accuracy"], overall["low"], overall["high"], overall["n"])
        )
    ties = f"{baseline['ties']} tie{'s' if baseline['ties'] != 1 else ''} {baseline['ties_rule']}"
    rows.append(
        _cell(
            "the longer response wins",
            baseline["accuracy"],
            baseline["low"],
            baseline["high"],
            baseline["n"],
            ties,
        )
    )
    if versus["rule"] == "shorter":  # the same pairs the other way round
        rows.append(
            _cell(
                "the shorter response wins",
                1 - baseline["accuracy"],
                1 - baseline["high"],
                1 - baseline["low"],
                baseline["n"],
                ties,
            )
        )
    beats, verdict = _verdict(versus)
    return {"rows": rows, "beats": beats, "verdict": verdict, "bias": _bias(bias)}


def _bias(bias: dict) -> str:
    if bias.get("rho") is None:
        return f"not defined: the scores or the lengths are all equal (n = {bias.get('n', 0)})"
    return f"Spearman ρ = {bias['rho']:+.3f} (n = {bias['n']} responses, p = {bias['p']:.2g})"
