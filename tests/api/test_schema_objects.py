"""The JSON objects inside API bodies (config/schema_objects.py): what the OpenAPI schema says of
them is what the API takes. A value the schema refuses is a 400 naming its field; one it allows
gets past the field (schemathesis round 5, SECURITY.md)."""

import dataclasses

import pytest
import yaml
from rest_framework.test import APIClient

from assistant.backends.base import SamplingParams
from assistant.models import ModelVersion
from collection import exports, snapshot_filters
from collection.models import Campaign, DatasetSnapshot
from config.schema_objects import (
    SchemaObjectField,
    sampling_schema,
    snapshot_filter_schema,
    training_config_schema,
)
from evals.models import EvalRun
from tests.api.refusals import refused
from training.config import DistillationConfig, PMPConfig, PreferenceTrainingConfig
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(api):
    response = api.get("/api/schema/")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


@pytest.mark.parametrize(
    "sampling, words",
    [
        (None, "may not be null"),
        ({"temperature": "hot"}, "temperature must be a number from 0, not 'hot'"),
        ({"temperature": -0.1}, "temperature must be a number from 0"),
        ({"top_p": 0}, "top_p must be a number above 0 to 1, not 0"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_new_tokens": 2.0}, "max_new_tokens must be a whole number from 1"),
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"stop": "Human:"}, "stop must be a list"),
        ({"stop": [1]}, "stop.0 must be a string"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"colour": "red"}, "unknown sampling settings: colour"),
        ({"x-schemathesis-additional": {}}, "unknown sampling settings"),
    ],
)
def test_campaign_sampling_outside_its_schema_is_refused(api, lm, sampling, words):
    body = {"name": "c", "lm_version": lm.pk, "sampling": sampling}
    assert words in refused(api.post("/api/campaigns/", body, format="json"), "sampling")
    assert not Campaign.objects.exists()


def test_campaign_sampling_the_schema_allows_is_kept(api, lm):
    sampling = {"temperature": 0, "top_p": 1, "max_new_tokens": 1, "stop": [], "seed": None}
    made = api.post(
        "/api/campaigns/", {"name": "c", "lm_version": lm.pk, "sampling": sampling}, format="json"
    )
    assert made.status_code == 201, made.json()
    assert Campaign.objects.get().sampling == sampling


@pytest.mark.parametrize(
    "body, field, words",
    [
        ({"backend_options": None}, "backend_options", "may not be null"),
        ({"backend_options": []}, "backend_options", "must be an object"),
        ({"generation_defaults": None}, "generation_defaults", "may not be null"),
        ({"generation_defaults": {"top_p": 2}}, "generation_defaults", "top_p"),
        ({"generation_defaults": {"temp": 1}}, "generation_defaults", "unknown keys: temp"),
        ({"metadata": "x"}, "metadata", "must be an object"),
    ],
)
def test_model_version_objects_outside_their_schema_are_refused(api, body, field, words):
    body = {"kind": "lm", "name": "m", "backend": "openai", "url": "http://127.0.0.1:1/v1", **body}
    assert words in refused(api.post("/api/model-versions/", body, format="json"), field)
    assert not ModelVersion.objects.exists()


@pytest.mark.parametrize(
    "filter, words",
    [
        ({"x-schemathesis-additional": {}}, "unknown filter key(s): x-schemathesis-additional"),
        ({"campaigns": ["1"]}, "campaigns.0 must be a whole number"),
        ({"modes": []}, "modes"),
        ({"modes": ["sad"]}, "modes.0 must be one of helpful, red_team, honest"),
        ({"min_gold_accuracy": 2}, "min_gold_accuracy must be a number from 0 to 1"),
        ({"consensus_only": "yes"}, "consensus_only must be true or false"),
        ({"date_from": 20310502}, "date_from must be a string"),
    ],
)
def test_snapshot_filters_outside_their_schema_are_refused(rita, filter, words):
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(rita)
    response = client.post("/api/snapshots/", {"name": "s", "filter": filter}, format="json")
    assert words in refused(response, "filter")
    assert not DatasetSnapshot.objects.exists()


@pytest.mark.parametrize(
    "body, field, words",
    [
        ({"config": None}, "config", "may not be null"),
        ({"config": {"x-schemathesis-additional": {}}}, "config", "unknown keys"),
        ({"config": {"lr": 0}}, "config", "lr must be a number above 0 to 1, not 0"),
        ({"config": {"max_steps": 2.0}}, "config", "max_steps must be a whole number from 1"),
        ({"config": {"bf16": "yes"}}, "config", "bf16"),
        ({"config": {"loss": "hinge"}}, "config", "loss"),
        ({"pmp_sources": None}, "pmp_sources", "may not be null"),
        ({"pmp_sources": [{"format": "reddit"}]}, "pmp_sources", "path"),
        ({"pmp_sources": [{"format": "usenet", "path": "x"}]}, "pmp_sources", "format"),
    ],
)
def test_training_run_objects_outside_their_schema_are_refused(api, body, field, words):
    snapshot = DatasetSnapshot.objects.create(filter={}, content_hash="0" * 64)
    body = {"kind": "pm", "snapshot": snapshot.pk, **body}
    assert words in refused(api.post("/api/training-runs/", body, format="json"), field)
    assert not TrainingRun.objects.exists()


def test_eval_options_null_is_refused(api, lm):
    body = {"suite": "toxicity", "model_version": lm.pk, "options": None}
    refused(api.post("/api/eval-runs/", body, format="json"), "options")
    assert not EvalRun.objects.exists()


@pytest.mark.parametrize(
    "query, parameter",
    [
        ("file_format=%C2%A1", "file_format"),
        ("export=csv", "export"),
        ("split=test", "split"),
        ("pairs=some", "pairs"),
    ],
)
def test_download_parameters_outside_their_choices_are_refused(rita, query, parameter):
    snapshot = DatasetSnapshot.objects.create(filter={}, content_hash="0" * 64)
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(rita)
    response = client.get(f"/api/snapshots/{snapshot.pk}/download/?{query}")
    assert "not a valid choice" in refused(response, parameter)


def test_elo_of_a_campaign_no_one_has_is_an_empty_report(rita):
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(rita)
    response = client.get("/api/elo/?campaign=0")
    assert response.status_code == 200, response.content[:300]
    report = response.json()
    assert report["ratings"] == {} and report["judgements"] == 0, report
    assert refused(client.get("/api/elo/?campaign=first"), "campaign")


def test_the_schema_lists_the_keys_the_services_know(schema):
    components = schema["components"]["schemas"]
    sampling = components["Campaign"]["properties"]["sampling"]
    assert sampling["additionalProperties"] is False
    assert set(sampling["properties"]) == {f.name for f in dataclasses.fields(SamplingParams)}
    assert components["ModelVersion"]["properties"]["generation_defaults"] == sampling
    snapshot_filter = components["Snapshot"]["properties"]["filter"]
    assert snapshot_filter["additionalProperties"] is False
    assert tuple(snapshot_filter["properties"]) == snapshot_filters.FILTER_KEYS
    configs = components["TrainingRun"]["properties"]["config"]["anyOf"]
    for config, cls in zip(
        configs, (PreferenceTrainingConfig, PMPConfig, DistillationConfig), strict=True
    ):
        assert config["additionalProperties"] is False
        assert set(config["properties"]) == {f.name for f in dataclasses.fields(cls)}
    assert configs[0]["properties"]["lr"] == {
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "exclusiveMinimum": True,
    }
    download = schema["paths"]["/api/snapshots/{id}/download/"]["get"]["parameters"]
    enums = {p["name"]: p["schema"].get("enum") for p in download if p["in"] == "query"}
    assert enums["file_format"] == list(exports.FILE_FORMATS)
    assert enums["export"] == list(exports.EXPORT_FORMATS)


def test_the_schema_documents_the_web_servers_bodiless_414_everywhere(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "content" not in operation["responses"]["414"], (path, method)
            assert "web server" in operation["responses"]["414"]["description"], (path, method)


@pytest.mark.parametrize("cls", [PreferenceTrainingConfig, PMPConfig, DistillationConfig])
def test_every_default_config_and_its_range_bounds_fit_the_schema(cls):
    """The schema takes what the dataclass takes at the edges: a run's stored config (the
    response) conforms, and a bound the dataclass allows is not refused by the field."""
    from training.config import RANGES

    field = SchemaObjectField(training_config_schema(cls))
    stored = cls().to_dict()
    assert field.to_internal_value(stored) == stored
    for name, limits in RANGES.items():
        if name not in stored:
            continue
        integer = isinstance(stored[name], int) or stored[name] is None and name != "max_grad_norm"
        high = int(limits.high) if integer else limits.high
        cls.from_dict({name: high})  # the dataclass takes the bound…
        assert field.to_internal_value({name: high}) == {name: high}  # …so does the schema
        if not limits.above_low:
            low = int(limits.low) if integer else limits.low
            cls.from_dict({name: low})
            assert field.to_internal_value({name: low}) == {name: low}


def test_sampling_schema_takes_what_sampling_params_takes():
    field = SchemaObjectField(sampling_schema())
    for values in ({"temperature": 0.0}, {"top_p": 1}, {"max_new_tokens": 1}, {"stop": ["x"]}):
        SamplingParams(**values)
        assert field.to_internal_value(values) == values


def test_snapshot_filter_schema_takes_dates_and_datetimes():
    field = SchemaObjectField(snapshot_filter_schema())
    for moment in ("2031-05-02", "2031-05-02T10:00:00Z", "2031-05-02T10:00:00.123456+02:00"):
        value = {"date_from": moment, "date_to": moment}
        assert field.to_internal_value(value) == value
        snapshot_filters.snapshot_filter_clean(value)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"is_active": 0}, "is_active"),
        ({"is_active": "false"}, "is_active"),
        ({"k": "2"}, "k"),
        ({"k": True}, "k"),
        ({"name": 5}, "name"),
        ({"lm_version": "LM"}, "lm_version"),
    ],
)
def test_a_value_of_another_json_type_is_refused_not_coerced(api, lm, body, field):
    body = {"name": "c", "lm_version": lm.pk, **body}
    if field == "lm_version":
        body["lm_version"] = str(lm.pk)
    refused(api.post("/api/campaigns/", body, format="json"), field)
    assert not Campaign.objects.exists()
    campaign = Campaign.objects.create(name="c", lm_version=lm)
    refused(api.patch(f"/api/campaigns/{campaign.pk}/", body, format="json"), field)
    campaign.refresh_from_db()
    assert campaign.is_active and campaign.k == 2 and campaign.name == "c"


def test_a_blank_download_parameter_is_refused_not_read_as_left_out(rita):
    snapshot = DatasetSnapshot.objects.create(filter={}, content_hash="0" * 64)
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(rita)
    response = client.get(f"/api/snapshots/{snapshot.pk}/download/?split=&export=hh-rlhf")
    assert "not a valid choice" in refused(response, "split")


def test_a_body_over_the_upload_limit_is_a_json_413(rita, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(rita)
    filter = {"exclude_eval_prompts": ["x" * 1000] * 20}
    response = client.post("/api/snapshots/", {"filter": filter}, format="json")
    assert response.status_code == 413, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert "10,000 bytes" in response.json()["detail"]
    assert not DatasetSnapshot.objects.exists()


@pytest.mark.parametrize("offset", ["-22:47", "+16:00"])
def test_a_utc_offset_past_what_postgresql_stores_is_a_400_not_a_server_error(rita, offset):
    """schemathesis round 5 (stateful): date_to "0196-02-17T22:30:37-22:47" is RFC 3339, and
    PostgreSQL refused it in the query ("time zone displacement out of range"): a 500."""
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(rita)
    filter = {"date_to": f"2031-02-17T22:30:37{offset}"}
    response = client.post("/api/snapshots/", {"filter": filter}, format="json")
    assert "UTC offset past ±15:59" in refused(response, "filter")
    # One that time zones use is not refused for it.
    filter = {"date_to": "2031-02-17T22:30:37+14:00"}
    response = client.post("/api/snapshots/", {"filter": filter}, format="json")
    assert "UTC offset" not in str(response.json())
