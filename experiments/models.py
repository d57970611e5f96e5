"""An experiment: a named grid of training runs on one dataset snapshot and the evals of each
resulting model; one cell per (condition, size, seed), linked to its ordinary runs."""

from django.db import models

from assistant.jobs import Job
from assistant.models import ModelVersion
from collection.models import DatasetSnapshot
from evals.models import EvalRun
from training.models import TrainingRun


class Experiment(Job):
    """A job (assistant/jobs.py): queued until its first advance, running while its cells run,
    then succeeded (every cell), failed (some cell failed: `error` says which) or cancelled.

    `spec` is the validated definition (experiments/spec.py); `launched_by` owns it."""

    name = models.CharField(max_length=200)
    spec = models.JSONField()
    snapshot = models.ForeignKey(
        DatasetSnapshot, on_delete=models.PROTECT, related_name="experiments"
    )
    cells_total = models.PositiveIntegerField(default=0)
    cells_done = models.PositiveIntegerField(default=0)

    class Meta(Job.Meta):
        pass

    def __str__(self):
        return f"experiment {self.pk}: {self.name} ({self.status})"

    @property
    def progress(self) -> float:
        return self.cells_done / self.cells_total if self.cells_total else 0.0


class ExperimentCell(models.Model):
    """One (condition, size, seed) of an experiment: its training run (or none: a base model
    evaluated as it is), the model version it produced, and its evals."""

    class Status(models.TextChoices):
        PENDING = "pending"
        TRAINING = "training"
        EVALUATING = "evaluating"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="cells")
    condition = models.CharField(max_length=80)
    kind = models.CharField(max_length=20)
    size = models.PositiveIntegerField(null=True, blank=True, help_text="None: all of the split.")
    seed = models.PositiveIntegerField(default=0)
    # What the cell trains (experiments.spec.cell_plan): the run's kind, base, config, sources.
    plan = models.JSONField(default=dict)
    # sha256 of the plan with the snapshot's content hash: equal hashes train the same model, so
    # a cell of any experiment with this hash and a live run lends it that run.
    spec_hash = models.CharField(max_length=64, db_index=True)
    depends_on = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="dependents"
    )
    training_run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reused = models.BooleanField(
        default=False, help_text="Its training run came from another cell."
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "condition", "size", "seed"], name="one_cell_per_point"
            )
        ]

    def __str__(self):
        return f"{self.condition} @ {self.size or 'all'} seed {self.seed}"

    @property
    def size_label(self) -> str:
        return "all" if self.size is None else str(self.size)


class ExperimentEval(models.Model):
    """One suite a cell's model is evaluated on, and the eval run that does it."""

    cell = models.ForeignKey(ExperimentCell, on_delete=models.CASCADE, related_name="evals")
    suite = models.CharField(max_length=20, choices=EvalRun.Suite.choices)
    options = models.JSONField(default=dict, blank=True)
    eval_run = models.ForeignKey(
        EvalRun, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["pk"]
        constraints = [models.UniqueConstraint(fields=["cell", "suite"], name="one_eval_per_suite")]

    def __str__(self):
        return f"{self.suite} of {self.cell}"
