"""The PM agreement page and API (evals/pm_agreement.py builds the report). Researchers and
admins only."""

from __future__ import annotations

from django import forms
from django.shortcuts import render
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from collection.api import StrictQueryMixin
from collection.models import Campaign
from config.roles import ADMIN, RESEARCHER, ResearcherWrite, role_required

from .pm_agreement import agreement_report


class AgreementFilterForm(forms.Form):
    campaign = forms.ModelChoiceField(Campaign.objects.all(), required=False)


@role_required(RESEARCHER, ADMIN)
def pm_agreement(request):
    form = AgreementFilterForm(request.GET)
    valid = form.is_valid()
    campaign = form.cleaned_data["campaign"] if valid else None
    report = agreement_report(campaign_id=campaign.pk if campaign else None)
    return render(
        request,
        "evals/pm_agreement.html",
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
