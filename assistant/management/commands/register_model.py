"""Register a model version: a local folder / .gguf file, or an OpenAI-compatible server URL."""

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from assistant.models import ModelVersion
from assistant.services import model_version_register


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--kind", choices=["lm", "pm"], default="lm")
        parser.add_argument("--name", required=True)
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--path", help="a Hugging Face model folder or a .gguf file")
        where.add_argument("--url", help="an OpenAI-compatible server, e.g. http://gpu1:8000/v1")
        parser.add_argument("--remote-model", default="", help="the model's name on that server")
        parser.add_argument(
            "--options", default="{}", help='backend options as JSON, e.g. {"mode": "completion"}'
        )
        parser.add_argument(
            "--defaults",
            default="{}",
            help='generation defaults as JSON, e.g. {"temperature": 0.7}',
        )
        parser.add_argument(
            "--activate", action="store_true", help="make it the active model of its kind"
        )

    def handle(self, *args, **o):
        try:
            options, defaults = json.loads(o["options"]), json.loads(o["defaults"])
        except json.JSONDecodeError as error:
            raise CommandError(f"--options / --defaults must be JSON objects: {error}") from None
        backend = ModelVersion.Backend.OPENAI if o["url"] else ModelVersion.Backend.TRANSFORMERS
        if backend == ModelVersion.Backend.OPENAI and not o["remote_model"]:
            raise CommandError("--url needs --remote-model (the model's name on that server)")
        try:
            version = model_version_register(
                kind=o["kind"],
                name=o["name"],
                backend=backend,
                path=o["path"] or "",
                url=o["url"] or "",
                remote_model=o["remote_model"],
                backend_options=options,
                generation_defaults=defaults,
                activate=o["activate"],
            )
        except ValidationError as error:
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items())
            ) from None
        self.stdout.write(f"Registered {version}{' (active)' if o['activate'] else ''}.")
