"""The address a failed sign-in counts against, for django-axes (AXES_CLIENT_IP_CALLABLE)."""

from django.conf import settings


def client_ip(request) -> str:
    """REMOTE_ADDR; behind the trusted TLS proxy (SECURE_PROXY_SSL_HEADER=1), the last address in
    X-Forwarded-For, the one that proxy appended: every client would share the proxy's own address,
    and the hops before the last are the client's to forge."""
    if settings.BEHIND_TLS_PROXY:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        if hops[-1]:
            return hops[-1]
    return request.META.get("REMOTE_ADDR", "")
