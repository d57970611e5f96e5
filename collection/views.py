from django.shortcuts import render

from config.roles import CONTRACTOR, role_required


@role_required(CONTRACTOR)
def dashboard(request):
    """The contractor's start page: open campaigns, their conversations and counts."""
    return render(request, "collection/dashboard.html")
