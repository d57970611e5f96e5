"""The PM agreement page and API (issue 14): how often human judgements agree with the PM's
blind prediction, by PM version, campaign, mode and contractor, with Wilson intervals, next to
the PM's held-out accuracy, and the drift alarm. Researchers and admins only."""

from __future__ import annotations

from django import forms
from django.shortcuts import render
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from assistant.models import ModelVersion
from config.roles import ADMIN, RESEARCHER, ResearcherWrite, role_required

from . import pm_loop
from .api import StrictQueryMixin
from .models import Campaign


class AgreementFilterForm(forms.Form):
    campaign = forms.ModelChoiceField(Campaign.objects.all(), required=False)


def _row(row: pm_loop.AgreementRow, by: str) -> dict:
    label = {
        "pm_version": row.key.get("pm_version__name"),
        "campaign": row.key.get("campaign__name"),
        "mode": row.key.get("mode"),
        "contractor": row.key.get("contractor__username"),
    }[by]
    ident = row.key.get(f"{by}_id", row.key.get(by))
    return {"id": ident, "label": label, **row.as_dict()}


def _drift(state: pm_loop.Drift | None) -> dict | None:
    if state is None:
        return None
    return {
        "pm_version": state.pm_version.pk,
        "pm_name": state.pm_version.name,
        "window": state.window,
        **state.as_dict(),
        "held_out_accuracy": state.held_out_accuracy,
        "margin": state.margin,
        "alarm": state.alarm,
    }


def agreement_report(*, campaign_id: int | None = None) -> dict:
    """Everything the page and the API show, as plain data (rows of one campaign when given;
    the drift state is the active PM's, whatever the campaign)."""
    by = {
        group: [_row(row, group) for row in pm_loop.agreement_rows(group, campaign_id=campaign_id)]
        for group in pm_loop.GROUPINGS
    }
    for row in by["pm_version"]:
        version = ModelVersion.objects.filter(pk=row["id"]).first()
        row["held_out_accuracy"] = pm_loop.held_out_accuracy(version) if version else None
    return {"groups": by, "drift": _drift(pm_loop.drift())}


@role_required(RESEARCHER, ADMIN)
def pm_agreement(request):
    form = AgreementFilterForm(request.GET)
    valid = form.is_valid()
    campaign = form.cleaned_data["campaign"] if valid else None
    report = agreement_report(campaign_id=campaign.pk if campaign else None)
    return render(
        request,
        "collection/pm_agreement.html",
        {
            "form": form,
            "campaign": campaign,
            "campaigns": Campaign.objects.filter(lm_version__isnull=False).order_by("-pk"),
            "report": report,
            "groupings": [
                (key, title, report["groups"][key])
                for key, title in [
                    ("pm_version", "PM version"),
                    ("campaign", "Campaign"),
                    ("mode", "Mode"),
                    ("contractor", "Contractor"),
                ]
            ],
        },
        status=200 if valid else 400,
    )


class AgreementQuery(serializers.Serializer):
    # An id, as in the other list filters: one that no campaign has gives an empty report.
    campaign = serializers.IntegerField(required=False)


class AgreementShare(serializers.Serializer):
    """`pm_loop.Agreement.as_dict()`: agree of n, the rate and its 95 % Wilson interval."""

    n = serializers.IntegerField()
    agree = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True)
    low = serializers.FloatField()
    high = serializers.FloatField()


class AgreementCell(AgreementShare):
    id = serializers.JSONField(allow_null=True)
    label = serializers.CharField(allow_null=True)
    held_out_accuracy = serializers.FloatField(allow_null=True, required=False)


class AgreementGroups(serializers.Serializer):
    pm_version = AgreementCell(many=True)
    campaign = AgreementCell(many=True)
    mode = AgreementCell(many=True)
    contractor = AgreementCell(many=True)


class DriftState(AgreementShare):
    pm_version = serializers.IntegerField()
    pm_name = serializers.CharField()
    window = serializers.IntegerField()
    held_out_accuracy = serializers.FloatField(allow_null=True)
    margin = serializers.FloatField()
    alarm = serializers.BooleanField()


class AgreementReport(serializers.Serializer):
    groups = AgreementGroups()
    drift = DriftState(allow_null=True)


class PMAgreementView(StrictQueryMixin, APIView):
    """Agreement of human judgements with the PM's blind prediction (issue 14). An APIView,
    not a ViewSet's `list`: the answer is one report object, not a list of items."""

    permission_classes = [ResearcherWrite]
    query_serializer = AgreementQuery

    @extend_schema(parameters=[AgreementQuery], responses=AgreementReport)
    def get(self, request, format=None):
        """Agreement by PM version, campaign, mode and contractor (95 % Wilson intervals),
        each PM's held-out accuracy, and the drift state of the active PM."""
        return Response(agreement_report(campaign_id=self.query().get("campaign")))
