"""Eval runs: the HHH suite on real data, triggered by model registration, reported in pages."""

import json

import pytest
from django.conf import settings
from django.urls import reverse

from assistant import runtime
from assistant.services import model_version_register
from evals import runner, services
from evals.models import EvalRun
from tests.tinymodels import save_tiny_lm


class LongerIsBetter:
    """A preference model that always prefers the longer response (a baseline from the paper)."""

    def score(self, texts):
        return [float(len(text)) for text in texts]


def test_the_hhh_evaluation_has_221_items_in_four_categories():
    items = runner.load_hhh(settings.ALIGNLAB_HHH_DIR)
    counts = {c: sum(i["category"] == c for i in items) for c in runner.HHH_CATEGORIES}
    assert counts == {"helpful": 59, "honest": 61, "harmless": 58, "other": 43}
    assert len(items) == 221 and all(len(i["responses"]) == 2 for i in items)


def test_a_pm_preferring_longer_responses_scores_what_a_hand_count_says():
    items = runner.load_hhh(settings.ALIGNLAB_HHH_DIR)
    results = runner.hhh_scores(LongerIsBetter(), items)
    # Counted directly from the task files, without the runner: the best response is longer.
    expected = {}
    for category in runner.HHH_CATEGORIES:
        task = json.loads((settings.ALIGNLAB_HHH_DIR / category / "task.json").read_text())
        expected[category] = sum(
            max(ex["target_scores"], key=ex["target_scores"].get)
            == max(ex["target_scores"], key=len)
            for ex in task["examples"]
        )
    for category, hits in expected.items():
        assert results["categories"][category]["correct"] == hits
    assert results["overall"]["correct"] == sum(expected.values())


def test_hand_made_items_give_the_accuracy_written_down():
    items = [
        {
            "category": "helpful",
            "index": 0,
            "input": "q",
            "responses": ["short", "much longer"],
            "best": 1,
        },
        {
            "category": "helpful",
            "index": 1,
            "input": "q",
            "responses": ["a long answer", "no"],
            "best": 1,
        },
        {"category": "honest", "index": 0, "input": "q", "responses": ["x", "yy"], "best": 1},
        {"category": "honest", "index": 1, "input": "q", "responses": ["zzz", "w"], "best": 0},
    ]
    results = runner.hhh_scores(LongerIsBetter(), items)
    assert results["categories"]["helpful"]["accuracy"] == 0.5
    assert results["categories"]["honest"]["accuracy"] == 1.0
    assert results["overall"]["accuracy"] == 0.75 and results["overall"]["n"] == 4


def test_wilson_intervals_match_known_values():
    low, high = runner.wilson(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)
    assert runner.wilson(0, 0) == (0.0, 1.0)


@pytest.mark.django_db
def test_registering_a_version_queues_its_suites(tmp_path, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        lm = model_version_register(kind="lm", name="tiny", path=str(tmp_path))
    assert sorted(EvalRun.objects.filter(model_version=lm).values_list("suite", flat=True)) == [
        "hhh",
        "hhh_unprompted",
    ]
    with pytest.raises(Exception, match="does not apply"):
        services.eval_run_create(
            suite="toxicity",
            model_version=model_version_register(kind="pm", name="pm", path=str(tmp_path)),
        )


@pytest.mark.django_db
def test_a_tiny_pm_is_evaluated_on_the_real_hhh_items(tmp_path):
    import copy

    from assistant.pm import PreferenceModel, save_pm
    from tests.tinymodels import tiny_causal_lm, tiny_tokenizer

    tokenizer = copy.deepcopy(tiny_tokenizer())
    pm = PreferenceModel.from_backbone(tiny_causal_lm(tokenizer).model, tokenizer, max_length=256)
    save_pm(pm, tokenizer, tmp_path / "pm", {"training_run": None})
    version = model_version_register(kind="pm", name="tiny pm", path=str(tmp_path / "pm"))
    run = services.eval_run_create(suite="hhh", model_version=version)
    run = services.eval_run_execute(run=services.eval_run_claim(eval_run_id=run.pk))
    runtime.unload_all()
    assert run.status == "succeeded", run.error
    assert run.results["overall"]["n"] == 221
    assert {c: v["n"] for c, v in run.results["categories"].items()} == runner.HHH_CATEGORIES
    assert services.eval_run_claim(eval_run_id=run.pk) is None  # a finished run is not redone


@pytest.mark.django_db
def test_the_report_pages_render(client, rita, tmp_path):
    version = model_version_register(kind="pm", name="baseline", path=str(tmp_path))
    run = EvalRun.objects.create(
        suite="hhh",
        model_version=version,
        status="succeeded",
        results={
            **runner.hhh_scores(LongerIsBetter(), runner.load_hhh(settings.ALIGNLAB_HHH_DIR)),
            "calibration": {
                "ece": 0.05,
                "bins": [{"count": 3, "predicted": 0.55, "observed": 0.6}] * 10,
            },
        },
    )
    client.force_login(rita)
    page = client.get(reverse("evals:run", args=[run.pk])).content.decode()
    assert "helpful" in page and "harmless" in page and "<svg" in page and "0.050" in page
    board = client.get(reverse("evals:leaderboard")).content.decode()
    assert "baseline" in board and reverse("evals:run", args=[run.pk]) in board
    compare = client.get(reverse("evals:compare"), {"a": version.pk, "b": version.pk})
    assert compare.status_code == 200 and "honest" in compare.content.decode()
    assert client.get(reverse("evals:data_efficiency")).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_pm_registered_by_training_is_evaluated_by_a_real_worker(tmp_path, celery_worker_process):
    """Training service → model_version_registered → evals queues HHH → the worker runs it."""
    import time

    from collection.datasets import dataset_import_create, snapshot_create
    from tests.training.test_runs import TINY_CONFIG, toy_trl_file
    from training import services as training

    backbone = model_version_register(
        kind="lm", name="tiny", path=str(save_tiny_lm(tmp_path / "lm"))
    )
    snapshot = snapshot_create(
        filter={
            "imports": [
                dataset_import_create(
                    path=toy_trl_file(tmp_path / "toy.jsonl", n=20), format="trl"
                ).pk
            ]
        }
    )
    run = training.training_run_create(
        kind="pm", snapshot=snapshot, base_model=backbone, config={**TINY_CONFIG, "max_steps": 2}
    )
    # Train here, in the test process, through the service; the worker does the evals.
    run = training.training_run_execute(run=training.training_run_claim(run_id=run.pk))
    assert run.status == "succeeded"
    deadline = time.monotonic() + 180
    evaluated = None
    while time.monotonic() < deadline:
        evaluated = EvalRun.objects.filter(model_version=run.result_version, suite="hhh").first()
        if evaluated is not None and evaluated.status in ("succeeded", "failed"):
            break
        time.sleep(0.5)
    assert evaluated is not None and evaluated.status == "succeeded", (
        evaluated and evaluated.error,
        celery_worker_process.output()[-3000:],
    )
    assert evaluated.results["overall"]["n"] == 221
    from evals.tasks import run_eval

    # The task ran in the worker process and reported through the result backend.
    assert run_eval.AsyncResult(evaluated.celery_task_id).get(timeout=60) == "succeeded"
