"""REST API of experiments: researchers and admins list, read (with the report's numbers),
define and cancel them (cancel: the owner or an admin)."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from config.roles import ADMIN, ResearcherWrite, has_role
from config.schema_objects import JSONModelSerializer

from . import services
from .models import Experiment
from .spec import ExperimentSpecSerializer


class ExperimentSerializer(JSONModelSerializer):
    # The definition, validated by the same serializer as the form's and the command's.
    definition = serializers.JSONField(write_only=True)

    class Meta:
        model = Experiment
        read_only_fields = [
            "name",
            "spec",
            "snapshot",
            "status",
            "cancel_requested",
            "error",
            "cells_total",
            "cells_done",
            "launched_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        fields = ["id", "definition", *read_only_fields]

    def validate_definition(self, value):
        checked = ExperimentSpecSerializer(data=value)
        checked.is_valid(raise_exception=True)
        return value

    def create(self, validated_data):
        user = self.context["request"].user
        return self.saved(
            services.experiment_create, data=validated_data["definition"], launched_by=user
        )


class ExperimentViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    queryset = Experiment.objects.select_related("snapshot").all()
    serializer_class = ExperimentSerializer
    permission_classes = [ResearcherWrite]

    @extend_schema(request=None)  # the action reads no body
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None, format=None):  # format: the router's ".json" suffix
        """Cancel the experiment as a whole (its owner, or an admin)."""
        experiment = self.get_object()
        if experiment.launched_by_id != request.user.pk and not has_role(request.user, ADMIN):
            raise PermissionDenied("only its owner or an admin cancels an experiment")
        return Response(self.get_serializer(services.experiment_cancel(experiment=experiment)).data)

    @extend_schema(request=None, responses={200: dict})
    @action(detail=True, methods=["get"])
    def report(self, request, pk=None, format=None):
        """Every number of the experiment: cells, curves, HHH categories, verdicts."""
        from .report import experiment_report, report_json

        return Response(report_json(experiment_report(self.get_object())))
