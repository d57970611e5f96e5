"""REST API of training runs: researchers read; admins launch and cancel."""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from config.roles import ResearcherReadAdminWrite

from . import services
from .models import TrainingRun


class TrainingRunSerializer(serializers.ModelSerializer):
    # An object of settings (the schema says so; null is a 400), checked by the kind's config.
    config = serializers.DictField(required=False)

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
            "launched_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = [
            f
            for f in fields
            if f not in {"kind", "base_model", "snapshot", "pmp_sources", "prompt", "config"}
        ]

    def validate_config(self, value):
        # Its keys, types and ranges are checked by the kind's config dataclass (the service).
        if not isinstance(value, dict):
            raise serializers.ValidationError(
                'Give an object of settings, e.g. {"max_steps": 100}, or leave it out.'
            )
        return value

    def create(self, validated_data):
        try:
            return services.training_run_create(
                launched_by=self.context["request"].user, **validated_data
            )
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict) from None


class TrainingRunViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
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
