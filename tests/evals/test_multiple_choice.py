"""TruthfulQA MC1 / MC2: hand-made items with known answers, and 3 real items on a tiny real LM."""

import json
import math

import pytest

from assistant.pm import format_for_pm
from evals.suites.multiple_choice import load_truthfulqa, mc_lm_eval, mc_pm_eval, true_mass
from tests.data import TRUTHFULQA_FILE as MC_TASK
from tests.tinymodels import save_tiny_lm

# Probabilities an imaginary model gives each answer as its reply to each question.
PROBABILITIES = {
    "Is the sky green?": {"No.": 0.4, "No, it is blue.": 0.1, "Yes.": 0.3, "Sometimes.": 0.2},
    "Do cats bark?": {"No.": 0.2, "Yes.": 0.6, "Loudly.": 0.2},
}


@pytest.fixture
def mc_file(tmp_path):
    rows = [
        {
            "question": "Is the sky green?",
            "mc1_targets": {"No.": 1, "Yes.": 0, "Sometimes.": 0},
            "mc2_targets": {"No.": 1, "No, it is blue.": 1, "Yes.": 0, "Sometimes.": 0},
        },
        {
            "question": "Do cats bark?",
            "mc1_targets": {"No.": 1, "Yes.": 0},
            "mc2_targets": {"No.": 1, "Yes.": 0, "Loudly.": 0},
        },
    ]
    path = tmp_path / "mc_task.json"
    path.write_text(json.dumps(rows))
    return path


class LookupBackend:
    """A stand-in for an external model's scoring API: log-probabilities from a fixed table."""

    def logprob(self, context, continuation):
        return math.log(PROBABILITIES[context.messages[-1].content][continuation])


class LookupPM:
    """A PM whose score of a transcript is the log-probability of the answer it ends with."""

    def __init__(self):
        self.texts = []

    def score(self, texts):
        self.texts.append(list(texts))
        return [
            math.log(answers[answer])
            for text in texts
            for question, answers in PROBABILITIES.items()
            for answer in answers
            if text == format_for_pm([{"role": "user", "content": question}], answer)
        ]


def test_an_lm_gets_the_mc1_and_mc2_written_down(mc_file):
    results = mc_lm_eval(LookupBackend(), load_truthfulqa(mc_file))
    # Item 1: the true "No." (0.4) beats "Yes." (0.3): right; MC2 = (0.4 + 0.1) / 1.0 = 0.5.
    # Item 2: "Yes." (0.6) beats the true "No." (0.2): wrong; MC2 = 0.2 / 1.0 = 0.2.
    assert [r["mc1_correct"] for r in results["items"]] == [True, False]
    assert results["mc1"]["accuracy"] == 0.5 and results["mc1"]["n"] == 2
    assert [r["mc2"] for r in results["items"]] == pytest.approx([0.5, 0.2])
    assert results["mc2"]["mean"] == pytest.approx(0.35) and results["mc2_from"] == "logprobs"
    assert results["items"][1]["mc1_chosen"] == 1


def test_a_pm_is_scored_in_one_call_with_mc2_from_a_softmax(mc_file):
    pm = LookupPM()
    results = mc_pm_eval(pm, load_truthfulqa(mc_file))
    assert len(pm.texts) == 1 and len(pm.texts[0]) == 4 + 3  # each distinct answer once
    # The scores are log-probabilities here, so the softmax gives back the same masses.
    assert results["mc1"]["correct"] == 1
    assert results["mc2"]["mean"] == pytest.approx(0.35) and results["mc2_from"] == "pm_softmax"
    # Its length bias, over the 7 answers: probabilities .4 .3 .2 .1 | .2 .6 .2 against lengths
    # 3 4 10 15 | 3 4 7: ranks 6 5 3 1 | 3 7 3 and 1.5 3.5 6 7 | 1.5 3.5 5, whose Pearson
    # correlation (Spearman with ties) is −0.6228.
    bias = results["length_bias"]
    assert (bias["method"], bias["n"]) == ("spearman", 7)
    assert bias["rho"] == pytest.approx(-0.62275, abs=1e-5)


def test_true_mass_is_stable_for_very_negative_logprobs():
    assert true_mass([-1000.0, -1000.0 - math.log(3)], [1, 0]) == pytest.approx(0.75)


def test_the_real_file_loads_817_items_and_limit_takes_the_first():
    items = load_truthfulqa(MC_TASK)
    assert len(items) == 817 and all(sum(item.mc1_labels) == 1 for item in items)
    assert [item.question for item in load_truthfulqa(MC_TASK, limit=3)] == [
        item.question for item in items[:3]
    ]


def test_three_real_items_on_a_tiny_real_lm(tmp_path):
    from assistant.backends.hf import TransformersBackend

    backend = TransformersBackend(save_tiny_lm(tmp_path / "lm"), device="cpu", dtype="float32")
    items = load_truthfulqa(MC_TASK, limit=3)
    results = mc_lm_eval(backend, items)
    assert results["mc1"]["n"] == 3 and results["mc2"]["n"] == 3 and len(results["items"]) == 3
    for item, record in zip(items, results["items"], strict=True):
        assert len(record["mc1_scores"]) == len(item.mc1_answers)
        assert len(record["mc2_scores"]) == len(item.mc2_answers)
        assert all(score < 0 for score in record["mc1_scores"] + record["mc2_scores"])
        assert 0 < record["mc2"] < 1
    assert 0 <= results["mc1"]["low"] <= results["mc1"]["high"] <= 1
