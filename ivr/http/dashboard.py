"""The operator dashboard: one static page that reads the JSON API from the browser.

The page, its script and its style sheet hold no data and no secret, so they need no
token. The script asks the operator for the API token, keeps it in the tab's
sessionStorage, and polls the ``/api/`` routes with ``Authorization: Bearer``: trunk
health, the quality of each trunk's recent calls, active calls, recent tickets and drills
(see ``ivr/http/static/dashboard.js``).
Every response from here carries a Content-Security-Policy that allows only this
server's own script, style sheet and API, so data shown on the page can never run.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, redirect, send_from_directory, url_for
from werkzeug.wrappers import Response as BaseResponse

STATIC = Path(__file__).resolve().parent / "static"
SECURITY_HEADERS = {
    # No inline script or style, nothing from elsewhere, no framing; and no form may
    # submit anywhere: the token form is handled by the script, never sent in a URL.
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; object-src 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def register(app: Flask) -> None:
    """Serve the dashboard on `app` at /dashboard, its files under /dashboard/static/,
    and send / there."""
    blueprint = Blueprint("dashboard", __name__, static_folder=STATIC,
                          static_url_path="/dashboard/static")

    @blueprint.get("/")
    def home() -> BaseResponse:
        return redirect(url_for("dashboard.page"))

    @blueprint.get("/dashboard")
    def page() -> Response:
        return send_from_directory(STATIC, "dashboard.html", mimetype="text/html")

    @blueprint.after_request
    def secure(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        # Revalidate each time (cheap, by ETag), so an upgraded server's page is used.
        response.headers.setdefault("Cache-Control", "no-cache")
        return response

    app.register_blueprint(blueprint)
