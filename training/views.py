from django.shortcuts import render

from config.roles import ADMIN, role_required


@role_required(ADMIN)
def runs(request):
    """Training runs: launch, watch and cancel retraining jobs."""
    return render(request, "training/runs.html")
