"""The desk's web application: Starlette, Jinja2 templates, htmx for the small parts.

Access: every page but /login, /healthz and the static files needs a signed-in session;
without one an HTML page redirects to /login and an htmx or JSON request gets 401. An
action outside the session's role gets 403. Every POST carries the session's CSRF token
(form field `csrf_token` or header `X-CSRF-Token`) or gets 403: each POST endpoint goes
through `_post`, and tests/desk check every POST route of the app for it.

/metrics needs no session, as the worker's does (Prometheus' job consentwatch-desk
scrapes it, deploy/prometheus/prometheus.yml): its series carry bounded labels only
(route templates, methods, statuses, login outcomes, rules, severities), never an id or a
name. The ledger's gauges (open findings by rule, severity and status, the age of the
oldest open finding by severity) are read at scrape time, and cached while the ledger
does not grow.

Nothing personal is logged: one line per request names the route's template
(`/findings/{finding_id}`), never the path or query, which carry account ids and
subject pseudonyms; uvicorn's access log is off. Everything rendered goes through
Jinja2's autoescape; the one markup not from a template, the timeline SVG, is built
by `export/timeline.py`, which escapes every value. A Content-Security-Policy allows
scripts from the desk's own origin only (htmx, with eval off), as a second line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles

from streams.catalogue import SEVERITIES, load_catalogue
from streams.desk import actions, queries
from streams.desk.db import Database, DatabaseError
from streams.desk.standing import ACTIVE
from streams.desk.users import LoginLimiter, Session, SessionStore, authenticate, list_users
from streams.evidence.export.times import describe_ms
from streams.evidence.ledger import LedgerError, LedgerTampered
from streams.evidence.review import FALSE_POSITIVE_KINDS, REASONS, fold

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from streams.engine import EngineParams
    from streams.evidence.ledger import LedgerEntry

__all__ = ["COOKIE", "DeskConfig", "create_app"]

log = logging.getLogger("consentwatch.desk")

COOKIE = "consentwatch_desk"
_HERE = Path(__file__).parent
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_MAX_ID = 200
# A POST body: the longest form (a comment of 10,000 characters) is far below.
MAX_FORM_BYTES = 1024 * 1024
_ACCOUNTS_SHOWN = 200  # the accounts page's first rows (all of them with ?all=1)


@dataclass
class DeskConfig:
    """How the desk runs. `secure_cookies`: mark the session cookie Secure (served over
    https, directly or behind a TLS proxy). `signing_key`: the Ed25519 key exports are
    signed with (`desk serve --private-key`, as `consentwatch export`'s); without one the
    desk does not export. `engine_params`: what the pipeline ran with, for the bundle's
    manifest (as `export`'s engine options)."""

    secure_cookies: bool = False
    signing_key: Ed25519PrivateKey | None = field(default=None, repr=False)
    engine_params: EngineParams | None = None
    sessions: SessionStore = field(default_factory=SessionStore)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)


class _NeedLogin(Exception):
    pass


class _Forbidden(Exception):
    pass


class _Metrics:
    def __init__(self, registry: CollectorRegistry, sessions: SessionStore,
                 db: Database) -> None:
        self.requests = Counter("consentwatch_desk_requests", "Requests answered, by route "
                                "template, method and status.", ["route", "method", "status"],
                                registry=registry)
        self.latency = Histogram("consentwatch_desk_request_duration_seconds",
                                 "Time to answer a request, by route template.", ["route"],
                                 registry=registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.logins = Counter("consentwatch_desk_logins", "Login attempts by outcome "
                              "(success, failure, limited, csrf).", ["outcome"],
                              registry=registry)
        sessions_gauge = Gauge("consentwatch_desk_sessions", "Signed-in sessions.",
                               registry=registry)
        sessions_gauge.set_function(lambda: float(sessions.signed_in()))
        registry.register(_LedgerGauges(db))


class _LedgerGauges(Collector):
    """The ledger's gauges, read at scrape time (tests/promql_names.py DESK_METRICS, which
    the desk's alerts and the compliance dashboard read). "Open" is
    `queries.open_findings_where` (not resolved, not excepted), split by review state
    (open, acknowledged, assigned); the age is from the earliest detected_at of the open
    findings of a severity (every open finding looked at once, then only new leaves). A
    ledger that cannot be read fails the scrape (Prometheus'
    `up` goes to 0 and ConsentwatchDeskDown fires): gauges that only vanished would
    silence the alerts on them."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: tuple[Any, list[queries.OpenCount]] | None = None
        # (standing's key, where to go on from, earliest detected_at by rule)
        self._first: tuple[Any, int, dict[str, int]] | None = None
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return list(self._families())

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (GaugeMetricFamily("consentwatch_desk_open_findings", "Open findings in the "
                                  "ledger (not resolved, not excepted), by rule, severity and "
                                  "review status.", labels=["rule", "severity", "status"]),
                GaugeMetricFamily("consentwatch_desk_oldest_open_finding_age_seconds",
                                  "Seconds since the earliest detected_at of the open "
                                  "findings of each severity.", labels=["severity"]))

    def collect(self) -> list[Metric]:
        open_, oldest = self._families()
        counts, earliest = self._read()  # DatabaseError, LedgerError: /metrics answers 503
        severities = {rule.id: rule.severity for rule in load_catalogue().rules}
        now_ms = time.time_ns() // 1_000_000
        first: dict[str, int] = {}
        for item in counts:
            severity = severities.get(item.rule, "UNKNOWN")
            for status in ACTIVE:
                open_.add_metric([item.rule, severity, status], item.by_status.get(status, 0))
            detected = earliest.get(item.rule)
            if detected is not None:
                first[severity] = min(first.get(severity, detected), detected)
        for severity, detected in sorted(first.items()):
            oldest.add_metric([severity], max(0.0, (now_ms - detected) / 1000))
        return [open_, oldest]

    def _read(self) -> tuple[list[queries.OpenCount], dict[str, int]]:
        with self._lock:
            size = int(self._db.query("SELECT size FROM tree_state WHERE id = 1")[0][0])
            standing = queries.standing(self._db)
            key = (size, standing.key())
            if self._cache is None or self._cache[0] != key:
                self._cache = (key, queries.open_counts(self._db, standing))
            # The earliest detection: only the new leaves read, while no review or
            # exception changed which findings are open.
            if self._first is None or self._first[0] != standing.key():
                earliest, next_idx = queries.first_detected(self._db, standing)
            else:
                more, next_idx = queries.first_detected(self._db, standing, self._first[1])
                earliest = dict(self._first[2])
                for rule, at in more.items():
                    earliest[rule] = min(earliest.get(rule, at), at)
            self._first = (standing.key(), next_idx, earliest)
            return self._cache[1], earliest


def _age(ms: int, now_ms: int) -> str:
    seconds = max(0, (now_ms - ms) // 1000)
    days, rest = divmod(seconds, 86400)
    if days:
        return f"{days} d {rest // 3600} h"
    if rest >= 3600:
        return f"{rest // 3600} h {rest % 3600 // 60} min"
    return f"{rest // 60} min"


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(_HERE / "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = lambda ms: describe_ms(ms) if type(ms) is int else str(ms)
    env.filters["idquote"] = lambda value: quote(str(value), safe="")
    env.globals["SEVERITIES"] = SEVERITIES
    return env


def _wants_html(request: Request) -> bool:
    if request.headers.get("hx-request"):
        return False
    accept = request.headers.get("accept", "")
    return "text/html" in accept or not accept or ("*/*" in accept and "json" not in accept)


def create_app(db: Database, config: DeskConfig | None = None) -> Starlette:
    """The desk over `db`, with its own sessions, rate limit and metrics registry."""
    return _Desk(db, config or DeskConfig()).app


class _Desk:
    """The application's state and its endpoints. An endpoint that reads the database or
    hashes a password is a plain method: Starlette runs it on its thread pool, so one
    slow query never holds the event loop (nor /healthz) for the others."""

    def __init__(self, db: Database, config: DeskConfig) -> None:
        self.db, self.config = db, config
        self.env = _environment()
        self.metrics = _Metrics(config.registry, config.sessions, db)
        self.catalogue = load_catalogue()
        self._accounts: tuple[Any, list[queries.AccountRow]] | None = None
        self.routes: list[BaseRoute] = [
            Route("/healthz", self.healthz),
            Route("/metrics", self.metrics_page),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self._post(self.login), methods=["POST"]),
            Route("/logout", self._post(self.logout), methods=["POST"]),
            Route("/", self.home),
            Route("/findings", self.findings),
            Route("/findings/{finding_id:path}", self.finding),
            Route("/reviews", self._post(self.review), methods=["POST"]),
            Route("/accounts", self.accounts),
            Route("/exceptions", self.exceptions, methods=["GET"]),
            Route("/exceptions", self._post(self.add_exception), methods=["POST"]),
            Route("/export", self.export_form, methods=["GET"]),
            Route("/export", self._post(self.export), methods=["POST"]),
            Route("/exports", self.export_log),
            Route("/users", self.users),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
        ]
        self.app = Starlette(routes=self.routes,
                             middleware=[Middleware(BaseHTTPMiddleware, dispatch=self.guard)],
                             exception_handlers={404: self.not_found, 405: self.not_found})

    # -- helpers ------------------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        return self.config.sessions.get(request.cookies.get(COOKIE))

    def need(self, request: Request, permission: str = "read") -> Session:
        session = self.session_of(request)
        if session is None or session.user is None:
            raise _NeedLogin
        if not session.may(permission):
            raise _Forbidden
        return session

    def render(self, request: Request, template: str, status: int = 200,
               session: Session | None = None, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(
            request=request, session=session, csrf=session.csrf if session else "",
            path=request.url.path, **context)
        response = HTMLResponse(html, status_code=status)
        if session is not None:
            self.set_cookie(response, session)
        return response

    def set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(COOKIE, session.sid, httponly=True, samesite="strict",
                            secure=self.config.secure_cookies, path="/")

    def error_page(self, request: Request, status: int, title: str, message: str) -> Response:
        if not _wants_html(request) and not request.headers.get("hx-request"):
            return PlainTextResponse(f"{title}: {message}\n", status_code=status)
        return self.render(request, "error.html", status=status,
                           session=self.session_of(request), title=title, message=message)

    def _post(self, handler: Callable[[Request, Session, Any], Response]
              ) -> Callable[[Request], Awaitable[Response]]:
        """A POST endpoint: the session's CSRF token checked first (403 without), then
        `handler` on the thread pool."""
        async def endpoint(request: Request) -> Response:
            # Read whole before the session is known: bounded, or an anonymous POST of
            # hundreds of MiB took minutes of CPU (the form parser grows a field by +=).
            # Browsers declare a form's length; the server keeps a body to it.
            declared = request.headers.get("content-length", "")
            # A chunked body is read by its chunks whatever length it declares (h11 takes
            # both headers): refused unread, as a body without a length.
            if not declared.isdigit() or "transfer-encoding" in request.headers:
                return self.error_page(request, 411, "Length Required",
                                       "A form sent to the desk must declare its length.")
            if int(declared) > MAX_FORM_BYTES:
                return self.error_page(request, 413, "Content Too Large",
                                       f"A form sent to the desk is at most "
                                       f"{MAX_FORM_BYTES // 1024} KiB.")
            form = await request.form()
            session = self.session_of(request)
            token = request.headers.get("x-csrf-token") or form.get("csrf_token")
            if session is None or not session.csrf_ok(token if isinstance(token, str)
                                                       else None):
                if request.url.path == "/login":
                    self.metrics.logins.labels("csrf").inc()
                return self.error_page(request, 403, "Forbidden",
                                       "This form has expired or did not come from the desk "
                                       "(no valid CSRF token). Reload the page and try again.")
            return await run_in_threadpool(handler, request, session, form)
        return endpoint

    # -- no session needed ----------------------------------------------------------------

    def healthz(self, request: Request) -> Response:
        try:
            self.db.query("SELECT 1")
        except DatabaseError:
            return PlainTextResponse("ledger unreachable\n", status_code=503)
        return PlainTextResponse("ok\n")

    def metrics_page(self, request: Request) -> Response:
        try:
            body = generate_latest(self.config.registry)
        except (DatabaseError, LedgerError) as exc:
            # The scrape fails: `up` 0, ConsentwatchDeskDown (the gauges alone would vanish).
            log.error("/metrics: the ledger cannot be read (%s)", type(exc).__name__)
            return PlainTextResponse("the ledger cannot be read\n", status_code=503)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def login_form(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is not None and session.user is not None:
            return RedirectResponse("/findings", status_code=303)
        session = session or self.config.sessions.new()
        return self.render(request, "login.html", session=session,
                           next=_safe_next(request.query_params.get("next")))

    def login(self, request: Request, session: Session, form: Any) -> Response:
        name = str(form.get("username") or "")[:200]
        password = str(form.get("password") or "")
        target = _safe_next(str(form.get("next") or ""))
        address = request.client.host if request.client else "unknown"
        wait = self.config.limiter.retry_after(name, address)
        if wait:
            self.metrics.logins.labels("limited").inc()
            response: Response = self.render(
                request, "login.html", status=429, session=session, next=target,
                error=f"Too many login attempts. Try again in {int(wait) // 60 + 1} min.")
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        role = authenticate(self.db, name, password) if name and password else None
        if role is None:
            self.metrics.logins.labels("failure").inc()
            return self.render(request, "login.html", status=401, session=session,
                               next=target, error="Wrong user name or password.")
        self.config.limiter.succeeded(name)
        self.metrics.logins.labels("success").inc()
        signed_in = self.config.sessions.login(session, name, role)
        response = RedirectResponse(target or "/findings", status_code=303)
        self.set_cookie(response, signed_in)
        return response

    def logout(self, request: Request, session: Session, form: Any) -> Response:
        self.config.sessions.end(session)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- pages ----------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        self.need(request)
        return RedirectResponse("/findings", status_code=303)

    def findings(self, request: Request) -> Response:
        session = self.need(request)
        params = request.query_params
        problems: list[str] = []
        page = queries.Page([], None)
        flt = queries.FindingFilter()
        try:
            flt = queries.parse_filter(params)
            before, after = params.get("before"), params.get("after")
            token = before or after
            cursor = queries.Cursor.parse(token) if token else None
            page = queries.findings_page(self.db, flt, cursor,
                                         newer=bool(after and not before))
        except queries.FilterError as exc:
            problems = exc.problems
        kept = {name: params[name] for name in ("rule", "severity", "account", "provider",
                                                 "subject", "from", "to", "status")
                if params.get(name)}
        next_url = prev_url = None
        if page.older is not None:
            next_url = "/findings?" + urlencode({**kept, "before": page.older.token()})
        if page.newer is not None:
            prev_url = "/findings?" + urlencode({**kept, "after": page.newer.token()})
        # htmx swapping the table asks for the table alone; a history restore, a link
        # opened in a new tab or a reload get the whole page
        partial = (request.headers.get("hx-target") == "results"
                   and not request.headers.get("hx-history-restore-request"))
        template = "_findings_table.html" if partial else "findings.html"
        return self.render(
            request, template, status=400 if problems else 200, session=session, page=page,
            problems=problems, values=kept, next_url=next_url, prev_url=prev_url,
            rules=self.catalogue.rules, paged=page.newer is not None,
            statuses=queries.STATUS_CHOICES,
            first_url="/findings?" + urlencode(kept) if kept else "/findings",
            filtered=not flt.is_empty())

    def finding(self, request: Request) -> Response:
        session = self.need(request)
        finding_id = request.path_params["finding_id"]
        entry = None
        if len(finding_id) <= _MAX_ID:
            try:
                entry = queries.finding(self.db, finding_id)
            except LedgerTampered as exc:
                return self.error_page(request, 500, "The ledger disagrees with itself",
                                       str(exc))
        if entry is None:
            return self.error_page(request, 404, "No such finding",
                                   "The ledger holds no finding with this id.")
        return self.finding_page(request, session, entry)

    def finding_page(self, request: Request, session: Session, entry: LedgerEntry, *,
                     status: int = 200, problem: str | None = None,
                     panel_only: bool = False) -> Response:
        from streams.evidence.export.summary import finding_status

        review = self.review_context(entry)
        if panel_only:
            return self.render(request, "_review.html", status=status, session=session,
                               entry=entry, problem=problem, **review)
        amendments = queries.amendments_of(self.db, entry.entry_id)
        events, svg = _evidence(entry)
        try:
            rule = self.catalogue[entry.rule]
        except KeyError:
            rule = None
        return self.render(
            request, "finding.html", status=status, session=session, entry=entry,
            record=entry.record, rule=rule, events=events,
            trigger_id=str(entry.record.get("trigger_event_id", "")),
            timeline=Markup(svg),  # built escaped by export/timeline.py
            amendments=amendments, state=finding_status(amendments),
            checkpoint=queries.latest_checkpoint(self.db), event_value=_event_value,
            problem=problem, **review)

    def review_context(self, entry: LedgerEntry) -> dict[str, Any]:
        """The review panel's values: the trail, the status it folds to, the exceptions
        in force that cover the finding, the actions its status allows."""
        trail = queries.reviews_of(self.db, entry.entry_id)
        try:
            status = fold(review.record for review in trail)
        except Exception as exc:  # TrailError: the ledger could never have stored it
            raise LedgerTampered(f"the stored reviews of this finding do not fold: {exc} "
                                 "(was the database edited?)") from None
        standing = queries.standing(self.db)
        covering = [] if status.state == "resolved" else standing.covering(entry.record)
        amended = queries.amendments_of(self.db, entry.entry_id)
        return {"trail": trail, "review_status": status,
                "seen": trail[-1].entry_id if trail else "",
                "amended": amended[-1].entry_id if amended else "",
                "covering": covering, "excepted": bool(covering),
                "actions": actions.allowed_actions(status),
                "assignees": [name for name, _, _ in list_users(self.db)],
                "reasons": REASONS, "fp_kinds": FALSE_POSITIVE_KINDS}

    def review(self, request: Request, session: Session, form: Any) -> Response:
        session = self.need(request, "review")
        htmx = bool(request.headers.get("hx-request"))
        finding_id = str(form.get("finding_id") or "")
        try:
            actions.record_review(self.db, str(session.user), form)
        except actions.ActionError as exc:
            entry = (queries.finding(self.db, finding_id)
                     if exc.status != 404 and len(finding_id) <= _MAX_ID else None)
            if entry is None:
                return self.error_page(request, exc.status, "No such finding"
                                       if exc.status == 404 else "Review refused", exc.message)
            return self.finding_page(request, session, entry, status=exc.status,
                                     problem=exc.message, panel_only=htmx)
        if htmx:
            entry = queries.finding(self.db, finding_id)
            assert entry is not None  # it was just reviewed
            return self.finding_page(request, session, entry, panel_only=True)
        return RedirectResponse(f"/findings/{quote(finding_id, safe='')}#review",
                                status_code=303)

    def accounts(self, request: Request) -> Response:
        session = self.need(request)
        size = int(self.db.query("SELECT size FROM tree_state WHERE id = 1")[0][0])
        standing = queries.standing(self.db)
        key = (size, standing.key())
        if self._accounts is None or self._accounts[0] != key:
            # the ledger only grows: the same size and exceptions in force are the same
            # open findings
            self._accounts = (key, queries.accounts(self.db, standing))
        every = self._accounts[1]
        rows = every if request.query_params.get("all") else every[:_ACCOUNTS_SHOWN]
        now = time.time_ns() // 1_000_000
        return self.render(
            request, "accounts.html", session=session, rows=rows, total=len(every),
            ages={r.account_id: _age(r.oldest_ms, now) for r in rows if r.oldest_ms is not None},
            rules=self.catalogue.rules,
            account_url=lambda account: "/findings?" + urlencode({"account": account,
                                                                  "status": "active"}))

    def users(self, request: Request) -> Response:
        session = self.need(request, "users")
        return self.render(request, "users.html", session=session, users=list_users(self.db))

    def exceptions(self, request: Request, *, session: Session | None = None,
                   status: int = 200, problem: str | None = None,
                   values: Mapping[str, Any] | None = None) -> Response:
        session = session or self.need(request)
        standing = queries.standing(self.db)
        every = list(reversed(standing.exceptions))  # newest first
        active = [e for e in every if e.record["expires_at_ms"] > standing.at_ms]
        expired = [e for e in every if e.record["expires_at_ms"] <= standing.at_ms]
        return self.render(request, "exceptions.html", status=status, session=session,
                           active=active, expired=expired, problem=problem,
                           values=values or {}, rules=self.catalogue.rules,
                           now_ms=standing.at_ms,
                           scope_url=lambda r: "/findings?" + urlencode(_scope_query(r)))

    def add_exception(self, request: Request, session: Session, form: Any) -> Response:
        session = self.need(request, "exceptions")
        try:
            actions.record_exception(self.db, str(session.user), form)
        except actions.ActionError as exc:
            kept = {name: str(form.get(name) or "") for name in
                    ("account", "provider", "rule", "from", "to", "until", "reason")}
            return self.exceptions(request, session=session, status=exc.status,
                                   problem=exc.message, values=kept)
        return RedirectResponse("/exceptions#recorded", status_code=303)

    def export_form(self, request: Request, *, session: Session | None = None,
                    status: int = 200, problem: str | None = None,
                    values: Mapping[str, Any] | None = None) -> Response:
        session = session or self.need(request, "export")
        params = request.query_params
        shown = dict(values) if values is not None else {
            name: params[name] for name in ("rule", "account", "subject", "from", "to")
            if params.get(name)}
        return self.render(request, "export.html", status=status, session=session,
                           problem=problem, values=shown, rules=self.catalogue.rules,
                           can_sign=self.config.signing_key is not None)

    def export(self, request: Request, session: Session, form: Any) -> Response:
        session = self.need(request, "export")
        values = {name: str(form.get(name) or "") for name in
                  ("rule", "account", "subject", "from", "to", "purpose")}
        key = self.config.signing_key
        if key is None:
            return self.export_form(request, session=session, status=409, values=values,
                                    problem="This desk has no signing key: start it with "
                                            "desk serve --private-key FILE to export.")
        try:
            made = actions.export(self.db, key, self.config.engine_params,
                                  str(session.user), form)
        except actions.ActionError as exc:
            return self.export_form(request, session=session, status=exc.status,
                                    values=values, problem=exc.message)
        return FileResponse(made.zip_path, media_type="application/zip",
                            filename=made.zip_path.name, background=BackgroundTask(made.remove))

    def export_log(self, request: Request) -> Response:
        session = self.need(request)
        return self.render(request, "exports.html", session=session,
                           exports=queries.exports(self.db))

    # -- errors, headers, metrics, the log line ---------------------------------------------

    async def guard(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except _NeedLogin:
            if _wants_html(request):
                target = request.url.path + (f"?{request.url.query}" if request.url.query
                                             else "")
                response = RedirectResponse(f"/login?next={quote(target, safe='')}",
                                            status_code=303)
            else:
                response = PlainTextResponse("sign in first\n", status_code=401)
                response.headers["HX-Redirect"] = "/login"
        except _Forbidden:
            response = self.error_page(request, 403, "Forbidden",
                                       "Your role does not allow this.")
        except LedgerTampered as exc:  # names a leaf index and a column, never a value
            response = self.error_page(request, 500, "The ledger disagrees with itself",
                                       str(exc))
        except LedgerError as exc:
            log.error("ledger error: %s", type(exc).__name__)
            response = self.error_page(request, 503, "The ledger cannot be written",
                                       "The desk cannot write to the ledger just now (it "
                                       "may be busy). Try again in a moment.")
        except DatabaseError as exc:
            log.error("ledger database error: %s", type(exc.__cause__).__name__)
            response = self.error_page(request, 503, "The ledger cannot be read",
                                       "The desk cannot reach the ledger's database just "
                                       "now. Try again in a moment.")
        except Exception as exc:
            log.error("unexpected %s answering %s", type(exc).__name__,
                      _route(request, self.routes))
            response = self.error_page(request, 500, "Something went wrong",
                                       "The desk could not answer this request. It was "
                                       "logged.")
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        route = _route(request, self.routes)
        elapsed = time.perf_counter() - started
        self.metrics.requests.labels(route, request.method, str(response.status_code)).inc()
        self.metrics.latency.labels(route).observe(elapsed)
        log.info("%s %s %d %.0f ms", request.method, route, response.status_code,
                 elapsed * 1000)
        return response

    async def not_found(self, request: Request, exc: Exception) -> Response:
        if int(getattr(exc, "status_code", 404)) == 405:
            return self.error_page(request, 405, "Method not allowed",
                                   "This address does not take that method.")
        return self.error_page(request, 404, "Not found", "There is no page at this address.")


def _evidence(entry: LedgerEntry) -> tuple[list[dict[str, Any]], str]:
    """The finding's evidence events in time order, and its timeline (the SVG the HTML
    report draws, from export/timeline.py; "" without an integer occurred_at)."""
    from streams.engine import EngineParams
    from streams.evidence import bundle
    from streams.evidence.export.timeline import mark_for, render_timeline

    record = entry.record
    events = [e for e in bundle.evidence_events(record) if isinstance(e, dict)]
    trigger_id = str(record.get("trigger_event_id", ""))
    occurred = record.get("occurred_at")
    svg = ""
    if type(occurred) is int:
        drawn = events if any(e.get("event_id") == trigger_id for e in events) else [
            *events, {"type": "trigger", "event_id": trigger_id, "occurred_at": occurred}]
        svg = render_timeline(drawn, trigger_id, occurred,
                              mark_for(entry.rule, occurred, events,
                                       EngineParams().notice_grace_ms))
    by_time = sorted(events, key=lambda e: (type(e.get("occurred_at")) is not int,
                                            e.get("occurred_at") or 0))
    return by_time, svg


def _route(request: Request, routes: list[BaseRoute]) -> str:
    """The matched route's template (bounded, no ids), for logs and metric labels."""
    for route in routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"


def _safe_next(target: str | None) -> str:
    """Where to go after login: a path of this site only (no scheme, no //host)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return ""
    return target if len(target) <= 2000 and not any(ord(c) < 32 for c in target) else ""


def _event_value(name: str, value: Any) -> str:
    """An evidence event's field as text: times written out, lists joined."""
    import orjson

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if type(value) is int and name.endswith("_at"):
        return describe_ms(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value) or "none"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _scope_query(record: Mapping[str, Any]) -> dict[str, str]:
    """The findings filter of an exception's scope (its excepted findings)."""
    query = {"account": str(record.get("account_id", "")), "status": "excepted",
             "from": describe_ms(record["from_ms"]), "to": describe_ms(record["to_ms"])}
    for name in ("provider", "rule"):
        if record.get(name) is not None:
            query[name] = str(record[name])
    return query
