"""REST API of training runs: researchers read; admins launch and cancel."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from assistant.api import JOB_TIMES, CreateListRetrieveViewSet, LaunchedJobSerializer, read_only_but
from config.roles import ResearcherReadAdminWrite
from config.schema_objects import (
    SchemaObjectField,
    pmp_sources_schema,
    training_config_schema,
    training_run_config_schema,
)

from . import services
from .config import DistillationConfig, PMPConfig, PreferenceTrainingConfig
from .models import TrainingRun

# The config each kind takes: the schema's anyOf lists all three, this picks the kind's own.
KIND_CONFIG = {
    **dict.fromkeys(
        (TrainingRun.Kind.PM, TrainingRun.Kind.PM_BINARY, TrainingRun.Kind.IMITATION),
        SchemaObjectField(training_config_schema(PreferenceTrainingConfig)),
    ),
    TrainingRun.Kind.PMP: SchemaObjectField(training_config_schema(PMPConfig)),
    TrainingRun.Kind.DISTILL: SchemaObjectField(training_config_schema(DistillationConfig)),
}


class TrainingRunSerializer(LaunchedJobSerializer):
    # The settings of the run's kind, their types and RANGES in the schema (one object per config
    # dataclass, additionalProperties: false); null, an unknown key, a wrong type or a value out
    # of range is a 400 naming "config". Which dataclass applies follows `kind`: the service says
    # so (a 400 naming "config" too) when the keys belong to another kind.
    config = SchemaObjectField(training_run_config_schema(), required=False)
    pmp_sources = SchemaObjectField(pmp_sources_schema(), required=False)

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "kind",
            "base_model",
            "snapshot",
            "pmp_sources",
            "prompt",
            "config",
            "status",
            "cancel_requested",
            "steps_done",
            "steps_total",
            "metrics",
            "log_tail",
            "error",
            "artifact_path",
            "result_version",
            "promotion",
            *JOB_TIMES,
        ]
        read_only_fields = read_only_but(
            fields, "kind", "base_model", "snapshot", "pmp_sources", "prompt", "config"
        )

    def validate(self, attrs):
        # Against the kind's own config, so that a refusal lists that kind's settings (a PMP key
        # in a pm run's config is unknown there).
        if "config" in attrs and attrs.get("kind") in KIND_CONFIG:
            try:
                KIND_CONFIG[attrs["kind"]].to_internal_value(attrs["config"])
            except serializers.ValidationError as error:
                raise serializers.ValidationError({"config": error.detail}) from None
        return attrs

    launch = staticmethod(services.training_run_create)


class TrainingRunViewSet(CreateListRetrieveViewSet):
    queryset = TrainingRun.objects.all()
    serializer_class = TrainingRunSerializer
    permission_classes = [ResearcherReadAdminWrite]

    @extend_schema(request=None)  # the action reads no body
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None, format=None):  # format: the router's ".json" suffix
        """Ask the run to stop (at once when queued, at its next step when running)."""
        return Response(
            self.get_serializer(services.training_run_cancel(run=self.get_object())).data
        )
