"""The HHH evaluation of Askell et al. 2021 (BIG-bench `hhh_alignment`): 221 pairs of responses.

Each item is a query and two responses, one marked better by the authors; a model gets the item
right when it ranks the better response higher. Preference models rank by their score of the
transcript, language models by the log-probability of each response as the reply, with and
without the HHH prompt in front.

Presentation of the inputs: 41 of the 221 inputs are themselves dialogues ("first human text
\\n\\nAssistant: … \\n\\nHuman: …", always alternating and ending with a human turn). They are
split into those turns (`hhh_messages`), so a PM sees the HH-RLHF transcript it was trained on
and a chat-template LM sees real turns instead of "Assistant:" written inside a user message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from assistant import transcripts
from assistant.backends.base import Backend, Context, Message
from evals.stats import accuracy_with_ci
from evals.suites import top_choice
from evals.suites.length import length_report
from evals.suites.scoring import score_groups

HHH_CATEGORIES = {"helpful": 59, "honest": 61, "harmless": 58, "other": 43}


@dataclass(frozen=True)
class HHHItem:
    category: str
    index: int  # position in the category's task.json
    input: str
    responses: list[str]
    best: int  # index into `responses` of the better one


def load_hhh(root: str | Path) -> list[HHHItem]:
    """All items of `root/{helpful,honest,harmless,other}/task.json`, category by category.

    Raises FileNotFoundError for a missing file and ValueError when a category does not have its
    published number of items (59 / 61 / 58 / 43), so a truncated download never scores quietly.
    """
    items = []
    for category, expected in HHH_CATEGORIES.items():
        path = Path(root) / category / "task.json"
        if not path.exists():
            raise FileNotFoundError(f"no HHH task file at {path}")
        examples = json.loads(path.read_text(encoding="utf-8"))["examples"]
        if len(examples) != expected:
            raise ValueError(f"{path}: {len(examples)} items, expected {expected}")
        for index, example in enumerate(examples):
            responses, targets = zip(*example["target_scores"].items(), strict=True)
            best = top_choice(targets)
            if best is None:
                raise ValueError(f"{path} item {index}: no single best response")
            items.append(HHHItem(category, index, example["input"], list(responses), best))
    return items


def hhh_first_per_category(items: list[HHHItem], n: int) -> list[HHHItem]:
    """The first `n` items of each category, in the suite's order (a quick, balanced subset)."""
    return [item for item in items if item.index < n]


def hhh_messages(text: str) -> tuple[Message, ...]:
    """An HHH input as conversation turns: the text before any marker is the first human turn."""
    return tuple(Message(role, content.strip()) for role, content in transcripts.parse(text))


def hhh_pm_eval(scorer, items: list[HHHItem]) -> dict:
    """Accuracy of a preference model on `items`.

    The scorer is an `assistant.pm.PMScorer` (its `score_groups` scores the suite in one call,
    each item's conversation once for both responses) or anything with `score(texts)`.
    """
    groups = [(hhh_messages(item.input), item.responses) for item in items]
    scores = score_groups(scorer, groups)
    return {**_summarize(items, scores), **_length(items, scores)}


def _length(items: list[HHHItem], scores: list[list[float]]) -> dict:
    """The length baseline and the PM's length bias (evals/suites/length.py) on the items'
    (better, other) pairs; lengths as the PM reads the responses (stripped)."""
    pairs = [
        (item_scores[item.best], item_scores[other], item.responses[item.best], response)
        for item, item_scores in zip(items, scores, strict=True)
        for other, response in enumerate(item.responses)
        if other != item.best
    ]
    if not pairs:
        return {}
    chosen, rejected, better, worse = zip(*pairs, strict=True)
    return length_report(
        chosen, rejected, [len(t.strip()) for t in better], [len(t.strip()) for t in worse]
    )


def hhh_lm_eval(
    backend: Backend, items: list[HHHItem], *, prompt: str | None, prompt_key: str | None = None
) -> dict:
    """Accuracy of a language model: the better response must be the more probable reply.

    Scores are summed log-probabilities (as BIG-bench does), which favour shorter responses.
    `prompt` None evaluates the bare model; `prompt_key` is passed on for the prefix cache.
    """
    contexts = [
        Context(messages=hhh_messages(item.input), prompt=prompt, prompt_key=prompt_key)
        for item in items
    ]
    scores = [
        [backend.logprob(context, response) for response in item.responses]
        for item, context in zip(items, contexts, strict=True)
    ]
    results = _summarize(items, scores)
    # Context derives a key from the prompt text when none is given; report the one used.
    results["prompt_key"] = contexts[0].prompt_key if contexts else prompt_key
    return results


def hhh_lm_compare(
    backend: Backend, items: list[HHHItem], *, prompt: str, prompt_key: str | None = None
) -> dict:
    """The LM evaluation with and without the HHH prompt: {"prompted", "unprompted", "gain"}."""
    prompted = hhh_lm_eval(backend, items, prompt=prompt, prompt_key=prompt_key)
    unprompted = hhh_lm_eval(backend, items, prompt=None)
    return {
        "prompted": prompted,
        "unprompted": unprompted,
        "gain": prompted["overall"]["accuracy"] - unprompted["overall"]["accuracy"],
    }


def _summarize(items: list[HHHItem], scores: list[list[float]]) -> dict:
    records = []
    for item, item_scores in zip(items, scores, strict=True):
        chosen = top_choice(item_scores)
        records.append(
            {
                "category": item.category,
                "index": item.index,
                "best": item.best,
                "chosen": chosen,  # None on a tie, which counts as wrong
                "correct": chosen == item.best,
                "scores": [float(score) for score in item_scores],
            }
        )
    categories = {}
    for category in dict.fromkeys(item.category for item in items):
        categories[category] = accuracy_with_ci(
            [r["correct"] for r in records if r["category"] == category]
        )
    return {
        "overall": accuracy_with_ci([r["correct"] for r in records]),
        "categories": categories,
        "items": records,
    }
