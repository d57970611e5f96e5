"""Datasets: imported files (and the upload jobs that import them) and content-hashed
snapshots of collected judgements."""

from django.db import models

from assistant.fields import Authored, optional_fk
from assistant.jobs import Job

from .campaigns import Campaign


class DatasetImport(Authored):
    """One imported file: its conversations are tagged with it and never mixed in silently."""

    class Format(models.TextChoices):
        HH_RLHF = "hh-rlhf", "HH-RLHF jsonl (chosen/rejected transcripts)"
        OASST = "oasst", "Open-Assistant message trees"
        TRL = "trl", "TRL preference (prompt/chosen/rejected)"

    format = models.CharField(max_length=10, choices=Format.choices)
    source_name = models.CharField(max_length=300, help_text="The file's name, as given.")
    sha256 = models.CharField(max_length=64, unique=True, help_text="Content hash: imports once.")
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="imports")
    counts = models.JSONField(default=dict)

    def __str__(self):
        return f"import {self.pk}: {self.source_name} ({self.format})"


class DatasetSnapshot(Authored):
    """An immutable, content-hashed selection of judgements: what exports and training read."""

    name = models.CharField(max_length=200, blank=True)
    filter = models.JSONField(help_text="The filter that selected the data, as given.")
    counts = models.JSONField(default=dict)
    content_hash = models.CharField(max_length=64, db_index=True)
    files = models.JSONField(default=dict, help_text="Written files: format -> path.")

    def __str__(self):
        return f"snapshot {self.pk} {self.content_hash[:12]}"


class ImportJob(Job):
    """An import file uploaded from the browser, imported by a worker (assistant/jobs.py).

    The upload is written by the web process to a path it chooses under the uploads folder
    (`stored_path`; never a path the user gave); the worker runs `dataset_import_create` on it
    and links the result. `progress` holds {"stage", "done", "total"} while it runs.
    """

    format = models.CharField(max_length=10, choices=DatasetImport.Format.choices)
    mode = models.CharField(
        max_length=10, choices=Campaign.Mode.choices, default=Campaign.Mode.HELPFUL
    )
    source_name = models.CharField(max_length=300, help_text="The uploaded file's name.")
    stored_path = models.CharField(max_length=500)
    size_bytes = models.PositiveBigIntegerField(default=0)
    progress = models.JSONField(default=dict, blank=True)
    dataset_import = optional_fk(DatasetImport, models.SET_NULL)

    def __str__(self):
        return f"import job {self.pk}: {self.source_name} ({self.status})"
