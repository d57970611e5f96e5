"""Export and snapshot jobs: a snapshot written to a file by a worker, offered for download when
ready; a snapshot of many judgements made by a worker."""

from django.db import models

from assistant.jobs import Job

from .datasets import DatasetSnapshot


class ExportJob(Job):
    """One export of a snapshot (its format, file format, split and pairs), written by the
    `collection.run_export` task to `stored_path` (a name the server makes under
    COLLECTION_EXPORTS_DIR; assistant/jobs.py: claim, lease, heartbeat, finish, sweep).

    `progress` holds {"done", "total"} rows while it runs; `rows` and `size_bytes` the result.
    """

    class FileFormat(models.TextChoices):
        JSONL = "jsonl", "JSON lines"
        PARQUET = "parquet", "Parquet"

    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.PROTECT, related_name="exports")
    export_format = models.CharField(max_length=10, help_text="hh-rlhf, trl, ranked or raw.")
    file_format = models.CharField(max_length=10, choices=FileFormat.choices)
    split = models.CharField(max_length=10, default="all")
    pairs = models.CharField(max_length=10, default="all")
    margin = models.BooleanField(default=False)
    stored_path = models.CharField(max_length=500, blank=True)
    rows = models.PositiveBigIntegerField(null=True, blank=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    progress = models.JSONField(default=dict, blank=True)

    def __str__(self):
        return f"export job {self.pk}: snapshot {self.snapshot_id} ({self.status})"

    @property
    def file_name(self) -> str:
        """The name the download is offered under."""
        return (
            f"snapshot-{self.snapshot_id}-{self.export_format}-{self.split}"
            f"{'-adjacent' if self.pairs == 'adjacent' else ''}"
            f"{'-margin' if self.margin else ''}.{self.file_format}"
        )


class SnapshotJob(Job):
    """A snapshot too big to make inside a request (more than ALIGNLAB_SNAPSHOT_INLINE_MAX
    judgements), made by the `collection.run_snapshot` task (collection/snapshot_jobs.py).

    `filter` is the cleaned filter (`snapshot_filter_clean`); `progress` holds {"stage",
    "done", "total"} while it runs; `snapshot` the result.
    """

    filter = models.JSONField(help_text="The cleaned snapshot filter.")
    name = models.CharField(max_length=200, blank=True)
    judgements = models.PositiveBigIntegerField(
        default=0, help_text="How many judgements the filter selected when it was asked for."
    )
    snapshot = models.OneToOneField(
        DatasetSnapshot,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="job",
    )
    progress = models.JSONField(default=dict, blank=True)

    def __str__(self):
        return f"snapshot job {self.pk}: {self.name or 'unnamed'} ({self.status})"
