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


class EloSummary(models.Model):
    """The games between arms that contractor judgements imply, counted per (campaign, judged
    by) cell, as of `computed_at`: the periodic task `evals.refresh_elo` stores one row, and
    the Elo page and API add up the cells a filter selects once there are too many judgements
    to read per request (evals/selectors.py, `elo_games`)."""

    key = models.CharField(max_length=20, unique=True, default="all")
    # [{"campaign", "origin", "judgements", "same_arm", "unversioned",
    #   "games": [[winner version, winner condition, loser version, loser condition, n], …],
    #   "names": {version id: name}}, …]
    cells = models.JSONField(default=list)
    last_judgement_id = models.PositiveBigIntegerField(default=0)
    computed_at = models.DateTimeField()
    seconds = models.FloatField(default=0.0, help_text="How long computing it took.")

    def __str__(self):
        return f"Elo games at {self.computed_at:%Y-%m-%d %H:%M}"
