"""Models loaded once per process and reused: the LM backends and PM scorers of model versions.

A web process never loads a model on a request path; Celery workers (and `manage.py chat`)
call these, so each worker process holds each model it serves once.
"""

from __future__ import annotations

import threading

from django.conf import settings

from .backends import Backend, Context, Message, SamplingParams, backend_class
from .models import ModelVersion, PromptTemplate

_lock = threading.Lock()
_loaded: dict[tuple, object] = {}


def _cache_key(version: ModelVersion) -> tuple:
    # A changed path, URL or option means another model: load it afresh.
    return (
        version.pk,
        version.backend,
        version.path,
        version.url,
        version.remote_model,
        repr(sorted(version.backend_options.items())),
    )


def lm_backend(version: ModelVersion) -> Backend:
    """The loaded backend of a language-model version (loaded on first use in this process)."""
    if version.kind != ModelVersion.Kind.LM:
        raise ValueError(f"{version} is not a language model")
    key = _cache_key(version)
    with _lock:
        if key not in _loaded:
            cls = backend_class(version.backend)
            options = dict(version.backend_options)
            if version.backend == ModelVersion.Backend.OPENAI:
                options.setdefault("timeout_s", settings.MODEL_SERVER_TIMEOUT_S)
                _loaded[key] = cls(
                    base_url=version.url,
                    model=version.remote_model,
                    api_key=settings.OPENAI_API_KEY or None,
                    **options,
                )
            else:
                _loaded[key] = cls(version.path, **options)
        return _loaded[key]


def pm_scorer(version: ModelVersion):
    """The loaded scorer of a preference-model version (loaded on first use in this process)."""
    from .pm import PMScorer

    if version.kind != ModelVersion.Kind.PM:
        raise ValueError(f"{version} is not a preference model")
    key = _cache_key(version)
    with _lock:
        if key not in _loaded:
            _loaded[key] = PMScorer.from_path(version.path, **version.backend_options)
        return _loaded[key]


def unload_all() -> None:
    """Forget every loaded model (tests; a worker that must free memory)."""
    with _lock:
        _loaded.clear()


def build_context(messages: list[dict] | list[Message], prompt: PromptTemplate | None) -> Context:
    """A backend Context from conversation turns and a prompt version (None: no prompt)."""
    turns = tuple(
        m if isinstance(m, Message) else Message(m["role"], m["content"]) for m in messages
    )
    if prompt is None:
        return Context(messages=turns)
    return Context(messages=turns, prompt=prompt.text, prompt_key=f"{prompt.key}#{prompt.pk}")


def sampling_params(version: ModelVersion, **overrides) -> SamplingParams:
    """The version's generation defaults with `overrides` on top (None values are ignored)."""
    values = {
        **version.generation_defaults,
        **{k: v for k, v in overrides.items() if v is not None},
    }
    if "stop" in values:
        values["stop"] = tuple(values["stop"])
    return SamplingParams(**values)
