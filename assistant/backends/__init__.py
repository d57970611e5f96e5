"""Language-model backends, one class per kind; `BACKENDS` maps the stored kind to the class."""

from importlib import import_module

from .base import (
    Backend,
    BackendError,
    Context,
    Message,
    Sample,
    SamplingParams,
    StreamEvent,
)

# Imported lazily: the transformers backend pulls in torch, which a web process may not need.
BACKENDS = {
    "transformers": "assistant.backends.hf:TransformersBackend",
    "openai": "assistant.backends.openai_compat:OpenAIBackend",
}


def backend_class(kind: str) -> type[Backend]:
    try:
        module, name = BACKENDS[kind].split(":")
    except KeyError:
        raise ValueError(f"unknown backend kind {kind!r}; known: {sorted(BACKENDS)}") from None
    return getattr(import_module(module), name)


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "Context",
    "Message",
    "Sample",
    "SamplingParams",
    "StreamEvent",
    "backend_class",
]
