from django.urls import path

from . import agreement_views, launch_views, views

app_name = "evals"
urlpatterns = [
    path("", views.leaderboard, name="leaderboard"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
    path("models/<int:version_id>/", views.model_detail, name="model"),
    path("models/<int:version_id>/evals/", launch_views.launch, name="launch"),
    path("compare/", views.compare, name="compare"),
    path("data-efficiency/", views.data_efficiency, name="data_efficiency"),
    path("elo/", views.elo, name="elo"),
    path("pm-agreement/", agreement_views.pm_agreement, name="pm_agreement"),
]
