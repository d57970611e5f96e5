"""The training loop in bf16 (autocast, "auto" where bf16 is native or emulated) and its config
(JSON round trips, unknown keys, LoRA without peft)."""

import importlib.util
import json

import pytest
import torch

from tests.training.toy_pm import config, tiny_pm, toy_rankings, toy_train
from training.config import PMPConfig, PreferenceTrainingConfig
from training.loop import train_preference_model

# The machine is shared: each test keeps to one core (tests/training/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_bf16_autocast_grad_accum_and_gradient_checkpointing_run():
    model, tokenizer = tiny_pm("decoder")
    result = toy_train(
        model, tokenizer, 48, max_steps=2, bf16=True, grad_accum=2, gradient_checkpointing=True
    )
    assert result.steps == 2
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in result.history)
    assert 0.0 <= result.metrics["eval_accuracy"] <= 1.0
    assert next(model.parameters()).dtype == torch.float32  # autocast, not a cast


def _linear_output_dtypes(model) -> set:
    """Filled, while the model runs, with the dtypes its Linear layers compute in."""
    seen = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    return seen


def test_bf16_auto_trains_in_float32_where_bf16_is_emulated_and_an_explicit_request_warns(
    monkeypatch, caplog, settings
):
    from assistant import hardware

    settings.ALIGNLAB_BF16 = "auto"  # the probe decides, whatever the environment says
    monkeypatch.setattr(hardware, "_probe", lambda device_type: False)  # an AVX2-only CPU
    model, tokenizer = tiny_pm("decoder")
    computed = _linear_output_dtypes(model)
    with caplog.at_level("WARNING", logger="training.loop"):
        toy_train(model, tokenizer, 16, eval_n=4, max_steps=1, bf16="auto")
    assert computed == {torch.float32} and "far slower" not in caplog.text

    computed.clear()
    with caplog.at_level("WARNING", logger="training.loop"):
        train_preference_model(
            model, tokenizer, toy_rankings(16, 1), config(max_steps=1, bf16=True)
        )
    assert computed == {torch.bfloat16}  # asked for explicitly: obeyed...
    assert "bf16 was requested" in caplog.text and "far slower" in caplog.text  # ...and told


def test_bf16_auto_takes_bf16_where_native_unless_alignlab_bf16_is_off(monkeypatch, settings):
    from assistant import hardware

    settings.ALIGNLAB_BF16 = "auto"  # the probe decides, whatever the environment says
    monkeypatch.setattr(hardware, "_probe", lambda device_type: True)
    model, tokenizer = tiny_pm("decoder")
    computed = _linear_output_dtypes(model)
    train_preference_model(model, tokenizer, toy_rankings(16, 1), config(max_steps=1, bf16="auto"))
    assert computed == {torch.bfloat16}

    settings.ALIGNLAB_BF16 = "off"  # CI standing in for an AVX2-only CPU
    computed.clear()
    train_preference_model(model, tokenizer, toy_rankings(16, 1), config(max_steps=1, bf16="auto"))
    assert computed == {torch.float32}


def test_bf16_is_true_false_or_auto_and_round_trips_as_json():
    assert PreferenceTrainingConfig().bf16 == "auto" and PMPConfig().bf16 == "auto"
    for value in (True, False, "auto"):
        cfg = PreferenceTrainingConfig(bf16=value)
        assert PreferenceTrainingConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for value in (1, "true", "on", None):
        with pytest.raises(ValueError, match="bf16 must be true, false or 'auto'"):
            PreferenceTrainingConfig.from_dict({"bf16": value})


def test_config_round_trips_and_rejects_unknown_keys():
    cfg = PMPConfig(max_steps=5)
    assert PMPConfig.from_dict(cfg.to_dict()) == cfg and cfg.binary is True
    with pytest.raises(ValueError, match="unknown PreferenceTrainingConfig keys: learning_rate"):
        PreferenceTrainingConfig.from_dict({"learning_rate": 1e-5})
    with pytest.raises(ValueError, match="loss must be one of"):
        PreferenceTrainingConfig(loss="pairwise")
    assert PreferenceTrainingConfig(lora=True).lora  # peft is a dependency


def test_lora_without_peft_installed_is_refused_up_front(monkeypatch):
    # A worker image built without peft must fail at launch, not after loading the backbone.
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "peft" else find_spec(name, *a),
    )
    with pytest.raises(ValueError, match="needs the `peft` package"):
        PreferenceTrainingConfig(lora=True)
    assert PreferenceTrainingConfig(lora=False).lora is False
