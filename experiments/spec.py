"""An experiment's definition, checked at the edge: the DRF serializer that the form, the API
and `manage.py experiment run FILE` all validate with, and the grid it expands into.

A definition (YAML or JSON; see experiments/paper/ for four):

    name: F1 ranked PM vs binary vs imitation
    snapshot: 3                     # a dataset snapshot id: its train split is subsampled,
                                    # its held-out split is shared by every cell
    backbone: default               # a model version id, or "default" (the default LM)
    sizes: [64, 256, all]           # training comparisons per cell ("all": the whole split)
    seeds: [0]
    config: {max_length: 128}       # training settings shared by every run
    eval_options: {hhh: {per_category: 10}}
    conditions:
      - {name: ranked PM, kind: pm}
      - {name: imitation, kind: imitation, evals: [hhh_unprompted]}
    pmp: {sources: [{format: ukpconvarg, path: ...}], config: {train_comparisons: 1000}}
    findings:
      - {claim: "...", test: better, a: {condition: ranked PM, eval: held_out},
         b: {condition: imitation, eval: held_out}, size: largest}

Why DRF serializers rather than hand checks: nested lists of objects with per-field errors
keyed by path ({"conditions": [{"kind": [...]}]}) come for free, and the same class serves the
API.
"""

from __future__ import annotations

import hashlib
import json

from rest_framework import serializers

from assistant.models import ModelVersion
from collection.models import DatasetSnapshot
from evals.models import EvalRun
from evals.services import SUITES_FOR_KIND
from training.models import TrainingRun
from training.services import config_for_kind

# What a condition trains: (training kind, what the model is, whether sizes apply).
CONDITION_KINDS = {
    "pm": (TrainingRun.Kind.PM, ModelVersion.Kind.PM, True),
    "pm_binary": (TrainingRun.Kind.PM_BINARY, ModelVersion.Kind.PM, True),
    "imitation": (TrainingRun.Kind.IMITATION, ModelVersion.Kind.LM, True),
    "pmp_finetune": (TrainingRun.Kind.PM, ModelVersion.Kind.PM, True),
    "distill": (TrainingRun.Kind.DISTILL, ModelVersion.Kind.LM, False),
    "base": (None, ModelVersion.Kind.LM, False),  # the backbone as it is: evals only
}
# The suites each condition gets unless it names its own. An imitation LM's held-out accuracy
# is its training run's (its log-likelihood as the reward: training.losses.sequence_logprobs);
# the held_out suite scores preference models only.
DEFAULT_EVALS = {
    "pm": ["held_out", "hhh"],
    "pm_binary": ["held_out", "hhh"],
    "pmp_finetune": ["held_out", "hhh"],
    "imitation": ["hhh_unprompted"],
    "distill": ["hhh_unprompted", "hhh"],
    "base": ["hhh", "hhh_unprompted"],
}
# The numbers a finding may compare: a suite's overall accuracy, or the held-out accuracy
# (the held_out suite's, else the training run's own final held-out evaluation).
METRICS = ("held_out", "hhh", "hhh_unprompted")
TESTS = ("better", "not_worse", "gain_shrinks")
PRETRAIN = "PMP"  # the condition name of the pre-training cell of pmp_finetune conditions


class ConditionSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=80)
    kind = serializers.ChoiceField(choices=list(CONDITION_KINDS))
    config = serializers.DictField(required=False, default=dict)
    backbone = serializers.CharField(required=False, allow_blank=False)
    # Left out: the kind's DEFAULT_EVALS; [] none (the held-out accuracy of a run is its own).
    evals = serializers.ListField(
        child=serializers.ChoiceField(choices=EvalRun.Suite.values), required=False
    )

    def validate(self, data):
        if data.get("evals") is None:
            data["evals"] = DEFAULT_EVALS[data["kind"]]
        model_kind = CONDITION_KINDS[data["kind"]][1]
        wrong = [s for s in data["evals"] if s not in SUITES_FOR_KIND[model_kind]]
        if wrong:
            raise serializers.ValidationError(
                {"evals": f"{', '.join(wrong)}: not a suite for a {model_kind} model"}
            )
        return data


class SideSerializer(serializers.Serializer):
    condition = serializers.CharField()
    eval = serializers.ChoiceField(choices=METRICS)


class FindingSerializer(serializers.Serializer):
    claim = serializers.CharField(max_length=1000)
    test = serializers.ChoiceField(choices=TESTS)
    a = SideSerializer()
    b = SideSerializer()
    size = serializers.CharField(required=False, default="largest")
    margin = serializers.FloatField(required=False, default=0.05, min_value=0, max_value=1)


class PMPSerializer(serializers.Serializer):
    sources = serializers.ListField(child=serializers.DictField(), min_length=1)
    config = serializers.DictField(required=False, default=dict)


def _size(value):
    if value == "all" or value is None:
        return None
    if type(value) is not int or value < 1:
        raise serializers.ValidationError(f'a size is a whole number ≥ 1 or "all", not {value!r}')
    return value


class ExperimentSpecSerializer(serializers.Serializer):
    """The whole definition; `validated_data` is the spec an Experiment stores (JSON), with the
    snapshot's train size added as `train_rankings`."""

    name = serializers.CharField(max_length=200)
    snapshot = serializers.IntegerField()
    backbone = serializers.CharField(required=False, default="default")
    sizes = serializers.ListField(child=serializers.JSONField(), min_length=1, default=["all"])
    seeds = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=2**32 - 1), min_length=1, default=[0]
    )
    config = serializers.DictField(required=False, default=dict)
    eval_options = serializers.DictField(
        child=serializers.DictField(), required=False, default=dict
    )
    conditions = ConditionSerializer(many=True, allow_empty=False)
    pmp = PMPSerializer(required=False)
    findings = FindingSerializer(many=True, required=False, default=list)
    notes = serializers.CharField(required=False, allow_blank=True, default="")

    def validate_sizes(self, sizes):
        cleaned = [_size(v) for v in sizes]
        if len(set(cleaned)) != len(cleaned):
            raise serializers.ValidationError("each size once")
        return sorted(cleaned, key=lambda s: float("inf") if s is None else s)

    def validate_snapshot(self, snapshot_id):
        if not DatasetSnapshot.objects.filter(pk=snapshot_id).exists():
            raise serializers.ValidationError(f"no dataset snapshot {snapshot_id}")
        return snapshot_id

    def validate_eval_options(self, options):
        from django.core.exceptions import ValidationError

        from evals.services import _clean_options

        for suite, values in options.items():
            if suite not in EvalRun.Suite.values:
                raise serializers.ValidationError(f"unknown suite {suite!r}")
            try:
                _clean_options(values)
            except ValidationError as error:
                raise serializers.ValidationError({suite: error.messages}) from None
        return options

    def validate(self, data):
        names = [c["name"] for c in data["conditions"]]
        if len(set(names)) != len(names) or PRETRAIN in names:
            raise serializers.ValidationError(
                {"conditions": f"condition names must differ from each other and from {PRETRAIN!r}"}
            )
        needs_pmp = any(c["kind"] == "pmp_finetune" for c in data["conditions"])
        if needs_pmp != ("pmp" in data):
            raise serializers.ValidationError(
                {"pmp": "give pmp (sources, config) exactly when a condition is pmp_finetune"}
            )
        _check_backbones(data)
        _check_configs(data)
        _check_findings(data)
        data["train_rankings"] = _train_size(data)
        return data


def resolve_backbone(value: str) -> ModelVersion:
    """A model version by id, or the default LM ("default"); ValueError says why not."""
    from assistant.services import default_lm_ensure

    if value == "default":
        try:
            return default_lm_ensure()
        except (OSError, ImportError) as error:  # the package is missing, the disk is full
            raise ValueError(f"the default LM is not available here: {error}") from None
    version = ModelVersion.objects.filter(pk=int(value)).first() if value.isdigit() else None
    if version is None:
        raise ValueError(f'no model version {value!r} (give its id, or "default")')
    if version.backend != ModelVersion.Backend.TRANSFORMERS:
        raise ValueError(f"{version} is served over HTTP; experiments train local models")
    return version


def _check_backbones(data) -> None:
    for value in {data["backbone"], *(c.get("backbone") for c in data["conditions"])} - {None}:
        if value == "default":
            continue  # converted on first use; checked where the cell is planned
        try:
            resolve_backbone(value)
        except ValueError as error:
            raise serializers.ValidationError({"backbone": str(error)}) from None


def condition_config(data, condition) -> dict:
    """A condition's training settings: the experiment's shared ones under its own (a
    distillation run takes its own only: its settings differ). An experiment's PMs are not
    promoted to serve unless it says so."""
    if condition["kind"] == "distill":
        return dict(condition["config"])
    return {"promote": False, **data["config"], **condition["config"]}


def _check_configs(data) -> None:
    for i, condition in enumerate(data["conditions"]):
        kind = CONDITION_KINDS[condition["kind"]][0]
        if kind is None:
            continue
        try:
            config_for_kind(kind, condition_config(data, condition))
        except (TypeError, ValueError) as error:
            raise serializers.ValidationError({"conditions": {i: {"config": str(error)}}}) from None
    if "pmp" in data:
        from django.conf import settings

        from training.pmp_sources import pmp_sources_confined

        try:
            config_for_kind(TrainingRun.Kind.PMP, data["pmp"]["config"])
        except (TypeError, ValueError) as error:
            raise serializers.ValidationError({"pmp": {"config": str(error)}}) from None
        try:  # a worker reads these files: only inside the data roots, as for a PMP run
            data["pmp"]["sources"] = pmp_sources_confined(
                data["pmp"]["sources"], roots=settings.ALIGNLAB_DATA_ROOTS
            )
        except ValueError as error:
            raise serializers.ValidationError({"pmp": {"sources": str(error)}}) from None


def _check_findings(data) -> None:
    evals = {c["name"]: set(c["evals"]) | {"held_out"} for c in data["conditions"]}
    for i, finding in enumerate(data["findings"]):
        for side in ("a", "b"):
            name, metric = finding[side]["condition"], finding[side]["eval"]
            if name not in evals:
                raise serializers.ValidationError(
                    {"findings": {i: {side: f"no condition {name!r}"}}}
                )
            if metric not in evals[name]:
                raise serializers.ValidationError(
                    {"findings": {i: {side: f"condition {name!r} is not evaluated on {metric}"}}}
                )
        if finding["size"] not in ("largest", "smallest", "all") and not finding["size"].isdigit():
            raise serializers.ValidationError(
                {"findings": {i: {"size": "largest, smallest, all or a number of comparisons"}}}
            )


def _train_size(data) -> int:
    """The snapshot's training rankings; every size of a sized condition must fit in it."""
    from training.snapshots import snapshot_rankings

    snapshot = DatasetSnapshot.objects.get(pk=data["snapshot"])
    available = len(snapshot_rankings(snapshot, "train"))
    too_big = [s for s in data["sizes"] if s is not None and s > available]
    if too_big:
        raise serializers.ValidationError(
            {
                "sizes": f"{too_big} exceed the {available} training rankings of snapshot "
                f"{snapshot.pk}"
            }
        )
    if available == 0:
        raise serializers.ValidationError(
            {"snapshot": f"snapshot {snapshot.pk} has no train split"}
        )
    return available


def spec_errors_text(errors, prefix: str = "") -> list[str]:
    """A serializer's nested errors as lines "conditions.1.config: lr must be …"."""
    if isinstance(errors, dict):
        return [
            line
            for key, value in errors.items()
            for line in spec_errors_text(
                value, f"{prefix}{key}." if key != "non_field_errors" else prefix
            )
        ]
    if isinstance(errors, list) and errors and all(isinstance(e, str) for e in errors):
        return [f"{prefix.rstrip('.') or 'definition'}: {e}" for e in errors]
    if isinstance(errors, list):
        return [
            line
            for i, value in enumerate(errors)
            if value
            for line in spec_errors_text(value, f"{prefix}{i}.")
        ]
    return [f"{prefix.rstrip('.') or 'definition'}: {errors}"]


def plan_hash(plan: dict, snapshot: DatasetSnapshot | None) -> str:
    """The identity of what a cell trains: the plan and the data's content hash."""
    payload = {"plan": plan, "data": snapshot.content_hash if snapshot else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def grid(spec: dict) -> list[dict]:
    """The cells a spec expands into, pre-training first: dicts of condition, kind, size, seed,
    config (sized conditions get train_comparisons and subset_seed), evals."""
    cells = []
    if "pmp" in spec:
        for seed in spec["seeds"]:
            config = {"promote": False, **spec["pmp"]["config"], "seed": seed}
            cells.append(
                {
                    "condition": PRETRAIN,
                    "kind": "pmp",
                    "size": config.get("train_comparisons"),
                    "seed": seed,
                    "config": config,
                    "evals": [],
                    "backbone": spec["backbone"],
                }
            )
    for condition in spec["conditions"]:
        sized = CONDITION_KINDS[condition["kind"]][2]
        for size in spec["sizes"] if sized else [None]:
            for seed in spec["seeds"]:
                config = {**condition_config(spec, condition), "seed": seed}
                if sized:
                    config |= {"train_comparisons": size, "subset_seed": seed}
                cells.append(
                    {
                        "condition": condition["name"],
                        "kind": condition["kind"],
                        "size": size,
                        "seed": seed,
                        "config": config,
                        "evals": condition["evals"],
                        "backbone": condition.get("backbone") or spec["backbone"],
                    }
                )
    return cells


def eval_options(spec: dict, suite: str) -> dict:
    return dict(spec.get("eval_options", {}).get(suite, {}))
