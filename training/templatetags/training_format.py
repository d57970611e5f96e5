"""Template filters for training pages: metrics as text, snapshots by name."""

from django import template

from training.formatting import format_metric

register = template.Library()


@register.filter
def metric(value, name: str = ""):
    """{{ value|metric:"lr" }} → "5.45e-06"; other floats with four decimals."""
    return format_metric(name, value)


@register.filter
def snapshot_label(snapshot):
    """A snapshot by its name, with its id, date and pairs ("—" for none)."""
    from training.forms import snapshot_label as label

    return label(snapshot) if snapshot is not None else "—"
