"""Project configuration: settings, URLs, the Celery app, WSGI/ASGI, and the roles."""

from .celery import app as celery_app

__all__ = ("celery_app",)
