"""REST API of the collection app: researchers read, admins also write; contractors get nothing."""

from datetime import timedelta

from django.http import StreamingHttpResponse
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response as APIResponse
from rest_framework.reverse import reverse

from assistant.api import CreateListRetrieveViewSet
from config.roles import ResearcherReadAdminWrite, ResearcherWrite
from config.schema_objects import (
    JSONModelSerializer,
    SchemaObjectField,
    sampling_schema,
    snapshot_filter_schema,
)

from . import campaigns, exports
from .dataset_errors import DatasetError
from .export_api import SnapshotJobSerializer
from .export_jobs import stream_refusal
from .models import (
    Campaign,
    Conversation,
    DatasetSnapshot,
    Judgement,
    Response,
    SnapshotJob,
    Turn,
)
from .snapshot_jobs import snapshot_request
from .splits import SPLITS


class NewestFirstCursor(CursorPagination):
    """Pages of the big lists (conversations, judgements), newest first, by an opaque `cursor`
    from `next`/`previous` instead of a page number. A page costs the same at a million rows:
    the database walks the id index from the cursor and stops after a page; a page number
    needs an exact COUNT(*) of everything the filters select, 150–220 ms for one campaign's
    56,000 judgements at a million (BENCHMARKS.md, "Scale"). So these lists give no `count`."""

    ordering = "-id"
    page_size = 50


class StrictQueryMixin:
    """Validate query parameters with `query_serializer`: unknown or bad ones are a 400.
    `filtered` narrows a queryset by the given ones, each through its lookup in `lookups`."""

    query_serializer: type[serializers.Serializer]
    always_allowed = {"page", "cursor", "format"}
    lookups: dict[str, str] = {}

    def filtered(self, queryset):
        q = self.query()
        for key, lookup in self.lookups.items():
            if key in q:
                queryset = queryset.filter(**{lookup: q[key]})
        return queryset

    def query(self) -> dict:
        params = self.request.query_params
        known = set(self.query_serializer().fields) | self.always_allowed
        unknown = sorted(set(params) - known)
        if unknown:
            raise serializers.ValidationError(
                {"detail": f"unknown filter(s): {', '.join(unknown)}; known: {sorted(known)}"}
            )
        checked = self.query_serializer(
            data={k: params[k] for k in params if k not in self.always_allowed}
        )
        checked.is_valid(raise_exception=True)
        return checked.validated_data


class CampaignSerializer(JSONModelSerializer):
    # An object of SamplingParams' settings, their types and ranges in the schema; null, an
    # unknown key or a wrong type is a 400 naming "sampling" (not a TypeError in generation).
    sampling = SchemaObjectField(sampling_schema(), noun="sampling settings", required=False)

    class Meta:
        model = Campaign
        fields = [
            "id",
            "name",
            "instructions",
            "mode",
            "lm_version",
            "prompt",
            "k",
            "judgement_type",
            "sampling",
            "max_turns",
            "quota_per_contractor",
            "overlap_target",
            "is_active",
            "created_at",
        ]
        # The model's check constraints, here so that each refusal names its field (full_clean
        # would report a violated constraint under "__all__").
        extra_kwargs = {
            "name": {"min_length": 1},  # said in the schema too (the model refuses blank)
            "k": {"min_value": 2, "max_value": 8},
            "max_turns": {"min_value": 1},
            "overlap_target": {"min_value": 1},
        }

    def validate(self, attrs):
        def value(name):  # as the campaign will be saved: this request's, else stored or default
            if name in attrs:
                return attrs[name]
            if self.instance is not None:
                return getattr(self.instance, name)
            return Campaign._meta.get_field(name).get_default()

        if value("judgement_type") == Campaign.JudgementType.PAIRWISE and value("k") != 2:
            raise serializers.ValidationError(
                {
                    "k": "A pairwise campaign offers k = 2 responses; rank 3 to 8 in a ranking "
                    "or mixed campaign."
                }
            )
        return attrs

    # Saved through the service the admin uses: the model's full_clean() (so no sampling
    # setting that would break generation is stored), and the review queue kept in step.
    def create(self, validated_data):
        return self.saved(campaigns.campaign_create, **validated_data)

    def update(self, instance, validated_data):
        return self.saved(campaigns.campaign_update, campaign=instance, **validated_data)


class CampaignViewSet(viewsets.ModelViewSet):
    queryset = Campaign.objects.all()
    serializer_class = CampaignSerializer
    permission_classes = [ResearcherReadAdminWrite]
    http_method_names = ["get", "post", "patch", "head", "options"]  # campaigns are not deleted


class ResponseSerializer(serializers.ModelSerializer):
    class Meta:
        model = Response
        fields = [
            "id",
            "index",
            "text",
            "model_version",
            "prompt",
            "sampling_params",
            "prompt_tokens",
            "completion_tokens",
            "logprob",
            "finish_reason",
            "latency_s",
            "dropped_turns",
        ]


class TurnSerializer(serializers.ModelSerializer):
    responses = ResponseSerializer(many=True, read_only=True)

    class Meta:
        model = Turn
        fields = [
            "id",
            "index",
            "human_text",
            "status",
            "chosen_response",
            "responses",
            "created_at",
        ]


class ConversationSerializer(serializers.ModelSerializer):
    turns = TurnSerializer(many=True, read_only=True)

    class Meta:
        model = Conversation
        fields = [
            "id",
            "campaign",
            "contractor",
            "status",
            "source",
            "dataset_import",
            "created_at",
            "ended_at",
            "turns",
        ]


class ConversationQuery(serializers.Serializer):
    campaign = serializers.IntegerField(required=False)
    mode = serializers.ChoiceField(Campaign.Mode.values, required=False)
    contractor = serializers.IntegerField(required=False)
    source = serializers.ChoiceField(Conversation.Source.values, required=False)


class ConversationViewSet(StrictQueryMixin, viewsets.ReadOnlyModelViewSet):
    """Conversations with their turns and responses."""

    pagination_class = NewestFirstCursor
    serializer_class = ConversationSerializer
    permission_classes = [ResearcherReadAdminWrite]
    query_serializer = ConversationQuery
    lookups = {
        "campaign": "campaign_id",
        "mode": "campaign__mode",
        "contractor": "contractor_id",
        "source": "source",
    }

    def get_queryset(self):
        return self.filtered(
            Conversation.objects.prefetch_related("turns__responses").order_by("-id")
        )


class JudgementSerializer(serializers.ModelSerializer):
    campaign = serializers.IntegerField(source="turn.conversation.campaign_id", read_only=True)

    class Meta:
        model = Judgement
        fields = [
            "id",
            "turn",
            "campaign",
            "contractor",
            "origin",
            "ranking",
            "submitted_ranking",
            "scale",
            "strength",
            "tie",
            "both_bad",
            "flags",
            "note",
            "time_spent_ms",
            "created_at",
            "revised_at",
        ]


class JudgementQuery(serializers.Serializer):
    campaign = serializers.IntegerField(required=False)
    mode = serializers.ChoiceField(Campaign.Mode.values, required=False)
    contractor = serializers.IntegerField(required=False)
    model_version = serializers.IntegerField(required=False)
    date_from = serializers.DateField(required=False)
    date_to = serializers.DateField(required=False)


class JudgementViewSet(StrictQueryMixin, viewsets.ReadOnlyModelViewSet):
    """Judgements; `ranking` lists response ids better first (red team: by harmlessness).

    `tie`: "about the same" (pairwise): `scale` and `strength` are null and `ranking` is the
    display order, no preference. `both_bad`: neither response is acceptable. `revised_at`:
    when the contractor last changed the judgement (null: never). Read-only: contractors
    judge and revise on their pages."""

    pagination_class = NewestFirstCursor
    serializer_class = JudgementSerializer
    permission_classes = [ResearcherReadAdminWrite]
    query_serializer = JudgementQuery
    lookups = {
        "campaign": "turn__conversation__campaign_id",
        "mode": "turn__conversation__campaign__mode",
        "contractor": "contractor_id",
        "model_version": "turn__responses__model_version_id",
        "date_from": "created_at__date__gte",
        "date_to": "created_at__date__lte",
    }

    def get_queryset(self):
        judgements = self.filtered(
            Judgement.objects.select_related("turn__conversation").order_by("-id")
        )
        # One row per judgement, though a turn's responses may come from several versions.
        return judgements.distinct() if "model_version" in self.query() else judgements


MAX_UTC_OFFSET = timedelta(hours=15, minutes=59, seconds=59)  # PostgreSQL's timestamptz limit


class SnapshotSerializer(JSONModelSerializer):
    # The filter's keys, types and ranges are in the schema (additionalProperties: false); what
    # it cannot say (a filter that matches nothing, imports without "imported" in sources) is
    # snapshot_filter_clean's 400, also naming "filter".
    filter = SchemaObjectField(snapshot_filter_schema(), noun="filter key(s)")

    class Meta:
        model = DatasetSnapshot
        fields = ["id", "name", "filter", "counts", "content_hash", "created_by", "created_at"]
        read_only_fields = ["counts", "content_hash", "created_by", "created_at"]

    def validate_filter(self, value):
        # RFC 3339 allows UTC offsets up to ±23:59; no time zone is past ±14:00 and PostgreSQL
        # stores none past ±15:59 (it would be a server error in the query), so those are a 400.
        for key in ("date_from", "date_to"):
            moment = value.get(key)
            try:
                parsed = parse_datetime(moment) if isinstance(moment, str) else None
            except ValueError:
                parsed = None  # not a datetime: snapshot_filter_clean says what is wrong
            offset = parsed.utcoffset() if parsed is not None else None
            if offset is not None and abs(offset) > MAX_UTC_OFFSET:
                raise serializers.ValidationError(
                    f"{key}: {moment!r} has a UTC offset past ±15:59, which no time zone uses"
                )
        return value

    def create(self, validated_data):
        """The snapshot, made now; or, above COLLECTION_SNAPSHOT_INLINE_MAX judgements, the
        job a worker makes it in (the view answers 202 with it)."""
        try:
            snapshot, job, _ = snapshot_request(
                filter=validated_data["filter"],
                name=validated_data.get("name", ""),
                user=self.context["request"].user,
            )
        except DatasetError as error:
            raise serializers.ValidationError({"filter": str(error)}) from None
        return snapshot if job is None else job


class DownloadQuery(serializers.Serializer):
    # Choices, so the schema lists them (enums) and anything else is a 400 naming the parameter.
    export = serializers.ChoiceField(
        exports.EXPORT_FORMATS, default="hh-rlhf", help_text="hh-rlhf, trl, ranked or raw"
    )
    file_format = serializers.ChoiceField(
        exports.FILE_FORMATS, default="jsonl", help_text="jsonl or parquet"
    )
    split = serializers.ChoiceField(SPLITS, default="all", help_text="train, held_out or all")
    pairs = serializers.ChoiceField(
        ("all", "adjacent"), default="all", help_text="all or adjacent (hh-rlhf, trl)"
    )
    margin = serializers.BooleanField(default=False, help_text="trl: add the margin column")


class SnapshotViewSet(CreateListRetrieveViewSet):
    """Immutable dataset snapshots: researchers create them from a filter and download exports."""

    queryset = DatasetSnapshot.objects.all()
    serializer_class = SnapshotSerializer
    permission_classes = [ResearcherWrite]

    @extend_schema(
        responses={
            201: SnapshotSerializer,
            202: OpenApiResponse(
                SnapshotJobSerializer,
                description="More judgements than a request snapshots "
                "(ALIGNLAB_SNAPSHOT_INLINE_MAX): the job a worker makes it in, also at "
                "/api/snapshot-jobs/<id>/ (the Location header); asked again while it runs, "
                "the same job.",
            ),
        }
    )
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        made = serializer.save()
        if isinstance(made, SnapshotJob):
            location = reverse("snapshotjob-detail", args=[made.pk], request=request)
            return APIResponse(
                SnapshotJobSerializer(made).data,
                status=status.HTTP_202_ACCEPTED,
                headers={"Location": location},
            )
        return APIResponse(self.get_serializer(made).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[DownloadQuery],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None, format=None):  # format: the router's ".json" suffix
        """Stream an export of the snapshot (constant memory, whatever its size)."""
        snapshot = self.get_object()
        unknown = sorted(set(request.query_params) - set(DownloadQuery().fields))
        if unknown:
            raise serializers.ValidationError(
                {"detail": f"unknown parameter(s): {', '.join(unknown)}"}
            )
        # A plain dict, not the QueryDict: DRF reads a blank form value as "left out" (the
        # default), but `?split=` is a parameter outside its choices, so a 400 like any other.
        query = DownloadQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        q = query.validated_data
        try:
            refusal = stream_refusal(snapshot, q["export"], split=q["split"], pairs=q["pairs"])
            blocks = exports.stream_export(
                snapshot,
                q["export"],
                q["file_format"],
                split=q["split"],
                pairs=q["pairs"],
                margin=q["margin"],
            )
        except DatasetError as error:
            raise serializers.ValidationError({"detail": str(error)}) from None
        if refusal:
            raise serializers.ValidationError({"detail": refusal})
        name = f"snapshot-{snapshot.pk}-{q['export']}-{q['split']}.{q['file_format']}"
        response = StreamingHttpResponse(blocks, content_type="application/octet-stream")
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["X-Content-Hash"] = snapshot.content_hash
        return response
