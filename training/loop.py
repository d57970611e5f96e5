"""The preference-model training loop: one flat function, read top to bottom.

AdamW with linear warmup and decay, gradient accumulation, optional bf16 autocast and gradient
checkpointing, evaluation and resumable checkpoints every N steps, a progress callback and a
cancellation poll. Under `torchrun` (torch.distributed initialised) it trains with DDP: each rank
takes every world-th batch, only rank 0 writes checkpoints and reports progress.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_model, save_model
from torch.nn.parallel import DistributedDataParallel

from assistant.hardware import bf16_autocast, bf16_warning
from assistant.pm import PreferenceModel
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

CHECKPOINT_FORMAT = "alignlab-checkpoint/1"
WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "state.pt"
META_NAME = "meta.json"
KEEP_CHECKPOINTS = 2  # the newest two: one may be mid-write when the worker dies

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    status: str  # "completed" or "cancelled"
    steps: int  # optimizer steps done, including those before a resume
    total_steps: int
    metrics: dict = field(default_factory=dict)  # the last step's metrics (+ the final eval)
    history: list[dict] = field(default_factory=list)  # one dict per optimizer step
    checkpoint: str | None = None  # the last checkpoint written, if any


def train_preference_model(
    model,
    tokenizer,
    train: list[Ranking],
    config: PreferenceTrainingConfig,
    *,
    eval_set: Sequence[Ranking] | None = None,
    on_step: Callable[[int, int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train `model` (a PreferenceModel; a causal LM for loss="imitation") on `train` in place.

    Called again with the same `checkpoint_dir` it resumes from the newest checkpoint there
    (under DDP that folder must be visible to every rank, as it is with torchrun on one node).
    """
    # --- where we run ----------------------------------------------------------------------
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if device is None:
        local = int(os.environ.get("LOCAL_RANK", rank))
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
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
    model.to(device).train()
    attention = _set_attention(model, config, device)

    # --- data: each rank takes every world-th batch, all ranks the same number of steps -----
    collate = _collator(model, tokenizer, config)
    lengths = [max(len(text) for text in ranking.texts()) for ranking in train]
    sampler = LengthGroupedBatchSampler(
        lengths, config.batch_size, seed=config.seed, mega_batch_mult=config.mega_batch_mult
    )
    steps_per_epoch = len(sampler) // world // config.grad_accum
    if steps_per_epoch < 1:
        raise ValueError(
            f"{len(train)} rankings make {len(sampler)} batches of {config.batch_size}: too few "
            f"for {world} process(es) x grad_accum {config.grad_accum}"
        )
    micro_per_epoch = steps_per_epoch * config.grad_accum  # the tail of an epoch is dropped
    total = config.max_steps or config.epochs * steps_per_epoch

    def rank_batches(epoch: int) -> list[list[int]]:
        return sampler.batches(epoch)[rank::world][:micro_per_epoch]

    # --- optimizer and schedule: decay matrices only, linear warmup then linear decay -------
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config, device)
    scheduler = make_scheduler(optimizer, config, total)

    # --- resume from the newest checkpoint (a worker restart calls us again) ----------------
    data_hash = rankings_hash(train)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    step, history, last_checkpoint = resume_state(
        checkpoint_dir if resume else None, model, optimizer, scheduler, config, data_hash
    )

    # DDP after loading, so every rank starts from the same (rank 0's, broadcast) weights.
    ddp = None
    if distributed:
        ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    forward_model = ddp or model
    # bf16 "auto": only where the device computes it natively; an explicit request where it
    # is emulated runs, far slower, with a warning (the service also puts it in the run's log).
    if rank == 0 and (warning := bf16_warning(config.bf16, device)):
        logger.warning("training: %s", warning)
    autocast = bf16_autocast(config.bf16, device)

    def save(metrics: dict) -> str:
        return str(
            save_checkpoint(
                checkpoint_dir,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                step=step,
                config=config,
                metrics=metrics,
                history=history,
                data_hash=data_hash,
            )
        )

    # --- the loop ---------------------------------------------------------------------------
    status, metrics = "completed", dict(history[-1]) if history else {}
    cached_epoch, batches = -1, []
    while step < total:
        if _stop_requested(should_stop, distributed, device):
            status = "cancelled"
            break
        model.train()
        loss_sum, accuracies = 0.0, []
        for micro in range(config.grad_accum):
            # The position in the data follows from the step alone, so a resume picks up here.
            epoch, offset = divmod(step * config.grad_accum + micro, micro_per_epoch)
            if epoch != cached_epoch:
                cached_epoch, batches = epoch, rank_batches(epoch)
            batch = collate([train[i] for i in batches[offset]])
            batch = {key: value.to(device) for key, value in batch.items()}
            # Under DDP, all-reduce gradients on the last micro-batch only.
            last = micro == config.grad_accum - 1
            with nullcontext() if ddp is None or last else ddp.no_sync():
                with autocast:
                    loss, rewards = _loss_and_rewards(forward_model, batch, config.loss)
                (loss / config.grad_accum).backward()
            loss_sum += loss.item() / config.grad_accum
            accuracies.append(pairwise_accuracy(rewards.detach(), batch["ranks"], batch["group"]))
        step += 1
        metrics = {
            "step": step,
            "loss": _mean_over_ranks(loss_sum, distributed, device),
            # None, not NaN, when no pair was untied: JSON columns refuse NaN.
            "accuracy": _none_if_nan(_mean_over_ranks(_nanmean(accuracies), distributed, device)),
            **optimizer_step(params, optimizer, scheduler, config),
        }
        if eval_set and config.eval_every and step % config.eval_every == 0:
            metrics.update(evaluate(model, tokenizer, eval_set, config, device=device))
        history.append(metrics)
        if on_step is not None and rank == 0:
            on_step(step, total, metrics)
        if (
            checkpoint_dir
            and rank == 0
            and config.checkpoint_every
            and (step % config.checkpoint_every == 0)
        ):
            last_checkpoint = save(metrics)

    # --- the end: a final eval and checkpoint, unless this step already had them ------------
    if eval_set and status == "completed" and "eval_accuracy" not in metrics:
        metrics = {**metrics, **evaluate(model, tokenizer, eval_set, config, device=device)}
        if history:
            history[-1] = metrics
    if rank == 0 and needs_final_checkpoint(checkpoint_dir, step, last_checkpoint):
        last_checkpoint = save(metrics)
    if distributed:
        dist.barrier()  # nobody returns (and maybe exits) while rank 0 still writes
    _restore_attention(model, attention)
    if config.lora:
        # The caller gets an ordinary model back, the adapters folded into the weights they
        # adapt: `save_pm` / `save_pretrained` then write what `load_pm` / `from_pretrained` read.
        # Checkpoints keep the adapters apart, so a resume still finds what it saved.
        model = merge_lora(model)
    model.eval()
    return TrainResult(status, step, total, metrics, history, last_checkpoint)


def resume_state(
    checkpoint_dir: Path | None, model, optimizer, scheduler, config, data_hash: str
) -> tuple[int, list[dict], str | None]:
    """(step, metric history, checkpoint path) after loading the newest checkpoint in
    `checkpoint_dir` into the model, optimizer and schedule; (0, [], None) when there is none."""
    latest = latest_checkpoint(checkpoint_dir) if checkpoint_dir else None
    if latest is None:
        return 0, [], None
    step, history = _load_checkpoint(
        latest, model, optimizer, scheduler, config=config, data_hash=data_hash
    )
    return step, history, str(latest)


def optimizer_step(params: list, optimizer, scheduler, config) -> dict:
    """Clip, step the optimizer and the schedule, clear the gradients; the step's lr (and
    gradient norm, when clipping) for its metrics."""
    metrics = {}
    if config.max_grad_norm:
        norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm).item()
        metrics["grad_norm"] = norm
    metrics["lr"] = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return metrics


def needs_final_checkpoint(checkpoint_dir, step: int, last_checkpoint: str | None) -> bool:
    """Whether a run that stopped at `step` still has to write it (it did not just save it)."""
    return (
        bool(checkpoint_dir) and step > 0 and not (last_checkpoint or "").endswith(_step_name(step))
    )


def make_optimizer(params: list, config, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (biases and norms are left alone)."""
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=config.lr,
        # One kernel over all parameters: on this CPU 8x faster a step than the foreach path.
        fused=device.type in {"cuda", "cpu"},
    )


def make_scheduler(optimizer, config, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `config.warmup_steps`, then linear decay to 0 at step `total`."""

    def lr_factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        return max(0.0, (total - step) / max(1, total - config.warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


def _set_attention(model, config: PreferenceTrainingConfig, device: torch.device) -> str | None:
    """Switch the backbone to the configured attention kernel; return the one it had."""
    wanted = config.attention
    if wanted == "auto":
        wanted = "eager" if device.type == "cpu" else "sdpa"
    backbone = getattr(_unwrapped(model), "backbone", _unwrapped(model))
    before = getattr(backbone.config, "_attn_implementation", None)
    if before != wanted and hasattr(backbone, "set_attn_implementation"):
        backbone.set_attn_implementation(wanted)
    return before


def _restore_attention(model, before: str | None) -> None:
    backbone = getattr(_unwrapped(model), "backbone", _unwrapped(model))
    if before is not None and backbone.config._attn_implementation != before:
        backbone.set_attn_implementation(before)


def _collator(model, tokenizer, config: PreferenceTrainingConfig) -> RankingCollator:
    imitation = config.loss == "imitation"
    return RankingCollator(
        tokenizer,
        # The LM baseline has no EOC token: it ends each response with EOS, and learns to stop.
        eoc_token_id=tokenizer.eos_token_id if imitation else model.eoc_token_id,
        max_length=config.max_length,
        margin_scale=config.margin_scale if config.margin_from_strength else None,
        response_mask=imitation,
        pack=config.pack_context and not imitation and _unwrapped(model).can_pack,
        weighted=config.weighted,
    )


def _unwrapped(model):
    # LoRA wraps the backbone, not the PM; DDP wraps the PM.
    return getattr(model, "module", model)


def _loss_and_rewards(model, batch: dict, kind: str):
    """The batch's loss and one reward per response (a log-probability for the LM baseline)."""
    ranks, group = batch["ranks"], batch["group"]
    if kind == "imitation":
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        response = batch["input_ids"].masked_fill(~batch["response_mask"], -100)
        preferred = binary_labels(ranks, group).bool()
        loss = imitation_loss(logits, response.masked_fill(~preferred[:, None], -100))
        return loss, sequence_logprobs(logits.detach(), response)
    packed = {key: batch[key] for key in ("position_ids", "reward_index") if key in batch}
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
    collate = _collator(model, tokenizer, config)
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
            loss, rewards = _loss_and_rewards(model, batch, config.loss)
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


# --- checkpoints -------------------------------------------------------------------------------


def _step_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(
    checkpoint_dir: str | os.PathLike,
    *,
    model,
    optimizer,
    scheduler,
    step: int,
    config: PreferenceTrainingConfig,
    metrics: dict,
    history: list[dict],
    data_hash: str,
) -> Path:
    """Write `<dir>/step-NNNNNNNN/` (weights, optimizer/scheduler/RNG state, meta) atomically."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    target = checkpoint_dir / _step_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=checkpoint_dir))
    try:
        save_model(model, str(tmp / WEIGHTS_NAME))
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(
            {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng,
                "history": history,
            },
            tmp / STATE_NAME,
        )
        meta = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "config": asdict(config),
            "config_class": type(config).__name__,
            "metrics": metrics,
            "dataset_hash": data_hash,
        }
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in _checkpoints(checkpoint_dir)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _checkpoints(checkpoint_dir: Path) -> list[Path]:
    # Only complete ones: meta.json is written last, and temp dirs start with a dot.
    found = [p for p in checkpoint_dir.glob("step-*") if (p / META_NAME).exists()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(checkpoint_dir: str | os.PathLike | None) -> Path | None:
    """The newest complete checkpoint under `checkpoint_dir`, or None."""
    if checkpoint_dir is None or not Path(checkpoint_dir).is_dir():
        return None
    found = _checkpoints(Path(checkpoint_dir))
    return found[-1] if found else None


def _load_checkpoint(path: Path, model, optimizer, scheduler, *, config, data_hash: str):
    meta = json.loads((path / META_NAME).read_text())
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a training checkpoint ({meta.get('format')!r})")
    if meta["dataset_hash"] != data_hash:
        raise ValueError(f"{path} was written for different training data; resume=False?")
    if _trajectory(meta["config"]) != _trajectory(json.loads(json.dumps(asdict(config)))):
        raise ValueError(f"{path} was written with a different config; resume=False?")
    load_model(model, str(path / WEIGHTS_NAME), strict=True, device=str(_device_of(model)))
    state = torch.load(path / STATE_NAME, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(_as_python_rng_state(state["rng"]["python"]))
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state["step"], list(state["history"])


def _trajectory(config: dict) -> dict:
    # How often to eval or checkpoint may change across a restart; nothing else may.
    return {k: v for k, v in config.items() if k not in {"eval_every", "checkpoint_every"}}


def _as_python_rng_state(state):
    # torch.load(weights_only=True) may hand tuples back as lists; random.setstate wants tuples.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


# --- small helpers -----------------------------------------------------------------------------


def _stop_requested(should_stop, distributed: bool, device) -> bool:
    """Poll the cancellation flag; under DDP any rank's yes stops all ranks at the same step."""
    wanted = bool(should_stop()) if should_stop is not None else False
    if not distributed:
        return wanted
    flag = torch.tensor([1.0 if wanted else 0.0], device=_collective_device(device))
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _mean_over_ranks(value: float, distributed: bool, device) -> float:
    if not distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device(device))
    dist.all_reduce(tensor)
    return tensor.item() / dist.get_world_size()


def _collective_device(device) -> torch.device:
    # gloo reduces CPU tensors, nccl CUDA ones.
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


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
