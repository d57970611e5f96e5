"""Run an eval suite on a model version now, in this process, and print the results."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from assistant.models import ModelVersion
from evals import services
from evals.models import EvalRun
from evals.reports import length_summary


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--suite", required=True, choices=EvalRun.Suite.values)
        parser.add_argument("--model", required=True, type=int, help="model version id")
        parser.add_argument("--snapshot", type=int, help="held_out: the dataset snapshot")
        parser.add_argument("--limit", type=int, help="only the first N items (a quick look)")
        parser.add_argument(
            "--pairs-path", help="preference_file: the file, inside ALIGNLAB_DATA_ROOTS"
        )
        parser.add_argument(
            "--pairs-format",
            choices=EvalRun.PairsFormat.values,
            help="preference_file: the rows' format (jsonl, jsonl.gz or Parquet alike)",
        )

    def handle(self, *args, **o):
        try:
            version = ModelVersion.objects.get(pk=o["model"])
        except ModelVersion.DoesNotExist:
            raise CommandError(f"no model version {o['model']}") from None
        options = {"limit": o["limit"]} if o["limit"] else {}
        try:
            run = services.eval_run_create(
                suite=o["suite"],
                model_version=version,
                snapshot_id=o["snapshot"],
                options=options,
                pairs_path=o["pairs_path"],
                pairs_format=o["pairs_format"],
            )
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        # Claimed here, so a worker that sees the queued task skips it; with a week's lease, as
        # this process has no task time limit and the sweeper must not hand the run to a worker.
        claimed = services.eval_run_claim(eval_run_id=run.pk, lease_s=7 * 24 * 3600)
        if claimed is None:
            raise CommandError(
                f"eval run {run.pk} was taken by a worker; see /evals/runs/{run.pk}/"
            )
        run = services.eval_run_execute(run=claimed)
        if run.status != EvalRun.Status.SUCCEEDED:
            raise CommandError(f"eval run {run.pk} failed: {run.error}")
        results = run.results
        self.stdout.write(f"eval run {run.pk}: {run.get_suite_display()} on {version}")
        for name, cell in [
            ("overall", results.get("overall")),
            *results.get("categories", {}).items(),
        ]:
            if cell and cell.get("accuracy") is not None:
                self.stdout.write(
                    f"  {name:<10} {cell['accuracy']:.3f}  [{cell['low']:.3f}, {cell['high']:.3f}]"
                    f"  n={cell['n']}"
                )
        for key in ("mc1", "mc2", "prompt"):
            if key in results:
                self.stdout.write(f"  {key}: {results[key]}")
        length = length_summary(results)  # what the run's page says of length, in lines
        if length:
            for row in length["rows"]:
                self.stdout.write(
                    f"  {row['label']}: {row['accuracy']:.1f}% [{row['low']:.1f}, "
                    f"{row['high']:.1f}] n={row['n']} {row['note']}".rstrip()
                )
            self.stdout.write(f"  {length['verdict']}\n  length bias: {length['bias']}")
