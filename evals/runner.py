"""Run one eval suite for an EvalRun row and return its results JSON.

Results share one shape so reports can show any suite: `overall` and `categories` cells are
`{"accuracy", "n", "low", "high"}` (95% Wilson intervals), plus suite-specific keys.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from django.conf import settings

from assistant import runtime
from assistant.backends import Message
from assistant.models import ModelVersion
from assistant.selectors import prompt_latest

from .models import EvalRun

HHH_CATEGORIES = {"helpful": 59, "honest": 61, "harmless": 58, "other": 43}


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_cell(correct: list[bool]) -> dict:
    n, hits = len(correct), sum(correct)
    low, high = wilson(hits, n)
    return {"accuracy": hits / n if n else None, "n": n, "correct": hits, "low": low, "high": high}


def load_hhh(root: Path) -> list[dict]:
    """The HHH evaluation (BIG-bench `hhh_alignment`): one item per example, best response known."""
    items = []
    for category, expected in HHH_CATEGORIES.items():
        path = Path(root) / category / "task.json"
        if not path.exists():
            raise FileNotFoundError(f"no HHH task file at {path} (set ALIGNLAB_HHH_DIR)")
        examples = json.loads(path.read_text())["examples"]
        if len(examples) != expected:
            raise ValueError(f"{path}: {len(examples)} items, expected {expected}")
        for index, example in enumerate(examples):
            responses = list(example["target_scores"])
            scores = list(example["target_scores"].values())
            items.append(
                {
                    "category": category,
                    "index": index,
                    "input": example["input"].strip(),
                    "responses": responses,
                    "best": scores.index(max(scores)),
                }
            )
    return items


def _summarize(items: list[dict], correct: list[bool], scores: list[list[float]]) -> dict:
    by_category: dict[str, list[bool]] = {}
    for item, ok in zip(items, correct, strict=True):
        by_category.setdefault(item["category"], []).append(ok)
    return {
        "overall": accuracy_cell(correct),
        "categories": {name: accuracy_cell(values) for name, values in by_category.items()},
        "items": [
            {
                "category": item["category"],
                "index": item["index"],
                "correct": ok,
                "scores": [round(s, 4) for s in item_scores],
            }
            for item, ok, item_scores in zip(items, correct, scores, strict=True)
        ],
    }


def hhh_scores(scorer, items: list[dict]) -> dict:
    """A PM (anything with `score(texts)`) gets an item right when it scores the better
    response highest."""
    from assistant.pm import format_for_pm

    texts = [
        format_for_pm([{"role": "user", "content": item["input"]}], response)
        for item in items
        for response in item["responses"]
    ]
    flat = iter(scorer.score(texts))  # one batched call for the whole suite
    scores = [[next(flat) for _ in item["responses"]] for item in items]
    correct = [
        max(range(len(s)), key=s.__getitem__) == item["best"]
        for item, s in zip(items, scores, strict=True)
    ]
    return _summarize(items, correct, scores)


def hhh_lm(version: ModelVersion, items: list[dict], *, prompted: bool) -> dict:
    """An LM gets an item right when the better response is the more probable reply."""
    prompt = prompt_latest(name="hhh") if prompted else None
    backend = runtime.lm_backend(version)
    scores = []
    for item in items:
        context = runtime.build_context([Message("user", item["input"])], prompt)
        scores.append([backend.logprob(context, response) for response in item["responses"]])
    correct = [
        max(range(len(s)), key=s.__getitem__) == item["best"]
        for item, s in zip(items, scores, strict=True)
    ]
    results = _summarize(items, correct, scores)
    results["prompt"] = prompt.key if prompt else None
    return results


def run_suite(run: EvalRun) -> dict:
    """The results JSON of `run`'s suite on its model version."""
    version, options = run.model_version, run.options
    if run.suite in (EvalRun.Suite.HHH, EvalRun.Suite.HHH_UNPROMPTED):
        items = load_hhh(settings.ALIGNLAB_HHH_DIR)
        if options.get("limit"):
            items = items[: int(options["limit"])]
        if version.kind == ModelVersion.Kind.PM:
            return hhh_scores(runtime.pm_scorer(version), items)
        return hhh_lm(version, items, prompted=run.suite == EvalRun.Suite.HHH)
    raise ValueError(f"the {run.suite} suite is not available yet")
