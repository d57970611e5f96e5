"""An experiment through a real worker: 2 conditions x 2 sizes run, a second launch reuses
every cell, a third is cancelled as a whole, and the report shows the 4 cells with intervals."""

import pytest
from django.urls import reverse

from evals.models import EvalRun
from experiments import services
from experiments.models import Experiment, ExperimentCell
from tests.experiments.conftest import two_by_two
from tests.waiting import wait_until
from training.models import TrainingRun


def finished(experiment_id):
    experiment = Experiment.objects.get(pk=experiment_id)
    return experiment if experiment.is_finished else None


@pytest.mark.django_db(transaction=True)
def test_an_experiment_runs_reuses_and_cancels_on_a_real_worker(
    backbone, snapshot, rita, client, celery_worker_process
):
    first = services.experiment_create(data=two_by_two(snapshot, backbone), launched_by=rita)
    assert (first.cells_total, first.status) == (4, "queued")
    first = wait_until(lambda: finished(first.pk), 120, "the first experiment")
    cells = list(first.cells.select_related("training_run"))
    assert first.status == "succeeded", (first.error, celery_worker_process.output()[-3000:])
    assert {(c.condition, c.size) for c in cells} == {
        ("ranked", 16),
        ("ranked", None),
        ("binary", 16),
        ("binary", None),
    }
    assert all(c.status == "succeeded" and not c.reused for c in cells)
    # Each cell trained on its own nested subset: 16 of the split, or all of it.
    assert {c.training_run.config["train_comparisons"] for c in cells} == {16, None}
    assert {c.training_run.kind for c in cells} == {"pm", "pm_binary"}
    # An experiment's PMs are measurements: none is promoted to serve.
    assert all("promote: false" in c.training_run.promotion["reason"] for c in cells)
    assert not any(c.training_run.result_version.is_active for c in cells)
    for cell in cells:
        suites = dict(cell.evals.values_list("suite", "eval_run__status"))
        assert suites == {"held_out": "succeeded", "hhh": "succeeded"}

    # The same definition again: every cell borrows the first one's run; nothing retrains.
    runs_before = TrainingRun.objects.count()
    second = services.experiment_create(data=two_by_two(snapshot, backbone), launched_by=rita)
    second = wait_until(lambda: finished(second.pk), 60, "the second experiment")
    assert second.status == "succeeded" and TrainingRun.objects.count() == runs_before
    reused = list(second.cells.all())
    assert all(c.reused for c in reused)
    assert {c.training_run_id for c in reused} == {c.training_run_id for c in cells}
    # Their evals are the first experiment's runs too (same version, suite and options).
    assert EvalRun.objects.filter(suite="held_out").count() == 4

    # A third with other settings trains anew; cancelled as a whole, its runs stop.
    third = services.experiment_create(
        data=two_by_two(snapshot, backbone, lr=1e-3, epochs=1000), launched_by=rita
    )
    wait_until(
        lambda: (
            ExperimentCell.objects.filter(experiment=third, training_run__isnull=False).count() == 4
        ),
        60,
        "the third experiment's runs",
    )
    third = services.experiment_cancel(experiment=third)
    assert third.status == "cancelled"
    assert set(third.cells.values_list("status", flat=True)) == {"cancelled"}
    wait_until(
        lambda: all(
            run.is_finished
            for run in TrainingRun.objects.filter(pk__in=third.cells.values("training_run_id"))
        ),
        60,
        "the cancelled runs to stop",
    )
    statuses = set(
        TrainingRun.objects.filter(pk__in=third.cells.values("training_run_id")).values_list(
            "status", flat=True
        )
    )
    assert statuses == {"cancelled"}
    # The first experiment's runs were not touched.
    assert set(first.cells.values_list("training_run__status", flat=True)) == {"succeeded"}

    client.force_login(rita)
    page = client.get(reverse("experiments:detail", args=[first.pk])).content.decode()
    assert page.count('<tr class="cell">') == 4
    assert page.count("n=") >= 8  # held-out and HHH of each cell, each with its interval
    assert "ranked beats binary" in page and "held-out accuracy vs comparisons" in page
    assert "<svg" in page


@pytest.mark.django_db
def test_an_experiment_runs_inline_without_a_worker(backbone, snapshot, tmp_path, capsys):
    """`manage.py experiment run FILE --inline`: the same cells, trained and evaluated here."""
    import yaml
    from django.core.management import call_command

    from experiments.report import experiment_report

    data = two_by_two(snapshot, backbone, max_length=32) | {"sizes": [8], "findings": []}
    # No suite: HHH items do not fit the tiny LM's window; its held-out accuracy is its run's.
    data["conditions"][1] = {"name": "imitation", "kind": "imitation", "evals": []}
    definition = tmp_path / "grid.yaml"
    definition.write_text(yaml.safe_dump(data))
    call_command("experiment", "run", str(definition), "--inline")
    experiment = Experiment.objects.get()
    assert experiment.status == "succeeded", experiment.error
    assert experiment.cells.filter(status="succeeded").count() == 2
    # The imitation LM's held-out accuracy is its run's own final evaluation (its
    # log-likelihoods as rewards): counts with an interval, like the PM's held_out suite.
    cells = {row["condition"]: row for row in experiment_report(experiment)["cells"]}
    imitation = cells["imitation"]["metrics"]
    assert imitation["held_out"]["n"] > 0 and imitation["held_out"]["low"] is not None
    out = capsys.readouterr().out
    assert "s CPU)" in out and "succeeded" in out


@pytest.mark.django_db
def test_repro_refuses_bad_arguments(tmp_path):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="no HH-RLHF file"):
        call_command("repro", "--hh-rlhf", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path))
    with pytest.raises(CommandError, match="no Posts.xml"):
        call_command("repro", "--stackexchange", str(tmp_path), "--out", str(tmp_path))
