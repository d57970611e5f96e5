"""The training loop on tiny random PMs: it learns, cancels, resumes, trains the baselines,
packs, picks the attention kernel and runs under DDP. bf16 and the config:
test_loop_precision_and_config.py; LoRA: test_loop_lora.py."""

import copy
import json
import socket

import pytest
import torch

from tests.tinymodels import tiny_causal_lm, tiny_tokenizer
from tests.training.toy_pm import config, tiny_pm, toy_rankings, toy_train
from training.checkpoints import latest_checkpoint
from training.config import PreferenceTrainingConfig
from training.loop import train_preference_model

# The machine is shared: each test keeps to one core (tests/training/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_binary_and_imitation_baselines_run():
    model, tokenizer = tiny_pm("encoder")
    binary = toy_train(model, tokenizer, 32, max_steps=2, loss="binary")
    assert binary.steps == 2 and "eval_loss" in binary.metrics

    # The imitation baseline trains the causal LM itself; its "reward" is the log-probability.
    tokenizer = copy.deepcopy(tiny_tokenizer())
    lm = tiny_causal_lm(tokenizer)
    before = lm.model.norm.weight.detach().clone()
    imitation = toy_train(lm, tokenizer, 32, max_steps=3, loss="imitation")
    assert imitation.steps == 3 and imitation.history[-1]["loss"] > 0
    assert 0.0 <= imitation.metrics["eval_accuracy"] <= 1.0
    assert not torch.equal(lm.model.norm.weight, before)
    with pytest.raises(ValueError, match="causal LM"):
        train_preference_model(lm, tokenizer, toy_rankings(32, 1), config(loss="ranked"))


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
    # On a CPU "auto" is the segment attention for a decoder that packs (flat rows, no
    # padding: the same losses), eager for an encoder.
    runs = (
        ("eager", "eager", "decoder"),
        ("sdpa", "sdpa", "decoder"),
        ("auto", "alignlab_segments", "decoder"),
        ("auto", "eager", "encoder"),
    )
    for attention, used, kind in runs:
        model, tokenizer = tiny_pm(kind)
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
        losses[attention, kind] = [m["loss"] for m in result.history]
        assert seen == [used, used]
        assert model.backbone.config._attn_implementation == before
    assert losses["eager", "decoder"] == pytest.approx(losses["sdpa", "decoder"], abs=1e-4)
    assert losses["auto", "decoder"] == pytest.approx(losses["eager", "decoder"], abs=1e-4)
    with pytest.raises(ValueError, match="attention must be one of"):
        config(attention="flash")
