from django.urls import path

from . import views

app_name = "evals"
urlpatterns = [
    path("", views.leaderboard, name="leaderboard"),
]
