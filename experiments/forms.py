"""The form researchers define an experiment with: its definition as YAML or JSON."""

from __future__ import annotations

import yaml
from django import forms
from django.core.exceptions import ValidationError

from .paper import PAPER_EXPERIMENTS

MAX_DEFINITION_CHARS = 100_000


class _NoAliases(yaml.SafeLoader):
    """PyYAML's safe loader (plain data only, no object tags) without aliases: `*name` repeats
    a node without copying it, so a short file of nested aliases expands to gigabytes once
    stored as JSON (a "billion laughs"). A definition never needs one."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted", mark)
        return super().compose_node(parent, index)


def parse_definition(text: str) -> dict:
    """A definition's text (YAML, so JSON too) as a dict, or a ValidationError saying where it
    does not parse."""
    try:
        data = yaml.load(text, Loader=_NoAliases)  # noqa: S506 (a safe loader, see above)
    except yaml.YAMLError as error:
        raise ValidationError(f"not valid YAML or JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValidationError("a definition is a mapping of settings (name, snapshot, conditions…)")
    return data


class ExperimentForm(forms.Form):
    definition = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 18, "cols": 90, "spellcheck": "false"}),
        max_length=MAX_DEFINITION_CHARS,
        help_text="YAML or JSON: name, snapshot (id), backbone, sizes, seeds, config, "
        "eval_options, conditions, pmp, findings. The paper's four are below to start from.",
    )

    def clean_definition(self):
        return parse_definition(self.cleaned_data["definition"])


def paper_examples() -> dict[str, str]:
    """The paper's experiments as definitions to copy (their snapshot left to fill in)."""
    return {
        key: yaml.safe_dump(build(), sort_keys=False) for key, build in PAPER_EXPERIMENTS.items()
    }
