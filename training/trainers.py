"""What each kind of training run trains: the model it starts from, its data, the loop it calls.

`train_preference` (PM, binary, imitation, PMP: training/loop.py) and `distil` (context
distillation: training/distill.py) each hand a `Trained` on to registration
(training/registration.py). Checkpoints live in the run's folder (`run_dir`), so a redelivered
task resumes where the dead worker stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from assistant.models import ModelVersion

from .config import DistillationConfig
from .models import TrainingRun
from .snapshots import snapshot_conversations, snapshot_rankings


def run_dir(run: TrainingRun):
    # The creation time too: a database restored from backup (or a test database) reuses ids,
    # and a new run must never resume an old run's checkpoints.
    return settings.MODELS_DIR / "runs" / f"run-{run.pk}-{run.created_at:%Y%m%dT%H%M%S%f}"


@dataclass
class Trained:
    """What a kind's training hands on to registration."""

    base: ModelVersion
    model: object
    tokenizer: object
    result: object  # training.runner.TrainResult
    held_out: list | None = None  # the held-out rankings a PM's promotion is decided on
    facts: dict = field(default_factory=dict)  # the kind's own entries in the version's metadata
    serving: dict = field(default_factory=dict)  # backend options / defaults for the version


def _base_model(run: TrainingRun) -> ModelVersion:
    """The run's starting point (the default LM when none was named), a local model folder."""
    from assistant.services import default_lm_ensure

    base = run.base_model or default_lm_ensure()
    if base.backend != ModelVersion.Backend.TRANSFORMERS:
        raise ValueError(f"{base} is served over HTTP; training needs a local model folder")
    return base


def _load_for_training(run: TrainingRun, config):
    """The model to train and its tokenizer: a new PM on a backbone, or a PM to finetune."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from assistant.pm import PreferenceModel, load_pm

    base = _base_model(run)
    if base.kind == ModelVersion.Kind.PM:
        if run.kind == TrainingRun.Kind.IMITATION:
            raise ValueError("imitation learning trains a language model, not a preference model")
        model, tokenizer, _ = load_pm(base.path, dtype=None)
        return base, model, tokenizer
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    if run.kind == TrainingRun.Kind.IMITATION:
        return base, AutoModelForCausalLM.from_pretrained(base.path), tokenizer
    return (
        base,
        PreferenceModel.from_backbone(base.path, tokenizer, max_length=config.max_length),
        tokenizer,
    )


def _training_data(run: TrainingRun, config):
    """(train, held_out) rankings: the snapshot's split, or the PMP sources (no held-out); the
    training rankings cut to `config.train_comparisons` (a nested, seeded subset)."""
    from .data import nested_subset

    train, held_out = _all_training_data(run, config)
    return nested_subset(train, config.train_comparisons, config.subset_seed), held_out


def _all_training_data(run: TrainingRun, config):

    if run.kind == TrainingRun.Kind.PMP:
        from . import pmp

        importers = {"stackexchange": pmp.import_stackexchange, "reddit": pmp.import_reddit}
        train = []
        for source in run.pmp_sources:
            if source["format"] == "ukpconvarg":
                train += pmp.import_ukpconvarg(source["path"]).rankings
            else:
                train += importers[source["format"]](
                    source["path"], binary=config.binary, max_responses=config.max_responses
                ).rankings
        return train, None
    return snapshot_rankings(run.snapshot, "train"), snapshot_rankings(run.snapshot, "held_out")


def train_preference(run, config, *, on_step, should_stop) -> Trained:
    """A PM (ranked, binary, PMP) or the imitation baseline's LM, on rankings."""
    from .loop import train_preference_model

    base, model, tokenizer = _load_for_training(run, config)
    train, held_out = _training_data(run, config)
    if not train:
        raise ValueError("the training data is empty")
    result = train_preference_model(
        model,
        tokenizer,
        train,
        config,
        eval_set=held_out,
        on_step=on_step,
        should_stop=should_stop,
        checkpoint_dir=run_dir(run) / "checkpoints",
    )
    return Trained(base, model, tokenizer, result, held_out)


def distil(run, config: DistillationConfig, *, on_step, should_stop) -> Trained:
    """Context distillation: the base LM learns, without the run's prompt, to answer as with it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .distill import train_distillation

    base = _base_model(run)
    if base.kind != ModelVersion.Kind.LM:
        raise ValueError(f"context distillation trains a language model; {base} is not one")
    train, held_out = snapshot_conversations(run.snapshot)
    if len(train) < config.min_conversations:
        raise ValueError(
            f"context distillation needs at least {config.min_conversations} conversations with "
            f"a ranked response in the snapshot's train split; snapshot {run.snapshot.pk} has "
            f"{len(train)} (and {len(held_out)} held out): collect more, or lower "
            "min_conversations"
        )
    held_out = held_out[: config.eval_conversations]  # None: all of them
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    mode = config.render_mode
    if mode == "auto":  # as the base version is served (assistant.backends.hf's default)
        mode = base.backend_options.get("mode") or (
            "chat" if tokenizer.chat_template else "completion"
        )
    # Two copies of the base weights: the frozen teacher, and the student that trains (float32;
    # bf16 is autocast).
    student = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    result = train_distillation(
        student,
        teacher,
        tokenizer,
        train,
        config,
        prompt=run.prompt.text,
        mode=mode,
        eval_set=held_out,
        on_step=on_step,
        should_stop=should_stop,
        checkpoint_dir=run_dir(run) / "checkpoints",
    )
    facts = {
        "distilled_from": base.pk,
        "distilled_from_name": base.name,
        "prompt": run.prompt.key,
        "prompt_id": run.prompt.pk,
        "render_mode": mode,
        "conversations": {"train": len(train), "held_out": len(held_out)},
    }
    # Served as it was trained: the same rendering, the base's sampling defaults, no prompt.
    serving = {
        "backend_options": {**base.backend_options, "mode": mode},
        "generation_defaults": base.generation_defaults,
    }
    return Trained(base, student, tokenizer, result, None, facts, serving)
