"""Actions on training runs, each in one transaction; the heavy work runs in a Celery task."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from assistant import jobs
from assistant.hardware import bf16_warning
from assistant.models import ModelVersion, PromptTemplate
from collection.models import DatasetSnapshot

from .config import DistillationConfig, PMPConfig, PreferenceTrainingConfig, RunConfig
from .formatting import format_log_line
from .models import TrainingRun
from .pmp_sources import pmp_sources_confined

LOG_TAIL_CHARS = 4000
# Training steps kept in a run's metric history besides its evaluations and last step.
CHART_POINTS = 100
# The loss each kind trains with; all but PMP and distillation use PreferenceTrainingConfig.
KIND_LOSS = {
    TrainingRun.Kind.PM: "ranked",
    TrainingRun.Kind.PM_BINARY: "binary",
    TrainingRun.Kind.IMITATION: "imitation",
}
# The prompt a distillation run distils when none is named: the latest version of this one.
DEFAULT_DISTILLATION_PROMPT = "hhh"


def config_for_kind(kind: str, values: dict) -> RunConfig:
    """The kind's config dataclass from stored or submitted values (unknown keys: ValueError)."""
    if not isinstance(values, dict):  # a string, a list or a number from a hostile client
        raise ValueError(f"a config is a JSON object of settings, not {type(values).__name__}")
    if kind == TrainingRun.Kind.PMP:
        return PMPConfig.from_dict(values)
    if kind == TrainingRun.Kind.DISTILL:
        return DistillationConfig.from_dict(values)
    loss = values.get("loss", KIND_LOSS[kind])
    if loss != KIND_LOSS[kind]:
        raise ValueError(f"a {kind} run trains with loss={KIND_LOSS[kind]!r}, not {loss!r}")
    return PreferenceTrainingConfig.from_dict({**values, "loss": loss})


def training_run_create(
    *,
    kind: str,
    launched_by=None,
    base_model: ModelVersion | None = None,
    snapshot: DatasetSnapshot | None = None,
    pmp_sources: list | None = None,
    prompt: PromptTemplate | None = None,
    config: dict | None = None,
) -> TrainingRun:
    """Validate and queue a training run; the worker picks it up after commit.

    Context distillation distils `prompt`, by default the latest version of the HHH prompt.
    """
    from assistant.selectors import prompt_latest

    if kind not in TrainingRun.Kind.values:
        raise ValidationError({"kind": f"unknown kind {kind!r}"})
    if kind == TrainingRun.Kind.PMP:
        if not pmp_sources:
            raise ValidationError({"pmp_sources": "preference-model pre-training needs sources"})
        try:  # a worker reads these files: a request may name them only inside the data roots
            pmp_sources = pmp_sources_confined(pmp_sources, roots=settings.ALIGNLAB_DATA_ROOTS)
        except ValueError as error:
            raise ValidationError({"pmp_sources": str(error)}) from None
    elif snapshot is None:
        raise ValidationError({"snapshot": "this kind trains on a dataset snapshot"})
    if kind == TrainingRun.Kind.DISTILL:
        prompt = prompt or prompt_latest(name=DEFAULT_DISTILLATION_PROMPT)
        if prompt is None:
            raise ValidationError({"prompt": "context distillation needs a prompt to distil"})
        if base_model is not None and base_model.kind != ModelVersion.Kind.LM:
            raise ValidationError({"base_model": "context distillation trains a language model"})
    elif prompt is not None:
        raise ValidationError({"prompt": "only context distillation reads a prompt"})
    if base_model is not None and base_model.backend != ModelVersion.Backend.TRANSFORMERS:
        raise ValidationError(
            {"base_model": f"{base_model} is served over HTTP; training needs a local model folder"}
        )
    if (
        kind == TrainingRun.Kind.IMITATION
        and base_model
        and base_model.kind != ModelVersion.Kind.LM
    ):
        raise ValidationError({"base_model": "imitation learning trains a language model"})
    try:
        checked = config_for_kind(kind, config or {})
    except (TypeError, ValueError) as error:
        raise ValidationError({"config": str(error)}) from None
    with transaction.atomic():
        run = TrainingRun.objects.create(
            kind=kind,
            base_model=base_model,
            snapshot=snapshot,
            pmp_sources=pmp_sources or [],
            prompt=prompt,
            config=checked.to_dict(),
            launched_by=launched_by,
        )
        transaction.on_commit(lambda: _queue(run.pk))
    return run


def _queue(run_id: int) -> None:
    from .tasks import run_training

    # A broker that is down leaves the run queued without a task: the sweeper sends it later.
    jobs.job_enqueue(TrainingRun, run_id, run_training)


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """Ask a run to stop: a queued run, or one whose worker is gone (its lease expired), is
    cancelled at once; a running one at its next step."""
    return jobs.job_cancel(TrainingRun, run)


def training_run_claim(*, run_id: int) -> TrainingRun | None:
    """Take a run for this worker with a lease; None when it is finished or cancelled, or
    another worker holds its lease.

    A run left `running` by a worker that died is claimed again once its lease expired (the
    sweeper queues it again) and resumes from its last checkpoint.
    """
    return jobs.job_claim(TrainingRun, run_id, lease_s=settings.TRAINING_LEASE_S)


def training_runs_sweep() -> dict:
    """Queue again the runs with no live task or an expired lease; end cancelled ones."""
    from .tasks import run_training

    return jobs.job_sweep(TrainingRun, run_training, grace_s=settings.JOBS_ENQUEUE_GRACE_S)


def training_run_progress(
    *,
    run_id: int,
    steps_done: int,
    steps_total: int,
    metrics: dict | None,
    log_line: str = "",
    lease_owner: str = "",
) -> bool:
    """Record progress; returns True when the run has been asked to stop.

    With `lease_owner` (the worker running it) it is also the heartbeat that renews the run's
    lease, and True too when that worker lost the lease (the run was taken over or ended).
    Called every step, so without metrics or a log line it is two small queries.
    """
    wanted = [
        "cancel_requested",
        *(["metrics"] if metrics else []),
        *(["log_tail"] if log_line else []),
    ]
    run = TrainingRun.objects.only(*wanted).get(pk=run_id)
    fields = {"steps_done": steps_done, "steps_total": steps_total}
    if metrics:
        fields["metrics"] = [*run.metrics, {"step": steps_done, **metrics}]
    if log_line:
        fields["log_tail"] = (run.log_tail + log_line.rstrip() + "\n")[-LOG_TAIL_CHARS:]
    if lease_owner:
        run.pk, run.lease_owner = run_id, lease_owner
        held = jobs.job_heartbeat(TrainingRun, run, lease_s=settings.TRAINING_LEASE_S, **fields)
        return run.cancel_requested or not held
    TrainingRun.objects.filter(pk=run_id).update(**fields)
    return run.cancel_requested


def training_run_finish(
    *,
    run: TrainingRun,
    status: str,
    error: str = "",
    artifact_path: str = "",
    result_version: ModelVersion | None = None,
    promotion: dict | None = None,
) -> TrainingRun:
    """End a claimed run, if its worker still holds the lease; the run as it is now."""
    return jobs.job_finish(
        TrainingRun,
        run,
        status=status,
        error=error,
        artifact_path=artifact_path,
        result_version=result_version,
        promotion=promotion or {},
    )


def _run_dir(run: TrainingRun):
    from django.conf import settings

    # The creation time too: a database restored from backup (or a test database) reuses ids,
    # and a new run must never resume an old run's checkpoints.
    return settings.MODELS_DIR / "runs" / f"run-{run.pk}-{run.created_at:%Y%m%dT%H%M%S%f}"


@dataclass
class _Trained:
    """What a kind's training hands on to registration."""

    base: ModelVersion
    model: object
    tokenizer: object
    result: object  # training.loop.TrainResult
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
    """(train, held_out) rankings: the snapshot's split, or the PMP sources (no held-out)."""
    from .snapshots import snapshot_rankings

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


def _snapshot_conversations(snapshot: DatasetSnapshot):
    """(train, held_out) conversations for distillation, split as the snapshot splits them.

    One per conversation: the latest of its turns the snapshot selected, with the turns before
    it (each with the response that continued the conversation) and its best-ranked response.
    """
    from collection.datasets import export_rows

    from .distill import DistillationExample

    latest: dict[int, dict] = {}
    for row in export_rows(snapshot, "ranked"):
        if row["both_bad"]:  # its best response is still bad: nothing to imitate
            continue
        kept = latest.get(row["conversation_id"])
        if kept is None or len(row["context"]) > len(kept["context"]):
            latest[row["conversation_id"]] = row
    splits: dict[str, list] = {"train": [], "held_out": []}
    for _, row in sorted(latest.items()):
        best = row["responses"][row["ranks"].index(min(row["ranks"]))]
        splits[row["split"]].append(
            DistillationExample(
                messages=[*row["context"], {"role": "assistant", "content": best}],
                source=f"snapshot {snapshot.pk} turn {row['turn_id']}",
            )
        )
    return splits["train"], splits["held_out"]


def training_run_execute(*, run: TrainingRun) -> TrainingRun:
    """Train, save the artifact atomically, register the model version, decide promotion.

    Called by the task after it claimed the run. Checkpoints live in the run's folder, so a
    redelivered task resumes where the dead worker stopped.
    """
    import time
    import traceback

    config = config_for_kind(run.kind, run.config)
    if warning := bf16_warning(config.bf16):  # explicit bf16 where the device only emulates it
        training_run_progress(
            run_id=run.pk,
            steps_done=run.steps_done,
            steps_total=run.steps_total,
            metrics=None,
            log_line=warning,
        )
    last_poll = {"logged_at": 0.0, "stop": False}

    def on_step(step: int, total: int, metrics: dict) -> None:
        # Every step: its count, and the cancel flag read back (a cancel stops the next step).
        # The log takes a line per ~2 s (and each evaluation and the last step).
        evaluated = any(key.startswith("eval_") for key in metrics)
        line = ""
        if evaluated or step == total or time.monotonic() - last_poll["logged_at"] > 2:
            last_poll["logged_at"] = time.monotonic()
            line = format_log_line(step, total, metrics)
        # The history (the run page's chart and table) takes evaluations, the last step and
        # about a hundred evenly spaced steps.
        sampled = step % max(1, total // CHART_POINTS) == 0
        last_poll["stop"] = training_run_progress(
            run_id=run.pk,
            steps_done=step,
            steps_total=total,
            metrics=metrics if evaluated or sampled or step == total else None,
            log_line=line,
            lease_owner=run.lease_owner,
        )

    def should_stop() -> bool:
        return last_poll["stop"]

    train = _distil if run.kind == TrainingRun.Kind.DISTILL else _train_preference
    try:
        trained = train(run, config, on_step=on_step, should_stop=should_stop)
    except Exception as error:  # the run records why it failed; the worker goes on
        training_run_progress(
            run_id=run.pk,
            steps_done=run.steps_done,
            steps_total=run.steps_total,
            metrics=None,
            log_line=traceback.format_exc(),
        )
        return training_run_finish(
            run=run, status=TrainingRun.Status.FAILED, error=f"{type(error).__name__}: {error}"
        )
    if trained.result.status == "cancelled":  # asked to, or the lease went to another worker
        return training_run_finish(run=run, status=TrainingRun.Status.CANCELLED)
    # Saving, registering and the promotion check take a while: renew the lease first.
    if not jobs.job_heartbeat(TrainingRun, run, lease_s=settings.TRAINING_LEASE_S):
        return TrainingRun.objects.get(pk=run.pk)  # taken over or ended meanwhile
    version, promotion = _register_result(run, trained, config)
    return training_run_finish(
        run=run,
        status=TrainingRun.Status.SUCCEEDED,
        artifact_path=version.path,
        result_version=version,
        promotion=promotion,
    )


def _train_preference(run, config, *, on_step, should_stop) -> _Trained:
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
        checkpoint_dir=_run_dir(run) / "checkpoints",
    )
    return _Trained(base, model, tokenizer, result, held_out)


def _distil(run, config: DistillationConfig, *, on_step, should_stop) -> _Trained:
    """Context distillation: the base LM learns, without the run's prompt, to answer as with it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .distill import train_distillation

    base = _base_model(run)
    if base.kind != ModelVersion.Kind.LM:
        raise ValueError(f"context distillation trains a language model; {base} is not one")
    train, held_out = _snapshot_conversations(run.snapshot)
    if len(train) < config.min_conversations:
        raise ValueError(
            f"context distillation needs at least {config.min_conversations} conversations with "
            f"a ranked response in the snapshot's train split; snapshot {run.snapshot.pk} has "
            f"{len(train)} (and {len(held_out)} held out): collect more, or lower "
            "min_conversations"
        )
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
        checkpoint_dir=_run_dir(run) / "checkpoints",
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
    return _Trained(base, student, tokenizer, result, None, facts, serving)


def _register_result(run, trained: _Trained, config):
    """Save the trained model, register it, and promote it if it is not worse than the active."""
    from assistant.pm import save_pm
    from assistant.selectors import active_model
    from assistant.services import model_version_activate, model_version_register

    result = trained.result
    artifact = _run_dir(run) / "model"
    meta = {
        "training_run": run.pk,
        "kind": run.kind,
        "config": config.to_dict(),
        "base_model": trained.base.pk,
        "dataset_snapshot": run.snapshot.content_hash if run.snapshot else None,
        "pmp_sources": run.pmp_sources,
        "metrics": result.metrics,
        "steps": result.steps,
        **trained.facts,
    }
    if run.kind in {TrainingRun.Kind.IMITATION, TrainingRun.Kind.DISTILL}:
        _save_lm(trained.model, trained.tokenizer, artifact, meta)
        kind = ModelVersion.Kind.LM
    else:
        save_pm(trained.model, trained.tokenizer, artifact, meta)
        kind = ModelVersion.Kind.PM
    version = model_version_register(
        kind=kind,
        name=f"{run.get_kind_display()} (run {run.pk})",
        path=str(artifact),
        origin=ModelVersion.Origin.TRAINED,
        training_run_id=run.pk,
        metadata={
            "metrics": result.metrics,
            "snapshot": meta["dataset_snapshot"],
            **trained.facts,
        },
        **trained.serving,
    )
    promotion = {
        "decision": "kept",
        "reason": "only preference models trained on collected data are promoted",
    }
    if kind == ModelVersion.Kind.PM and run.kind == TrainingRun.Kind.PM and trained.held_out:
        promotion = _promotion_decision(
            trained, active_model(kind=ModelVersion.Kind.PM), result, trained.held_out, config
        )
        if promotion["decision"] == "promoted":
            model_version_activate(version=version)
    return version, promotion


def _promotion_decision(new, active, result, held_out, config) -> dict:
    """Promote on a paired test against the active PM on the same held-out pairs
    (training/promotion.py: the minimum held-out size, the test, the interval, the tolerance)."""
    from django.conf import settings

    from assistant.pm import load_pm

    from .promotion import decide, pair_outcomes

    min_held_out = settings.TRAINING_PROMOTION_MIN_HELD_OUT
    rules = {
        "min_held_out": min_held_out,
        "alpha": settings.TRAINING_PROMOTION_ALPHA,
        "tolerance": settings.TRAINING_PROMOTION_TOLERANCE,
    }
    if result.metrics.get("eval_accuracy") is None:
        return {"decision": "kept", "reason": "no held-out accuracy was measured", **rules}
    new_outcomes = pair_outcomes(new.model, new.tokenizer, held_out, config)
    active_outcomes = None
    # The active PM is scored only when the held-out set is big enough to decide anything.
    if active is not None and len(new_outcomes) >= min_held_out:
        model, tokenizer, _ = load_pm(active.path)
        active_outcomes = pair_outcomes(model, tokenizer, held_out, config)
    decision = decide(new_outcomes, active_outcomes, **rules)
    decision["eval_accuracy"] = result.metrics["eval_accuracy"]  # ties in reward count 1/2 there
    if active is not None:
        decision["active_version"] = active.pk
    return decision


def _save_lm(model, tokenizer, path, meta) -> None:
    """Save a causal LM folder atomically (a temporary folder renamed into place)."""
    import json

    from assistant.files import staged_folder

    with staged_folder(path) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, default=str))


def retrain_if_enough_new_data(*, min_new_judgements: int) -> TrainingRun | None:
    """Snapshot the collected data and launch a PM run when at least `min_new_judgements`
    judgements arrived since the snapshot the active PM was trained on (or ever, if none)."""
    from assistant.selectors import active_model
    from collection.datasets import snapshot_create
    from collection.models import Judgement

    if TrainingRun.objects.filter(
        kind=TrainingRun.Kind.PM, status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]
    ).exists():
        return None  # one retrain at a time
    active = active_model(kind=ModelVersion.Kind.PM)
    since, base = None, None
    if active is not None and active.training_run_id:
        trained_on = (
            TrainingRun.objects.filter(pk=active.training_run_id).select_related("snapshot").first()
        )
        if trained_on is not None:
            # Retrain from what the active PM started from (a backbone or a PMP'd PM) on all
            # the data, rather than stacking finetunes on data it has already seen.
            base = trained_on.base_model
            since = trained_on.snapshot.created_at if trained_on.snapshot else None
    new = Judgement.objects.exclude(origin=Judgement.Origin.IMPORTED)
    if since is not None:
        new = new.filter(created_at__gt=since)
    if new.count() < min_new_judgements:
        return None
    snapshot = snapshot_create(
        filter={"sources": ["collected"]}, created_by=None, name="periodic retrain"
    )
    return training_run_create(kind=TrainingRun.Kind.PM, snapshot=snapshot, base_model=base)
