"""`manage.py experiment run FILE`: start an experiment from a YAML or JSON definition."""

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from experiments.forms import parse_definition
from experiments.inline import run_inline
from experiments.services import experiment_create


class Command(BaseCommand):
    help = "Start an experiment from a definition file (YAML or JSON); see experiments/spec.py."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        run = sub.add_parser("run", help="validate FILE and start the experiment it defines")
        run.add_argument("file")
        run.add_argument("--user", help="username that owns the experiment")
        run.add_argument(
            "--inline", action="store_true", help="run its cells in this process (no worker)"
        )

    def handle(self, *args, **options):
        user = None
        if options.get("user"):
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user named {options['user']!r}")
        path = Path(options["file"])
        try:
            data = parse_definition(path.read_text())
            experiment = experiment_create(data=data, launched_by=user)
        except OSError as error:
            raise CommandError(f"cannot read {path}: {error}") from None
        except ValidationError as error:
            raise CommandError(
                f"{path} is not a valid experiment:\n  " + "\n  ".join(error.messages)
            ) from None
        self.stdout.write(f"started {experiment} with {experiment.cells_total} cells")
        if options["inline"]:
            experiment = run_inline(experiment, self.stdout.write)
            self.stdout.write(f"{experiment}")
