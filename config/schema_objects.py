"""JSON objects inside API bodies, each with one OpenAPI schema that both documents and checks it.

A campaign's `sampling` and a model version's `generation_defaults`, a snapshot `filter`, a
training run's `config` and `pmp_sources`, an eval run's `options`: the schema lists their keys
(`additionalProperties: false`), types and ranges, built from the same constants the services
check against (SamplingParams, FILTER_KEYS, the config dataclasses and RANGES, OPTION_RANGES),
and `SchemaObjectField` refuses, with a 400 naming the field, whatever that schema does not
allow. The services' own checks still run after it: what a schema cannot say (an id that does
not exist, a rule that ties two fields together) stays theirs, and SECURITY.md lists those
refusals (schemathesis round 5).

The schemas are OpenAPI 3.0 schema objects (JSON Schema draft 4 with `nullable`); validation
uses jsonschema's Draft4Validator (drf-spectacular's own dependency), where `integer` is a whole
JSON number (not 2.0) and neither `number` nor `integer` takes true/false.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from drf_spectacular.utils import extend_schema_field
from jsonschema import Draft4Validator
from jsonschema.exceptions import best_match
from rest_framework import serializers


def _for_validation(schema: Any) -> Any:
    """`schema` with OpenAPI's `nullable: true` written as JSON Schema (`anyOf` with null)."""
    if isinstance(schema, list):
        return [_for_validation(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _for_validation(value) for key, value in schema.items() if key != "nullable"}
    if schema.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def _shown(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return "a number too large to print"
    return text if len(text) <= limit else text[: limit - 3] + "..."


_TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "string": "a string",
    "array": "a list",
    "object": "an object",
    "null": "null",
}


def _message(error, noun: str, root: dict) -> str:
    """A refusal in words: where in the value, what it must be, what it was; or, for a key
    whose schema has one, its own `x-refusal` (the same words whatever was wrong)."""
    path = [str(part) for part in error.absolute_path]
    if path:
        own = root.get("properties", {}).get(path[0], {}).get("x-refusal")
        if own:
            return own
    where = ".".join(path)
    schema, value = error.schema, error.instance
    if error.validator == "additionalProperties":
        known = list(schema.get("properties", {}))
        unknown = sorted(map(str, set(value) - set(known)))
        inside = f" in {where}" if where else ""
        return f"unknown {noun}{inside}: {', '.join(unknown)} (known: {', '.join(known)})"
    if error.validator == "anyOf" and error.context:  # the branch that came closest
        return _message(best_match(error.context), noun, root)
    what = where or "the value"
    if error.validator in ("type", "minimum", "maximum") and (
        "minimum" in schema or "maximum" in schema
    ):
        kind = _TYPE_WORDS.get(schema.get("type"), "a number")
        low = schema.get("minimum")
        if low is None:
            bounds = f" up to {schema['maximum']}"
        else:
            bounds = f" above {low}" if schema.get("exclusiveMinimum") else f" from {low}"
            if "maximum" in schema:
                bounds += f" to {schema['maximum']}"
        return f"{what} must be {kind}{bounds}, not {_shown(value)}"
    if error.validator == "type":
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        return f"{what} must be {words}, not {_shown(value)}"
    if error.validator == "enum":
        return f"{what} must be one of {', '.join(map(str, schema['enum']))}, not {_shown(value)}"
    return f"{what}: {error.message}" if where else error.message


class SchemaObjectField(serializers.JSONField):
    """A JSON value checked against `schema` (an OpenAPI schema object), which is also what the
    OpenAPI schema says of the field. A refusal is a 400 naming the field, saying where inside
    the value and what was wrong, e.g. {"sampling": ["top_p must be a number above 0 to 1,
    not 0"]}."""

    def __init__(self, schema: dict, *, noun: str = "keys", **kwargs):
        self.object_schema = schema
        self.noun = noun  # what an unknown key is called in a refusal
        self._validator = Draft4Validator(_for_validation(schema))
        super().__init__(**kwargs)
        # drf-spectacular reads the field's schema from here (what extend_schema_field sets).
        extend_schema_field(schema)(self)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        error = best_match(self._validator.iter_errors(value))
        if error is not None:
            raise serializers.ValidationError(_message(error, self.noun, self.object_schema)[:500])
        return value


def strict_object(properties: dict, **extra) -> dict:
    """An object with only these keys (each optional unless `required` says otherwise)."""
    return {"type": "object", "properties": properties, "additionalProperties": False, **extra}


# --- Sampling (assistant.backends.base.SamplingParams) ---------------------------------------


def sampling_schema() -> dict:
    schema = strict_object(
        {
            "temperature": {"type": "number", "minimum": 0, "description": "0: greedy"},
            "top_p": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1},
            "max_new_tokens": {"type": "integer", "minimum": 1},
            "stop": {"type": "array", "items": {"type": "string"}},
            # What torch and numpy take as a seed (32 bits); null: not seeded.
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1, "nullable": True},
        },
        description="Overrides of the LM's sampling defaults (SamplingParams); e.g. "
        '{"temperature": 0.8, "top_p": 0.95}.',
    )
    return schema  # tests/api/test_schema_objects.py: its keys are SamplingParams' fields


# --- Snapshot filters (collection.snapshot_filters.snapshot_filter_clean) ---------------------


def snapshot_filter_schema() -> dict:
    from collection import snapshot_filters
    from collection.models import Campaign, Conversation

    moment = {
        "type": "string",
        "description": "An ISO date (YYYY-MM-DD: from its first moment, to its last) or datetime",
        "anyOf": [{"format": "date"}, {"format": "date-time"}],
    }
    schema = strict_object(
        {
            "campaigns": {"type": "array", "items": {"type": "integer"}},
            "modes": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "enum": list(Campaign.Mode.values)},
            },
            "sources": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "enum": list(Conversation.Source.values)},
                "description": 'Left out: ["collected"], or ["imported"] when imports is given; '
                'imports needs "imported" here.',
            },
            "imports": {"type": "array", "items": {"type": "integer"}},
            "date_from": moment,
            "date_to": moment,
            "min_gold_accuracy": {"type": "number", "minimum": 0, "maximum": 1},
            "consensus_only": {"type": "boolean"},
            "exclude_eval_prompts": {
                "description": "A shipped eval set by name, or a list of prompts",
                # The service's words for every bad value: nothing is opened, nothing probed.
                "x-refusal": snapshot_filters.EVAL_PROMPTS_HELP,
                "anyOf": [
                    {"type": "string", "enum": list(snapshot_filters.EVAL_PROMPT_SETS)},
                    {
                        "type": "array",
                        "maxItems": snapshot_filters.MAX_EVAL_PROMPTS,
                        "items": {
                            "type": "string",
                            "maxLength": snapshot_filters.MAX_EVAL_PROMPT_CHARS,
                        },
                    },
                ],
            },
            "weighting": {
                "type": "string",
                "enum": list(snapshot_filters.WEIGHTINGS),
                "description": 'Left out: "none". "reliability": each judgement carries its '
                "contractor's reliability weight (consensus and weighted training use it).",
            },
        },
        description='Which judgements the snapshot holds, e.g. {"campaigns": [1], '
        '"consensus_only": true}; {} selects every collected judgement.',
    )
    return schema  # tests/api/test_schema_objects.py: its keys are snapshot_filters.FILTER_KEYS


# --- Training configs (training.config) -------------------------------------------------------


def _config_field_schema(field: dataclasses.Field) -> dict:
    from training import config

    annotation = str(field.type)
    if field.name == "bf16":
        return {"anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["auto"]}]}
    base = annotation.removesuffix(" | None")
    schema: dict[str, Any] = {
        "type": {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}[base]
    }
    limits = config.RANGES.get(field.name)
    if limits is not None:
        schema.update(minimum=limits.low, maximum=limits.high)
        if limits.above_low:
            schema["exclusiveMinimum"] = True
    choices = {
        "loss": config.LOSSES,
        "attention": config.ATTENTIONS,
        "compile_layers": config.COMPILE_CHOICES,
        "render_mode": config.RENDER_MODES,
    }.get(field.name)
    if choices:
        schema["enum"] = list(choices)
    if annotation.endswith(" | None"):
        schema["nullable"] = True
    return schema


def training_config_schema(config_class) -> dict:
    """The settings one config dataclass takes, each with its type and RANGES."""
    return strict_object(
        {field.name: _config_field_schema(field) for field in dataclasses.fields(config_class)},
        title=config_class.__name__,
    )


def training_run_config_schema() -> dict:
    from training.config import DistillationConfig, PMPConfig, PreferenceTrainingConfig

    return {
        "description": "Settings for the run's kind: PreferenceTrainingConfig (pm, pm_binary, "
        "imitation; loss as the kind trains), PMPConfig (pmp) or DistillationConfig (distill). "
        "Left out: the kind's defaults.",
        "anyOf": [
            training_config_schema(cls)
            for cls in (PreferenceTrainingConfig, PMPConfig, DistillationConfig)
        ],
    }


def pmp_sources_schema() -> dict:
    from training.pmp_sources import MAX_PMP_SOURCES, PMP_FORMATS

    return {
        "type": "array",
        "maxItems": MAX_PMP_SOURCES,
        "description": "PMP (and only PMP): the public ranked files, each inside the data roots "
        "(ALIGNLAB_DATA_ROOTS).",
        "items": strict_object(
            {
                "format": {"type": "string", "enum": list(PMP_FORMATS)},
                "path": {"type": "string"},
            },
            required=["format", "path"],
        ),
    }


# --- Eval options (evals.services.OPTION_RANGES) -----------------------------------------------


def eval_options_schema() -> dict:
    from evals.services import OPTION_RANGES

    return strict_object(
        {
            name: {"type": "integer", "minimum": low, "maximum": high}
            for name, (low, high) in OPTION_RANGES.items()
        },
        description='e.g. {"limit": 10}: the first 10 items of the suite.',
    )


# --- JSON types as the schema says them --------------------------------------------------------
# DRF's fields take form-style values too: 0 or "yes" for a boolean, "5" for an integer or an id,
# 5 for a string. The API takes JSON only, and its schema says boolean, integer, string: these
# fields take just that, so a value of another JSON type is a 400 naming the field.


class JSONBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "Must be true or false, not {input}."}

    def to_internal_value(self, data):
        if data is True or data is False:
            return data
        self.fail("invalid", input=_shown(data))


class JSONIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool | str):
            self.fail("invalid")
        return super().to_internal_value(data)


class JSONCharField(serializers.CharField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class JSONPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    def to_internal_value(self, data):
        if isinstance(data, str):
            self.fail("incorrect_type", data_type="str")
        return super().to_internal_value(data)


class JSONModelSerializer(serializers.ModelSerializer):
    """A ModelSerializer whose generated fields take only their schema's JSON type."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        **{
            model_field: JSONIntegerField
            for model_field, field in serializers.ModelSerializer.serializer_field_mapping.items()
            if field is serializers.IntegerField
        },
        **{
            model_field: JSONCharField
            for model_field, field in serializers.ModelSerializer.serializer_field_mapping.items()
            if field is serializers.CharField
        },
    }
    serializer_field_mapping[models.BooleanField] = JSONBooleanField
    serializer_related_field = JSONPrimaryKeyRelatedField

    @staticmethod
    def saved(save, **kwargs):
        """`save(**kwargs)` (a service's create), its Django ValidationError as the API's 400."""
        try:
            return save(**kwargs)
        except DjangoValidationError as error:
            raise serializers.ValidationError(
                error.message_dict if hasattr(error, "error_dict") else {"detail": error.messages}
            ) from None
