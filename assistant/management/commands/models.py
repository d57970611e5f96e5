"""List the registered model versions."""

from django.core.management.base import BaseCommand

from assistant.selectors import model_versions


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--kind", choices=["lm", "pm"], help="only this kind")

    def handle(self, *args, kind=None, **options):
        versions = list(model_versions(kind=kind))
        if not versions:
            self.stdout.write(
                "No model versions. `manage.py prepare_default_model` adds the default LM."
            )
            return
        self.stdout.write(
            f"{'id':>4}  {'kind':4}  {'active':6}  {'backend':12}  {'origin':8}  name / where"
        )
        for v in versions:
            where = v.path or f"{v.url} ({v.remote_model})"
            self.stdout.write(
                f"{v.pk:>4}  {v.kind:4}  {'yes' if v.is_active else '':6}  {v.backend:12}  "
                f"{v.origin:8}  {v.name}  {where}"
            )
