import pytest

from assistant.services import model_version_register
from collection.imports import dataset_import_create
from collection.snapshots import snapshot_create
from tests.tinymodels import save_tiny_lm
from tests.training.test_runs import toy_trl_file

# Few steps of a tiny model: a whole 2 x 2 experiment trains in seconds.
QUICK = {
    "max_length": 48,
    "batch_size": 8,
    "lr": 3e-3,
    "warmup_steps": 0,
    "eval_every": 0,
    "checkpoint_every": 0,
    "bf16": False,
}


@pytest.fixture
def backbone(tmp_path):
    return model_version_register(kind="lm", name="tiny", path=str(save_tiny_lm(tmp_path / "lm")))


@pytest.fixture
def snapshot(tmp_path, rita):
    imported = dataset_import_create(path=toy_trl_file(tmp_path / "toy.jsonl", n=80), format="trl")
    return snapshot_create(filter={"imports": [imported.pk]}, created_by=rita)


def two_by_two(snapshot, backbone, **config) -> dict:
    """Ranked PM and binary discrimination at 16 comparisons and all of them."""
    return {
        "name": "ranked vs binary",
        "snapshot": snapshot.pk,
        "backbone": str(backbone.pk),
        "sizes": [16, "all"],
        "config": {**QUICK, **config},
        "eval_options": {},  # HHH on all items: the eval queued when a version registers
        "conditions": [{"name": "ranked", "kind": "pm"}, {"name": "binary", "kind": "pm_binary"}],
        "findings": [
            {
                "claim": "ranked beats binary",
                "test": "better",
                "a": {"condition": "ranked", "eval": "held_out"},
                "b": {"condition": "binary", "eval": "held_out"},
            },
        ],
    }


def finish_with_numbers(experiment, held_out: dict, tmp_path):
    """Give every cell of `experiment` a succeeded training run and eval runs with made-up
    held-out counts (`held_out[(condition, size)]` = correct of 400) and real HHH results of a
    length baseline, then advance it with the real service: every cell ends succeeded."""
    from django.conf import settings

    from assistant.services import model_version_register
    from evals.models import EvalRun
    from evals.suites.hhh import hhh_pm_eval, load_hhh
    from experiments import services
    from tests.evals.test_runs import LongerIsBetter
    from training.models import TrainingRun

    hhh = hhh_pm_eval(LongerIsBetter(), load_hhh(settings.ALIGNLAB_HHH_DIR))
    for cell in experiment.cells.all():
        correct = held_out[(cell.condition, cell.size)]
        version = model_version_register(kind="pm", name=f"pm {cell.pk}", path=str(tmp_path))
        run = TrainingRun.objects.create(
            kind=cell.plan["kind"],
            snapshot=experiment.snapshot,
            status="succeeded",
            config=cell.plan["config"],
            result_version=version,
            metrics=[{"step": 4, "eval_accuracy": correct / 400, "eval_pairs": 400}],
        )
        cell.training_run = run
        cell.save()
        bins = [
            {"count": 40, "mean_predicted": 0.05 + i / 10, "observed": 0.1 * i} for i in range(10)
        ]
        EvalRun.objects.create(
            suite="held_out",
            model_version=version,
            snapshot=experiment.snapshot,
            status="succeeded",
            options={},
            results={
                "overall": {"correct": correct, "n": 400, "accuracy": correct / 400},
                "calibration": {"bins": bins, "ece": 0.04},
            },
        )
    services.experiment_advance(experiment_id=experiment.pk)  # queues each cell's HHH eval
    EvalRun.objects.filter(suite="hhh", status="queued").update(status="succeeded", results=hhh)
    services.experiment_advance(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    return experiment
