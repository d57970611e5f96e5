"""The training loop on tiny random PMs: it learns, cancels, resumes, runs bf16 and under DDP."""

import copy
import importlib.util
import json
import random
import socket

import pytest
import torch

from assistant.pm import PMScorer, PreferenceModel, load_pm, save_pm
from tests.tinymodels import tiny_causal_lm, tiny_encoder, tiny_tokenizer
from training.checkpoints import latest_checkpoint
from training.config import PMPConfig, PreferenceTrainingConfig
from training.data import Ranking
from training.loop import train_preference_model

FILLER = ["think", "sea", "here", "light", "waves", "poem", "short", "answer", "safer", "try"]
MARKER = "help"  # one token in the tiny tokenizer


@pytest.fixture(autouse=True)
def one_thread():
    # The machine is shared: keep each test to one core.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_pm(kind: str = "decoder", seed: int = 0, max_length: int = 48):
    """A fresh tiny PM and its own tokenizer (from_backbone adds the EOC token to it)."""
    tokenizer = copy.deepcopy(tiny_tokenizer())
    backbone = (tiny_causal_lm if kind == "decoder" else tiny_encoder)(tokenizer, seed=seed)
    torch.manual_seed(seed)  # the head, and the new EOC embedding row
    model = PreferenceModel.from_backbone(backbone, tokenizer, max_length=max_length)
    return model, tokenizer


def toy_rankings(n: int, seed: int) -> list[Ranking]:
    """Pairs and triples where the better response has more marker words (same word count)."""
    rng = random.Random(seed)
    rankings = []
    for _ in range(n):
        k = rng.choice([2, 2, 3])
        responses = []
        for markers in range(k - 1, -1, -1):  # best first: k-1 markers … none
            words = rng.choices(FILLER, k=4 + (k - 1 - markers)) + [MARKER] * markers
            rng.shuffle(words)
            responses.append(" ".join(words))
        order = list(range(k))
        rng.shuffle(order)  # the best is not always first
        question = " ".join(rng.choices(FILLER, k=3)) + "?"
        rankings.append(
            Ranking(
                [responses[i] for i in order],
                order,
                context=[{"role": "user", "content": question}],
            )
        )
    return rankings


def config(**overrides) -> PreferenceTrainingConfig:
    base = dict(
        lr=3e-3,
        warmup_steps=2,
        batch_size=8,
        max_steps=6,
        eval_every=0,
        checkpoint_every=0,
        seed=0,
        max_length=48,
        weight_decay=0.0,
        # float32: tests compare runs to 1e-4, beyond bf16 (the default where it is native);
        # the bf16 tests below ask for True or "auto".
        bf16=False,
    )
    return PreferenceTrainingConfig(**{**base, **overrides})


def test_it_learns_the_marker_lowers_the_loss_and_changes_every_parameter():
    model, tokenizer = tiny_pm("decoder")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train, held_out = toy_rankings(320, seed=1), toy_rankings(64, seed=2)
    calls = []
    result = train_preference_model(
        model,
        tokenizer,
        train,
        config(max_steps=80, eval_every=40, weight_decay=0.01),
        eval_set=held_out,
        on_step=lambda step, total, m: calls.append((step, total)),
    )
    assert result.status == "completed" and result.steps == result.total_steps == 80
    assert calls == [(s, 80) for s in range(1, 81)]
    assert [m["step"] for m in result.history if "eval_accuracy" in m] == [40, 80]
    first, last = result.history[0]["loss"], sum(m["loss"] for m in result.history[-10:]) / 10
    assert last < first - 0.2, (first, last)
    assert result.metrics["eval_accuracy"] > 0.9, result.metrics
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert unchanged == []


def test_it_stops_cleanly_when_asked():
    model, tokenizer = tiny_pm("decoder")
    polls = []

    def should_stop():
        polls.append(1)
        return len(polls) > 2

    result = train_preference_model(
        model, tokenizer, toy_rankings(64, 1), config(max_steps=10), should_stop=should_stop
    )
    assert result.status == "cancelled"
    assert result.steps == 2 and len(result.history) == 2 and result.total_steps == 10


def test_checkpoint_and_resume_continue_like_an_uninterrupted_run(tmp_path):
    # BERT has dropout: identical results need the RNG state restored, not just the weights.
    train = toy_rankings(64, 1)
    cfg = config(max_steps=6, checkpoint_every=3)

    model, tokenizer = tiny_pm("encoder")
    straight = train_preference_model(
        model, tokenizer, train, cfg, checkpoint_dir=tmp_path / "straight"
    )
    straight_params = {n: p.detach().clone() for n, p in model.named_parameters()}

    model, tokenizer = tiny_pm("encoder")
    polls = iter([False, False, False, True])  # stopped after 3 steps, as a worker restart would
    first = train_preference_model(
        model,
        tokenizer,
        train,
        cfg,
        should_stop=lambda: next(polls),
        checkpoint_dir=tmp_path / "resumed",
    )
    assert first.status == "cancelled" and first.steps == 3
    assert latest_checkpoint(tmp_path / "resumed").name == "step-00000003"

    model, tokenizer = tiny_pm("encoder")  # a fresh process: fresh weights, same seed
    resumed = train_preference_model(
        model, tokenizer, train, cfg, checkpoint_dir=tmp_path / "resumed"
    )
    assert resumed.status == "completed" and resumed.steps == straight.steps == 6
    assert len(resumed.history) == 6
    assert [m["loss"] for m in resumed.history] == pytest.approx(
        [m["loss"] for m in straight.history], rel=1e-5, abs=1e-6
    )
    for name, p in model.named_parameters():
        assert torch.allclose(p, straight_params[name], atol=1e-6), name

    checkpoint = latest_checkpoint(tmp_path / "resumed")
    meta = json.loads((checkpoint / "meta.json").read_text())
    assert meta["step"] == 6 and PreferenceTrainingConfig.from_dict(meta["config"]) == cfg
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "meta.json",
        "model.safetensors",
        "state.pt",
    ]
    assert not [p for p in (tmp_path / "resumed").iterdir() if p.name.startswith(".")]

    # The same folder with different data is refused rather than silently mixed.
    model, tokenizer = tiny_pm("encoder")
    with pytest.raises(ValueError, match="different training data"):
        train_preference_model(
            model, tokenizer, toy_rankings(64, 9), cfg, checkpoint_dir=tmp_path / "resumed"
        )


def test_a_checkpoint_with_the_retired_backbone_setting_still_resumes(tmp_path):
    # Checkpoints from before PreferenceTrainingConfig lost `backbone` (never read) hold it.
    train, cfg = toy_rankings(32, 1), config(max_steps=4, checkpoint_every=2)
    model, tokenizer = tiny_pm("decoder")
    polls = iter([False, False, True])
    train_preference_model(
        model, tokenizer, train, cfg, should_stop=lambda: next(polls), checkpoint_dir=tmp_path
    )
    meta_path = latest_checkpoint(tmp_path) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "config": {**meta["config"], "backbone": ""}}))

    model, tokenizer = tiny_pm("decoder")
    resumed = train_preference_model(model, tokenizer, train, cfg, checkpoint_dir=tmp_path)
    assert resumed.status == "completed" and resumed.steps == 4 and len(resumed.history) == 4


def test_bf16_autocast_grad_accum_and_gradient_checkpointing_run():
    model, tokenizer = tiny_pm("decoder")
    result = train_preference_model(
        model,
        tokenizer,
        toy_rankings(48, 1),
        config(max_steps=2, bf16=True, grad_accum=2, gradient_checkpointing=True),
        eval_set=toy_rankings(8, 2),
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
        train_preference_model(
            model,
            tokenizer,
            toy_rankings(16, 1),
            config(max_steps=1, bf16="auto"),
            eval_set=toy_rankings(4, 2),
        )
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


def test_binary_and_imitation_baselines_run():
    model, tokenizer = tiny_pm("encoder")
    binary = train_preference_model(
        model,
        tokenizer,
        toy_rankings(32, 1),
        config(max_steps=2, loss="binary"),
        eval_set=toy_rankings(8, 2),
    )
    assert binary.steps == 2 and "eval_loss" in binary.metrics

    # The imitation baseline trains the causal LM itself; its "reward" is the log-probability.
    tokenizer = copy.deepcopy(tiny_tokenizer())
    lm = tiny_causal_lm(tokenizer)
    before = lm.model.norm.weight.detach().clone()
    imitation = train_preference_model(
        lm,
        tokenizer,
        toy_rankings(32, 1),
        config(max_steps=3, loss="imitation"),
        eval_set=toy_rankings(8, 2),
    )
    assert imitation.steps == 3 and imitation.history[-1]["loss"] > 0
    assert 0.0 <= imitation.metrics["eval_accuracy"] <= 1.0
    assert not torch.equal(lm.model.norm.weight, before)
    with pytest.raises(ValueError, match="causal LM"):
        train_preference_model(lm, tokenizer, toy_rankings(32, 1), config(loss="ranked"))


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


# --- DDP -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        model, tokenizer = tiny_pm("decoder", seed=rank)  # different inits: DDP syncs them
        result = train_preference_model(
            model,
            tokenizer,
            toy_rankings(64, 1),
            config(max_steps=3, batch_size=4),
            checkpoint_dir=f"{out_dir}/checkpoints",
            device="cpu",
        )
        torch.save(
            {
                "params": {n: p.detach() for n, p in model.named_parameters()},
                "steps": result.steps,
                "loss": [m["loss"] for m in result.history],
            },
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_ddp_two_gloo_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert rank0["steps"] == rank1["steps"] == 3
    assert rank0["loss"] == rank1["loss"]  # averaged over ranks
    for name, p in rank0["params"].items():
        assert torch.equal(p, rank1["params"][name]), name
    # Only rank 0 wrote checkpoints, once at the end.
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000003"]


def test_packed_and_one_row_per_response_training_take_the_same_steps():
    losses = {}
    for pack in (True, False):
        model, tokenizer = tiny_pm("decoder")
        result = train_preference_model(
            model, tokenizer, toy_rankings(48, seed=3), config(max_steps=4, pack_context=pack)
        )
        losses[pack] = [m["loss"] for m in result.history]
    # Same maths, different float summation order: equal to rounding.
    assert losses[True] == pytest.approx(losses[False], abs=1e-4)


def test_the_attention_kernel_is_chosen_for_training_and_given_back():
    losses = {}
    for attention, used in (("eager", "eager"), ("sdpa", "sdpa"), ("auto", "eager")):  # CPU
        model, tokenizer = tiny_pm("decoder")
        before = model.backbone.config._attn_implementation
        seen = []
        result = train_preference_model(
            model,
            tokenizer,
            toy_rankings(24, seed=4),
            config(max_steps=2, attention=attention),
            on_step=lambda *_, seen=seen, model=model: seen.append(
                model.backbone.config._attn_implementation
            ),
        )
        losses[attention] = [m["loss"] for m in result.history]
        assert seen == [used, used]
        assert model.backbone.config._attn_implementation == before
    assert losses["eager"] == pytest.approx(losses["sdpa"], abs=1e-4)
    with pytest.raises(ValueError, match="attention must be one of"):
        config(attention="flash")
