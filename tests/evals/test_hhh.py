"""The HHH suite on the real BIG-bench files: loading, a length baseline, and a tiny real LM."""

import json

import pytest

from assistant.backends.base import Context, Message
from assistant.pm import format_for_pm
from evals.suites.hhh import (
    HHH_CATEGORIES,
    HHHItem,
    hhh_lm_compare,
    hhh_messages,
    hhh_pm_eval,
    load_hhh,
)
from tests.data import HHH_DIR
from tests.tinymodels import save_tiny_lm


class LongerIsBetter:
    """A preference model that always prefers the longer transcript; counts its calls."""

    def __init__(self):
        self.calls = 0

    def score(self, texts):
        self.calls += 1
        return [float(len(text)) for text in texts]


def test_the_real_files_have_221_items_in_four_categories():
    items = load_hhh(HHH_DIR)
    counts = {c: sum(item.category == c for item in items) for c in HHH_CATEGORIES}
    assert counts == {"helpful": 59, "honest": 61, "harmless": 58, "other": 43}
    assert len(items) == 221
    assert all(len(item.responses) == 2 and item.best in (0, 1) for item in items)


def test_a_truncated_category_is_refused(tmp_path):
    for category in HHH_CATEGORIES:
        task = json.loads((HHH_DIR / category / "task.json").read_text())
        if category == "honest":
            task["examples"] = task["examples"][:-1]
        (tmp_path / category).mkdir()
        (tmp_path / category / "task.json").write_text(json.dumps(task))
    with pytest.raises(ValueError, match="60 items, expected 61"):
        load_hhh(tmp_path)


def test_a_pm_preferring_longer_responses_scores_what_a_hand_count_says():
    pm = LongerIsBetter()
    results = hhh_pm_eval(pm, load_hhh(HHH_DIR))
    assert pm.calls == 1  # the whole suite in one batch
    # Counted straight from the files: right when the better response is strictly longer
    # (format_for_pm strips each response; the shared context adds the same length to both).
    expected = {}
    for category in HHH_CATEGORIES:
        examples = json.loads((HHH_DIR / category / "task.json").read_text())["examples"]
        hits = 0
        for example in examples:
            better = [r for r, s in example["target_scores"].items() if s == 1][0]
            worse = [r for r, s in example["target_scores"].items() if s == 0][0]
            hits += len(better.strip()) > len(worse.strip())
        expected[category] = hits
    assert {c: cell["correct"] for c, cell in results["categories"].items()} == expected
    assert results["overall"]["correct"] == sum(expected.values())
    assert results["overall"]["n"] == 221 and len(results["items"]) == 221
    print("longer-is-better HHH accuracy:", results["overall"])


def test_hand_made_items_give_the_accuracy_written_down():
    items = [
        HHHItem("helpful", 0, "q", ["short", "much longer"], best=1),  # right
        HHHItem("helpful", 1, "q", ["a long answer", "no"], best=1),  # wrong
        HHHItem("honest", 0, "q", ["x", "yy"], best=1),  # right
        HHHItem("honest", 1, "q", ["zzz", "w"], best=0),  # right
        HHHItem("honest", 2, "q", ["same", "size"], best=0),  # a tie: wrong
    ]
    results = hhh_pm_eval(LongerIsBetter(), items)
    assert results["categories"]["helpful"]["accuracy"] == 0.5
    assert results["categories"]["honest"]["correct"] == 2
    assert results["categories"]["honest"]["n"] == 3
    assert results["overall"]["accuracy"] == 0.6
    tie = results["items"][4]
    assert (
        tie["chosen"] is None and tie["correct"] is False and tie["scores"][0] == tie["scores"][1]
    )
    # Next to it, "the longer response wins": 1 + 0 + 1 + 1 + 1/2 (the tie) of 5; a PM that
    # scores the transcript's length follows length exactly (ρ = 1) and does not beat it.
    assert results["length_baseline"]["accuracy"] == pytest.approx(0.7)
    assert results["length_baseline"]["ties"] == 1
    assert results["length_bias"]["rho"] == pytest.approx(1.0)
    assert results["length_bias"]["n"] == 10
    assert results["versus_length"]["difference"] == pytest.approx(-0.1)  # 0.6 − 0.7
    assert results["versus_length"]["verdict"] != "beats"


def test_dialogue_inputs_become_alternating_turns():
    text = "Hi there.  \n\nAssistant:  Hello!\n\nHuman:  Can you help me?"
    assert hhh_messages(text) == (
        Message("user", "Hi there."),
        Message("assistant", "Hello!"),
        Message("user", "Can you help me?"),
    )
    assert format_for_pm(hhh_messages(text), "Sure.") == (
        "\n\nHuman: Hi there.\n\nAssistant: Hello!\n\nHuman: Can you help me?\n\nAssistant: Sure."
    )
    # Every dialogue in the real data alternates and ends with the human, as a Context must.
    for item in load_hhh(HHH_DIR):
        messages = hhh_messages(item.input)
        assert [m.role for m in messages] == ["user", "assistant"] * (len(messages) // 2) + ["user"]


def test_a_tiny_real_lm_is_scored_with_and_without_the_prompt(tmp_path):
    from assistant.backends.hf import TransformersBackend

    backend = TransformersBackend(save_tiny_lm(tmp_path / "lm"), device="cpu", dtype="float32")
    items = [i for i in load_hhh(HHH_DIR) if i.category in ("helpful", "other") and i.index < 2]
    prompt = "Below are dialogues between people and a helpful, honest, harmless assistant."
    results = hhh_lm_compare(backend, items, prompt=prompt, prompt_key="test@1")
    assert set(results) == {"prompted", "unprompted", "gain"}
    assert results["prompted"]["prompt_key"] == "test@1"
    assert results["unprompted"]["prompt_key"] is None
    for run in (results["prompted"], results["unprompted"]):
        assert run["overall"]["n"] == 4 and set(run["categories"]) == {"helpful", "other"}
    # The suite's verdict is the backend's own comparison of the two log-probabilities.
    item, record = items[0], results["prompted"]["items"][0]
    context = Context(messages=hhh_messages(item.input), prompt=prompt, prompt_key="test@1")
    logprobs = [backend.logprob(context, response) for response in item.responses]
    assert record["scores"] == pytest.approx(logprobs)
    assert record["correct"] == (logprobs[item.best] > logprobs[1 - item.best])
    assert results["prompted"]["items"][0]["scores"] != results["unprompted"]["items"][0]["scores"]
