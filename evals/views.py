from django.shortcuts import render

from config.roles import ADMIN, RESEARCHER, role_required


@role_required(RESEARCHER, ADMIN)
def leaderboard(request):
    """Model versions against the HHH metrics."""
    return render(request, "evals/leaderboard.html")
