"""Freeze a dataset snapshot: `manage.py make_snapshot --filter '{"sources": ["collected"]}'`."""

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from collection.dataset_errors import DatasetError
from collection.snapshots import snapshot_create


class Command(BaseCommand):
    help = "Create an immutable, content-hashed dataset snapshot from a JSON filter."

    def add_arguments(self, parser):
        parser.add_argument(
            "--filter", default="{}", help="JSON object (see collection.snapshot_filters)"
        )
        parser.add_argument("--name", default="")
        parser.add_argument("--user", help="username recorded as the creator")

    def handle(self, *args, **options):
        try:
            filter_ = json.loads(options["filter"])
        except json.JSONDecodeError as error:
            raise CommandError(f"--filter is not JSON: {error}") from error
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user named {options['user']!r}")
        try:
            snapshot = snapshot_create(filter=filter_, created_by=user, name=options["name"])
        except DatasetError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"snapshot {snapshot.pk} sha256:{snapshot.content_hash} "
            + json.dumps(snapshot.counts, sort_keys=True)
        )
