from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.defaults import page_not_found

from .roles import ADMIN, CONTRACTOR, RESEARCHER, user_roles


@login_required
def home(request):
    """Send each user to the landing page of their main role."""
    roles = user_roles(request.user)
    if ADMIN in roles:
        return redirect("training:runs")
    if RESEARCHER in roles:
        return redirect("evals:leaderboard")
    if CONTRACTOR in roles:
        return redirect("collection:dashboard")
    return render(request, "config/no_role.html", status=403)


def not_found(request, exception):
    """A URL nothing matches: JSON under /api/ (as DRF's own 404s are), else Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)
