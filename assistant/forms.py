"""Form fields for the assistant's rows, shared by the apps' pages."""

from django import forms

from .models import PromptTemplate


class PromptChoice(forms.ModelChoiceField):
    """An optional choice of one prompt version, shown by its key (`hhh@2`), each name's newest
    version first; `empty_label` says what choosing none means on that page."""

    def __init__(self, *, empty_label: str, **kwargs):
        super().__init__(
            PromptTemplate.objects.order_by("name", "-version"),
            required=False,
            empty_label=empty_label,
            **kwargs,
        )

    def label_from_instance(self, obj):
        return obj.key
