"""REST API of eval runs (researchers and admins list them and launch new ones) and of the Elo
of LM versions from contractor judgements."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.response import Response

from assistant.api import JOB_TIMES, CreateListRetrieveViewSet, LaunchedJobSerializer
from collection.api import StrictQueryMixin
from collection.models import Campaign, Judgement
from config.roles import ResearcherWrite
from config.schema_objects import SchemaObjectField, eval_options_schema

from . import arm_elo, services
from .models import EvalRun


class EvalRunSerializer(LaunchedJobSerializer):
    # The options OPTION_RANGES knows, whole numbers in their ranges; null or another key: 400.
    options = SchemaObjectField(eval_options_schema(), noun="options", required=False)

    class Meta:
        model = EvalRun
        read_only_fields = [
            "pairs_name",
            "status",
            "results",
            "error",
            *JOB_TIMES,
        ]
        # The preference-file suite: a file inside the data roots and its rows' format (an
        # upload goes through the model's page).
        fields = [
            "id",
            "suite",
            "model_version",
            "snapshot",
            "options",
            "pairs_path",
            "pairs_format",
            *read_only_fields,
        ]

    launch = staticmethod(services.eval_run_create)


class EvalRunViewSet(CreateListRetrieveViewSet):
    queryset = EvalRun.objects.select_related("model_version").all()
    serializer_class = EvalRunSerializer
    permission_classes = [ResearcherWrite]


class EloQuery(serializers.Serializer):
    # An id, like the campaign filter of /api/conversations/ and /api/judgements/: one that no
    # campaign has selects no judgements (an empty report), it is not an error.
    campaign = serializers.IntegerField(required=False)
    mode = serializers.ChoiceField(Campaign.Mode.values, required=False)
    origin = serializers.ChoiceField(
        [Judgement.Origin.CONVERSATION, Judgement.Origin.REVIEW],
        required=False,
        help_text="Left out: both, the authors' judgements and the reviewers'.",
    )


class EloViewSet(StrictQueryMixin, viewsets.ViewSet):
    """Elo of (LM version, sampling condition) arms from contractor judgements between them."""

    permission_classes = [ResearcherWrite]
    query_serializer = EloQuery

    @extend_schema(parameters=[EloQuery], responses=OpenApiTypes.OBJECT)
    def list(self, request, format=None):  # format: the router's ".json" suffix
        """`elo_ratings` keyed by arm label, best first, with 95% bootstrap intervals."""
        q = self.query()
        return Response(
            arm_elo.elo_report(
                campaign=q.get("campaign"),
                mode=q.get("mode"),
                origins=[q["origin"]] if "origin" in q else arm_elo.JUDGED_BY_CONTRACTORS,
            )
        )
