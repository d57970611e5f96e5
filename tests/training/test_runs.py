"""Training runs end to end: snapshot → Celery task → trained PM registered, promoted or not."""

import json
import random
import time
from pathlib import Path

import pytest

from assistant.models import ModelVersion
from assistant.services import model_version_register, prompt_template_create
from collection.imports import dataset_import_create
from collection.snapshots import snapshot_create
from config.celery import app
from tests.collection.dataset_builders import judgement_write
from tests.tinymodels import save_tiny_lm
from training import retrain, services
from training.models import TrainingRun
from training.tasks import run_training

TINY_CONFIG = {
    "max_steps": 12,
    "batch_size": 4,
    "lr": 3e-3,
    "warmup_steps": 0,
    "max_length": 64,
    "eval_every": 6,
    "checkpoint_every": 4,
    "bf16": False,
}


def toy_trl_file(path, n=60, seed=0):
    """Pairs where the better response says "glad" to help: a PM can learn it in a few steps."""
    rng = random.Random(seed)
    topics = ["the sea", "bread", "trains", "a poem", "taxes", "birds", "tea", "maps"]
    with path.open("w") as f:
        for i in range(n):
            topic = rng.choice(topics)
            prompt = [{"role": "user", "content": f"Tell me about {topic}, please ({i})."}]
            good = [{"role": "assistant", "content": f"I am glad to help with {topic}."}]
            bad = [{"role": "assistant", "content": f"I will not talk about {topic} now."}]
            f.write(json.dumps({"prompt": prompt, "chosen": good, "rejected": bad}) + "\n")
    return path


@pytest.fixture
def backbone(tmp_path):
    return model_version_register(kind="lm", name="tiny", path=str(save_tiny_lm(tmp_path / "lm")))


@pytest.fixture
def snapshot(tmp_path, adam):
    imported = dataset_import_create(path=toy_trl_file(tmp_path / "toy.jsonl"), format="trl")
    return snapshot_create(
        filter={"sources": ["imported"], "imports": [imported.pk]}, created_by=adam
    )


@pytest.fixture
def big_snapshot(tmp_path, adam):
    """About 40 held-out pairs: enough for the promotion tests to decide (the default minimum
    of 200 is lowered in them; tests/training/test_promotion.py tests the minimum itself)."""
    imported = dataset_import_create(
        path=toy_trl_file(tmp_path / "toy-big.jsonl", n=400), format="trl"
    )
    return snapshot_create(
        filter={"sources": ["imported"], "imports": [imported.pk]}, created_by=adam
    )


def execute(run):
    claimed = services.training_run_claim(run_id=run.pk)
    assert claimed is not None
    return services.training_run_execute(run=claimed)


@pytest.mark.django_db
def test_a_run_trains_registers_and_promotes_the_first_pm(
    backbone, big_snapshot, adam, settings, django_capture_on_commit_callbacks
):
    snapshot = big_snapshot
    settings.TRAINING_PROMOTION_MIN_HELD_OUT = 20
    with django_capture_on_commit_callbacks(execute=False) as queued:
        run = services.training_run_create(
            kind="pm", snapshot=snapshot, base_model=backbone, config=TINY_CONFIG, launched_by=adam
        )
    assert len(queued) == 1 and run.status == TrainingRun.Status.QUEUED
    run = execute(run)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error + run.log_tail
    assert (run.steps_done, run.steps_total) == (12, 12)
    assert any("eval_accuracy" in m for m in run.metrics)
    version = run.result_version
    assert (version.kind, version.origin, version.training_run_id) == ("pm", "trained", run.pk)
    assert version.path == run.artifact_path and version.path.startswith(str(settings.MODELS_DIR))
    meta = json.loads((Path(version.path) / "meta.json").read_text())
    assert meta["dataset_snapshot"] == snapshot.content_hash and meta["training_run"] == run.pk
    assert run.promotion["decision"] == "promoted", run.promotion
    version.refresh_from_db()
    assert version.is_active
    # The trained PM prefers the better kind of response on unseen text.
    from assistant.pm import PMScorer

    good, bad = PMScorer.from_path(version.path).score(
        [
            "\n\nHuman: Tell me about jam.\n\nAssistant: I am glad to help with jam.",
            "\n\nHuman: Tell me about jam.\n\nAssistant: I will not talk about jam now.",
        ]
    )
    assert good > bad


@pytest.mark.django_db
def test_a_worse_pm_is_not_promoted(backbone, big_snapshot, settings):
    snapshot = big_snapshot
    settings.TRAINING_PROMOTION_MIN_HELD_OUT = 20
    first = execute(
        services.training_run_create(
            kind="pm", snapshot=snapshot, base_model=backbone, config=TINY_CONFIG
        )
    )
    settings.TRAINING_PROMOTION_TOLERANCE = 0.0
    # One step at a tiny learning rate: barely trained, so worse on held-out than the first.
    weak = execute(
        services.training_run_create(
            kind="pm",
            snapshot=snapshot,
            base_model=backbone,
            config={**TINY_CONFIG, "max_steps": 1, "lr": 1e-6, "eval_every": 1},
        )
    )
    assert weak.status == TrainingRun.Status.SUCCEEDED
    assert weak.promotion["decision"] == "kept", weak.promotion
    assert weak.promotion["active_version"] == first.result_version_id
    assert "significantly worse than the active PM" in weak.promotion["reason"], weak.promotion
    assert ModelVersion.objects.get(kind="pm", is_active=True) == first.result_version


@pytest.mark.django_db
def test_a_cancelled_run_stops_and_registers_nothing(backbone, snapshot):
    run = services.training_run_create(
        kind="pm", snapshot=snapshot, base_model=backbone, config={**TINY_CONFIG, "max_steps": 200}
    )
    claimed = services.training_run_claim(run_id=run.pk)
    services.training_run_cancel(run=claimed)
    run = services.training_run_execute(run=claimed)
    assert run.status == TrainingRun.Status.CANCELLED and run.steps_done < 200
    assert not ModelVersion.objects.filter(kind="pm").exists()
    queued = services.training_run_create(kind="pm", snapshot=snapshot, base_model=backbone)
    assert services.training_run_cancel(run=queued).status == TrainingRun.Status.CANCELLED
    assert services.training_run_claim(run_id=queued.pk) is None  # a cancelled run never starts


@pytest.mark.django_db
def test_a_run_resumes_from_its_checkpoint_after_the_worker_dies(backbone, snapshot, monkeypatch):
    run = services.training_run_create(
        kind="pm", snapshot=snapshot, base_model=backbone, config=TINY_CONFIG
    )
    real_progress = services.training_run_progress

    def die_at_step_6(*, run_id, steps_done, **kwargs):
        real_progress(run_id=run_id, steps_done=steps_done, **kwargs)
        if steps_done >= 6:
            raise SystemExit("worker killed")  # not an Exception: the run is left "running"

    monkeypatch.setattr(services, "training_run_progress", die_at_step_6)
    with pytest.raises(SystemExit):
        execute(run)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.RUNNING
    assert services.training_run_claim(run_id=run.pk) is None  # its lease still holds it
    TrainingRun.objects.filter(pk=run.pk).update(lease_expires_at=run.started_at)  # expired
    seen = []

    def record(**kwargs):
        seen.append(kwargs["steps_done"])
        return real_progress(**kwargs)

    monkeypatch.setattr(services, "training_run_progress", record)
    resumed = execute(run)  # the next task claims the running run whose lease expired
    assert resumed.status == TrainingRun.Status.SUCCEEDED
    assert seen[0] == 5  # went on from the checkpoint of step 4, not from the start
    assert resumed.steps_done == 12


@pytest.mark.django_db
def test_a_failing_run_records_why(snapshot, tmp_path):
    broken = model_version_register(kind="lm", name="broken", path=str(tmp_path))  # no model there
    run = execute(services.training_run_create(kind="pm", snapshot=snapshot, base_model=broken))
    assert run.status == TrainingRun.Status.FAILED and run.error
    assert "Traceback" in run.log_tail


@pytest.mark.django_db
def test_bad_configs_and_missing_data_are_refused(snapshot):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="unknown"):
        services.training_run_create(kind="pm", snapshot=snapshot, config={"learning_rate": 1})
    with pytest.raises(ValidationError, match="snapshot"):
        services.training_run_create(kind="pm")
    with pytest.raises(ValidationError, match="loss"):
        services.training_run_create(kind="pm", snapshot=snapshot, config={"loss": "binary"})
    assert not TrainingRun.objects.exists()


def test_training_tasks_go_to_the_training_queue():
    assert app.amqp.router.route({}, run_training.name)["queue"].name == "training"


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_a_training_job(backbone, snapshot, celery_worker_process):
    run = services.training_run_create(
        kind="pm", snapshot=snapshot, base_model=backbone, config={**TINY_CONFIG, "max_steps": 4}
    )
    assert (
        run_training.AsyncResult(TrainingRun.objects.get(pk=run.pk).celery_task_id).get(timeout=120)
        == "succeeded"
    )
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED and run.result_version.kind == "pm"
    assert run_training.delay(run.pk).get(timeout=60) == "skipped: not queued"  # idempotent

    # Context distillation takes the same path: a new LM version, distilled from the backbone.
    prompt = prompt_template_create(name="hhh", text="A helpful, honest and harmless assistant.")
    distill = services.training_run_create(
        kind="distill",
        snapshot=snapshot,
        base_model=backbone,
        config={"max_steps": 3, "batch_size": 4, "max_length": 64},
    )
    assert (
        run_training.AsyncResult(TrainingRun.objects.get(pk=distill.pk).celery_task_id).get(
            timeout=120
        )
        == "succeeded"
    )
    distill.refresh_from_db()
    version = distill.result_version
    assert (distill.steps_done, version.kind) == (3, "lm")
    assert version.metadata["distilled_from"] == backbone.pk
    assert version.metadata["prompt"] == prompt.key


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_stops_a_cancelled_run_within_a_few_steps(
    backbone, snapshot, celery_worker_process
):
    run = services.training_run_create(
        kind="pm",
        snapshot=snapshot,
        base_model=backbone,
        config={**TINY_CONFIG, "max_steps": 100_000, "eval_every": 0, "checkpoint_every": 0},
    )
    result = run_training.AsyncResult(TrainingRun.objects.get(pk=run.pk).celery_task_id)
    deadline = time.monotonic() + 120
    while TrainingRun.objects.get(pk=run.pk).steps_done < 5:  # it is training, mid-run
        assert time.monotonic() < deadline and not result.ready(), "the run never got going"
        time.sleep(0.05)
    services.training_run_cancel(run=run)
    at_cancel = TrainingRun.objects.get(pk=run.pk).steps_done
    assert result.get(timeout=60) == TrainingRun.Status.CANCELLED
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED and run.finished_at is not None
    # The step under way when the flag was set, and at most one more that had already begun.
    assert at_cancel <= run.steps_done <= at_cancel + 2, (at_cancel, run.steps_done)
    assert run.result_version is None and run.artifact_path == ""
    assert not ModelVersion.objects.filter(kind="pm").exists()


@pytest.mark.django_db
def test_the_retrain_schedule_is_an_editable_beat_task():
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="training.retrain_if_enough_new_data")
    assert task.enabled and task.interval.every == 1 and task.interval.period == "hours"
    assert json.loads(task.kwargs) == {"min_new_judgements": 200}
    assert task.task in app.tasks


@pytest.mark.django_db
def test_retrain_launches_only_with_enough_new_judgements(backbone, alice, settings):
    from collection.models import Campaign, Conversation, Response, Turn

    campaign = Campaign.objects.create(name="c", lm_version=backbone)
    for i in range(3):
        convo = Conversation.objects.create(campaign=campaign, contractor=alice)
        turn = Turn.objects.create(conversation=convo, index=0, human_text=f"q{i}", status="judged")
        a, b = Response.objects.bulk_create(
            [Response(turn=turn, index=j, text=f"r{j}", model_version=backbone) for j in (0, 1)]
        )
        judgement_write(turn, alice, [a.pk, b.pk], origin="conversation")
    assert retrain.retrain_if_enough_new_data(min_new_judgements=4) is None
    run = retrain.retrain_if_enough_new_data(min_new_judgements=3)
    assert run.kind == "pm" and run.snapshot.counts["judgements"] == 3
    assert retrain.retrain_if_enough_new_data(min_new_judgements=3) is None  # one at a time
