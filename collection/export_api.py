"""REST API of export and snapshot jobs: researchers and admins ask for an export of a
snapshot, watch the job, and download its file when a worker has written it
(`collection.export_jobs`); they watch the snapshots a worker makes (`POST /api/snapshots/` of
more than ALIGNLAB_SNAPSHOT_INLINE_MAX judgements answers 202 with one of these jobs)."""

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from assistant.api import JOB_TIMES, CreateListRetrieveViewSet, read_only_but
from config.roles import ResearcherWrite

from .dataset_errors import DatasetError
from .export_jobs import export_file, export_job_create
from .exports import EXPORT_FORMATS
from .models import ExportJob, SnapshotJob
from .splits import SPLITS


class ExportJobSerializer(serializers.ModelSerializer):
    export_format = serializers.ChoiceField(EXPORT_FORMATS, help_text="hh-rlhf, trl, ranked or raw")
    split = serializers.ChoiceField(SPLITS, default="all", help_text="train, held_out or all")
    pairs = serializers.ChoiceField(
        ("all", "adjacent"), default="all", help_text="all or adjacent (hh-rlhf, trl)"
    )
    file_name = serializers.CharField(read_only=True)

    class Meta:
        model = ExportJob
        fields = [
            "id",
            "snapshot",
            "export_format",
            "file_format",
            "split",
            "pairs",
            "margin",
            "status",
            "progress",
            "rows",
            "size_bytes",
            "file_name",
            "error",
            *JOB_TIMES,
        ]
        read_only_fields = read_only_but(
            fields, "snapshot", "export_format", "file_format", "split", "pairs", "margin"
        )


class ExportJobViewSet(CreateListRetrieveViewSet):
    """Export jobs. POST gives 201 with a new job, or 200 with the one already asked for."""

    queryset = ExportJob.objects.all()
    serializer_class = ExportJobSerializer
    permission_classes = [ResearcherWrite]

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            job, new = export_job_create(user=request.user, **serializer.validated_data)
        except DatasetError as error:
            raise serializers.ValidationError({"detail": str(error)}) from None
        code = status.HTTP_201_CREATED if new else status.HTTP_200_OK
        return Response(self.get_serializer(job).data, status=code)

    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            404: OpenApiResponse(description="Not ready: the job has not succeeded (yet)."),
        }
    )
    @action(detail=True, methods=["get"])
    def file(self, request, pk=None, format=None):  # format: the router's ".json" suffix
        """The export's file, once the job has succeeded (404 before)."""
        job = self.get_object()
        path = export_file(job)
        if path is None:
            raise NotFound(
                f"This export is {job.status}; its file is offered once it has succeeded."
                if job.status != ExportJob.Status.SUCCEEDED
                else "This export's file is gone from the server; ask for the export again."
            )
        return FileResponse(path.open("rb"), as_attachment=True, filename=job.file_name)


class SnapshotJobSerializer(serializers.ModelSerializer):
    class Meta:
        model = SnapshotJob
        fields = [
            "id",
            "name",
            "filter",
            "judgements",
            "status",
            "progress",
            "snapshot",
            "error",
            *JOB_TIMES,
        ]
        read_only_fields = fields


class SnapshotJobViewSet(viewsets.ReadOnlyModelViewSet):
    """Snapshots a worker makes; `snapshot` is the snapshot's id once the job has succeeded."""

    queryset = SnapshotJob.objects.all()
    serializer_class = SnapshotJobSerializer
    permission_classes = [ResearcherWrite]
