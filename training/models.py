from django.db import models

from assistant.fields import optional_fk
from assistant.jobs import Job
from assistant.models import ModelVersion, PromptTemplate
from collection.models import DatasetSnapshot


class TrainingRun(Job):
    """One training job, run by a Celery worker on the `training` queue.

    Its status, task id, lease and timestamps are those of every job (assistant/jobs.py).
    `config` is `asdict()` of the kind's config dataclass (training/config.py), so the model can
    be rebuilt from the row and from the checkpoint's meta.json alike.
    """

    class Kind(models.TextChoices):
        PM = "pm", "ranked preference model"
        PM_BINARY = "pm_binary", "binary discrimination baseline"
        IMITATION = "imitation", "imitation learning baseline"
        PMP = "pmp", "preference-model pre-training"
        DISTILL = "distill", "context distillation"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    base_model = optional_fk(
        ModelVersion, help_text="The backbone, or a PMP'd preference model to finetune from."
    )
    snapshot = optional_fk(DatasetSnapshot, related_name="runs")
    pmp_sources = models.JSONField(default=list, blank=True, help_text="PMP: files and formats.")
    prompt = optional_fk(
        PromptTemplate,
        help_text="Distillation: the prompt the teacher reads (the student learns without it).",
    )
    config = models.JSONField(default=dict)
    steps_done = models.PositiveIntegerField(default=0)
    steps_total = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=list, blank=True, help_text="History: one dict per log.")
    log_tail = models.TextField(blank=True)
    artifact_path = models.CharField(max_length=500, blank=True)
    result_version = optional_fk(ModelVersion, models.SET_NULL)
    promotion = models.JSONField(default=dict, blank=True, help_text="Promoted or not, and why.")

    def __str__(self):
        return f"run {self.pk} ({self.get_kind_display()}, {self.status})"

    @property
    def progress(self) -> float:
        return self.steps_done / self.steps_total if self.steps_total else 0.0
