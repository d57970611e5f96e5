"""The one training step runner: every loss plugs into it as an `Objective`.

`run_steps` does what is the same for every kind of training run, preference models
(training/loop.py) and context distillation (training/distill.py) alike:

* the schedule: `grad_accum` micro-batches from a LengthGroupedBatchSampler per optimizer step,
  `max_steps` steps or `epochs` epochs of them (the tail of an epoch is dropped); the position
  in the data follows from the step alone, so a resume picks up where the last run stopped;
* AdamW with weight decay on matrices only, linear warmup then linear decay, gradient clipping;
* bf16 autocast as configured ("auto": where the device computes it natively; an explicit
  request where it is only emulated runs, far slower, with a warning);
* the configured attention kernel while training, the model's own restored at the end;
* a held-out evaluation every `eval_every` steps and at the end; resumable checkpoints every
  `checkpoint_every` steps and at the end (training/checkpoints.py), resumed from the newest
  one, which must be of the same data (`data_hash`) and config;
* a cancellation poll before each step, a progress callback after it;
* under `torchrun` (torch.distributed initialised, for a run placed with `ddp=True`): DDP,
  each rank taking every world-th batch, only rank 0 writing checkpoints and reporting.

The objective says what differs: how items become a batch, the loss, the step's own metrics,
the held-out evaluation. Plain torch, no Django.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypedDict

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from assistant.hardware import bf16_autocast, bf16_warning
from assistant.segment_attention import SEGMENT_ATTENTION, SEGMENT_MODEL_TYPES, can_use_segments
from training.checkpoints import needs_final_checkpoint, resume_state, save_checkpoint
from training.compiled import compile_layers, uncompile_layers, wants_compiled_layers
from training.data import LengthGroupedBatchSampler
from training.heap import retained_heap

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    status: str  # "completed" or "cancelled"
    steps: int  # optimizer steps done, including those before a resume
    total_steps: int
    metrics: dict = field(default_factory=dict)  # the last step's metrics (+ the final eval)
    history: list[dict] = field(default_factory=list)  # one dict per optimizer step
    checkpoint: str | None = None  # the last checkpoint written, if any


class RunOptions(TypedDict, total=False):
    """What the caller of a kind's training function passes on to `run_steps` as it is."""

    on_step: Callable[[int, int, dict], None] | None  # after each step: (step, total, metrics)
    should_stop: Callable[[], bool] | None  # polled before each step: True cancels the run
    checkpoint_dir: str | os.PathLike | None  # where checkpoints go, and a resume looks
    resume: bool  # go on from the newest checkpoint there (default True)


class Objective:
    """What one loss plugs into `run_steps`: a subclass sets the names and fills in the methods."""

    label = "training"  # how the run's warnings name it
    noun = "items"  # what the sampler's items are, for the too-little-data error
    loss_name = "loss"  # the step metric that holds the loss (mean over the micro-batches)
    eval_key = "eval_loss"  # in the metrics of a step that has been evaluated
    # A held-out metric measured once before the first step of a fresh run (`baseline`): kept
    # in the first step's metrics and carried into the final ones. None: no baseline.
    baseline_key: str | None = None
    held_out = False  # whether there is a held-out set to evaluate on
    logger = logger  # where the bf16 warning goes

    def collate(self, indices: list[int]) -> dict[str, Tensor]:
        """The micro-batch of the sampler's items `indices` (the runner moves it to the device)."""
        raise NotImplementedError

    def loss(self, model, batch: dict[str, Tensor], autocast) -> tuple[Tensor, object]:
        """The micro-batch's loss, which the runner backpropagates, and what `step_metrics`
        wants of it. `model` is the one to call (under DDP its wrapper); the forward runs in
        `autocast`."""
        raise NotImplementedError

    def step_metrics(self, stats: list, mean_over_ranks: Callable[[float], float]) -> dict:
        """The step's own metrics (after the loss) from its micro-batches' `loss` extras."""
        return {}

    def evaluate(self) -> dict:
        """The held-out metrics, one of them `eval_key` (called only when `held_out`)."""
        raise NotImplementedError

    def baseline(self) -> float:
        """The value of `baseline_key` before training (called only when `held_out`)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Placement:
    """Where a run trains: its device and, under torchrun, its rank among `world` processes."""

    device: torch.device
    ddp: bool = False  # the run trains with DDP where torch.distributed is initialised
    distributed: bool = False  # ...and it is
    rank: int = 0
    world: int = 1


def placement(device: str | torch.device | None = None, *, ddp: bool = False) -> Placement:
    """`device`, else the GPU (with `ddp`, this rank's: LOCAL_RANK), else the CPU; with `ddp`
    the run is one rank of an initialised torch.distributed process group."""
    distributed = ddp and dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if device is None:
        if not torch.cuda.is_available():
            device = "cpu"
        else:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}" if ddp else "cuda"
    return Placement(torch.device(device), ddp, distributed, rank, world)


@dataclass
class _Plan:
    """Which of the sampler's items each micro-batch of each optimizer step takes on this rank."""

    sampler: LengthGroupedBatchSampler
    rank: int
    world: int
    grad_accum: int
    micro_per_epoch: int
    total: int
    _epoch: int = -1
    _batches: list = field(default_factory=list)

    @classmethod
    def of(cls, sampler, config, where: Placement, noun: str) -> _Plan:
        # Each rank takes every world-th batch; all ranks make the same number of steps.
        steps_per_epoch = len(sampler) // where.world // config.grad_accum
        if steps_per_epoch < 1:
            processes = f"{where.world} process(es) x " if where.ddp else ""
            raise ValueError(
                f"{len(sampler.lengths)} {noun} make {len(sampler)} batches of "
                f"{config.batch_size}: too few for {processes}grad_accum {config.grad_accum}"
            )
        micro_per_epoch = steps_per_epoch * config.grad_accum  # the tail of an epoch is dropped
        total = config.max_steps or config.epochs * steps_per_epoch
        return cls(sampler, where.rank, where.world, config.grad_accum, micro_per_epoch, total)

    def batch(self, step: int, micro: int) -> list[int]:
        """The items of micro-batch `micro` of the step after `step` steps."""
        epoch, offset = divmod(step * self.grad_accum + micro, self.micro_per_epoch)
        if epoch != self._epoch:
            batches = self.sampler.batches(epoch)[self.rank :: self.world]
            self._epoch, self._batches = epoch, batches[: self.micro_per_epoch]
        return self._batches[offset]


@dataclass
class _Steps:
    """The optimizer steps of one run: the model, the objective, the optimizer and the plan."""

    model: object
    objective: Objective
    config: object
    where: Placement
    plan: _Plan
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    data_hash: str = ""
    checkpoint_dir: Path | None = None
    attention: str | None = None  # the kernel the model had before, restored at the end
    ddp: DistributedDataParallel | None = None
    autocast: object = None

    def step(self, step: int) -> dict:
        """Optimizer step `step + 1`: its micro-batches, then the update; its metrics."""
        config, objective, device = self.config, self.objective, self.where.device
        self.model.train()
        loss_sum, stats = 0.0, []
        for micro in range(config.grad_accum):
            batch = objective.collate(self.plan.batch(step, micro))
            batch = {key: value.to(device) for key, value in batch.items()}
            # Under DDP, all-reduce gradients on the last micro-batch only.
            last = micro == config.grad_accum - 1
            with nullcontext() if self.ddp is None or last else self.ddp.no_sync():
                loss, stat = objective.loss(self.ddp or self.model, batch, self.autocast)
                (loss / config.grad_accum).backward()
            loss_sum += loss.item() / config.grad_accum
            stats.append(stat)
        mean = partial(_mean_over_ranks, distributed=self.where.distributed, device=device)
        return {
            "step": step + 1,
            objective.loss_name: mean(loss_sum),
            **objective.step_metrics(stats, mean),
            **optimizer_step(self.params, self.optimizer, self.scheduler, config),
        }

    def save(self, step: int, metrics: dict, history: list[dict]) -> str:
        return str(
            save_checkpoint(
                self.checkpoint_dir,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                step=step,
                config=self.config,
                metrics=metrics,
                history=history,
                data_hash=self.data_hash,
            )
        )


def run_steps(
    model,
    objective: Objective,
    config,
    sampler: LengthGroupedBatchSampler,
    *,
    where: Placement,
    data_hash: str,
    on_step: Callable[[int, int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train `model` in place on `objective` for the configured steps (the module docstring).

    The caller seeds torch and prepares the model first (LoRA, gradient checkpointing). Called
    again with the same `checkpoint_dir` it resumes from the newest checkpoint there (under
    DDP that folder must be visible to every rank, as it is with torchrun on one node).
    On a CPU the C heap keeps its freed memory while the steps run (`training.heap`).
    """
    with retained_heap(where.device.type == "cpu"):
        try:
            return _run_steps(
                model, objective, config, sampler, where, data_hash,
                on_step, should_stop, checkpoint_dir, resume,
            )  # fmt: skip
        finally:
            uncompile_layers(model)  # eager again, whatever the run's end


def _run_steps(
    model, objective, config, sampler, where, data_hash, on_step, should_stop, checkpoint_dir,
    resume,
) -> TrainResult:  # fmt: skip
    steps, step, history, last_checkpoint = _start(
        model, objective, config, sampler, where, data_hash, checkpoint_dir, resume
    )
    checkpoint_dir, total = steps.checkpoint_dir, steps.plan.total
    key = objective.baseline_key
    baseline = {key: objective.baseline()} if key and objective.held_out and step == 0 else {}

    status, metrics = "completed", dict(history[-1]) if history else {}
    while step < total:
        if _stop_requested(should_stop, where):
            status = "cancelled"
            break
        metrics = steps.step(step)
        step += 1
        if step == 1:
            metrics.update(baseline)
        if objective.held_out and config.eval_every and step % config.eval_every == 0:
            metrics.update(objective.evaluate())
        history.append(metrics)
        if on_step is not None and where.rank == 0:
            on_step(step, total, metrics)
        every = config.checkpoint_every
        if checkpoint_dir and where.rank == 0 and every and step % every == 0:
            last_checkpoint = steps.save(step, metrics, history)

    # The end: a final eval and checkpoint, unless the last step already had them.
    if objective.held_out and status == "completed" and objective.eval_key not in metrics:
        metrics = {**metrics, **objective.evaluate()}
        if history:
            history[-1] = metrics
    if key and history and key in history[0]:
        metrics = {**metrics, key: history[0][key]}
    if where.rank == 0 and needs_final_checkpoint(checkpoint_dir, step, last_checkpoint):
        last_checkpoint = steps.save(step, metrics, history)
    if where.distributed:
        dist.barrier()  # nobody returns (and maybe exits) while rank 0 still writes
    restore_attention(model, steps.attention)
    return TrainResult(status, step, total, metrics, history, last_checkpoint)


def _start(model, objective, config, sampler, where, data_hash, checkpoint_dir, resume):
    """The run's steps, from the newest checkpoint where there is one (a worker restart calls
    `run_steps` again): (steps, steps done, metric history, that checkpoint)."""
    device = where.device
    model.to(device).train()
    trains_with = training_attention(model, config, device)
    attention = set_attention(model, trains_with)
    if wants_compiled_layers(
        model, config, device, attention=trains_with, distributed=where.distributed
    ):
        compile_layers(model)
    plan = _Plan.of(sampler, config, where, objective.noun)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config, device)
    scheduler = make_scheduler(optimizer, config, plan.total)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    step, history, last_checkpoint = resume_state(
        checkpoint_dir if resume else None, model, optimizer, scheduler, config, data_hash
    )
    steps = _Steps(model, objective, config, where, plan, params, optimizer, scheduler)
    steps.data_hash, steps.checkpoint_dir, steps.attention = data_hash, checkpoint_dir, attention
    if where.distributed:  # after loading, so every rank starts from rank 0's (broadcast) weights
        steps.ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if where.rank == 0 and (warning := bf16_warning(config.bf16, device)):
        objective.logger.warning("%s: %s", objective.label, warning)  # the service logs it too
    steps.autocast = bf16_autocast(config.bf16, device)
    return steps, step, history, last_checkpoint


# --- optimizer and schedule ---------------------------------------------------------------------


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


# --- the model around the steps -----------------------------------------------------------------


def device_of(model) -> torch.device:
    return next(model.parameters()).device


def unwrapped(model):
    # LoRA wraps the backbone, not the PM; DDP wraps the PM.
    return getattr(model, "module", model)


def set_attention(model, wanted: str) -> str | None:
    """Switch the backbone to the attention kernel `wanted` (`training_attention`); return the
    one it had."""
    backbone = getattr(unwrapped(model), "backbone", unwrapped(model))
    before = getattr(backbone.config, "_attn_implementation", None)
    if before != wanted and hasattr(backbone, "set_attn_implementation"):
        backbone.set_attn_implementation(wanted)
    return before


def training_attention(model, config, device: torch.device) -> str:
    """The attention kernel `model` trains with under `config` on `device`."""
    backbone = getattr(unwrapped(model), "backbone", unwrapped(model))
    flat = _flat_packs(unwrapped(model), config, backbone)
    if config.attention == SEGMENT_ATTENTION and not flat:
        raise ValueError(
            f"attention={SEGMENT_ATTENTION!r} trains a packing decoder PM (ranked or binary loss, "
            f"pack_context on, a {'/'.join(sorted(SEGMENT_MODEL_TYPES))} backbone)"
        )
    if config.attention != "auto":
        return config.attention
    if device.type != "cpu":
        return "sdpa"
    return SEGMENT_ATTENTION if flat else "eager"


def _flat_packs(model, config, backbone) -> bool:
    """Whether this run's batches can be flat packed rows (`assistant.segment_attention`): a
    PM loss with packing on, on a decoder whose attention the segment kernel reproduces."""
    return (
        getattr(config, "pack_context", False)  # distillation trains an LM: no packing
        and getattr(config, "loss", None) != "imitation"
        and getattr(model, "can_pack", False)
        and can_use_segments(backbone.config)
    )


def restore_attention(model, before: str | None) -> None:
    backbone = getattr(unwrapped(model), "backbone", unwrapped(model))
    if before is not None and backbone.config._attn_implementation != before:
        backbone.set_attn_implementation(before)


# --- across ranks -------------------------------------------------------------------------------


def _stop_requested(should_stop, where: Placement) -> bool:
    """Poll the cancellation flag; under DDP any rank's yes stops all ranks at the same step."""
    wanted = bool(should_stop()) if should_stop is not None else False
    if not where.distributed:
        return wanted
    flag = torch.tensor([1.0 if wanted else 0.0], device=_collective_device(where.device))
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _mean_over_ranks(value: float, *, distributed: bool, device) -> float:
    if not distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device(device))
    dist.all_reduce(tensor)
    return tensor.item() / dist.get_world_size()


def _collective_device(device) -> torch.device:
    # gloo reduces CPU tensors, nccl CUDA ones.
    return device if dist.get_backend() == "nccl" else torch.device("cpu")
