"""Preference-model training: the ranked, binary and imitation losses on the step runner.

A `RankingObjective` plugs the losses into training/runner.py, which does the steps, gradient
accumulation, bf16 autocast, evaluation, resumable checkpoints, the progress callback, the
cancellation poll and DDP (under `torchrun`: each rank takes every world-th batch, only rank 0
writes checkpoints and reports progress). Here: what the losses add around it, gradient
checkpointing and LoRA, and the held-out evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Unpack

import torch

from assistant.hardware import bf16_autocast
from assistant.pm import PreferenceModel
from assistant.segment_attention import SEGMENT_ATTENTION
from training.config import PreferenceTrainingConfig
from training.data import LengthGroupedBatchSampler, Ranking, RankingCollator, rankings_hash
from training.losses import (
    binary_discrimination_loss,
    binary_labels,
    imitation_loss,
    ordered_pairs,
    pairwise_accuracy,
    ranked_preference_loss,
    sequence_logprobs,
)
from training.runner import Objective, RunOptions, TrainResult, placement, run_steps, unwrapped

logger = logging.getLogger(__name__)


class RankingObjective(Objective):
    """A PM's ranked or binary loss, or the imitation baseline's, on rankings."""

    label = "training"
    noun = "rankings"
    loss_name = "loss"
    eval_key = "eval_accuracy"
    logger = logger

    def __init__(self, model, tokenizer, train, config, *, eval_set=None, device=None):
        self.model, self.tokenizer, self.train, self.config = model, tokenizer, train, config
        self.eval_set, self.held_out, self.device = eval_set, bool(eval_set), device
        self.collator = None

    def collate(self, indices):
        if self.collator is None:
            # Built at the first batch, after the runner switched the attention kernel: the
            # segment attention takes flat rows, the others one padded row per ranking.
            self.collator = ranking_collator(self.model, self.tokenizer, self.config)
        return self.collator([self.train[i] for i in indices])

    def loss(self, model, batch, autocast):
        with autocast:
            loss, rewards = loss_and_rewards(model, batch, self.config.loss)
        return loss, pairwise_accuracy(rewards.detach(), batch["ranks"], batch["group"])

    def step_metrics(self, stats, mean_over_ranks):
        # None, not NaN, when no pair was untied: JSON columns refuse NaN.
        return {"accuracy": _none_if_nan(mean_over_ranks(_nanmean(stats)))}

    def evaluate(self):
        return evaluate(self.model, self.tokenizer, self.eval_set, self.config, device=self.device)


def train_preference_model(
    model,
    tokenizer,
    train: list[Ranking],
    config: PreferenceTrainingConfig,
    *,
    eval_set: Sequence[Ranking] | None = None,
    device: str | torch.device | None = None,
    **run: Unpack[RunOptions],
) -> TrainResult:
    """Train `model` (a PreferenceModel; a causal LM for loss="imitation") on `train` in place.

    `run` (on_step, should_stop, checkpoint_dir, resume: training.runner.RunOptions) goes on
    to the runner. Called again with the same `checkpoint_dir` it resumes from the newest
    checkpoint there (under DDP that folder must be visible to every rank, as it is with
    torchrun on one node).
    """
    where = placement(device, ddp=True)
    torch.manual_seed(config.seed)  # dropout; the batch order has its own generator
    imitation = config.loss == "imitation"
    if imitation == isinstance(model, PreferenceModel):
        raise ValueError(
            "loss='imitation' trains a causal LM (AutoModelForCausalLM); 'ranked' and 'binary' "
            f"train a PreferenceModel, not a {type(model).__name__}"
        )
    if config.gradient_checkpointing:
        # Trades compute for memory; the cache is useless (and refused) in training anyway.
        backbone = getattr(model, "backbone", model)
        # transformers 5 renamed it; the old name still works but warns.
        enable = getattr(backbone, "activation_checkpointing_enable", None)
        (enable or backbone.gradient_checkpointing_enable)()
    if config.lora:
        model = _with_lora(model, config)
    objective = RankingObjective(
        model, tokenizer, train, config, eval_set=eval_set, device=where.device
    )
    lengths = [max(len(text) for text in ranking.texts()) for ranking in train]
    sampler = LengthGroupedBatchSampler(
        lengths, config.batch_size, seed=config.seed, mega_batch_mult=config.mega_batch_mult
    )
    result = run_steps(
        model,
        objective,
        config,
        sampler,
        where=where,
        data_hash=rankings_hash(train),
        **run,
    )
    if config.lora:
        # The caller gets an ordinary model back, the adapters folded into the weights they
        # adapt: `save_pm` / `save_pretrained` then write what `load_pm` / `from_pretrained` read.
        # Checkpoints keep the adapters apart, so a resume still finds what it saved.
        model = merge_lora(model)
    model.eval()
    return result


def ranking_collator(model, tokenizer, config: PreferenceTrainingConfig) -> RankingCollator:
    """The collator for `model` as it is now: packed where it can pack, and flat (one row, no
    padding) where its backbone runs the segment attention."""
    imitation = config.loss == "imitation"
    pack = config.pack_context and not imitation and unwrapped(model).can_pack
    return RankingCollator(
        tokenizer,
        # The LM baseline has no EOC token: it ends each response with EOS, and learns to stop.
        eoc_token_id=tokenizer.eos_token_id if imitation else model.eoc_token_id,
        max_length=config.max_length,
        margin_scale=config.margin_scale if config.margin_from_strength else None,
        response_mask=imitation,
        pack=pack,
        flat=pack and unwrapped(model).attention == SEGMENT_ATTENTION,
        weighted=config.weighted,
    )


def loss_and_rewards(model, batch: dict, kind: str):
    """The batch's loss and one reward per response (a log-probability for the LM baseline)."""
    ranks, group = batch["ranks"], batch["group"]
    if kind == "imitation":
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        response = batch["input_ids"].masked_fill(~batch["response_mask"], -100)
        preferred = binary_labels(ranks, group).bool()
        loss = imitation_loss(logits, response.masked_fill(~preferred[:, None], -100))
        return loss, sequence_logprobs(logits.detach(), response)
    packed = {
        key: batch[key] for key in ("position_ids", "reward_index", "segments") if key in batch
    }
    rewards = model(batch["input_ids"], batch["attention_mask"], **packed)
    if kind == "binary":
        return binary_discrimination_loss(rewards, binary_labels(ranks, group)), rewards
    loss = ranked_preference_loss(rewards, ranks, group, batch["margin"], batch.get("weight"))
    return loss, rewards


@torch.no_grad()
def evaluate(
    model, tokenizer, rankings: Sequence[Ranking], config: PreferenceTrainingConfig, *, device=None
) -> dict:
    """Held-out loss (mean over rankings) and pairwise accuracy (over all ordered pairs)."""
    device = torch.device(device or next(model.parameters()).device)
    collate = ranking_collator(model, tokenizer, config)
    was_training = model.training
    model.eval()
    # Longest first, in order: the same numbers on every call and every rank.
    order = sorted(range(len(rankings)), key=lambda i: -max(map(len, rankings[i].texts())))
    autocast = bf16_autocast(config.bf16, device)
    loss_sum, correct, pairs = 0.0, 0.0, 0
    for start in range(0, len(order), config.batch_size):
        chunk = [rankings[i] for i in order[start : start + config.batch_size]]
        batch = {key: value.to(device) for key, value in collate(chunk).items()}
        with autocast:
            loss, rewards = loss_and_rewards(model, batch, config.loss)
        n_pairs = ordered_pairs(batch["ranks"], batch["group"])[0].numel()
        loss_sum += loss.item() * len(chunk)
        if n_pairs:
            correct += pairwise_accuracy(rewards, batch["ranks"], batch["group"]) * n_pairs
            pairs += n_pairs
    model.train(was_training)
    return {
        "eval_loss": loss_sum / max(1, len(rankings)),
        "eval_accuracy": correct / pairs if pairs else None,
        "eval_pairs": pairs,
    }


def _none_if_nan(value: float) -> float | None:
    return None if value != value else value


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if v == v]
    return sum(kept) / len(kept) if kept else float("nan")


def _with_lora(model, config: PreferenceTrainingConfig):
    """Freeze the backbone and train LoRA adapters on its linear layers (and the PM head)."""
    from peft import LoraConfig, get_peft_model  # config validation checked it is installed

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules="all-linear")
    if hasattr(model, "backbone"):
        model.backbone = get_peft_model(model.backbone, lora)
        return model
    # peft injects the adapters into `model` itself; the wrapper it returns only drives them.
    return get_peft_model(model, lora)


def merge_lora(model):
    """Fold LoRA adapters into the weights they adapt, in place, and unfreeze them again.

    For a PM the backbone is unwrapped; for a causal LM (imitation) the caller's model object
    is the one peft injected into, and merging restores its own plain layers.
    """
    from peft import PeftModel

    if isinstance(getattr(model, "backbone", None), PeftModel):
        model.backbone = model.backbone.merge_and_unload()
    elif isinstance(model, PeftModel):
        model = model.merge_and_unload()
    model.requires_grad_(True)  # peft froze the backbone; the plain model trains as any other
    return model
