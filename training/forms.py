"""The launch form of the training page: what to train, on what, with which settings.

The form only parses what the browser sends; every rule is the service's
(`services.training_run_create`, the API's path too) and the config dataclasses'
(training/config.py, `RANGES`). A hyperparameter left empty takes its kind's default, shown
next to it; an error of the config lands next to the field it names.
"""

from __future__ import annotations

import sys
from dataclasses import MISSING, fields
from pathlib import Path

from django import forms
from django.conf import settings

from assistant.forms import PromptChoice
from assistant.hardware import bf16_setting, native_bf16
from assistant.models import ModelVersion
from collection.models import DatasetSnapshot

from .config import RANGES, DistillationConfig, PMPConfig, PreferenceTrainingConfig
from .formatting import format_metric
from .models import TrainingRun
from .pmp_sources import PMP_FORMATS
from .services import config_for_kind

# Which config dataclass each kind's settings go to, for the defaults shown.
KIND_CONFIGS = {
    "PM, binary, imitation": PreferenceTrainingConfig,
    "PMP": PMPConfig,
    "distillation": DistillationConfig,
}

# The hyperparameters the form offers, in order: (name, label, what it does).
HYPERPARAMETERS = [
    ("lr", "Learning rate", "AdamW's rate at the end of warmup"),
    ("max_steps", "Max steps", "stop after this many optimizer steps; empty: run the epochs"),
    ("epochs", "Epochs", "passes over the training data (when max steps is empty)"),
    ("batch_size", "Batch size", "rankings (or conversations) per micro-batch"),
    ("grad_accum", "Gradient accumulation", "micro-batches per optimizer step"),
    ("warmup_steps", "Warmup steps", "linear warmup, then linear decay to 0"),
    ("weight_decay", "Weight decay", "decoupled, on matrices only"),
    ("max_length", "Max length (tokens)", "longer transcripts lose their beginning"),
    ("max_grad_norm", "Max gradient norm", "clip the gradient norm; 0: no clipping"),
    ("eval_every", "Evaluate every", "held-out evaluation every N steps; 0: only at the end"),
    ("checkpoint_every", "Checkpoint every", "a resumable checkpoint every N steps"),
    ("seed", "Seed", "initialisation, batch order, dropout"),
    ("max_responses", "Max responses (PMP)", "answers kept per question"),
    ("min_conversations", "Min conversations (distillation)", "fewer in the train split fail"),
]
# Switches: (name, label, what it does); empty (unticked) keeps the kind's default.
SWITCHES = [
    ("margin_from_strength", "Margin from strength", "add a margin from how much better"),
    (
        "weighted",
        "Weighted by reliability",
        "weight each judgement by its contractor's reliability (a weighted snapshot)",
    ),
    ("gradient_checkpointing", "Gradient checkpointing", "less memory, a third more compute"),
    ("lora", "LoRA", "train LoRA adapters instead of all weights (needs peft)"),
]


def _default(config_class, name: str):
    for field in fields(config_class):
        if field.name == name:
            return None if field.default is MISSING else field.default
    return MISSING


def _defaults_text(name: str) -> str:
    """ "default 2.00e-05 (PM, binary, imitation) · 5.00e-05 (PMP) · …" for a field, by kind."""
    shown: dict[str, list[str]] = {}
    for kinds, config_class in KIND_CONFIGS.items():
        value = _default(config_class, name)
        if value is MISSING:
            continue
        text = "none" if value is None else format_metric(name, value)
        shown.setdefault(text, []).append(kinds)
    if not shown:
        return ""
    if len(shown) == 1 and len(next(iter(shown.values()))) == len(KIND_CONFIGS):
        return f"default {next(iter(shown))}"
    return "default " + " · ".join(f"{text} ({', '.join(k)})" for text, k in shown.items())


def _range_text(name: str) -> str:
    limits = RANGES.get(name)
    if limits is None:
        return ""
    low = f"above {limits.low:g}" if limits.above_low else f"{limits.low:g}"
    return f"{low} to {limits.high:g}"


def cpu_has_native_bf16() -> bool:
    """Whether this machine's CPU computes bf16 natively, as assistant/hardware.py decides it
    for the worker: ALIGNLAB_BF16 on/off first, then torch's probe where torch is loaded
    already; else the CPU flags oneDNN's bf16 kernels need (AVX-512 BW/VL/DQ, or AMX), read
    from /proc/cpuinfo, so a web process does not load torch for a form."""
    setting = bf16_setting()
    if setting != "auto":
        return setting == "on"
    if "torch" in sys.modules:
        return native_bf16("cpu")
    try:
        return cpuinfo_has_native_bf16(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


def cpuinfo_has_native_bf16(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo's first `flags` line has AMX-BF16 or AVX-512 BW+VL+DQ."""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return "amx_bf16" in flags or {"avx512bw", "avx512vl", "avx512dq"} <= flags


class SnapshotChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, snapshot: DatasetSnapshot) -> str:
        return snapshot_label(snapshot)


def snapshot_label(snapshot: DatasetSnapshot) -> str:
    """A snapshot by its name: "June HHH (#4, 2026-06-01, 1200 train / 130 held-out pairs)"."""
    counts = snapshot.counts or {}
    pairs = ""
    if "train_pairs" in counts:
        pairs = (
            f", {counts['train_pairs']} train / {counts.get('held_out_pairs', 0)} held-out pairs"
        )
    return f"{snapshot.name or 'unnamed'} (#{snapshot.pk}, {snapshot.created_at:%Y-%m-%d}{pairs})"


class BaseModelChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, version: ModelVersion) -> str:
        role = "backbone" if version.kind == ModelVersion.Kind.LM else "PM to finetune from"
        return f"{version.name} (#{version.pk}, {version.get_kind_display()}: {role})"


class LaunchForm(forms.Form):
    kind = forms.ChoiceField(choices=TrainingRun.Kind.choices, initial=TrainingRun.Kind.PM)
    base_model = BaseModelChoiceField(
        ModelVersion.objects.filter(backend=ModelVersion.Backend.TRANSFORMERS).order_by(
            "kind", "-pk"
        ),
        required=False,
        empty_label="the default LM",
        label="Base model or backbone",
        help_text="A language model (the backbone of a new PM, or the LM that imitation and "
        "distillation train), or a PMP'd preference model to finetune; empty: the default LM.",
    )
    snapshot = SnapshotChoiceField(
        DatasetSnapshot.objects.order_by("-pk"),
        required=False,
        empty_label="— choose a snapshot —",
        help_text="Every kind but PMP trains on a dataset snapshot (its train split; the "
        "held-out split decides promotion).",
    )
    prompt = PromptChoice(
        empty_label="the latest HHH prompt",
        help_text="Context distillation only: the prompt to distil.",
    )
    pmp_sources = forms.CharField(
        required=False,
        label="PMP sources",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=f"PMP only: one source a line, “format path”, the format one of "
        f"{', '.join(PMP_FORMATS)}; the path inside the data roots.",
    )
    bf16 = forms.ChoiceField(
        choices=[("auto", "auto"), ("on", "on"), ("off", "off")],
        initial="auto",
        required=False,
        label="bf16",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, label, what in HYPERPARAMETERS:
            integer = "int" in str(
                next(f.type for c in KIND_CONFIGS.values() for f in fields(c) if f.name == name)
            )
            limits = RANGES.get(name)
            defaults = _defaults_text(name).removeprefix("default ")
            attrs = {"placeholder": defaults if "(" not in defaults else "the kind's default"}
            if limits is not None:
                attrs["max"] = f"{limits.high:g}"
                if not limits.above_low:
                    attrs["min"] = f"{limits.low:g}"
            help_parts = [what, _range_text(name), _defaults_text(name)]
            help_text = "; ".join(part for part in help_parts if part)
            if integer:
                field = forms.IntegerField(required=False, label=label, help_text=help_text)
            else:
                attrs["step"] = "any"
                field = forms.FloatField(required=False, label=label, help_text=help_text)
            field.widget.attrs.update(attrs)
            self.fields[name] = field
        for name, label, what in SWITCHES:
            self.fields[name] = forms.BooleanField(
                required=False, label=label, help_text=f"{what}; {_defaults_text(name)}"
            )
        native = cpu_has_native_bf16()
        self.bf16_native = native
        if native:
            self.fields["bf16"].choices = [
                ("auto", "auto (bf16 here: this CPU computes it natively)"),
                ("on", "on"),
                ("off", "off (float32)"),
            ]
            self.fields["bf16"].help_text = (
                "This machine's CPU has native bf16 (AVX-512/AMX): auto and on train in bf16 "
                "autocast (weights stay float32)."
            )
        else:
            self.fields["bf16"].choices = [
                ("auto", "auto (float32 here: no native bf16 on this CPU)"),
                ("off", "off (float32)"),
                ("on", "on: emulated here, far slower (~80x)"),
            ]
            self.fields["bf16"].help_text = (
                "This machine's CPU has no native bf16 (AVX-512/AMX): auto trains in float32; "
                "on forces bf16 anyway, far slower (~80x)."
            )

    @property
    def target_fields(self):
        return [self[name] for name in ("kind", "base_model", "snapshot", "prompt", "pmp_sources")]

    @property
    def hyperparameter_fields(self):
        return [self[name] for name, _, _ in HYPERPARAMETERS]

    @property
    def switch_fields(self):
        return [self[name] for name, _, _ in SWITCHES]

    def clean_pmp_sources(self) -> list[dict]:
        sources = []
        for number, line in enumerate(self.cleaned_data["pmp_sources"].splitlines(), 1):
            if not line.strip():
                continue
            format_, _, path = line.strip().partition(" ")
            if not path.strip():
                raise forms.ValidationError(f"line {number}: “format path”, e.g. reddit /data/x")
            sources.append({"format": format_, "path": path.strip()})
        return sources

    def config(self) -> dict:
        """The settings given (empty fields left out: the kind's defaults)."""
        config = {}
        for name, _, _ in HYPERPARAMETERS:
            value = self.cleaned_data.get(name)
            if value is not None:
                config[name] = value
        for name, _, _ in SWITCHES:
            if self.cleaned_data.get(name):
                config[name] = True
        if self.cleaned_data.get("bf16") in ("on", "off"):
            config["bf16"] = self.cleaned_data["bf16"] == "on"
        return config

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind")
        if kind is None:
            return cleaned
        # Each setting alone through the kind's config (the one validation there is), so
        # every bad field gets its own error, next to it.
        for name, value in self.config().items():
            if name == "bf16":
                continue
            try:
                config_for_kind(kind, {name: value})
            except (TypeError, ValueError) as error:
                message = str(error)
                if message.startswith("unknown"):
                    message = f"a {TrainingRun.Kind(kind).label} run has no {name} setting"
                self.add_error(name, message)
        return cleaned


def data_roots_text() -> str:
    return ", ".join(str(root) for root in settings.ALIGNLAB_DATA_ROOTS)
