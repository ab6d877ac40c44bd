"""The status pages: overview, budget, queues, sync history, records, review queue, dead letters.

Server-rendered (Jinja templates in ``web/templates``, one stylesheet in ``web/static``), all
behind the admin login of :mod:`web.auth`. ``register(app)`` wires the pages and ``/metrics``
into an app built by :func:`web.create_app`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any
from urllib.parse import urlencode

import redis
import sqlalchemy as sa
from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from connector import status
from connector.errors import ConnectorError
from connector.formatting import ago, duration, when
from connector.models import AuditEntry, Connection, DeadLetter, InvoiceLink, Link, ReviewItem
from connector.models import utcnow as _utcnow
from web import auth, get_context

__all__ = ["HISTORY_PAGE_SIZE", "bp", "register"]

bp = Blueprint("ui", __name__)
logger = logging.getLogger(__name__)

HISTORY_PAGE_SIZE = 50
# Far beyond any real audit trail, and small enough that the OFFSET fits a bigint.
MAX_HISTORY_PAGE = 1_000_000
# Ids in URLs and filters beyond this cannot exist (the columns are 32-bit on PostgreSQL).
MAX_ID = 2**31 - 1
RECORD_HISTORY_LIMIT = 200
DEAD_LETTER_LIMIT = 200
# Endpoints reachable without a session (the login form itself).
_PUBLIC_ENDPOINTS = {"ui.login"}
NAV = (
    ("ui.overview", "Overview"),
    ("ui.budget", "Budget"),
    ("ui.queues", "Queues"),
    ("ui.history", "History"),
    ("ui.review", "Review"),
    ("ui.dead_letters", "Dead letters"),
)
# Which Pipedrive record a Zoho record syncs to, and back (for record page links).
_OTHER_SIDE = {
    ("zoho", "contact"): ("pipedrive", "organization"),
    ("zoho", "contact_person"): ("pipedrive", "person"),
    ("zoho", "invoice"): ("pipedrive", "deal"),
    ("pipedrive", "organization"): ("zoho", "contact"),
    ("pipedrive", "person"): ("zoho", "contact_person"),
    ("pipedrive", "deal"): ("zoho", "invoice"),
}
_SYSTEMS = ("zoho", "pipedrive")


def register(app: Flask) -> None:
    """Add the status pages and ``/metrics`` to ``app``; set cookie flags; hash the password.

    Calling it again re-reads the settings (cookie flags, password) without adding the routes twice.
    """
    from web import metrics

    auth.configure(app)
    if bp.name not in app.blueprints:
        app.register_blueprint(bp)
        app.register_blueprint(metrics.bp)
    app.jinja_env.filters["ago"] = ago
    app.jinja_env.filters["duration"] = duration
    app.jinja_env.filters["when"] = when


# Formatting ---------------------------------------------------------------------------------


# Access -------------------------------------------------------------------------------------


def _has_nul(values: Any) -> bool:
    return any("\x00" in value for value in values)


@bp.before_request
def _guard() -> Response | tuple[str, int] | None:
    # PostgreSQL refuses NUL in text: a NUL from a URL or form would otherwise end as a 500.
    if "\x00" in request.path or _has_nul(request.args.values()):
        abort(400, description="The address contains a NUL character.")
    if request.method == "POST" and _has_nul(request.form.values()):
        abort(400, description="The form contains a NUL character.")
    if not auth.password_configured():
        return (
            render_template(
                "unavailable.html",
                message=(
                    "The status pages are closed because no admin password is configured. "
                    "Set CONNECTOR_ADMIN_PASSWORD and restart the web app."
                ),
            ),
            503,
        )
    if request.endpoint not in _PUBLIC_ENDPOINTS and not auth.is_logged_in():
        return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))
    if request.method == "POST":
        auth.check_csrf()
    return None


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": auth.csrf_token, "csrf_field": auth.CSRF_FIELD, "nav": NAV}


@bp.errorhandler(400)
def _bad_request(error: HTTPException) -> tuple[str, int]:
    return render_template("unavailable.html", message=error.description, title="Bad request"), 400


@bp.errorhandler(sa.exc.OperationalError)
@bp.errorhandler(sa.exc.InterfaceError)
def _database_unavailable(_: Exception) -> tuple[str, int, dict[str, str]]:
    logger.error("ui.database-unavailable")
    message = "The database is unreachable; the pages come back by themselves when it is."
    page = render_template("unavailable.html", message=message, title="Database unavailable")
    return page, 503, {"Retry-After": "30"}


def _safe_next(target: str | None) -> str:
    return auth.safe_next(target) or url_for("ui.overview")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    """The login form; a correct password opens a session."""
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if auth.is_logged_in():
            return redirect(target)
        return render_template("login.html", next=target)
    if not auth.login_allowed():
        return (
            render_template(
                "login.html",
                next=target,
                error=f"Too many failed attempts. Wait {auth.LOGIN_WINDOW // 60} minutes.",
            ),
            429,
        )
    if not auth.check_password(request.form.get("password", "")):
        auth.record_failed_login()
        return render_template("login.html", next=target, error="Wrong password."), 401
    auth.log_in()
    return redirect(target)


@bp.post("/logout")
def logout() -> Response:
    """End the session."""
    auth.log_out()
    return redirect(url_for("ui.login"))


# Pages --------------------------------------------------------------------------------------


@bp.get("/")
def overview() -> str:
    """Every connection's health."""
    context = get_context(current_app)
    connections = status.overview(context)
    with context.session() as session:
        failures = status.failures_since(session, _utcnow() - dt.timedelta(hours=1))
        open_reviews = _count(session, ReviewItem, ReviewItem.status == "open")
        dead = _count(session, DeadLetter, DeadLetter.status == "failed")
    return render_template(
        "overview.html",
        page="overview",
        connections=connections,
        failures=failures,
        open_reviews=open_reviews,
        dead_letters=dead,
    )


def _count(session: Any, model: Any, *conditions: Any) -> int:
    return int(session.scalar(sa.select(sa.func.count()).select_from(model).where(*conditions)))


def _chart(points: list[tuple[dt.datetime, int]]) -> dict[str, Any]:
    """Bars for an inline SVG: tokens per hour."""
    width, height, gap = 720, 160, 2
    peak = max((value for _, value in points), default=0) or 1
    bar = width / max(1, len(points))
    bars = []
    for index, (hour, value) in enumerate(points):
        bar_height = round(value / peak * (height - 20), 1)
        bars.append(
            {
                "x": round(index * bar + gap / 2, 1),
                "y": round(height - bar_height, 1),
                "w": round(bar - gap, 1),
                "h": bar_height,
                "label": f"{hour:%H}:00 UTC: {value:,} tokens",
                "hour": f"{hour:%H}",
                "value": value,
            }
        )
    return {
        "width": width,
        "height": height,
        "bars": bars,
        "peak": peak,
        "total": sum(v for _, v in points),
    }


@bp.get("/budget")
def budget() -> str:
    """Pipedrive token budgets, burst windows, parked jobs and tokens per hour."""
    context = get_context(current_app)
    rows = status.budgets(context)
    with context.session() as session:
        charts = {
            row.connection_id: _chart(
                status.tokens_per_hour(session, 24, connection_id=row.connection_id)
            )
            for row in rows
        }
        total = _chart(status.tokens_per_hour(session, 24))
    return render_template("budget.html", page="budget", rows=rows, charts=charts, total=total)


@bp.get("/queues")
def queues() -> str:
    """Queue depths, recent failures, and a link to Flower."""
    context = get_context(current_app)
    error = ""
    depths: dict[str, int | None] = dict.fromkeys(status.QUEUES)
    try:
        depths = status.queue_depths(context)
    except redis.RedisError as exc:
        error = f"The broker is unreachable ({type(exc).__name__}); queue depths are unknown."
    with context.session() as session:
        failures = status.failures_since(session, _utcnow() - dt.timedelta(hours=1))
        parked = _count_parked(session)
    return render_template(
        "queues.html",
        page="queues",
        depths=depths,
        error=error,
        failures=failures,
        parked=parked,
        flower_url=context.settings.flower_url,
    )


def _count_parked(session: Any) -> int:
    from connector.models import ParkedJob

    return _count(session, ParkedJob, ParkedJob.status == "parked")


def _connection_names(session: Any) -> dict[int, str]:
    return {c.id: c.name for c in session.scalars(sa.select(Connection).order_by(Connection.name))}


@bp.get("/history")
def history() -> str:
    """The audit trail, newest first, filtered and paginated."""
    context = get_context(current_app)
    args = request.args
    page = min(MAX_HISTORY_PAGE, max(1, args.get("page", 1, type=int) or 1))
    connection_id = args.get("connection", type=int)
    if connection_id is not None and not 0 <= connection_id <= MAX_ID:
        connection_id = 0  # matches nothing, like any other unknown connection
    filters = {
        "connection": "" if connection_id is None else str(connection_id),
        "entity": args.get("entity", "").strip(),
        "outcome": args.get("outcome", "").strip(),
        "text": args.get("text", "").strip(),
    }
    with context.session() as session:
        entries = [
            _audit_view(entry) for entry in _query_history(session, filters, connection_id, page)
        ]
        names = _connection_names(session)
        entities = sorted(e for e in session.scalars(sa.select(AuditEntry.entity).distinct()) if e)
        outcomes = sorted(o for o in session.scalars(sa.select(AuditEntry.outcome).distinct()) if o)
    has_next = len(entries) > HISTORY_PAGE_SIZE
    rows = entries[:HISTORY_PAGE_SIZE]
    query = {k: v for k, v in filters.items() if v}
    return render_template(
        "history.html",
        page="history",
        rows=rows,
        names=names,
        filters=filters,
        entities=entities,
        outcomes=outcomes,
        page_number=page,
        prev_url=f"?{urlencode({**query, 'page': page - 1})}" if page > 1 else "",
        next_url=f"?{urlencode({**query, 'page': page + 1})}" if has_next else "",
    )


def _query_history(
    session: Any, filters: dict[str, str], connection_id: int | None, page: int
) -> list[AuditEntry]:
    from connector.sync.audit import query_audit

    return query_audit(
        session,
        # One extra row tells whether there is a next page.
        limit=HISTORY_PAGE_SIZE + 1,
        offset=(page - 1) * HISTORY_PAGE_SIZE,
        entity=filters["entity"] or None,
        outcome=filters["outcome"] or None,
        connection_id=connection_id,
        text=filters["text"] or None,
    )


def _record_url(system: str, entity: str, record_id: str) -> str:
    if not record_id or not entity:
        return ""
    return url_for("ui.record", system=system, entity=entity, record_id=record_id)


def _audit_view(entry: AuditEntry) -> dict[str, Any]:
    """An audit row with links to both records and its diff as rows."""
    zoho_entity = entry.entity
    pipedrive_entity = _OTHER_SIDE.get(("zoho", entry.entity), ("pipedrive", entry.entity))[1]
    if ("pipedrive", entry.entity) in _OTHER_SIDE:
        pipedrive_entity = entry.entity
        zoho_entity = _OTHER_SIDE[("pipedrive", entry.entity)][1]
    diff = entry.diff if isinstance(entry.diff, dict) else {}
    changes = []
    for field_name, change in sorted(diff.items()):
        if isinstance(change, dict) and ("before" in change or "after" in change):
            changes.append((field_name, change.get("before"), change.get("after")))
        else:
            changes.append((field_name, None, change))
    return {
        "entry": entry,
        "changes": changes,
        "zoho_url": _record_url("zoho", zoho_entity, entry.zoho_id),
        "pipedrive_url": _record_url("pipedrive", pipedrive_entity, entry.pipedrive_id),
    }


@bp.get("/records/<system>/<entity>/<record_id>")
def record(system: str, entity: str, record_id: str) -> str:
    """One record: its links on both sides and its history."""
    if system not in _SYSTEMS:
        abort(404)
    context = get_context(current_app)
    with context.session() as session:
        names = _connection_names(session)
        links = _record_links(session, system, entity, record_id)
        id_column = AuditEntry.zoho_id if system == "zoho" else AuditEntry.pipedrive_id
        entries = session.scalars(
            sa.select(AuditEntry)
            .where(id_column == record_id)
            .order_by(AuditEntry.id.desc())
            .limit(RECORD_HISTORY_LIMIT)
        )
        rows = [_audit_view(entry) for entry in entries]
    return render_template(
        "record.html",
        page="history",
        system=system,
        entity=entity,
        record_id=record_id,
        links=links,
        rows=rows,
        names=names,
    )


def _record_links(session: Any, system: str, entity: str, record_id: str) -> list[dict[str, Any]]:
    links: list[dict[str, Any]] = []
    if system == "zoho":
        query = sa.select(Link).where(Link.zoho_entity == entity, Link.zoho_id == record_id)
    else:
        query = sa.select(Link).where(
            Link.pipedrive_entity == entity, Link.pipedrive_id == record_id
        )
    for link in session.scalars(query):
        links.append(
            {
                "kind": "record link",
                "state": link.state,
                "zoho": (link.zoho_entity, link.zoho_id, link.zoho_connection_id),
                "pipedrive": (
                    link.pipedrive_entity,
                    link.pipedrive_id,
                    link.pipedrive_connection_id,
                ),
                "zoho_url": _record_url("zoho", link.zoho_entity, link.zoho_id),
                "pipedrive_url": _record_url("pipedrive", link.pipedrive_entity, link.pipedrive_id),
                "detail": f"linked {when(link.created_at)}, updated {when(link.updated_at)}",
            }
        )
    invoice_query = None
    if system == "zoho" and entity == "invoice":
        invoice_query = sa.select(InvoiceLink).where(InvoiceLink.invoice_id == record_id)
    elif system == "pipedrive" and entity == "deal":
        invoice_query = sa.select(InvoiceLink).where(InvoiceLink.deal_id == record_id)
    if invoice_query is not None:
        for invoice in session.scalars(invoice_query):
            links.append(
                {
                    "kind": "invoice → deal",
                    "state": invoice.status or "—",
                    "zoho": ("invoice", invoice.invoice_id, invoice.zoho_connection_id),
                    "pipedrive": ("deal", invoice.deal_id or "", invoice.pipedrive_connection_id),
                    "zoho_url": _record_url("zoho", "invoice", invoice.invoice_id),
                    "pipedrive_url": _record_url("pipedrive", "deal", invoice.deal_id or ""),
                    "detail": (
                        f"{invoice.invoice_number} · {invoice.total} {invoice.currency_code} · "
                        f"balance {invoice.balance} · matched by {invoice.match_method or '—'}"
                    ),
                }
            )
    return links


@bp.get("/review")
def review() -> str:
    """Open review items with their candidates and actions."""
    context = get_context(current_app)
    with context.session() as session:
        items = list(
            session.scalars(
                sa.select(ReviewItem)
                .where(ReviewItem.status == "open")
                .order_by(ReviewItem.created_at, ReviewItem.id)
            )
        )
        names = _connection_names(session)
        zoho_names = list(
            session.scalars(
                sa.select(Connection.name)
                .where(Connection.system == "zoho")
                .order_by(Connection.name)
            )
        )
    return render_template(
        "review.html", page="review", items=items, names=names, zoho_names=zoho_names
    )


@bp.post("/review/<int:item_id>/<action>")
def review_action(item_id: int, action: str) -> Response:
    """Link, create or ignore; API errors come back as a message, never a 500."""
    from connector.sync.review import resolve_create, resolve_ignore, resolve_link

    context = get_context(current_app)
    try:
        if action == "link":
            pipedrive_id = (
                request.form.get("pipedrive_id") or request.form.get("candidate") or ""
            ).strip()
            if not pipedrive_id:
                flash("Choose a candidate or type a Pipedrive id to link.", "error")
                return redirect(url_for("ui.review"))
            message = resolve_link(context, item_id, pipedrive_id)
        elif action == "create":
            zoho = (request.form.get("zoho") or "").strip() or None
            message = resolve_create(context, item_id, zoho=zoho)
        elif action == "ignore":
            message = resolve_ignore(context, item_id)
        else:
            abort(404)
    except ConnectorError as exc:
        logger.warning("ui.review-failed item=%s action=%s error=%s", item_id, action, exc)
        flash(f"Review item #{item_id}: {action} failed: {exc}", "error")
    else:
        flash(message, "ok")
    return redirect(url_for("ui.review"))


@bp.get("/dead-letters")
def dead_letters() -> str:
    """Tasks that failed for good, newest first."""
    context = get_context(current_app)
    show = request.args.get("show", "failed")
    with context.session() as session:
        query = sa.select(DeadLetter).order_by(DeadLetter.id.desc()).limit(DEAD_LETTER_LIMIT)
        if show != "all":
            query = query.where(DeadLetter.status == "failed")
        letters = list(session.scalars(query))
    return render_template("dead_letters.html", page="dead-letters", letters=letters, show=show)


@bp.post("/dead-letters/<int:letter_id>/retry")
def retry_dead_letter(letter_id: int) -> Response:
    """Replay one dead letter inline and record the outcome on it (as ``connector retry``)."""
    from connector.sync.service import replay

    context = get_context(current_app)
    with context.session() as session:
        letter = session.get(DeadLetter, letter_id)
        if letter is None:
            abort(404)
        task_name, arguments = letter.task_name, dict(letter.args or {})
    try:
        result = replay(
            context,
            task_name,
            list(arguments.get("args", [])),
            dict(arguments.get("kwargs", {})),
        )
        new_status, note = "retried", f"ok: {result}"
    except ConnectorError as exc:
        new_status, note = "failed", f"failed again: {exc}"
    with context.session() as session:
        letter = session.get(DeadLetter, letter_id)
        if letter is not None:
            letter.status = new_status
            letter.retried_at = _utcnow()
            if new_status == "failed":
                letter.error = note[:4000]
                letter.attempts += 1
    flash(f"#{letter_id} {task_name}: {note}", "ok" if new_status == "retried" else "error")
    return redirect(url_for("ui.dead_letters"))
