"""One config dataclass per training kind; `asdict(config)` is what the run row and meta.json store.

Rebuild a config with `Config.from_dict(row.config)`: unknown keys are an error, not silently
dropped, so a typo in a launched run cannot train with a default it did not ask for.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, fields
from typing import Any

from assistant.hardware import check_bf16_request

LOSSES = ("ranked", "binary", "imitation")
ATTENTIONS = ("auto", "eager", "sdpa")
RENDER_MODES = ("auto", "chat", "completion")


class RunConfig:
    """What every kind's config dataclass shares: its JSON form, and rebuilding from it."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form stored on the run row and in meta.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Rebuild from `asdict` output; unknown keys raise, missing keys take the default."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} keys: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**data)

    def _check_ranges(self, *, at_least_one: tuple[str, ...], not_negative: tuple[str, ...]):
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in not_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, not {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1 or None, not {self.max_steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, not {self.lr}")
        check_bf16_request(self.bf16)
        if self.attention not in ATTENTIONS:
            raise ValueError(
                f"attention must be one of {', '.join(ATTENTIONS)}, not {self.attention!r}"
            )


@dataclass
class PreferenceTrainingConfig(RunConfig):
    """Ranked preference modelling (and its binary / imitation baselines) on human comparisons."""

    # A local Hugging Face model folder, or a (PMP'd) PM folder to finetune from.
    backbone: str = ""
    # Tokens per transcript; longer ones lose their beginning (the last response must survive).
    max_length: int = 512
    # AdamW learning rate at the end of warmup; small models tolerate more, 1e-5..5e-5 is usual.
    lr: float = 2e-5
    # Decoupled weight decay on matrices only (biases and norms are left alone, as in nanoGPT).
    weight_decay: float = 0.01
    # Optimizer steps of linear warmup (lr/(n+1), 2lr/(n+1), …), then linear decay to 0 at the end.
    warmup_steps: int = 10
    # Passes over the training rankings; ignored when max_steps is set.
    epochs: int = 1
    # Stop after this many optimizer steps (None: run `epochs` epochs).
    max_steps: int | None = None
    # Rankings per micro-batch (each contributes all its k responses to one forward).
    batch_size: int = 8
    # Micro-batches per optimizer step: effective batch = batch_size * grad_accum * world size.
    grad_accum: int = 1
    # Clip the global gradient norm to this (None or 0: no clipping).
    max_grad_norm: float | None = 1.0
    # torch.autocast to bfloat16; weights and optimizer state stay float32. "auto": where the
    # device computes bf16 natively (assistant.hardware); true on a CPU without is ~80x slower.
    bf16: bool | str = "auto"
    # Recompute activations in backward: less memory, about a third more compute.
    gradient_checkpointing: bool = False
    # Train LoRA adapters on the backbone instead of all its weights (needs peft installed).
    lora: bool = False
    # LoRA rank and scale (alpha / r), used only when lora is set.
    lora_r: int = 16
    lora_alpha: int = 32
    # Evaluate on the held-out rankings every N optimizer steps (0: only at the end).
    eval_every: int = 100
    # Write a resumable checkpoint every N optimizer steps (0: only at the end / on cancel).
    checkpoint_every: int = 200
    # Seeds the head's initialisation, the batch order and dropout.
    seed: int = 0
    # Add a margin from the comparison's strength (1 slightly … 4 much better) to the loss.
    margin_from_strength: bool = False
    # Margin for "much better"; "slightly better" gets 0, the steps between are linear.
    margin_scale: float = 1.0
    # "ranked" (the paper's PM), "binary" (discrimination baseline), "imitation" (LM baseline).
    loss: str = "ranked"
    # Length grouping: sort by length within windows of this many batches (less padding).
    mega_batch_mult: int = 50
    # Decoder PMs: one row per ranking, its context computed once for all k responses (a block
    # attention mask); encoders and the imitation baseline always take one row per response.
    pack_context: bool = True
    # Attention kernel while training: "auto" = "eager" on CPU (its matmuls beat the CPU SDPA
    # kernels' backward at these lengths, measured in BENCHMARKS.md), "sdpa" on CUDA.
    attention: str = "auto"

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        self._check_ranges(
            at_least_one=("max_length", "batch_size", "grad_accum", "epochs", "mega_batch_mult"),
            not_negative=("warmup_steps", "eval_every", "checkpoint_every"),
        )
        if self.lora and importlib.util.find_spec("peft") is None:
            raise ValueError(
                "lora=True needs the `peft` package, which is not installed here; "
                "install peft or train all weights (lora=False)"
            )


@dataclass
class PMPConfig(PreferenceTrainingConfig):
    """Preference-model pre-training on public ranked data (StackExchange, Reddit, UKP)."""

    # Train on pairs of two answers with different scores rather than whole rankings; the paper
    # found binary PMP transfers better to human preferences than ranked PMP.
    binary: bool = True
    # PMP data is plentiful and noisy: a larger step than finetuning, then finetune at ~2e-5.
    lr: float = 5e-5
    # Answers kept per question / sibling replies per parent (None: all).
    max_responses: int | None = 8


@dataclass
class DistillationConfig(RunConfig):
    """Context distillation: the LM without the prompt learns the prompted LM's next tokens."""

    # Conversation tokens per row (the teacher reads the prompt on top); longer conversations
    # lose their beginning.
    max_length: int = 512
    # AdamW learning rate at the end of warmup. The student starts as the teacher's weights and
    # only has to absorb the prompt's effect: a small step keeps what the base model knows.
    lr: float = 1e-5
    # Decoupled weight decay on matrices only; none by default, as it would pull the student
    # away from the base weights the KL is measured against.
    weight_decay: float = 0.0
    # Optimizer steps of linear warmup, then linear decay to 0 at the end (as for PMs).
    warmup_steps: int = 10
    # Passes over the training conversations; ignored when max_steps is set.
    epochs: int = 1
    # Stop after this many optimizer steps (None: run `epochs` epochs).
    max_steps: int | None = None
    # Conversations per micro-batch; the teacher repeats the prompt's key/value cache per row.
    batch_size: int = 4
    # Micro-batches per optimizer step.
    grad_accum: int = 1
    # Clip the global gradient norm to this (None or 0: no clipping).
    max_grad_norm: float | None = 1.0
    # torch.autocast to bfloat16 for teacher and student; weights and the KL stay float32.
    # "auto": where the device computes bf16 natively; true on a CPU without is far slower.
    bf16: bool | str = "auto"
    # Mean KL on the held-out conversations every N optimizer steps (0: only before and after).
    eval_every: int = 100
    # Write a resumable checkpoint every N optimizer steps (0: only at the end / on cancel).
    checkpoint_every: int = 200
    # Seeds the batch order (and dropout, where the LM has any).
    seed: int = 0
    # The student's attention kernel while training: "auto" = "eager" on CPU, "sdpa" on CUDA.
    attention: str = "auto"
    # How a conversation is rendered: "auto" = as the base model version is served (its backend
    # option `mode`, else "chat" when the tokenizer has a chat template), "chat" or "completion".
    render_mode: str = "auto"
    # A snapshot with fewer usable conversations in its train split fails the run: distilling
    # on a handful would teach the student those few conversations, not the prompt.
    min_conversations: int = 16

    def __post_init__(self):
        if self.render_mode not in RENDER_MODES:
            raise ValueError(
                f"render_mode must be one of {', '.join(RENDER_MODES)}, not {self.render_mode!r}"
            )
        self._check_ranges(
            at_least_one=("max_length", "batch_size", "grad_accum", "epochs", "min_conversations"),
            not_negative=("warmup_steps", "eval_every", "checkpoint_every"),
        )
