"""Eval runs: the HHH suite on real data, triggered by model registration, reported in pages."""

import pytest
from django.conf import settings
from django.urls import reverse

from assistant import runtime
from assistant.services import model_version_register
from evals import services
from evals.models import EvalRun
from evals.suites.hhh import hhh_pm_eval, load_hhh
from tests.tinymodels import save_tiny_lm


class LongerIsBetter:
    """A preference model that always prefers the longer response (a baseline from the paper)."""

    def score(self, texts):
        return [float(len(text)) for text in texts]


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
    assert {c: v["n"] for c, v in run.results["categories"].items()} == {
        "helpful": 59,
        "honest": 61,
        "harmless": 58,
        "other": 43,
    }
    assert services.eval_run_claim(eval_run_id=run.pk) is None  # a finished run is not redone


@pytest.mark.django_db
def test_the_report_pages_render(client, rita, tmp_path):
    version = model_version_register(kind="pm", name="baseline", path=str(tmp_path))
    run = EvalRun.objects.create(
        suite="hhh",
        model_version=version,
        status="succeeded",
        results={
            **hhh_pm_eval(LongerIsBetter(), load_hhh(settings.ALIGNLAB_HHH_DIR)),
            "calibration": {
                "ece": 0.05,
                "bins": [{"count": 3, "mean_predicted": 0.55, "observed": 0.6}] * 10,
            },
        },
    )
    client.force_login(rita)
    page = client.get(reverse("evals:run", args=[run.pk])).content.decode()
    assert "helpful" in page and "harmless" in page and "<svg" in page and "0.050" in page
    # A PM that scores length is shown for what it is, next to "the longer response wins".
    assert "Against length" in page and "The PM does not beat “the longer response wins”" in page
    assert "Spearman ρ = +0." in page and "(n = 442 responses" in page  # with the context's
    board = client.get(reverse("evals:leaderboard")).content.decode()
    assert "baseline" in board and reverse("evals:run", args=[run.pk]) in board
    # The leaderboard reads each run's headline entry alone, from the JSON in the database.
    from evals import selectors

    columns, rows = selectors.leaderboard()
    (cell,) = [c for c in rows[0]["cells"] if c is not None]
    overall = run.results["overall"]
    assert columns[0] == "HHH" and cell["run"] == run
    assert (cell["value"], cell["low"], cell["high"]) == (
        overall["accuracy"],
        overall["low"],
        overall["high"],
    )
    assert cell["value"] == pytest.approx(139 / 221)
    compare = client.get(reverse("evals:compare"), {"a": version.pk, "b": version.pk})
    assert compare.status_code == 200 and "honest" in compare.content.decode()
    assert client.get(reverse("evals:data_efficiency")).status_code == 302  # to experiments


@pytest.mark.django_db(transaction=True)
def test_a_pm_registered_by_training_is_evaluated_by_a_real_worker(tmp_path, celery_worker_process):
    """Training service → model_version_registered → evals queues HHH → the worker runs it."""
    import time

    from collection.imports import dataset_import_create
    from collection.snapshots import snapshot_create
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


@pytest.mark.django_db
def test_run_eval_command_and_api(tmp_path, rita, alice):
    import copy
    import io

    from django.core.management import call_command
    from rest_framework.test import APIClient

    from assistant.pm import PreferenceModel, save_pm
    from tests.tinymodels import tiny_causal_lm, tiny_tokenizer

    tokenizer = copy.deepcopy(tiny_tokenizer())
    pm = PreferenceModel.from_backbone(tiny_causal_lm(tokenizer).model, tokenizer, max_length=128)
    save_pm(pm, tokenizer, tmp_path / "pm", {})
    version = model_version_register(kind="pm", name="tiny pm", path=str(tmp_path / "pm"))
    out = io.StringIO()
    call_command(
        "run_eval", "--suite", "truthfulqa", "--model", str(version.pk), "--limit", "5", stdout=out
    )
    runtime.unload_all()
    assert "TruthfulQA" in out.getvalue() and "mc1" in out.getvalue()
    api = APIClient()
    api.force_authenticate(rita)
    listed = api.get("/api/eval-runs/").json()
    assert listed["count"] == 1 and listed["results"][0]["results"]["mc1"]["n"] == 5
    bad = api.post(
        "/api/eval-runs/", {"suite": "toxicity", "model_version": version.pk}, format="json"
    )
    assert bad.status_code == 400 and "does not apply" in str(bad.json())
    api.force_authenticate(alice)
    assert api.get("/api/eval-runs/").status_code == 403
