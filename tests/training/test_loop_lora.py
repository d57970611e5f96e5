"""The training loop with LoRA: only the adapters and the head train, the PM comes back
ordinary (adapters merged), checkpoints resume, the imitation LM merges."""

import copy

import pytest
import torch

from assistant.pm import PMScorer, load_pm, save_pm
from tests.tinymodels import tiny_causal_lm, tiny_tokenizer
from tests.training.toy_pm import config, tiny_pm, toy_rankings
from training.loop import train_preference_model

# The machine is shared: each test keeps to one core (tests/training/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def _original_name(name: str) -> str:
    """A parameter's name in the plain PM, from its name while peft wraps the backbone."""
    return name.replace("backbone.base_model.model.", "backbone.").replace(".base_layer", "")


def test_lora_trains_only_adapters_and_head_and_saves_an_ordinary_pm(tmp_path):
    model, tokenizer = tiny_pm("decoder")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    texts = [text for ranking in toy_rankings(8, seed=5) for text in ranking.texts()]
    at_last_step = {}

    at_first_step = {}

    def on_step(step, total, metrics):
        # Seen from inside the run: the adapters are still apart from the weights they adapt.
        if step == 1:
            at_first_step.update({n: p.detach().clone() for n, p in model.named_parameters()})
        if step == total:
            at_last_step["params"] = {n: p.detach().clone() for n, p in model.named_parameters()}
            # float32 scores: merged and unmerged adapters agree to 1e-4, bf16 ones do not.
            at_last_step["scores"] = PMScorer(model, tokenizer, bf16=False).score(texts)

    result = train_preference_model(
        model,
        tokenizer,
        toy_rankings(160, seed=1),
        config(max_steps=20, lora=True, lora_r=4, lora_alpha=8),
        on_step=on_step,
    )
    assert result.status == "completed" and result.steps == 20
    first, last = result.history[0]["loss"], sum(m["loss"] for m in result.history[-5:]) / 5
    assert last < first - 0.2, (first, last)

    trained = at_last_step["params"]
    adapters = [name for name in trained if ".lora_" in name]
    # Two adapter matrices on each of the 7 linear layers of both decoder layers.
    assert len(adapters) == 2 * 7 * 2
    still = [n for n in adapters if torch.equal(trained[n], at_first_step[n])]
    assert still == [], still
    assert all(trained[n].abs().sum() > 0 for n in adapters if ".lora_B." in n)  # began at 0
    # Everything else is the plain PM's parameters: the backbone's bitwise as it was.
    others = {_original_name(n): p for n, p in trained.items() if ".lora_" not in n}
    assert sorted(others) == sorted(before)
    changed = sorted(n for n, p in others.items() if not torch.equal(p, before[n]))
    assert changed == ["head.bias", "head.weight"]

    # Back from training: an ordinary PM, the adapters merged into the backbone's weights.
    assert sorted(n for n, _ in model.named_parameters()) == sorted(before)
    assert any(
        not torch.equal(p.detach(), before[n])
        for n, p in model.named_parameters()
        if n.startswith("backbone.")
    )
    merged_scores = PMScorer(model, tokenizer, bf16=False).score(texts)
    assert merged_scores == pytest.approx(at_last_step["scores"], abs=1e-4)
    assert merged_scores != pytest.approx(
        PMScorer(*tiny_pm("decoder"), bf16=False).score(texts), abs=1e-3
    )

    save_pm(model, tokenizer, tmp_path / "pm", {"note": "lora"})
    loaded, loaded_tokenizer, meta = load_pm(tmp_path / "pm")
    assert meta["note"] == "lora"
    assert PMScorer(loaded, loaded_tokenizer, bf16=False).score(texts) == pytest.approx(
        merged_scores, abs=1e-6
    )


def test_lora_checkpoints_resume_and_imitation_lm_merges(tmp_path):
    # A run stopped mid-way resumes from a checkpoint that holds the adapters apart.
    train = toy_rankings(64, seed=1)
    cfg = config(max_steps=4, checkpoint_every=2, lora=True, lora_r=4, lora_alpha=8)
    model, tokenizer = tiny_pm("decoder")
    straight = train_preference_model(model, tokenizer, train, cfg)
    polls = iter([False, False, True])
    model, tokenizer = tiny_pm("decoder")
    first = train_preference_model(
        model, tokenizer, train, cfg, should_stop=lambda: next(polls), checkpoint_dir=tmp_path
    )
    assert first.status == "cancelled" and first.steps == 2
    model, tokenizer = tiny_pm("decoder")
    resumed = train_preference_model(model, tokenizer, train, cfg, checkpoint_dir=tmp_path)
    assert [m["loss"] for m in resumed.history] == pytest.approx(
        [m["loss"] for m in straight.history], abs=1e-5
    )

    # The imitation baseline's LM comes back as a plain causal LM that saves and reloads.
    tokenizer = copy.deepcopy(tiny_tokenizer())
    lm = tiny_causal_lm(tokenizer)
    embeddings = lm.model.embed_tokens.weight.detach().clone()
    q_proj = lm.model.layers[0].self_attn.q_proj.weight.detach().clone()
    train_preference_model(lm, tokenizer, train, config(max_steps=3, loss="imitation", lora=True))
    assert not any("lora" in name for name, _ in lm.named_parameters())
    assert torch.equal(lm.model.embed_tokens.weight, embeddings)  # not adapted
    assert not torch.equal(lm.model.layers[0].self_attn.q_proj.weight, q_proj)  # merged
    lm.save_pretrained(tmp_path / "lm")
    reloaded = type(lm).from_pretrained(tmp_path / "lm")
    ids = torch.tensor([tokenizer("Human: hello there")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, lm(ids).logits, atol=1e-6)
