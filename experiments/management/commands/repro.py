"""`manage.py repro`: the four experiments of Askell et al. 2021 (experiments/paper.py), run
in this process one after the other, each report written as HTML, JSON and CSV.

    manage.py repro                                   # shipped HH-RLHF test file; F2 skipped
    manage.py repro --hh-rlhf DATA/hh-rlhf/harmless-base/test.jsonl.gz \\
        --stackexchange DATA/stackexchange_small_sites \\
        --ukpconvarg DATA/ukpconvarg1/UKPConvArg1Strict-CSV   # DATA: a folder of real data
    manage.py repro --scale paper                     # a GPU machine
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.template.loader import render_to_string

from collection.imports import SHIPPED_HH_RLHF
from experiments.inline import run_inline
from experiments.paper import PAPER_EXPERIMENTS, SCALES
from experiments.services import experiment_create


def _posts_files(path: Path) -> list[Path]:
    """A Posts.xml, or every */Posts.xml under a folder of Stack Exchange sites."""
    return [path] if path.is_file() else sorted(path.glob("*/Posts.xml"))


class Command(BaseCommand):
    help = "Run the paper's four experiments (F1-F4) and write their reports."

    def add_arguments(self, parser):
        parser.add_argument("--scale", choices=list(SCALES), default="small")
        parser.add_argument("--hh-rlhf", default=str(SHIPPED_HH_RLHF), help="HH-RLHF jsonl(.gz)")
        parser.add_argument("--stackexchange", help="a Posts.xml, or a folder of sites")
        parser.add_argument("--ukpconvarg", help="the UKPConvArg1 CSV folder")
        parser.add_argument("--only", default="F1,F2,F3,F4", help="e.g. F1,F3")
        parser.add_argument("--out", default=None, help="report folder (var/repro/)")

    def handle(self, *args, **options):
        started = time.monotonic()
        out = Path(options["out"] or settings.VAR_DIR / "repro")
        out.mkdir(parents=True, exist_ok=True)
        sources = self._pmp_sources(options)  # checked first: the import takes a while
        snapshot = self._snapshot(Path(options["hh_rlhf"]))
        self.stdout.write(
            f"snapshot {snapshot.pk} ({snapshot.content_hash[:12]}); scale "
            f"{options['scale']}: {json.dumps(SCALES[options['scale']])}"
        )
        summary = []
        for key in [k.strip() for k in options["only"].split(",") if k.strip()]:
            if key not in PAPER_EXPERIMENTS:
                raise CommandError(f"no experiment {key!r} (known: {', '.join(PAPER_EXPERIMENTS)})")
            if key == "F2" and not sources:
                self.stdout.write("F2 skipped: give --stackexchange and/or --ukpconvarg")
                continue
            data = PAPER_EXPERIMENTS[key](
                scale=options["scale"], snapshot=snapshot.pk, pmp_sources=sources
            )
            summary.append(self._run(key, data, out))
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        self.stdout.write(f"done in {time.monotonic() - started:.0f} s; reports in {out}")

    def _snapshot(self, path: Path):
        from collection.imports import dataset_import_create
        from collection.models import DatasetSnapshot
        from collection.snapshots import snapshot_create

        if not path.is_file():
            raise CommandError(f"no HH-RLHF file {path}")
        imported = dataset_import_create(path=path, format="hh-rlhf")  # idempotent by hash
        name = f"repro: {path.name} (import {imported.pk})"
        existing = DatasetSnapshot.objects.filter(name=name).order_by("pk").first()
        return existing or snapshot_create(filter={"imports": [imported.pk]}, name=name)

    def _pmp_sources(self, options) -> list[dict]:
        """The PMP files, the data roots widened to hold them (paths on the command line are
        the operator's own, as `register_model` takes any path)."""
        sources = []
        if options["stackexchange"]:
            files = _posts_files(Path(options["stackexchange"]).resolve())
            if not files:
                raise CommandError(f"no Posts.xml at {options['stackexchange']}")
            sources += [{"format": "stackexchange", "path": str(f)} for f in files]
        if options["ukpconvarg"]:
            folder = Path(options["ukpconvarg"]).resolve()
            if not folder.exists():
                raise CommandError(f"no UKPConvArg1 folder {folder}")
            sources.append({"format": "ukpconvarg", "path": str(folder)})
        roots = {str(Path(s["path"]).parent) for s in sources}
        settings.ALIGNLAB_DATA_ROOTS = [*settings.ALIGNLAB_DATA_ROOTS, *sorted(roots)]
        return sources

    def _run(self, key: str, data: dict, out: Path) -> dict:
        from experiments.pages import report_context
        from experiments.report import report_csv, report_json

        began = time.monotonic()
        try:
            experiment = experiment_create(data=data)
        except ValidationError as error:
            raise CommandError(f"{key}: " + "; ".join(error.messages)) from None
        self.stdout.write(f"{key}: {experiment} ({experiment.cells_total} cells)")
        experiment = run_inline(experiment, self.stdout.write)
        context = report_context(experiment)
        stem = out / f"{key}-experiment-{experiment.pk}"
        stem.with_suffix(".html").write_text(
            render_to_string("experiments/standalone.html", context)
        )
        numbers = report_json(context["report"])
        stem.with_suffix(".json").write_text(json.dumps(numbers, indent=1))
        stem.with_suffix(".csv").write_text(report_csv(context["report"]))
        seconds = time.monotonic() - began
        self.stdout.write(f"{key}: {experiment.status} in {seconds:.0f} s")
        for finding in context["report"]["findings"]:
            self.stdout.write(f"  {finding['text']}")
        return {
            "key": key,
            "experiment": experiment.pk,
            "status": experiment.status,
            "seconds": round(seconds, 1),
            "findings": [f["text"] for f in context["report"]["findings"]],
            "report": str(stem.with_suffix(".html")),
        }
