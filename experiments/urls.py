from django.urls import path, re_path

from . import views

app_name = "experiments"
urlpatterns = [
    path("", views.experiments, name="list"),
    path("curves/", views.curves, name="curves"),
    path("<int:experiment_id>/", views.detail, name="detail"),
    path("<int:experiment_id>/cancel/", views.cancel, name="cancel"),
    re_path(
        r"^(?P<experiment_id>[0-9]+)/report\.(?P<fmt>html|json|csv)$",
        views.download,
        name="download",
    ),
]
