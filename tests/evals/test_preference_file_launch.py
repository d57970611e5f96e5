"""Launching the preference-file suite: from the model's page (a named file or an upload), the
API and the command, researchers and admins only; uploads scored by a real worker and deleted
when their run ends."""

import json

import pytest

from assistant.services import model_version_register
from evals import services
from evals.models import EvalRun
from tests.evals.pairs import hh_rows, trl_rows, write_jsonl, write_parquet


@pytest.mark.django_db
def test_researchers_launch_from_the_model_page_with_a_named_file_or_an_upload(
    client, rita, adam, alice, pm_version, data_root, django_capture_on_commit_callbacks
):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    from evals.preference_files import uploads_root

    path = write_jsonl(data_root / "hh.jsonl", hh_rows())
    page_url = reverse("evals:model", args=[pm_version.pk])
    url = reverse("evals:launch", args=[pm_version.pk])
    named = {"suite": "preference_file", "pairs_format": "hh-rlhf", "pairs_path": str(path)}
    client.force_login(alice)  # a contractor
    assert client.post(url, named).status_code == 403
    assert client.get(page_url).status_code == 403
    assert not EvalRun.objects.filter(suite="preference_file").exists()

    client.force_login(rita)
    page = client.get(page_url).content.decode()
    assert f'action="{url}"' in page and 'enctype="multipart/form-data"' in page
    assert "preference file vs the length baseline" in page and str(data_root) in page
    assert "toxicity" not in page.split('id="launch-eval"')[1]  # an LM suite: not for a PM
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(url, named)
    run = EvalRun.objects.get(suite="preference_file")
    assert response.status_code == 302 and response["Location"] == reverse(
        "evals:run", args=[run.pk]
    )
    assert (run.pairs_path, run.pairs_name, run.launched_by) == (str(path), str(path), rita)

    client.force_login(adam)
    upload = SimpleUploadedFile(
        "my pairs.parquet", write_parquet(data_root / "t.parquet", trl_rows()).read_bytes()
    )
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            url, {"suite": "preference_file", "pairs_format": "trl", "upload": upload}
        )
    assert response.status_code == 302
    uploaded = EvalRun.objects.filter(suite="preference_file").latest("pk")
    stored = uploaded.pairs_path
    assert uploaded.pairs_name == "my pairs.parquet" and stored.startswith(str(uploads_root()))
    # The worker's part, here: it scores the upload, then the stored file is gone.
    uploaded = services.eval_run_execute(run=services.eval_run_claim(eval_run_id=uploaded.pk))
    assert uploaded.status == "succeeded", uploaded.error
    import os

    assert not os.path.exists(stored) and not list(uploads_root().iterdir())
    detail = client.get(reverse("evals:run", args=[uploaded.pk])).content.decode()
    assert "Against length" in detail and "the longer response wins" in detail
    assert "my pairs.parquet" in detail and "Spearman ρ" in detail
    assert "62.5%" in detail and "1 tie counted as half a win" in detail


@pytest.mark.django_db
def test_a_refused_launch_says_why_next_to_the_field_and_keeps_nothing(
    client, rita, pm_version, data_root, settings
):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    from evals.preference_files import uploads_root

    url = reverse("evals:launch", args=[pm_version.pk])
    client.force_login(rita)
    outside = client.post(
        url, {"suite": "preference_file", "pairs_format": "hh-rlhf", "pairs_path": "/etc/passwd"}
    )
    assert outside.status_code == 400
    assert "no file &#x27;/etc/passwd&#x27; inside the data roots" in outside.content.decode()
    bad = SimpleUploadedFile("bad.jsonl", b'{"chosen": "x"}\n')
    refused = client.post(
        url, {"suite": "preference_file", "pairs_format": "hh-rlhf", "upload": bad}
    )
    assert refused.status_code == 400
    assert "bad.jsonl: line 1: missing &quot;rejected&quot;" in refused.content.decode()
    empty = SimpleUploadedFile("empty.jsonl", b"")
    refused = client.post(url, {"suite": "preference_file", "pairs_format": "trl", "upload": empty})
    assert refused.status_code == 400 and "The submitted file is empty." in refused.content.decode()
    settings.COLLECTION_UPLOAD_MAX_MB = 0
    big = SimpleUploadedFile("big.jsonl", b"x" * (2**20 + 10))
    too_big = client.post(url, {"suite": "preference_file", "pairs_format": "trl", "upload": big})
    assert too_big.status_code == 413 and "the limit is 0 MiB" in too_big.content.decode()
    assert not EvalRun.objects.filter(suite="preference_file").exists()
    assert not uploads_root().exists() or not list(uploads_root().iterdir())
    # Without a CSRF token, nothing is launched.
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(rita)
    assert strict.post(url, {"suite": "hhh"}).status_code == 403


@pytest.mark.django_db
def test_the_api_launches_the_suite_on_a_named_file(rita, alice, pm_version, data_root):
    from rest_framework.test import APIClient

    path = write_jsonl(data_root / "trl.jsonl", trl_rows())
    api = APIClient()
    api.force_authenticate(rita)
    body = {
        "suite": "preference_file",
        "model_version": pm_version.pk,
        "pairs_path": str(path),
        "pairs_format": "trl",
    }
    made = api.post("/api/eval-runs/", body, format="json")
    assert made.status_code == 201, made.content
    assert made.json()["pairs_name"] == str(path) and made.json()["status"] == "queued"
    outside = api.post("/api/eval-runs/", {**body, "pairs_path": "/etc/passwd"}, format="json")
    assert outside.status_code == 400 and "inside the data roots" in outside.json()["pairs_path"][0]
    unknown = api.post("/api/eval-runs/", {**body, "pairs_format": "csv"}, format="json")
    assert unknown.status_code == 400 and "pairs_format" in unknown.json()
    api.force_authenticate(alice)
    assert api.post("/api/eval-runs/", body, format="json").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_an_uploaded_file_is_scored_by_a_real_worker(
    client, rita, tiny_pm_folder, celery_worker_process
):
    """The page stores the upload where the worker reads it (the uploads folder both share),
    the worker scores it and deletes it."""
    import os

    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    from tests.waiting import wait_until

    version = model_version_register(kind="pm", name="tiny pm", path=str(tiny_pm_folder))
    EvalRun.objects.filter(model_version=version).delete()  # the HHH run registering queued
    client.force_login(rita)
    upload = SimpleUploadedFile("hh.jsonl", "\n".join(json.dumps(r) for r in hh_rows()).encode())
    response = client.post(
        reverse("evals:launch", args=[version.pk]),
        {"suite": "preference_file", "pairs_format": "hh-rlhf", "upload": upload},
    )
    assert response.status_code == 302
    run = EvalRun.objects.get(suite="preference_file")
    stored = run.pairs_path
    assert os.path.exists(stored)
    wait_until(lambda: EvalRun.objects.get(pk=run.pk).is_finished, 120, "the worker to run it")
    run.refresh_from_db()
    assert run.status == "succeeded", (run.error, celery_worker_process.output()[-3000:])
    assert run.results["length_baseline"]["accuracy"] == 0.625
    assert run.results["file"]["name"] == "hh.jsonl" and run.results["overall"]["n"] == 4
    # The worker deletes the file just after it stores the run's end (a run whose end could not
    # be stored keeps its file for the rerun), so the deletion is waited for, not raced.
    wait_until(
        lambda: not os.path.exists(stored) and EvalRun.objects.get(pk=run.pk).pairs_path == "",
        30,
        "the worker to delete the upload",
    )


@pytest.mark.django_db
def test_the_run_eval_command_scores_a_named_file(pm_version, data_root):
    import io

    from django.core.management import CommandError, call_command

    path = write_jsonl(data_root / "hh.jsonl", hh_rows())
    out = io.StringIO()
    arguments = ["--suite", "preference_file", "--model", str(pm_version.pk)]
    call_command(
        "run_eval", *arguments, "--pairs-path", str(path), "--pairs-format", "hh-rlhf", stdout=out
    )
    assert "preference file vs the length baseline" in out.getvalue()
    said = out.getvalue()
    assert "the longer response wins: 62.5% [" in said and "n=4 1 tie counted as half" in said
    assert "“the longer response wins”" in said and "length bias: Spearman ρ" in said
    with pytest.raises(CommandError, match="inside the data roots"):
        call_command("run_eval", *arguments, "--pairs-path", "/etc/passwd", "--pairs-format", "trl")


@pytest.mark.django_db
def test_an_upload_is_deleted_when_its_run_is_cancelled_or_swept(pm_version, data_root):
    import os

    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils import timezone

    from config.tasks import sweep_stranded_work

    def launch():
        upload = SimpleUploadedFile("hh.jsonl", json.dumps(hh_rows()[0]).encode())
        return services.eval_run_create(
            suite="preference_file",
            model_version=pm_version,
            pairs_format="hh-rlhf",
            upload=upload,
        )

    queued = launch()
    stored = queued.pairs_path
    assert os.path.exists(stored)
    cancelled = services.eval_run_cancel(run=queued)  # queued: it ends at once, so does the file
    assert cancelled.status == "cancelled" and not os.path.exists(stored)
    assert cancelled.pairs_path == "" and cancelled.pairs_name == "hh.jsonl"
    # A running one whose worker died, cancelled: the sweeper ends it, and deletes its file.
    running = launch()
    stored = running.pairs_path
    services.eval_run_claim(eval_run_id=running.pk)
    services.eval_run_cancel(run=running)
    assert os.path.exists(stored)
    EvalRun.objects.filter(pk=running.pk).update(lease_expires_at=timezone.now())
    swept = sweep_stranded_work()["eval_runs"]
    assert swept["cancelled"] == [running.pk] and swept["uploads_removed"] == 1
    assert not os.path.exists(stored)
    assert sweep_stranded_work()["eval_runs"]["uploads_removed"] == 0  # once
