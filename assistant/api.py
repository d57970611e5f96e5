"""REST API of the assistant app: model versions (researchers read, admins register/activate)."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from config.roles import ResearcherReadAdminWrite
from config.schema_objects import JSONModelSerializer, SchemaObjectField, sampling_schema

from . import services
from .models import ModelVersion, PromptTemplate

# Rows the API creates, lists and shows but never edits or deletes in place (model versions,
# snapshots, runs): what changes them afterwards is an action that calls a service. (Comments,
# not docstrings, on these bases: the schema would show a base's docstring as each
# subclass's description.)
# Who launched a job and when it was made, started and finished: the last fields of every job's
# serializer (assistant/jobs.py), read-only.
JOB_TIMES = ["launched_by", "created_at", "started_at", "finished_at"]


def read_only_but(fields: list[str], *writable: str) -> list[str]:
    """A serializer's read_only_fields: all its `fields` except the `writable` ones."""
    return [name for name in fields if name not in writable]


class CreateListRetrieveViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    pass


# A job's serializer: `create` launches it through `launch` (its service's create) as the
# requesting user, the service's ValidationError as the API's 400.
class LaunchedJobSerializer(JSONModelSerializer):
    launch = None  # staticmethod(service) in subclasses

    def create(self, validated_data):
        user = self.context["request"].user
        return self.saved(self.launch, launched_by=user, **validated_data)


class ModelVersionSerializer(JSONModelSerializer):
    # Objects, never null (the schema says so): the backend's options are its own (free-form),
    # the generation defaults are SamplingParams' settings with their types and ranges.
    backend_options = SchemaObjectField(
        {"type": "object"},
        required=False,
        help_text='Passed to the backend, e.g. {"mode": "completion", "dtype": "float32"}.',
    )
    generation_defaults = SchemaObjectField(sampling_schema(), required=False)
    metadata = SchemaObjectField({"type": "object"}, required=False)

    class Meta:
        model = ModelVersion
        read_only_fields = ["origin", "training_run_id", "is_active", "created_at"]
        fields = ["id", *services.MODEL_VERSION_FIELDS, *read_only_fields]
        extra_kwargs = {"name": {"min_length": 1}}  # said in the schema (the model refuses blank)

    def create(self, validated_data):
        # A web request names only folders inside the model roots (MODELS_DIR and
        # ALIGNLAB_MODEL_ROOTS), so it can make the server open nothing else.
        register = services.model_version_register
        return self.saved(register, **validated_data, confine_to_roots=True)


class ModelVersionViewSet(CreateListRetrieveViewSet):
    """Language and preference model versions; `?kind=lm|pm` filters."""

    serializer_class = ModelVersionSerializer
    permission_classes = [ResearcherReadAdminWrite]

    def get_queryset(self):
        versions = ModelVersion.objects.all()
        kind = self.request.query_params.get("kind")
        if kind is not None:
            if kind not in ModelVersion.Kind.values:
                raise serializers.ValidationError({"kind": f"unknown kind {kind!r}; use lm or pm"})
            versions = versions.filter(kind=kind)
        return versions

    @extend_schema(request=None)  # the action reads no body
    @action(detail=True, methods=["post"])
    def activate(self, request, pk=None, format=None):  # format: the ".json" suffix
        """Make this version the active one of its kind."""
        version = services.model_version_activate(version=self.get_object())
        return Response(self.get_serializer(version).data)


class PromptTemplateSerializer(serializers.ModelSerializer):
    key = serializers.CharField(read_only=True)

    class Meta:
        model = PromptTemplate
        fields = ["id", "key", "name", "version", "text", "notes", "created_at"]


class PromptTemplateViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = PromptTemplate.objects.all()
    serializer_class = PromptTemplateSerializer
    permission_classes = [ResearcherReadAdminWrite]
