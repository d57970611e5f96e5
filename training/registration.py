"""A trained run's result: its artifact saved, its model version registered, promoted or not."""

from __future__ import annotations

import logging

from django.conf import settings

from assistant.models import ModelVersion

from .models import TrainingRun
from .trainers import Trained, run_dir

logger = logging.getLogger(__name__)


def register_result(run, trained: Trained, config):
    """Save the trained model, register it, and promote it if it is not worse than the active."""
    from assistant.pm import save_pm
    from assistant.selectors import active_model
    from assistant.services import model_version_activate, model_version_register

    result = trained.result
    artifact = run_dir(run) / "model"
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
    if not getattr(config, "promote", True):
        promotion["reason"] = "promotion not asked for (promote: false)"
    elif kind == ModelVersion.Kind.PM and run.kind == TrainingRun.Kind.PM and trained.held_out:
        promotion = _promotion_decision(
            trained, active_model(kind=ModelVersion.Kind.PM), result, trained.held_out, config
        )
        promotion["recent_agreement"] = _recent_agreement(trained, run)
        if promotion["decision"] == "promoted":
            model_version_activate(version=version)
    return version, promotion


def _promotion_decision(new, active, result, held_out, config) -> dict:
    """Promote on a paired test against the active PM on the same held-out pairs
    (training/promotion.py: the minimum held-out size, the test, the interval, the tolerance)."""
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


def _recent_agreement(trained, run) -> dict:
    """Reported with the decision (it does not decide): the new PM's agreement with the latest
    human judgements made after its snapshot, which it did not train on (collection.pm_loop)."""
    from assistant.pm import PMScorer
    from collection.pm_loop import fresh_agreement

    since = run.snapshot.created_at if run.snapshot_id else None
    try:
        return fresh_agreement(
            PMScorer(trained.model, trained.tokenizer, bf16=False),
            since=since,
            limit=settings.TRAINING_PROMOTION_RECENT_JUDGEMENTS,
        )
    except Exception as error:  # a report: it must not fail a run that trained
        logger.exception("run %s: the agreement with recent judgements was not measured", run.pk)
        return {"error": f"{type(error).__name__}: {error}"[:300]}


def _save_lm(model, tokenizer, path, meta) -> None:
    """Save a causal LM folder atomically (a temporary folder renamed into place)."""
    import json

    from assistant.files import staged_folder

    with staged_folder(path) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
