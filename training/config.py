"""One config dataclass per training kind; `asdict(config)` is what the run row and meta.json store.

Rebuild a config with `Config.from_dict(row.config)`: unknown keys are an error, not silently
dropped, so a typo in a launched run cannot train with a default it did not ask for; each
value's type and range is checked too (`RANGES`), so no run starts with a value no experiment
would use.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

from assistant.hardware import check_bf16_request

LOSSES = ("ranked", "binary", "imitation")
ATTENTIONS = ("auto", "eager", "sdpa", "alignlab_segments")
COMPILE_CHOICES = ("auto", "on", "off")
RENDER_MODES = ("auto", "chat", "completion")


class Range(NamedTuple):
    low: float
    high: float
    above_low: bool = False  # the low bound itself is refused too


# What a launched run may ask for, per field (both bounds allowed unless `above_low`). Outside
# them a value is a typo or an attack, not an experiment: lr = 1e308 makes every weight inf,
# epochs = 1e9 holds a worker for ever, batch_size = 1e9 exhausts any memory. The type comes
# from the field's annotation: an int is a JSON integer (not true, not 2.5 or 1e9), a float
# any finite number.
RANGES = {
    # 8 tokens hold a little context, a response and the end token; 32k is beyond the context
    # window of any backbone trained here.
    "max_length": Range(8, 32_768),
    # Zero would not train; above 1 AdamW diverges on the first step.
    "lr": Range(0, 1, above_low=True),
    # AdamW's decoupled decay: 1 would zero the matrices every step.
    "weight_decay": Range(0, 1),
    "warmup_steps": Range(0, 1_000_000),
    "epochs": Range(1, 1000),
    "max_steps": Range(1, 10_000_000),
    # Rankings (or conversations) per micro-batch: 4096 is past any device's memory already.
    "batch_size": Range(1, 4096),
    "grad_accum": Range(1, 1024),
    # 0 (like None): no clipping; a negative norm is meaningless.
    "max_grad_norm": Range(0, 1e6),
    "lora_r": Range(1, 1024),
    "lora_alpha": Range(1, 65_536),
    "eval_every": Range(0, 10_000_000),
    "checkpoint_every": Range(0, 10_000_000),
    # What numpy and torch take as a seed (32 bits).
    "seed": Range(0, 2**32 - 1),
    "margin_scale": Range(0, 100),
    "mega_batch_mult": Range(1, 10_000),
    # Fewer than 2 answers to a question make no comparison.
    "max_responses": Range(2, 10_000),
    "min_conversations": Range(1, 10_000_000),
    "eval_conversations": Range(1, 10_000_000),
    # A subset of the training rankings (None: all of them).
    "train_comparisons": Range(1, 100_000_000),
    "subset_seed": Range(0, 2**32 - 1),
}
_TYPE_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
}


def _shown(value) -> str:
    """`value` for an error message: short, whatever its size."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return "a number too large to print"
    return text if len(text) <= 60 else text[:57] + "..."


def _check_type(name: str, value, annotation: str) -> None:
    """Raise ValueError naming `name` unless `value` fits its annotation ("int | None", …)."""
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    if value is None and optional:
        return
    if base == "int":
        fits = type(value) is int  # bool is an int subclass: refused here
    elif base == "float":
        fits = type(value) in (int, float) and math.isfinite(value)
    elif base in ("bool", "str"):
        fits = type(value) is {"bool": bool, "str": str}[base]
    else:  # bf16 (bool | str) has its own check
        return
    if not fits:
        allowed = _TYPE_WORDS[base] + (" or null" if optional else "")
        raise ValueError(f"{name} must be {allowed}, not {_shown(value)}")


@dataclass
class RunConfig:
    """What every kind's config dataclass shares: the step runner's settings
    (training/runner.py), its JSON form, rebuilding from it, checks. A kind changes a default
    by declaring the field again."""

    # Tokens per row (a transcript, a conversation); longer ones lose their beginning.
    max_length: int = 512
    # AdamW learning rate at the end of warmup; small models tolerate more, 1e-5..5e-5 is usual.
    lr: float = 2e-5
    # Decoupled weight decay on matrices only (biases and norms are left alone, as in nanoGPT).
    weight_decay: float = 0.01
    # Optimizer steps of linear warmup (lr/(n+1), 2lr/(n+1), …), then linear decay to 0 at the end.
    warmup_steps: int = 10
    # Passes over the training data; ignored when max_steps is set.
    epochs: int = 1
    # Stop after this many optimizer steps (None: run `epochs` epochs).
    max_steps: int | None = None
    # Rankings (each contributes all its k responses to one forward) or conversations per
    # micro-batch.
    batch_size: int = 8
    # Micro-batches per optimizer step: effective batch = batch_size * grad_accum * world size.
    grad_accum: int = 1
    # Clip the global gradient norm to this (None or 0: no clipping).
    max_grad_norm: float | None = 1.0
    # torch.autocast to bfloat16; weights, optimizer state (and the KL) stay float32. "auto":
    # where the device computes bf16 natively (assistant.hardware); true on a CPU without is
    # ~80x slower.
    bf16: bool | str = "auto"
    # Evaluate on the held-out data every N optimizer steps (0: only at the end; distillation
    # also before the first).
    eval_every: int = 100
    # Write a resumable checkpoint every N optimizer steps (0: only at the end / on cancel).
    checkpoint_every: int = 200
    # Seeds the batch order, dropout (where the model has any) and a new PM head's initialisation.
    seed: int = 0
    # Attention kernel while training: "auto" = on a CPU "alignlab_segments" for a packing
    # decoder PM (flat rows without padding, assistant/segment_attention.py) and "eager"
    # otherwise (its matmuls beat the CPU SDPA kernels' backward at these lengths, measured in
    # BENCHMARKS.md); "sdpa" on CUDA.
    attention: str = "auto"
    # torch.compile each decoder layer (attention excluded, training/compiled.py): "auto" = on a
    # CPU, in one process, under "alignlab_segments", without LoRA or checkpointing, for layers
    # of 20M+ parameters where a C++ compiler is installed (measured 9-19 % faster steps);
    # "on" anywhere; "off" never.
    compile_layers: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form stored on the run row and in meta.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Rebuild from `asdict` output; unknown keys raise, missing keys take the default."""
        if not isinstance(data, dict):
            raise ValueError(f"a config is a JSON object of settings, not {_shown(data)}")
        known = {field.name for field in fields(cls)}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} keys: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**data)

    def _check_fields(self) -> None:
        """Every field's type and range (RANGES); a ValueError names the first field that fails."""
        for field in fields(self):
            value = getattr(self, field.name)
            _check_type(field.name, value, str(field.type))
            limits = RANGES.get(field.name)
            if limits is None or value is None:
                continue
            low_ok = value > limits.low if limits.above_low else value >= limits.low
            if not (low_ok and value <= limits.high):
                low = f"above {limits.low}" if limits.above_low else f"from {limits.low}"
                raise ValueError(
                    f"{field.name} must be {low} to {limits.high}, not {_shown(value)}"
                )
        check_bf16_request(self.bf16)
        if self.attention not in ATTENTIONS:
            raise ValueError(
                f"attention must be one of {', '.join(ATTENTIONS)}, not {self.attention!r}"
            )
        if self.compile_layers not in COMPILE_CHOICES:
            raise ValueError(
                f"compile_layers must be one of {', '.join(COMPILE_CHOICES)}, "
                f"not {_shown(self.compile_layers)}"
            )


@dataclass
class PreferenceTrainingConfig(RunConfig):
    """Ranked preference modelling (and its binary / imitation baselines) on human comparisons."""

    # Recompute activations in backward: less memory, about a third more compute.
    gradient_checkpointing: bool = False
    # Train LoRA adapters on the backbone instead of all its weights (needs peft installed).
    lora: bool = False
    # LoRA rank and scale (alpha / r), used only when lora is set.
    lora_r: int = 16
    lora_alpha: int = 32
    # Add a margin from the comparison's strength (1 slightly … 4 much better) to the loss.
    margin_from_strength: bool = False
    # Margin for "much better"; "slightly better" gets 0, the steps between are linear.
    margin_scale: float = 1.0
    # Weight each ranking's loss by its contractor's reliability, as a snapshot made with
    # "weighting": "reliability" froze it (collection/reliability.py); unweighted snapshots
    # give every ranking 1, so the flag changes nothing there.
    weighted: bool = False
    # "ranked" (the paper's PM), "binary" (discrimination baseline), "imitation" (LM baseline).
    loss: str = "ranked"
    # Length grouping: sort by length within windows of this many batches (less padding).
    mega_batch_mult: int = 50
    # Decoder PMs: one row per ranking, its context computed once for all k responses (a block
    # attention mask); encoders and the imitation baseline always take one row per response.
    pack_context: bool = True
    # Train on this many of the training rankings (comparisons, for pairwise data) instead of
    # all: the first n of one seeded permutation of the split (training.data.nested_subset), so
    # a smaller size is always inside a larger one of the same subset_seed (experiments'
    # data-efficiency curves). Part of the config, so of the run's identity and meta.json.
    train_comparisons: int | None = None
    subset_seed: int = 0
    # Decide promotion at the end (training/promotion.py: a paired test against the active PM
    # on the held-out pairs). Experiments turn it off: their PMs are measurements, not
    # candidates to serve, and the test scores the held-out split twice more.
    promote: bool = True

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        self._check_fields()
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

    # The teacher reads the prompt on top of max_length conversation tokens.
    # The student starts as the teacher's weights and only has to absorb the prompt's effect: a
    # small step keeps what the base model knows.
    lr: float = 1e-5
    # None by default, as it would pull the student away from the base weights the KL is
    # measured against.
    weight_decay: float = 0.0
    # The teacher repeats the prompt's key/value cache per row.
    batch_size: int = 4
    # How a conversation is rendered: "auto" = as the base model version is served (its backend
    # option `mode`, else "chat" when the tokenizer has a chat template), "chat" or "completion".
    render_mode: str = "auto"
    # A snapshot with fewer usable conversations in its train split fails the run: distilling
    # on a handful would teach the student those few conversations, not the prompt.
    min_conversations: int = 16
    # Measure the held-out KL on the first N held-out conversations only (None: all). The teacher
    # reads the whole prompt for each, so on a CPU the held-out KL before the first step and after
    # the last can cost more than the training itself (experiments' small scale sets it).
    eval_conversations: int | None = None

    def __post_init__(self):
        if self.render_mode not in RENDER_MODES:
            raise ValueError(
                f"render_mode must be one of {', '.join(RENDER_MODES)}, not {self.render_mode!r}"
            )
        self._check_fields()
