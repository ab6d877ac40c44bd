"""What every answer of the web process carries, and who the client is behind proxies.

``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only through the number of proxies
``CONNECTOR_TRUSTED_PROXIES`` names (default 0: never), so a client cannot pick its own address
to dodge the login throttle, nor pass for HTTPS.
"""

from __future__ import annotations

from flask import Flask, Response
from werkzeug.middleware.proxy_fix import ProxyFix

from web import get_context

__all__ = ["CONTENT_SECURITY_POLICY", "install"]

# The pages use no script at all and one stylesheet; the budget gauges set their width in a
# style attribute (allowed by style-src-attr only, never inline <style> or <script>).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'none'",
        "style-src 'self'",
        "style-src-attr 'unsafe-inline'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


def install(app: Flask) -> None:
    """Trust the configured proxies and add the security headers to every answer."""
    trusted = get_context(app).settings.trusted_proxies
    if trusted > 0:
        # Replace, never stack: create_app builds a fresh app each time.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted, x_proto=trusted)  # type: ignore[method-assign]
    app.after_request(_security_headers)


def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    return response
