from django.conf import settings
from django.db import models

from assistant.models import ModelVersion
from collection.models import DatasetSnapshot


class EvalRun(models.Model):
    """One evaluation suite run on one model version, executed by a Celery worker."""

    class Suite(models.TextChoices):
        HHH = "hhh", "HHH evaluation (221 items)"
        HHH_UNPROMPTED = "hhh_unprompted", "HHH evaluation, LM without the HHH prompt"
        HELD_OUT = "held_out", "held-out comparisons + calibration"
        TRUTHFULQA = "truthfulqa", "TruthfulQA multiple choice"
        TOXICITY = "toxicity", "toxicity of samples, prompted vs unprompted"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    suite = models.CharField(max_length=20, choices=Suite.choices)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    snapshot = models.ForeignKey(
        DatasetSnapshot,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Held-out comparisons: the snapshot whose held-out split is scored.",
    )
    options = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    results = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    celery_task_id = models.CharField(max_length=64, blank=True)
    launched_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"eval {self.pk}: {self.suite} on {self.model_version}"
