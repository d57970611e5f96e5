"""Actions that change the assistant's state, each in one transaction."""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from .backends import SamplingParams
from .models import ModelVersion, PromptTemplate
from .signals import model_version_registered

DEFAULT_LM_NAME = "SmolLM2-135M-Instruct"


def _check_generation_defaults(defaults: dict) -> None:
    if not isinstance(defaults, dict):
        raise ValidationError({"generation_defaults": "must be a JSON object"})
    try:
        SamplingParams(**{k: tuple(v) if k == "stop" else v for k, v in defaults.items()})
    except (TypeError, ValueError) as error:
        raise ValidationError({"generation_defaults": str(error)}) from None


# Model-server hosts refused whatever the settings: cloud metadata services (AWS, GCP, Azure,
# Oracle: 169.254.169.254; AWS over IPv6: fd00:ec2::254; Alibaba: 100.100.100.200).
METADATA_HOSTS = frozenset(
    {"metadata.google.internal", "metadata", "169.254.169.254", "fd00:ec2::254", "100.100.100.200"}
)
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")


def model_roots() -> list[Path]:
    """The folders web requests may register models from: MODELS_DIR and ALIGNLAB_MODEL_ROOTS."""
    roots = [settings.MODELS_DIR, *getattr(settings, "ALIGNLAB_MODEL_ROOTS", [])]
    return [Path(root).resolve() for root in roots]


def model_path_check(path: str, *, confine_to_roots: bool = True, must_exist: bool = True) -> str:
    """`path` resolved (symlinks, ".."); ValidationError on "path" unless it lies inside
    `model_roots()` (when confined) and exists (when it must)."""
    roots = model_roots() if confine_to_roots else []
    where = f" inside the model roots ({', '.join(map(str, roots))})" if roots else ""
    # One message for a path outside the roots, whether it exists or not, and for a missing one.
    missing = ValidationError({"path": f"no model folder or file at {path!r}{where}"})
    if not path:
        raise missing
    try:
        resolved = Path(path).resolve()
        if roots and not any(resolved.is_relative_to(root) for root in roots):
            raise missing
        if must_exist and not resolved.exists():
            raise missing
    except (OSError, ValueError, RuntimeError):  # a name too long, a NUL byte, a symlink loop
        raise missing from None
    return str(resolved)


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `host` names when it is an IP literal, including the IPv4 forms the C resolver
    also accepts (2852039166, 0xa9fea9fe, 169.254.43518); None for a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_NAME.match(host):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def server_url_check(url: str) -> None:
    """ValidationError on "url" unless it is http(s) with a host that is neither link-local nor a
    cloud metadata service (nor loopback/private, when ALIGNLAB_ALLOW_PRIVATE_MODEL_HOSTS is off).

    Host names are judged as written, not resolved (DNS can change after registration)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValidationError({"url": f"{url!r} is not a valid URL"}) from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValidationError({"url": f"{url!r} is not an http(s) URL such as http://gpu1:8000/v1"})
    address = _ip_literal(host)
    if address is None and not _HOST_NAME.match(host):
        raise ValidationError({"url": f"{host!r} is not a host name"})
    if host in METADATA_HOSTS or str(address) in METADATA_HOSTS:
        raise ValidationError({"url": "a cloud metadata service is not a model server"})
    if address is None:
        private = host == "localhost" or host.endswith(".localhost")
    else:
        private = address.is_loopback or address.is_unspecified or address.is_private
        if address.is_link_local or address.is_multicast or (address.is_reserved and not private):
            raise ValidationError({"url": f"{host} is a link-local, multicast or reserved address"})
        private = private or address in _SHARED_ADDRESS_SPACE
    if private and not settings.ALIGNLAB_ALLOW_PRIVATE_MODEL_HOSTS:
        raise ValidationError(
            {
                "url": f"{host} is a private or loopback address, refused here by the setting "
                "ALIGNLAB_ALLOW_PRIVATE_MODEL_HOSTS"
            }
        )


# What a person sets when registering a version (model_version_register's keywords, the admin's
# form); origin and the training run are set by the code that registers.
MODEL_VERSION_FIELDS = [
    "kind",
    "name",
    "backend",
    "path",
    "url",
    "remote_model",
    "backend_options",
    "generation_defaults",
    "metadata",
]


def model_version_check(
    *,
    kind: str,
    backend: str,
    path: str = "",
    url: str = "",
    backend_options=None,
    generation_defaults=None,
    metadata=None,
    confine_to_roots: bool = False,
) -> str:
    """Check a model version's fields before it is saved (one ValidationError naming every bad
    field); return the path to store (resolved)."""
    errors: dict[str, list[str]] = {}

    def refused(error: ValidationError) -> None:
        for field, messages in error.message_dict.items():
            errors.setdefault(field, []).extend(messages)

    try:
        if backend == ModelVersion.Backend.TRANSFORMERS:
            path = model_path_check(path, confine_to_roots=confine_to_roots)
        elif path and confine_to_roots:  # unused by this backend, but never outside the roots
            model_path_check(path, must_exist=False)
    except ValidationError as error:
        refused(error)
    if backend == ModelVersion.Backend.OPENAI and not url:
        errors["url"] = ["an OpenAI-compatible backend needs the server's URL"]
    elif url:
        try:
            server_url_check(url)
        except ValidationError as error:
            refused(error)
    if kind == ModelVersion.Kind.PM and backend != ModelVersion.Backend.TRANSFORMERS:
        errors["backend"] = ["preference models run locally (transformers)"]
    try:
        _check_generation_defaults(generation_defaults or {})
    except ValidationError as error:
        refused(error)
    for field, value in (("backend_options", backend_options), ("metadata", metadata)):
        if value is not None and not isinstance(value, dict):
            errors[field] = ["must be a JSON object"]
    if errors:
        raise ValidationError(errors)
    return path


def model_version_register(
    *,
    kind: str,
    name: str,
    backend: str = ModelVersion.Backend.TRANSFORMERS,
    path: str = "",
    url: str = "",
    remote_model: str = "",
    backend_options: dict | None = None,
    generation_defaults: dict | None = None,
    origin: str = ModelVersion.Origin.IMPORTED,
    training_run_id: int | None = None,
    metadata: dict | None = None,
    activate: bool = False,
    confine_to_roots: bool = False,
) -> ModelVersion:
    """Add a model version; listeners of `model_version_registered` hear of it after commit.

    Web requests pass `confine_to_roots=True`: a path must then lie inside `model_roots()`.
    Trusted callers (the register_model command, training, tests) may register any folder."""
    given = {"kind": kind, "backend": backend, "url": url}
    objects = {
        "backend_options": backend_options,
        "generation_defaults": generation_defaults,
        "metadata": metadata,
    }
    path = model_version_check(**given, **objects, path=path, confine_to_roots=confine_to_roots)
    with transaction.atomic():
        version = ModelVersion(
            **given,
            **{field: value or {} for field, value in objects.items()},  # checked: dicts or None
            name=name,
            path=path,
            remote_model=remote_model,
            origin=origin,
            training_run_id=training_run_id,
        )
        version.full_clean()
        version.save()
        if activate:
            model_version_activate(version=version)
        transaction.on_commit(
            lambda: model_version_registered.send(sender=ModelVersion, version=version)
        )
    return version


def model_version_activate(*, version: ModelVersion) -> ModelVersion:
    """Make `version` the active model of its kind (an LM: the one `chat` and a new campaign's
    form start with; a PM: the one that scores collection's candidates, watched for drift and
    compared with each newly trained PM)."""
    with transaction.atomic():
        # Lock the kind's rows so two activations can't both leave theirs active.
        list(ModelVersion.objects.select_for_update().filter(kind=version.kind))
        ModelVersion.objects.filter(kind=version.kind, is_active=True).exclude(
            pk=version.pk
        ).update(is_active=False)
        ModelVersion.objects.filter(pk=version.pk).update(is_active=True)
    version.is_active = True
    return version


def prompt_template_create(
    *, name: str, text: str, notes: str = "", created_by=None
) -> PromptTemplate:
    """Store `text` as the next version of prompt `name` (the same text makes no new version)."""
    if not text.strip():
        raise ValidationError(
            {"text": "a prompt needs text (use no prompt instead of an empty one)"}
        )
    with transaction.atomic():
        latest = (
            PromptTemplate.objects.select_for_update()
            .filter(name=name)
            .order_by("-version")
            .first()
        )
        if latest is not None and latest.text == text:
            return latest
        last = PromptTemplate.objects.filter(name=name).aggregate(v=Max("version"))["v"] or 0
        return PromptTemplate.objects.create(
            name=name, version=last + 1, text=text, notes=notes, created_by=created_by
        )


def default_lm_ensure() -> ModelVersion:
    """Convert the default LM from its PyPI package once, register it, and make it active if no
    language model is active yet. Safe to call on every start."""
    from .default_model import ensure_default_model

    folder = ensure_default_model(settings.DEFAULT_MODEL_DIR)
    with transaction.atomic():
        version = ModelVersion.objects.filter(
            kind=ModelVersion.Kind.LM,
            origin=ModelVersion.Origin.DEFAULT,
            path=str(folder.resolve()),
        ).first()
        if version is None:
            version = model_version_register(
                kind=ModelVersion.Kind.LM,
                name=DEFAULT_LM_NAME,
                path=str(folder),
                origin=ModelVersion.Origin.DEFAULT,
                generation_defaults={"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 160},
            )
        if not ModelVersion.objects.filter(kind=ModelVersion.Kind.LM, is_active=True).exists():
            model_version_activate(version=version)
    return version
