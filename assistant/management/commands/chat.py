"""Talk to the prompted model in the terminal (an empty line or Ctrl-D ends the chat)."""

import sys

from django.core.management.base import BaseCommand, CommandError

from assistant import runtime
from assistant.backends import BackendError, Message
from assistant.models import ModelVersion
from assistant.selectors import active_model, prompt_latest
from assistant.services import default_lm_ensure


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--model", type=int, help="model version id (default: the active LM)")
        parser.add_argument("--prompt", default="hhh", help="prompt name, or 'none' for no prompt")
        parser.add_argument(
            "--k", type=int, default=1, help="responses per turn; the first continues"
        )
        parser.add_argument("--temperature", type=float)
        parser.add_argument("--max-new-tokens", type=int)
        parser.add_argument("--seed", type=int)

    def handle(self, *args, **o):
        version = self._model(o["model"])
        prompt = None if o["prompt"] == "none" else prompt_latest(name=o["prompt"])
        if o["prompt"] != "none" and prompt is None:
            raise CommandError(f"no prompt named {o['prompt']!r}")
        params = runtime.sampling_params(
            version,
            temperature=o["temperature"],
            max_new_tokens=o["max_new_tokens"],
            seed=o["seed"],
        )
        self.stderr.write(f"Loading {version} with prompt {prompt.key if prompt else 'none'} …")
        backend = runtime.lm_backend(version)
        interactive = sys.stdin.isatty()
        messages: list[Message] = []
        while True:
            if interactive:
                self.stdout.write("\nHuman: ", ending="")
                self.stdout.flush()
            line = sys.stdin.readline()
            if not line.strip():
                return
            messages.append(Message("user", line.strip()))
            try:
                samples = backend.generate(runtime.build_context(messages, prompt), o["k"], params)
            except BackendError as error:
                raise CommandError(str(error)) from None
            for i, sample in enumerate(samples):
                label = "Assistant:" if o["k"] == 1 else f"Assistant [{i + 1}]:"
                self.stdout.write(f"{label} {sample.text.strip()}")
            first = samples[0]
            dropped = f", dropped {first.dropped_turns} old turns" if first.dropped_turns else ""
            took = f"{first.completion_tokens} tokens, {first.latency_s:.1f} s{dropped}"
            self.stderr.write(f"({took})")
            messages.append(Message("assistant", samples[0].text.strip()))

    def _model(self, model_id):
        if model_id is not None:
            try:
                return ModelVersion.objects.get(pk=model_id, kind=ModelVersion.Kind.LM)
            except ModelVersion.DoesNotExist:
                raise CommandError(f"no language model version {model_id}") from None
        return active_model(kind=ModelVersion.Kind.LM) or default_lm_ensure()
