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
        PREFERENCE_FILE = "preference_file", "preference file vs the length baseline"

    class PairsFormat(models.TextChoices):
        # The row formats of collection's import parsers; jsonl, jsonl.gz or Parquet alike.
        HH_RLHF = "hh-rlhf", "HH-RLHF (chosen / rejected transcripts)"
        TRL = "trl", "TRL (prompt / chosen / rejected)"

    suite = models.CharField(max_length=20, choices=Suite.choices)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    snapshot = optional_fk(
        DatasetSnapshot,
        help_text="Held-out comparisons: the snapshot whose held-out split is scored.",
    )
    pairs_path = models.CharField(
        max_length=1000,
        blank=True,
        help_text="Preference file: the file the worker reads (inside the data roots, or an "
        "upload kept until the run ends).",
    )
    pairs_format = models.CharField(max_length=20, choices=PairsFormat.choices, blank=True)
    pairs_name = models.CharField(
        max_length=1000,
        blank=True,
        help_text="Preference file: as the researcher named it (the path, or the upload's name).",
    )
    options = models.JSONField(default=dict, blank=True)
    results = models.JSONField(default=dict, blank=True)

    def __str__(self):
        return f"eval {self.pk}: {self.suite} on {self.model_version}"
