"""Evals show what happened: failed runs on the leaderboard and the model's page with their
reason in one line (the traceback behind a link), and the empty pages say why."""

import pytest
from django.urls import reverse
from django.utils import timezone

from assistant.services import model_version_register
from evals import selectors
from evals.models import EvalRun
from evals.services import eval_run_claim, eval_run_create, eval_run_execute


def test_a_failure_s_reason_is_one_line():
    error = "ValueError: bad\n\nTraceback (most recent call last):\n  x"
    assert selectors.error_summary(error) == "ValueError: bad"
    bare = "Traceback (most recent call last):\n  File \"x\", line 1\nKeyError: 'hhh'\n"
    assert selectors.error_summary(bare) == "KeyError: 'hhh'"
    assert selectors.error_summary("") == "failed without a recorded error"
    assert len(selectors.error_summary("E: " + "x" * 500)) == 200


@pytest.mark.django_db
def test_a_failed_eval_is_on_the_leaderboard_and_the_model_page(
    client, rita, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    # A version whose only eval fails: it has a row all the same. (The suite fails as one
    # whose model folder is empty would, without loading torch for it.)
    from evals import runner

    def no_model(run):
        raise OSError(f"no model weights in {run.model_version.path}")

    monkeypatch.setattr(runner, "run_suite", no_model)
    with django_capture_on_commit_callbacks(execute=False):
        version = model_version_register(kind="pm", name="broken <pm>", path=str(tmp_path))
    run = EvalRun.objects.filter(model_version=version).first() or eval_run_create(
        suite="hhh", model_version=version
    )
    run = eval_run_execute(run=eval_run_claim(eval_run_id=run.pk))
    assert run.status == EvalRun.Status.FAILED and "Traceback" in run.error
    reason = selectors.error_summary(run.error)
    assert "\n" not in reason and reason == run.error.splitlines()[0]

    client.force_login(rita)
    board = client.get(reverse("evals:leaderboard")).content.decode()
    run_url = reverse("evals:run", args=[run.pk])
    model_url = reverse("evals:model", args=[version.pk])
    # Its row, the HHH cell saying "failed" with the reason, linked to the run.
    assert "No model version has a finished eval yet" not in board
    assert f'<a class="error" href="{run_url}">failed</a>' in board
    assert f'href="{model_url}"' in board and "broken &lt;pm&gt;" in board
    assert "Failed eval runs (1)" in board and f'href="{run_url}"' in board
    from django.utils.html import escape

    assert escape(reason) in board and "Traceback (most recent" not in board
    # The model's page: the same reason in one line, the traceback behind the run's link.
    page = client.get(model_url).content.decode()
    assert escape(reason) in page and f'href="{run_url}"' in page and "1 failed" in page
    assert "Traceback (most recent" not in page
    detail = client.get(run_url).content.decode()
    assert "Traceback (most recent" in detail and f'href="{model_url}"' in detail
    # A later success fills the cell; the failure stays listed.
    EvalRun.objects.create(
        suite="hhh",
        model_version=version,
        status="succeeded",
        finished_at=timezone.now(),
        results={"overall": {"accuracy": 0.61, "low": 0.55, "high": 0.67, "n": 221}},
    )
    board = client.get(reverse("evals:leaderboard")).content.decode()
    assert "61%" in board and "Failed eval runs (1)" in board and "latest run failed" not in board


@pytest.mark.django_db
def test_the_model_page_is_for_researchers_and_admins_only(client, alice, rita, tmp_path):
    version = model_version_register(kind="pm", name="pm", path=str(tmp_path))
    url = reverse("evals:model", args=[version.pk])
    client.force_login(alice)
    assert client.get(url).status_code == 403
    client.force_login(rita)
    assert client.get(url).status_code == 200
    assert client.get(reverse("evals:model", args=[version.pk + 100])).status_code == 404


@pytest.mark.django_db
def test_compare_says_why_it_is_empty(client, rita, tmp_path):
    a = model_version_register(kind="pm", name="never-run", path=str(tmp_path))
    EvalRun.objects.filter(model_version=a).delete()
    b = model_version_register(kind="pm", name="failing", path=str(tmp_path))
    EvalRun.objects.filter(model_version=b).delete()
    EvalRun.objects.create(
        suite="hhh",
        model_version=b,
        status="failed",
        finished_at=timezone.now(),
        error="OSError: no model in /models/x\n\nTraceback (most recent call last): …",
    )
    client.force_login(rita)
    page = client.get(reverse("evals:compare"), {"a": a.pk, "b": b.pk}).content.decode()
    assert "neither version has a finished eval" in page
    assert "never-run has never been evaluated" in page
    assert "failing has no finished eval: its runs are 1 failed" in page
    assert "OSError: no model in /models/x" in page
