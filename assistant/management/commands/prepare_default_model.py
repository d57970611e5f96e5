"""Convert the default LM from its PyPI package (once) and register it as a model version."""

from django.core.management.base import BaseCommand

from assistant.services import default_lm_ensure


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options):
        version = default_lm_ensure()
        state = "active" if version.is_active else "registered"
        self.stdout.write(f"Default language model: {version} ({state}) at {version.path}")
