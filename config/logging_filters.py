"""Logging filters named in settings.LOGGING."""

import logging

from django.core.exceptions import PermissionDenied


class PermissionDeniedWithoutTraceback(logging.Filter):
    """An ordinary 403 is logged as Django's one warning line ("Forbidden (Permission denied):
    /path"), without the traceback Django attaches to it: a refusal is not a failure. Other
    records pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PermissionDenied):
            record.exc_info = None
            record.exc_text = None
        return True
