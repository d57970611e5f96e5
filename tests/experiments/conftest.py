import pytest

from assistant.services import model_version_register
from collection.imports import dataset_import_create
from collection.snapshots import snapshot_create
from tests.tinymodels import save_tiny_lm
from tests.training.test_runs import toy_trl_file

# Few steps of a tiny model: a whole 2 x 2 experiment trains in seconds.
QUICK = {"max_length": 48, "batch_size": 8, "lr": 3e-3, "warmup_steps": 0, "eval_every": 0,
         "checkpoint_every": 0, "bf16": False}


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
            {"claim": "ranked beats binary", "test": "better",
             "a": {"condition": "ranked", "eval": "held_out"},
             "b": {"condition": "binary", "eval": "held_out"}},
        ],
    }
