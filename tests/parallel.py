"""Each pytest-xdist worker (`make test` runs two) gets its own database, var/ folder and broker.

Loaded with `-p tests.parallel` (pyproject's addopts), so it runs before pytest-django reads
the settings: inside a worker it rewrites the environment the settings are built from.

- Database: pytest-django already gives each worker its own test database (`…_gw0`, `…_gw1`).
- var/ (the embedded broker's folders, uploads, trained models): `ALIGNLAB_VAR_DIR/gwN`.
- A Redis broker: database number + N, so one worker's `purge()` or queued tasks never reach
  another worker's Celery worker. A RabbitMQ broker has no such numbered space here, so the
  suite refuses to run in parallel on one (run it with `-n 0`).
- The default LM is converted once for all workers (`ALIGNLAB_DEFAULT_MODEL_DIR`, under the
  shared var/; the conversion takes a lock, so a second worker waits for the first).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest


def worker_number() -> int | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", … (set before we load)
    return int(worker[2:]) if worker.startswith("gw") else None


def redis_url_for_worker(url: str, number: int) -> str:
    """redis://host:port/D → redis://host:port/(D + number)."""
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{base + number}"))


def isolate(environ: dict, number: int, root: Path) -> None:
    shared_var = Path(environ.get("ALIGNLAB_VAR_DIR") or root / "var").resolve()
    # Trained models go to the worker's own var/; a models folder named for the whole run is
    # where the one default-model conversion lives.
    shared_models = environ.pop("ALIGNLAB_MODELS_DIR", None) or str(shared_var / "models")
    environ.setdefault("ALIGNLAB_DEFAULT_MODEL_DIR", shared_models)
    environ["ALIGNLAB_VAR_DIR"] = str(shared_var / f"gw{number}")
    broker = environ.get("CELERY_BROKER_URL", "")
    if broker.startswith(("redis://", "rediss://")):
        environ["CELERY_BROKER_URL"] = redis_url_for_worker(broker, number)
        if environ.get("CELERY_RESULT_BACKEND", "").startswith(("redis://", "rediss://")):
            environ["CELERY_RESULT_BACKEND"] = redis_url_for_worker(
                environ["CELERY_RESULT_BACKEND"], number
            )
    elif broker:
        raise pytest.UsageError(
            f"CELERY_BROKER_URL={broker.split('://')[0]}://…: parallel test workers need a Redis "
            "broker (one database number each) or the embedded one; run with -n 0"
        )


_number = worker_number()
if _number is not None:
    isolate(os.environ, _number, Path(__file__).resolve().parents[1])
