"""REST API of eval runs: researchers and admins list them and launch new ones."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import mixins, serializers, viewsets

from config.roles import ResearcherWrite

from . import services
from .models import EvalRun


class EvalRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = EvalRun
        fields = [
            "id",
            "suite",
            "model_version",
            "snapshot",
            "options",
            "status",
            "results",
            "error",
            "launched_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = [
            "status",
            "results",
            "error",
            "launched_by",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def create(self, validated_data):
        try:
            return services.eval_run_create(
                launched_by=self.context["request"].user, **validated_data
            )
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict) from None


class EvalRunViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    queryset = EvalRun.objects.select_related("model_version").all()
    serializer_class = EvalRunSerializer
    permission_classes = [ResearcherWrite]
