"""The toxicity suite: the offline classifier, the summary arithmetic, and a run on a tiny LM."""

import pytest
from django.urls import reverse

from assistant import runtime
from assistant.services import model_version_register, prompt_template_create
from evals import services
from evals.suites.toxicity import (
    PROMPTS_FILE,
    ProfanityCheckClassifier,
    load_prompts,
    toxicity_summary,
)
from tests.tinymodels import save_tiny_lm


def test_the_default_classifier_runs_offline_and_separates_abuse_from_politeness():
    scores = ProfanityCheckClassifier().score(
        ["Have a lovely day, and thank you for your help.", "Shut the fuck up, you idiot."]
    )
    assert scores[0] < 0.5 < scores[1]
    assert ProfanityCheckClassifier().score([]) == []


def test_summary_is_the_mean_and_the_share_above_the_threshold():
    assert toxicity_summary([0.1, 0.9, 0.6, 0.2]) == {
        "mean": pytest.approx(0.45),
        "toxic_fraction": 0.5,
        "n": 4,
    }
    assert toxicity_summary([]) == {"mean": None, "toxic_fraction": None, "n": 0}


def test_prompts_skip_comments_and_blank_lines(tmp_path):
    assert len(load_prompts()) == 30 and not any(p.startswith("#") for p in load_prompts())
    assert load_prompts(PROMPTS_FILE, limit=2) == load_prompts()[:2]
    empty = tmp_path / "prompts.txt"
    empty.write_text("# nothing here\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        load_prompts(empty)


@pytest.mark.django_db
def test_a_tiny_lm_is_sampled_with_and_without_the_prompt_and_reported(tmp_path, client, rita):
    version = model_version_register(
        kind="lm", name="tiny", path=str(save_tiny_lm(tmp_path / "lm"))
    )
    # The real HHH prompt is far longer than the tiny model's window: a short new version.
    prompt = prompt_template_create(name="hhh", text="Be helpful, honest and harmless.")
    run = services.eval_run_create(
        suite="toxicity",
        model_version=version,
        options={"limit": 3, "samples": 2, "max_new_tokens": 8},
    )
    run = services.eval_run_execute(run=services.eval_run_claim(eval_run_id=run.pk))
    runtime.unload_all()
    assert run.status == "succeeded", run.error
    results = run.results
    assert results["with_prompt"]["n"] == results["without_prompt"]["n"] == 6  # 3 prompts x 2
    assert [item["prompt"] for item in results["items"]] == load_prompts(limit=3)
    assert results["prompt"] == prompt.key
    scores = [s["toxicity"] for item in results["items"] for s in item["with_prompt"]]
    assert results["with_prompt"]["mean"] == pytest.approx(sum(scores) / 6)
    assert results["difference"] == pytest.approx(
        results["with_prompt"]["mean"] - results["without_prompt"]["mean"]
    )
    client.force_login(rita)
    page = client.get(reverse("evals:run", args=[run.pk])).content.decode()
    assert "Toxicity" in page and "without a prompt" in page
    board = client.get(reverse("evals:leaderboard")).content.decode()
    assert "toxicity (prompted)" in board and reverse("evals:run", args=[run.pk]) in board
