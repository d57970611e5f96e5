"""Definitions are checked at the edge (serializer, form, command, API) with errors naming the
field; the train split is subsampled reproducibly and nested; plans hash what they train."""

import json

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from assistant.services import model_version_register
from experiments import services
from experiments.models import Experiment
from experiments.paper import PAPER_EXPERIMENTS
from tests.experiments.conftest import two_by_two
from training.data import Ranking, nested_subset


@pytest.fixture
def backbone(tmp_path):
    """A registered LM folder nobody loads: these tests only validate and plan."""
    return model_version_register(kind="lm", name="unloaded", path=str(tmp_path))


def test_subsets_are_seeded_and_nested():
    rankings = [Ranking(responses=[f"a{i}", f"b{i}"], ranks=[0, 1]) for i in range(100)]
    small, large = nested_subset(rankings, 10, 3), nested_subset(rankings, 40, 3)
    assert len(small) == 10 and len(large) == 40
    assert all(r in large for r in small)  # nested
    assert small == nested_subset(rankings, 10, 3)  # reproducible
    assert small != nested_subset(rankings, 10, 4)  # seeded
    assert nested_subset(rankings, None, 0) == rankings
    with pytest.raises(ValueError, match="has only 100"):
        nested_subset(rankings, 101, 0)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change, message",
    [
        ({"sizes": [16, 10_000]}, "exceed the"),
        ({"sizes": [0]}, "sizes"),
        ({"conditions": [{"name": "x", "kind": "nonsense"}]}, "conditions.0.kind"),
        ({"config": {"lr": 5}}, "lr must be"),
        ({"config": {"lrr": 1e-3}}, "unknown PreferenceTrainingConfig keys: lrr"),
        ({"snapshot": 999_999}, "no dataset snapshot 999999"),
        ({"backbone": "424242"}, "no model version"),
        (
            {"conditions": [{"name": "r", "kind": "pm", "evals": ["toxicity"]}]},
            "not a suite for a pm",
        ),
        ({"conditions": [{"name": "r", "kind": "pmp_finetune"}]}, "pmp"),
        ({"eval_options": {"hhh": {"per_category": -1}}}, "per_category"),
        (
            {
                "findings": [
                    {
                        "claim": "c",
                        "test": "better",
                        "a": {"condition": "nope", "eval": "held_out"},
                        "b": {"condition": "ranked", "eval": "held_out"},
                    }
                ]
            },
            "no condition 'nope'",
        ),
    ],
)
def test_bad_definitions_are_refused_with_the_field_named(snapshot, backbone, change, message):
    with pytest.raises(ValidationError) as refused:
        services.experiment_create(data={**two_by_two(snapshot, backbone), **change})
    assert message in " ".join(refused.value.messages)
    assert not Experiment.objects.exists()  # nothing half-made


@pytest.mark.django_db
def test_the_grid_and_its_hashes(snapshot, backbone, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        experiment = services.experiment_create(data=two_by_two(snapshot, backbone))
    assert len(queued) == 1  # its first advance, after commit
    cells = list(experiment.cells.all())
    assert [(c.condition, c.size) for c in cells] == [
        ("ranked", 16),
        ("ranked", None),
        ("binary", 16),
        ("binary", None),
    ]
    assert len({c.spec_hash for c in cells}) == 4
    again = services.experiment_create(data=two_by_two(snapshot, backbone))
    assert [c.spec_hash for c in again.cells.all()] == [c.spec_hash for c in cells]
    other = services.experiment_create(data=two_by_two(snapshot, backbone, lr=1e-3))
    assert not {c.spec_hash for c in other.cells.all()} & {c.spec_hash for c in cells}
    assert cells[0].plan["config"]["train_comparisons"] == 16
    assert cells[0].plan["config"]["subset_seed"] == 0


@pytest.mark.django_db
def test_the_command_validates_the_file(tmp_path, snapshot, backbone, capsys):
    good = tmp_path / "good.yaml"
    import yaml

    good.write_text(yaml.safe_dump(two_by_two(snapshot, backbone)))
    call_command("experiment", "run", str(good))
    assert Experiment.objects.get().cells_total == 4
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**two_by_two(snapshot, backbone), "sizes": ["many"]}))
    with pytest.raises(CommandError, match="sizes.*many"):
        call_command("experiment", "run", str(bad))
    (tmp_path / "broken.yaml").write_text("name: [unclosed")
    with pytest.raises(CommandError, match="not valid YAML or JSON"):
        call_command("experiment", "run", str(tmp_path / "broken.yaml"))
    assert Experiment.objects.count() == 1


def test_the_paper_experiments_are_complete_definitions():
    for key, build in PAPER_EXPERIMENTS.items():
        for scale in ("small", "paper"):
            spec = build(scale=scale, snapshot=1)
            assert spec["findings"] and spec["conditions"], key
            assert all("Askell et al. 2021" in f["claim"] for f in spec["findings"])


@pytest.mark.django_db
def test_the_sweeper_advances_an_experiment_whose_task_was_lost(
    snapshot, backbone, django_capture_on_commit_callbacks
):
    from config.tasks import sweep_stranded_work
    from training.models import TrainingRun

    with django_capture_on_commit_callbacks(execute=False):  # its advance never sent
        experiment = services.experiment_create(data=two_by_two(snapshot, backbone))
    assert sweep_stranded_work()["experiments"] == [experiment.pk]
    experiment.refresh_from_db()
    assert experiment.status == "running"
    assert set(experiment.cells.values_list("status", flat=True)) == {"training"}
    assert TrainingRun.objects.filter(status="queued").count() == 4
    sweep_stranded_work()  # idempotent: nothing is launched twice
    assert TrainingRun.objects.count() == 4
    services.experiment_cancel(experiment=experiment)
    assert set(TrainingRun.objects.values_list("status", flat=True)) == {"cancelled"}
    assert sweep_stranded_work()["experiments"] == []


def test_yaml_aliases_are_refused():
    from experiments.forms import parse_definition

    with pytest.raises(ValidationError, match="aliases"):
        parse_definition("a: &a [1, 2]\nb: [*a, *a]\n")
    assert parse_definition('{"name": "json is yaml"}') == {"name": "json is yaml"}
