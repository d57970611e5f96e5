"""Import a public preference file: `manage.py import_dataset --format hh-rlhf --file PATH`."""

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from collection.dataset_errors import DatasetError
from collection.imports import dataset_import_create
from collection.management import ProgressBar
from collection.models import Campaign, DatasetImport


class Command(BaseCommand):
    help = "Import HH-RLHF, Open-Assistant or TRL preference data (idempotent, all-or-nothing)."

    def add_arguments(self, parser):
        parser.add_argument("--format", required=True, choices=DatasetImport.Format.values)
        parser.add_argument("--file", required=True, help="jsonl or jsonl.gz")
        parser.add_argument("--mode", default=Campaign.Mode.HELPFUL, choices=Campaign.Mode.values)
        parser.add_argument("--user", help="username recorded as the importer")

    def handle(self, *args, **options):
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user named {options['user']!r}")
        progress = ProgressBar(options.get("stderr"))
        try:
            dataset_import = dataset_import_create(
                path=options["file"],
                format=options["format"],
                mode=options["mode"],
                created_by=user,
                progress=progress,
            )
        except DatasetError as error:
            raise CommandError(str(error)) from error
        finally:
            progress.close()
        self.stdout.write(
            f"import {dataset_import.pk} ({dataset_import.source_name}, "
            f"campaign {dataset_import.campaign_id}): "
            + json.dumps(dataset_import.counts, sort_keys=True)
        )
