from django.db import models

from assistant.fields import optional_fk
from assistant.jobs import Job
from assistant.models import ModelVersion
from collection.models import DatasetSnapshot


class EvalRun(Job):
    """One evaluation suite run on one model version, executed by a Celery worker (its status,
    task id, lease and timestamps are those of every job: assistant/jobs.py)."""

    class Suite(models.TextChoices):
        HHH = "hhh", "HHH evaluation (221 items)"
        HHH_UNPROMPTED = "hhh_unprompted", "HHH evaluation, LM without the HHH prompt"
        HELD_OUT = "held_out", "held-out comparisons + calibration"
        TRUTHFULQA = "truthfulqa", "TruthfulQA multiple choice"
        TOXICITY = "toxicity", "toxicity of samples, prompted vs unprompted"

    suite = models.CharField(max_length=20, choices=Suite.choices)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    snapshot = optional_fk(
        DatasetSnapshot,
        help_text="Held-out comparisons: the snapshot whose held-out split is scored.",
    )
    options = models.JSONField(default=dict, blank=True)
    results = models.JSONField(default=dict, blank=True)

    def __str__(self):
        return f"eval {self.pk}: {self.suite} on {self.model_version}"
