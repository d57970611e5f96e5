"""Export a snapshot: `manage.py export_dataset --snapshot 3 --format trl --out trl.parquet`."""

from django.core.management.base import BaseCommand, CommandError

from collection.dataset_errors import DatasetError
from collection.exports import EXPORT_FORMATS, FILE_FORMATS, export_write
from collection.management import ProgressBar
from collection.models import DatasetSnapshot
from collection.splits import SPLITS


class Command(BaseCommand):
    help = "Write a dataset snapshot as HH-RLHF, TRL, ranked or raw rows (jsonl or Parquet)."

    def add_arguments(self, parser):
        parser.add_argument("--snapshot", required=True, type=int)
        parser.add_argument("--format", required=True, choices=EXPORT_FORMATS)
        parser.add_argument("--file-format", default="jsonl", choices=FILE_FORMATS)
        parser.add_argument("--out", required=True)
        parser.add_argument("--split", default="all", choices=SPLITS)
        parser.add_argument("--pairs", default="all", choices=("all", "adjacent"))
        parser.add_argument("--margin", action="store_true", help="trl: add a margin column")

    def handle(self, *args, **options):
        snapshot = DatasetSnapshot.objects.filter(pk=options["snapshot"]).first()
        if snapshot is None:
            raise CommandError(f"no snapshot {options['snapshot']}")
        progress = ProgressBar(options.get("stderr"))
        try:
            count = export_write(
                snapshot=snapshot,
                fmt=options["format"],
                file_format=options["file_format"],
                path=options["out"],
                progress=progress,
                split=options["split"],
                pairs=options["pairs"],
                margin=options["margin"],
            )
        except DatasetError as error:
            raise CommandError(str(error)) from error
        finally:
            progress.close()
        self.stdout.write(f"wrote {count} rows to {options['out']}")
