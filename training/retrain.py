"""The periodic retrain: a new PM run once enough new judgements arrived (a Celery beat task)."""

from __future__ import annotations

from assistant.models import ModelVersion

from .models import TrainingRun
from .services import training_run_create


def retrain_if_enough_new_data(*, min_new_judgements: int) -> TrainingRun | None:
    """Snapshot the collected data and launch a PM run when at least `min_new_judgements`
    judgements arrived since the snapshot the active PM was trained on (or ever, if none)."""
    from assistant.selectors import active_model
    from collection.models import Judgement
    from collection.snapshots import snapshot_create

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
