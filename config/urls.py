from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.urls import include, path
from django.views import defaults

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("collect/", include("collection.urls")),
    path("training/", include("training.urls")),
    path("evals/", include("evals.urls")),
    path("experiments/", include("experiments.urls")),
    path("api/", include("config.api_urls")),
]

# An id the API's routes do not match (`/api/campaigns/abc/`) is a JSON 404 like DRF's own.
handler404 = views.not_found


def bad_request(request, exception):
    """A request Django refuses before any view can answer (a SuspiciousOperation): JSON under
    /api/, like the API's other errors; a body over DATA_UPLOAD_MAX_MEMORY_SIZE is a 413 there
    (the schema documents it on every operation that takes a body)."""
    if not request.path.startswith("/api/"):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return JsonResponse(
            {"detail": f"The request body is larger than the server takes ({limit:,} bytes)."},
            status=413,
        )
    return JsonResponse({"detail": "Bad request."}, status=400)


handler400 = bad_request
