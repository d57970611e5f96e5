"""The REST API's URLs: one router for every app, the OpenAPI schema and its docs."""

from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from assistant import api as assistant_api
from collection import api as collection_api
from collection import export_api as collection_export_api
from config.roles import ResearcherWrite
from evals import agreement_views as evals_agreement_views
from evals import api as evals_api
from experiments import api as experiments_api
from training import api as training_api

router = DefaultRouter()
router.register("model-versions", assistant_api.ModelVersionViewSet, basename="modelversion")
router.register("prompts", assistant_api.PromptTemplateViewSet, basename="prompt")
router.register("campaigns", collection_api.CampaignViewSet, basename="campaign")
router.register("conversations", collection_api.ConversationViewSet, basename="conversation")
router.register("judgements", collection_api.JudgementViewSet, basename="judgement")
router.register("snapshots", collection_api.SnapshotViewSet, basename="snapshot")
router.register("export-jobs", collection_export_api.ExportJobViewSet, basename="exportjob")
router.register("snapshot-jobs", collection_export_api.SnapshotJobViewSet, basename="snapshotjob")
router.register("training-runs", training_api.TrainingRunViewSet, basename="trainingrun")
router.register("eval-runs", evals_api.EvalRunViewSet, basename="evalrun")
router.register("elo", evals_api.EloViewSet, basename="elo")
router.register("experiments", experiments_api.ExperimentViewSet, basename="experiment")

urlpatterns = [
    path("", include(router.urls)),
    path("pm-agreement/", evals_agreement_views.PMAgreementView.as_view(), name="pm-agreement"),
    path(
        "schema/", SpectacularAPIView.as_view(permission_classes=[ResearcherWrite]), name="schema"
    ),
    path(
        "docs/",
        # The split view loads its start-up script from `?script`, not inline, so script-src
        # stays 'self'. Swagger UI's page has an inline <style> and its CSS draws icons from
        # data: URLs: this one page allows those two, nothing for scripts.
        csp_update({"style-src": [UNSAFE_INLINE], "img-src": ["data:"]})(
            SpectacularSwaggerSplitView.as_view(
                url_name="schema", permission_classes=[ResearcherWrite]
            )
        ),
        name="docs",
    ),
]
