from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

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
    path("api/", include("config.api_urls")),
]

# An id the API's routes do not match (`/api/campaigns/abc/`) is a JSON 404 like DRF's own.
handler404 = views.not_found
