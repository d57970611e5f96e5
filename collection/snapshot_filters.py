"""Snapshot filters: which judgements a snapshot holds. `snapshot_filter_clean` validates one
(the `SnapshotFilter` serializer: one field per key, in the order they are checked) and
`filter_judgements` runs it. config/schema_objects.py states the same filter as JSON Schema for
the API; tests/api/test_schema_objects.py keeps the two in step.

A filter is JSON: nothing is coerced ("1" is not an id, "yes" is not true), and every refusal is
a `SnapshotFilterError` naming its key.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from rest_framework import serializers
from rest_framework.fields import empty

from .dataset_errors import SnapshotFilterError
from .models import Campaign, Conversation, Judgement
from .quality import contractor_gold_accuracy

FILTER_KEYS = (
    "campaigns",
    "modes",
    "sources",
    "imports",
    "date_from",
    "date_to",
    "min_gold_accuracy",
    "consensus_only",
    "exclude_eval_prompts",
    "weighting",
)
WEIGHTINGS = ("none", "reliability")
HHH_CATEGORIES = ("helpful", "honest", "harmless", "other")
# The shipped eval sets a filter may exclude by name: a name, never a path, so a request can
# make the server read nothing but these files (settings ALIGNLAB_HHH_DIR and
# ALIGNLAB_TRUTHFULQA_FILE).
EVAL_PROMPT_SETS = ("hhh", *(f"hhh:{category}" for category in HHH_CATEGORIES), "truthfulqa")
MAX_EVAL_PROMPTS = 10_000  # a list of prompts given inline: at most this many…
MAX_EVAL_PROMPT_CHARS = 10_000  # …of at most this many characters each
EVAL_PROMPTS_HELP = (
    f"exclude_eval_prompts must be the name of a shipped eval set ({', '.join(EVAL_PROMPT_SETS)})"
    f" or a list of at most {MAX_EVAL_PROMPTS:,} prompt strings of at most"
    f" {MAX_EVAL_PROMPT_CHARS:,} characters each"
)


# --- The fields ---------------------------------------------------------------------------------


class _JSONField(serializers.Field):
    """A filter value taken as JSON gives it: `check(value, key)` refuses what it must and returns
    the clean value. Unlike DRF's own fields nothing is coerced, and null reaches `check` too."""

    def validate_empty_values(self, data):
        if data is empty:
            return super().validate_empty_values(data)  # left out: the default, or nothing
        return False, data

    def to_internal_value(self, data):
        return self.check(data, self.field_name)

    def to_representation(self, value):
        return value

    def check(self, value, key: str):
        raise NotImplementedError


class _Ids(_JSONField):
    def check(self, value, key):
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise serializers.ValidationError(f"{key} must be a list of ids, got {value!r}")
        return sorted(set(value))


class _Choices(_JSONField):
    def __init__(self, allowed, **kwargs):
        super().__init__(**kwargs)
        self.allowed = allowed

    def check(self, value, key):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
            raise serializers.ValidationError(
                f"{key} must be a non-empty list of strings, got {value!r}"
            )
        unknown = sorted(set(value) - set(self.allowed))
        if unknown:
            raise serializers.ValidationError(
                f"{key}: unknown value(s) {', '.join(unknown)} (allowed: {', '.join(self.allowed)})"
            )
        return sorted(set(value))


class _Moment(_JSONField):
    """An ISO date or datetime, kept as given (`moment` reads it when the filter runs)."""

    def __init__(self, *, end: bool, **kwargs):
        super().__init__(**kwargs)
        self.end = end

    def check(self, value, key):
        moment(value, key, end=self.end)
        return value


class _Fraction(_JSONField):
    def check(self, value, key):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise serializers.ValidationError(f"{key} must be between 0 and 1, got {value!r}")
        return float(value)


class _Bool(_JSONField):
    def check(self, value, key):
        if not isinstance(value, bool):
            raise serializers.ValidationError(f"{key} must be true or false, got {value!r}")
        return value


class _EvalPrompts(_JSONField):
    """A shipped eval set's name or a list of prompts, kept as given; the set must be readable."""

    def check(self, value, key):
        eval_prompts(value)
        return value


class _Weighting(_JSONField):
    def check(self, value, key):
        if value not in WEIGHTINGS:
            raise serializers.ValidationError(
                f"{key} must be one of {', '.join(WEIGHTINGS)}, got {value!r}"
            )
        return value


class SnapshotFilter(serializers.Serializer):
    """A snapshot filter's keys, in the order they are checked (the first refusal is reported)."""

    campaigns = _Ids(required=False)
    modes = _Choices(Campaign.Mode.values, required=False)
    imports = _Ids(required=False)
    # Imported data is never mixed in silently: it comes only when named (sources or imports);
    # `snapshot_filter_clean` fills in the default, which depends on imports.
    sources = _Choices(Conversation.Source.values)
    date_from = _Moment(end=False, required=False)
    date_to = _Moment(end=True, required=False)
    min_gold_accuracy = _Fraction(required=False)
    consensus_only = _Bool(default=False)
    exclude_eval_prompts = _EvalPrompts(required=False)
    weighting = _Weighting(default="none")

    def validate_sources(self, sources: list[str]) -> list[str]:
        if "imports" in self.initial_data and "imported" not in sources:
            raise serializers.ValidationError(
                'imports selects imported data: add "imported" to sources'
            )
        return sources


def snapshot_filter_clean(filter: dict) -> dict:
    """Validate a snapshot filter; return it with its defaults made explicit (JSON-ready)."""
    if not isinstance(filter, dict):
        raise SnapshotFilterError(f"the filter must be a JSON object, got {filter!r}")
    unknown = sorted(set(filter) - set(FILTER_KEYS))
    if unknown:
        raise SnapshotFilterError(
            f"unknown filter key(s): {', '.join(unknown)} (allowed: {', '.join(FILTER_KEYS)})"
        )
    default_sources = ["imported"] if "imports" in filter else ["collected"]
    form = SnapshotFilter(data={"sources": default_sources, **filter})
    if not form.is_valid():
        first = next(iter(form.errors.values()))
        raise SnapshotFilterError(str(first[0]))
    clean: dict[str, Any] = dict(form.validated_data)
    if clean["weighting"] == "none":  # only when asked, so older snapshots' filters read the same
        del clean["weighting"]
    return clean


# --- What the values mean -----------------------------------------------------------------------


def moment(value, key: str, *, end: bool) -> datetime:
    """An ISO date (from its first moment, or `end`: to its last) or datetime, in UTC."""
    if not isinstance(value, str):
        raise SnapshotFilterError(f"{key} must be an ISO date or datetime string, got {value!r}")
    try:  # a bare date first: parse_datetime would read "2031-05-02" as its midnight
        day = parse_date(value)
        instant = None if day else parse_datetime(value)
    except ValueError:
        instant = day = None
    if instant is None and day is None:
        raise SnapshotFilterError(f"{key}: {value!r} is not an ISO date (YYYY-MM-DD) or datetime")
    if instant is None:  # a date: from its first moment, or to its last
        instant = datetime.combine(day, time.max if end else time.min)
    if timezone.is_naive(instant):
        instant = timezone.make_aware(instant, timezone.get_default_timezone())
    try:  # in UTC: PostgreSQL refuses offsets past ±15:59, which RFC 3339 allows (to ±23:59)
        return instant.astimezone(UTC)
    except OverflowError:  # "9999-12-31T23:59:59-01:00" is past the last moment Python has
        raise SnapshotFilterError(f"{key}: {value!r} is out of range") from None


def normalize_prompt(text: str) -> str:
    return " ".join(text.split())


def _eval_set_prompts(name: str) -> list[str]:
    """The prompts of a shipped eval set, by name (one of EVAL_PROMPT_SETS)."""
    if name == "truthfulqa":
        rows = json.loads(Path(settings.ALIGNLAB_TRUTHFULQA_FILE).read_text(encoding="utf-8"))
        return [row["question"] for row in rows]
    categories = HHH_CATEGORIES if name == "hhh" else (name.removeprefix("hhh:"),)
    prompts = []
    for category in categories:
        task = Path(settings.ALIGNLAB_HHH_DIR) / category / "task.json"
        prompts += [e["input"] for e in json.loads(task.read_text(encoding="utf-8"))["examples"]]
    return prompts


def eval_prompts(value) -> set[str]:
    """The normalized prompts `exclude_eval_prompts` names; opens no file but the shipped sets."""
    if isinstance(value, str):
        # The same message for every other string: nothing is opened, nothing can be probed.
        if value not in EVAL_PROMPT_SETS:
            raise SnapshotFilterError(EVAL_PROMPTS_HELP)
        try:
            return {normalize_prompt(prompt) for prompt in _eval_set_prompts(value)}
        except (OSError, ValueError, KeyError, TypeError):
            raise SnapshotFilterError(
                f"exclude_eval_prompts: the shipped eval set {value!r} cannot be read on this "
                "server (see the settings ALIGNLAB_HHH_DIR and ALIGNLAB_TRUTHFULQA_FILE)"
            ) from None
    if (
        not isinstance(value, list)
        or len(value) > MAX_EVAL_PROMPTS
        or not all(isinstance(v, str) and len(v) <= MAX_EVAL_PROMPT_CHARS for v in value)
    ):
        raise SnapshotFilterError(EVAL_PROMPTS_HELP)
    return {normalize_prompt(v) for v in value}


def filter_judgements(clean: dict):
    """The judgements a clean filter selects, before eval-prompt exclusion."""
    source_q = Q()
    for source in clean["sources"]:
        if source == "imported" and "imports" in clean:
            source_q |= Q(
                turn__conversation__source=source,
                turn__conversation__dataset_import__in=clean["imports"],
            )
        else:
            source_q |= Q(turn__conversation__source=source)
    judgements = Judgement.objects.filter(source_q)
    if "campaigns" in clean:
        judgements = judgements.filter(turn__conversation__campaign__in=clean["campaigns"])
    if "modes" in clean:
        judgements = judgements.filter(turn__conversation__campaign__mode__in=clean["modes"])
    if "date_from" in clean:
        judgements = judgements.filter(created_at__gte=moment(clean["date_from"], "", end=False))
    if "date_to" in clean:
        judgements = judgements.filter(created_at__lte=moment(clean["date_to"], "", end=True))
    if "min_gold_accuracy" in clean:
        # Contractors with no gold answers have no measured accuracy and are left out; imported
        # judgements have no contractor and are not subject to this filter.
        threshold = clean["min_gold_accuracy"]
        accurate = [
            contractor
            for contractor, (right, total) in contractor_gold_accuracy().items()
            if right / total >= threshold
        ]
        judgements = judgements.filter(Q(contractor__isnull=True) | Q(contractor__in=accurate))
    return judgements
