"""Training configs refuse values of the wrong type or out of range (issue 18), naming the field;
a launched run maps the refusal to a ValidationError on "config"."""

import math

import pytest
from django.core.exceptions import ValidationError

from training.config import RANGES, DistillationConfig, PMPConfig, PreferenceTrainingConfig

CONFIGS = [PreferenceTrainingConfig, PMPConfig, DistillationConfig]

# (field, value): what a hostile or careless client sent.
HOSTILE = [
    ("lr", 1e308),
    ("lr", 0),
    ("lr", -1e-5),
    ("lr", math.nan),
    ("lr", math.inf),
    ("lr", "0.1"),
    ("lr", True),
    ("batch_size", 1e9),
    ("batch_size", 10**9),
    ("batch_size", 2.5),
    ("batch_size", True),
    ("batch_size", 0),
    ("batch_size", "8"),
    ("max_length", 10**9),
    ("max_length", 1e9),
    ("max_length", 4),
    ("epochs", 10**9),
    ("epochs", 0),
    ("max_grad_norm", -1),
    ("seed", 2**70),
    ("seed", -1),
    ("max_steps", 0),
    ("max_steps", 1.5),
    ("weight_decay", -0.1),
    ("warmup_steps", -1),
    ("eval_every", None),
    ("grad_accum", 10**6),
    ("attention", 3),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("field, value", HOSTILE, ids=repr)
def test_a_value_of_the_wrong_type_or_range_is_refused_naming_the_field(config, field, value):
    with pytest.raises(ValueError, match=f"^{field} must be"):
        config.from_dict({field: value})


@pytest.mark.parametrize(
    "config, field, value",
    [
        (PreferenceTrainingConfig, "lora", 1),
        (PreferenceTrainingConfig, "margin_scale", 1e6),
        (PreferenceTrainingConfig, "mega_batch_mult", 0),
        (PreferenceTrainingConfig, "lora_r", 0),
        (PMPConfig, "binary", "yes"),
        (PMPConfig, "max_responses", 1),
        (DistillationConfig, "min_conversations", 0),
        (DistillationConfig, "render_mode", None),
    ],
)
def test_each_kinds_own_fields_are_checked_too(config, field, value):
    with pytest.raises(ValueError, match=f"^{field} must be"):
        config.from_dict({field: value})


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_the_bounds_themselves_and_the_defaults_are_accepted(config):
    assert config.from_dict({}) == config()
    names = {field for field in RANGES if field in config.__dataclass_fields__}
    for name in names:
        bound = RANGES[name]
        annotation = config.__dataclass_fields__[name].type
        high = int(bound.high) if annotation.startswith("int") else bound.high
        assert getattr(config.from_dict({name: high}), name) == high
        if not bound.above_low:
            low = int(bound.low) if annotation.startswith("int") else bound.low
            assert getattr(config.from_dict({name: low}), name) == low
    # A whole number where a float is asked for is fine (JSON has one kind of number).
    assert config.from_dict({"lr": 1}).lr == 1
    assert config.from_dict({"max_grad_norm": None}).max_grad_norm is None
    assert config.from_dict({"max_steps": None}).max_steps is None


@pytest.mark.parametrize("data", ["x", ["lr"], 5, None])
def test_a_config_that_is_not_an_object_is_refused(data):
    with pytest.raises(ValueError, match="a config is a JSON object"):
        PreferenceTrainingConfig.from_dict(data)


def test_an_error_message_stays_short_whatever_the_value():
    with pytest.raises(ValueError) as refused:
        PreferenceTrainingConfig.from_dict({"attention": ["x" * 10_000]})
    assert len(str(refused.value)) < 200


@pytest.mark.django_db
@pytest.mark.parametrize("config", [{"lr": 1e308}, {"seed": 2**70}, "x", [1], 7])
def test_a_launched_run_maps_the_refusal_to_the_config_field(config):
    from collection.models import DatasetSnapshot
    from training import services
    from training.models import TrainingRun

    snapshot = DatasetSnapshot.objects.create(filter={}, content_hash="0" * 64)
    with pytest.raises(ValidationError) as refused:
        services.training_run_create(kind="pm", snapshot=snapshot, config=config)
    assert list(refused.value.message_dict) == ["config"]
    assert not TrainingRun.objects.exists()


def test_backbone_is_no_setting():
    # It was never read: a run starts from its base model (TrainingRun.base_model).
    with pytest.raises(ValueError, match="unknown PreferenceTrainingConfig keys: backbone"):
        PreferenceTrainingConfig.from_dict({"backbone": ""})


@pytest.mark.django_db
def test_the_migration_drops_backbone_from_the_configs_runs_were_stored_with():
    import importlib

    from django.apps import apps

    from collection.models import DatasetSnapshot
    from training.models import TrainingRun

    migration = importlib.import_module("training.migrations.0006_drop_config_backbone")
    snapshot = DatasetSnapshot.objects.create(filter={}, content_hash="1" * 64)
    old = TrainingRun.objects.create(kind="pm", snapshot=snapshot, config={"backbone": "", "lr": 1})
    other = TrainingRun.objects.create(kind="pm", snapshot=snapshot, config={"lr": 2e-5})
    migration.drop_backbone(apps, None)
    old.refresh_from_db()
    other.refresh_from_db()
    assert old.config == {"lr": 1} and other.config == {"lr": 2e-5}
