"""The web dashboard: server-rendered pages over the same monitor the API reads.

``/`` lists jobs (failing first, filters and sorting in the URL, paged), ``/jobs/<id>``
shows one job, ``/exporter`` the server's own health; ``/login`` and ``/logout`` manage
the session cookie (:mod:`cronmetrics.web.sessions`). Admins get pause, resume and
maintenance buttons, which write the job file through the same writer as the API. Pages
work without JavaScript; ``static/dashboard.js`` only refreshes them in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from cronmetrics import __version__
from cronmetrics import logs as cmlog
from cronmetrics.errors import (
    CronmetricsError,
    Forbidden,
    InvalidRequest,
    RateLimited,
    Unauthorized,
)
from cronmetrics.monitor import JobView
from cronmetrics.stats import job_stats
from cronmetrics.storage.history import Result
from cronmetrics.web import present, sessions
from cronmetrics.web.api import current, identity
from cronmetrics.web.auth import Identity
from cronmetrics.web.joblist import (
    FAILING,
    STATE_SORTS,
    STATUSES,
    Entry,
    Listed,
    ListQuery,
    select,
    status_key,
)
from cronmetrics.windows import Window, job_labels

__all__ = ["bp", "init_app"]

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
log = cmlog.get_logger("dashboard")

ICONS = {
    "ok": "✓",
    "running": "▶",
    "pending": "◷",
    "failed": "✕",
    "timeout": "⧗",
    "missed": "⚠",
    "never": "∅",
    "maintenance": "⚒",
    "paused": "⏸",
    "retired": "⊘",
}
#: choices of "maintenance for": seconds -> words
MAINTENANCE_FOR = {
    1800: "30 minutes",
    3600: "1 hour",
    7200: "2 hours",
    14400: "4 hours",
    28800: "8 hours",
    86400: "1 day",
    259200: "3 days",
    604800: "1 week",
}
HISTORY_PAGE = 20
_PUBLIC = frozenset({"dashboard.login", "dashboard.static"})
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def init_app(app: Flask) -> None:
    """Add the dashboard's routes to ``app`` (its session cookie: :func:`sessions.install`)."""
    app.register_blueprint(bp)
    app.jinja_env.globals.update(csrf_token=sessions.csrf_token, version=__version__)
    app.jinja_env.filters.update(
        duration=present.duration_words,
        absolute=present.absolute,
        iso=present.iso,
    )


class _LoginNeeded(Exception):
    pass


def viewer() -> Identity:
    """Who looks at the page: --no-auth, a bearer header (scripts), or the login cookie."""
    svc = current()
    if svc.auth.disabled or request.headers.get("Authorization"):
        return identity()
    lifetime = svc.config.dashboard.session_hours * 3600
    who = sessions.user(svc.auth, svc.clock(), lifetime, svc.store)
    if who is None:
        raise _LoginNeeded
    cmlog.bind(token=who.name)
    return who


@bp.before_request
def _authenticate() -> BaseResponse | None:
    if request.endpoint in _PUBLIC:
        return None
    try:
        g.viewer = viewer()
    except _LoginNeeded:
        if request.headers.get("Sec-Fetch-Site") == "cross-site" and request.method == "GET":
            # SameSite=Strict keeps the cookie off a link followed from another site (a
            # chat, an alert); a same-site reload of the same URL sends it
            return Response(
                render_template("reload.html", target=request.full_path.rstrip("?")),
                mimetype="text/html",
            )
        return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
    current().auth.require(g.viewer, "read")
    if request.method == "POST":
        sessions.check_csrf()
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(CronmetricsError)
def _error(exc: CronmetricsError) -> tuple[str, int]:
    if isinstance(exc, Unauthorized):
        return _page("login.html", title="Log in", error=exc.message, next="/"), 401
    level = log.warning if exc.http_status < 500 else log.error
    level("dashboard request failed", extra={"status": exc.http_status, "error": exc.message})
    return _page("error.html", title=f"Error {exc.http_status}", error=exc), exc.http_status


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int]:
    status = exc.code or 500
    error = CronmetricsError(exc.description or exc.name)
    return _page("error.html", title=f"Error {status}", error=error), status


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> tuple[str, int]:
    log.exception("unhandled error")
    error = CronmetricsError("internal server error: the server log has the details")
    return _page("error.html", title="Error 500", error=error), 500


def _page(template: str, **context: Any) -> str:
    who: Identity | None = g.get("viewer")
    auth = current().auth
    return render_template(
        template,
        viewer=who,
        show_user=who is not None and not auth.disabled and who.name != "anonymous",
        is_admin=who is not None and "admin" in who.scopes,
        **context,
    )


def _listed(who: Identity, sort: str) -> list[Listed]:
    """The jobs ``who`` may see, at now. Without a sort by state, no state is copied:
    the page copies the states of its own rows only (10,000 copies are most of a page)."""
    svc = current()
    monitor = svc.monitor
    monitor.tick(svc.clock())  # the state at now, not at the last scheduler tick
    if sort in STATE_SORTS:
        return [v for v in monitor.views() if who.allows_job(v.id)]
    with monitor.lock:
        evaluations = monitor.evaluations
        return [
            Entry(job_id, definition, evaluations[job_id])
            for job_id, definition in monitor.definitions.items()
            if job_id in evaluations and who.allows_job(job_id)
        ]


def _history(job_id: str) -> Sequence[Result]:
    """One job's retained results, oldest first."""
    return current().store.history(job_id)[::-1]


# -- the jobs list -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the jobs list, with everything its cells show."""

    view: JobView
    status: str
    marks: list[present.RunMark]
    rate_7d: float | None
    runs_7d: int


def _row(view: JobView, now: float) -> Row:
    history = _history(view.id)
    week = job_stats(view.id, history, now)["windows"]["7d"]
    marks = present.run_marks(history)
    return Row(view, status_key(view), marks, week["success_rate"], week["runs"])


@bp.get("/")
def jobs() -> str:
    who: Identity = g.viewer
    query = ListQuery.from_args(request.args, request.args.getlist("label"))
    listed = _listed(who, query.sort)
    page = select(listed, query)
    now = current().clock()
    views = current().monitor.views([v.id for v in page.rows])
    return _page(
        "jobs.html",
        title="Jobs",
        q=query,
        page=page,
        rows=[_row(v, now) for v in views],
        everything=len(listed),
        statuses=STATUSES,
        failing_keys=FAILING,
        icons=ICONS,
        now=now,
        present=present,
    )


# -- one job -------------------------------------------------------------------------------


def _report_lines(view: JobView) -> list[tuple[str, str]]:
    """How a cron host reports this job: (what, command), for the page to show."""
    d = view.definition
    base = request.host_url.rstrip("/")
    host = f', "host": "{d.host}"' if d.host else ""
    body = f'{{"job_name": "{d.job_name}"{host}, "status": "success", "duration": 27}}'
    auth = '-H "Authorization: Bearer $CRONMETRICS_TOKEN"'
    lines = [
        (
            "Wrap the command (start, exit code, duration and output tail)",
            f"CRONMETRICS_URL={base} cronmetrics run --job {view.id} -- /path/to/command",
        ),
        (
            "Report a finished run with curl",
            f"curl -fsS -X POST {base}/api/job-result {auth} "
            f"-H 'Content-Type: application/json' -d '{body}'",
        ),
    ]
    rules = {rule.rule for rule in current_app.url_map.iter_rules()}
    if any(r.startswith("/api/ping/") for r in rules):
        lines.append(
            (
                "Ping: start, then success or fail (the body is the output)",
                f"curl -fsS -X POST {auth} {base}/api/ping/{view.id}/start\n"
                f"curl -fsS -X POST {auth} --data-binary @output.log "
                f"{base}/api/ping/{view.id}/success",
            )
        )
    if any(r.startswith("/ping/") for r in rules):
        lines.append(
            (
                "Healthchecks-style ping URL (a token marked ping_key)",
                f"curl -fsS {base}/ping/$PING_KEY/{view.id}",
            )
        )
    return lines


def _definition_text(view: JobView) -> tuple[str | None, str | None]:
    jf = current().jobs_dir.file_of(view.id)
    if jf is None:
        return None, None
    try:
        text = jf.path.read_text(encoding="utf-8", errors="replace")[:65536]
    except OSError as exc:
        text = f"# cannot read {jf.display}: {exc.strerror}"
    return jf.display, text


@bp.get("/jobs/<job_id>")
def job(job_id: str) -> str:
    who: Identity = g.viewer
    current().auth.require(who, "read", job_id)
    svc = current()
    now = svc.clock()
    svc.monitor.tick(now)
    view = svc.monitor.view(job_id)
    history = _history(job_id)
    ordered = sorted(history, key=lambda r: (r.timestamp, r.received), reverse=True)
    pages = max(1, -(-len(ordered) // HISTORY_PAGE))
    raw = request.args.get("page", "1")
    if not (raw.isascii() and raw.isdigit()) or not int(raw) >= 1:
        raise InvalidRequest("page must be a positive integer", field="page")
    number = min(int(raw), pages)
    path, text = _definition_text(view)
    refusal = svc.writer.refusal()
    return _page(
        "job.html",
        title=job_id,
        view=view,
        status=status_key(view),
        icons=ICONS,
        statuses=STATUSES,
        sentence=present.sentence(view, now),
        expectation=present.expectation(view.definition),
        stats=job_stats(job_id, history, now, view.state),
        chart=present.duration_chart(history),
        marks=present.run_marks(history),
        results=ordered[(number - 1) * HISTORY_PAGE : number * HISTORY_PAGE],
        history_page=number,
        history_pages=pages,
        path=path,
        text=text,
        report=_report_lines(view),
        run_log=svc.monitor.run_output(job_id) if view.state.running else None,
        can_act=who.allows_job(job_id) and "admin" in who.scopes and not view.unmanaged,
        can_window=svc.maintenance is not None and _may_window(who),
        windows=_covering(view),
        read_only=refusal.message if refusal is not None else None,
        maintenance_for=MAINTENANCE_FOR,
        now=now,
        present=present,
    )


def _covering(view: JobView) -> list[Window]:
    """The runtime maintenance windows (active or pending) whose matchers select the job."""
    maintenance = current().maintenance
    if maintenance is None:
        return []
    labels = job_labels(view.definition)
    return [w for w in maintenance.windows(("active", "pending")) if w.selects(labels)]


def _may_window(who: Identity) -> bool:
    """Maintenance windows select jobs by matchers: a token limited to some jobs cannot
    create or end them (as for ``/api/maintenance``)."""
    return who.jobs is None and bool(who.scopes & {"admin", "maintenance"})


def _matchers(view: JobView) -> list[str]:
    d = view.definition
    return [f"job_name={d.job_name}", f"host={d.host or ''}"]


def _changes(action: str, now: float) -> tuple[dict[str, Any], str]:
    if action == "pause":
        return {"status": "paused"}, "paused"
    if action in ("resume", "end-maintenance"):
        # no status key is the default, active; the file stays as it was before the pause
        return {"status": None, "maintenance_until": None}, "active again"
    if action == "maintenance":
        raw = request.form.get("for", "")
        if not raw.isdigit() or int(raw) not in MAINTENANCE_FOR:
            raise InvalidRequest("choose how long the maintenance lasts", field="for")
        until = now + int(raw)
        return (
            {"status": "maintenance", "maintenance_until": present.iso(until)},
            f"in maintenance until {present.absolute(until)}",
        )
    raise InvalidRequest(f"unknown action {action!r}", field="action")


@bp.post("/jobs/<job_id>/action")
def act(job_id: str) -> BaseResponse:
    """Pause, resume, or put in / take out of maintenance: written to the job's file."""
    svc = current()
    who: Identity = g.viewer
    action = request.form.get("action", "")
    if action in ("window", "end-window") and svc.maintenance is not None:
        return _window_action(job_id, action, who)
    svc.auth.require(who, "admin", job_id)
    changes, outcome = _changes(action, svc.clock())
    try:
        svc.writer.patch(job_id, changes)
    except CronmetricsError as exc:
        flash(f"Could not change {job_id}: {exc.message}", "error")
    else:
        svc.reload()
        log.info("dashboard action", extra={"action": action, "job": job_id})
        flash(f"{job_id} is {outcome}.", "ok")
    return redirect(url_for("dashboard.job", job_id=job_id))


def _window_action(job_id: str, action: str, who: Identity) -> BaseResponse:
    """Maintenance for a duration as a runtime window selecting this job (works when
    jobs.d is read-only), or end one of the windows covering it."""
    svc = current()
    maintenance = svc.maintenance
    assert maintenance is not None
    if not _may_window(who):
        raise Forbidden(
            f"token {who.name!r} may not create or end maintenance windows (it needs the "
            "'admin' or 'maintenance' scope and no job globs)"
        )
    view = svc.monitor.view(job_id)
    if action == "window":
        raw = request.form.get("for", "")
        if not raw.isdigit() or int(raw) not in MAINTENANCE_FOR:
            raise InvalidRequest("choose how long the maintenance lasts", field="for")
        comment = request.form.get("comment", "").strip()[:500] or "from the dashboard"
        body = {"matchers": _matchers(view), "duration": int(raw), "comment": comment}
        window = maintenance.create(body, who.name)
        log.info("dashboard maintenance window", extra={"job": job_id, "id": window.id})
        flash(f"{job_id} is in maintenance until {present.absolute(window.end)}.", "ok")
    else:
        wid = request.form.get("window", "")
        if wid not in {w.id for w in _covering(view)}:
            raise InvalidRequest(f"no maintenance window {wid!r} covers {job_id}", field="window")
        maintenance.end(wid, who.name)
        log.info("dashboard maintenance window ended", extra={"job": job_id, "id": wid})
        flash(f"Maintenance window {wid} ended.", "ok")
    return redirect(url_for("dashboard.job", job_id=job_id))


# -- the exporter ----------------------------------------------------------------------------


@bp.get("/exporter")
def exporter() -> str:
    svc = current()
    report = svc.last_reload
    problems = []
    if report is not None:
        for display in sorted(report.invalid):
            for problem in report.invalid[display]:
                problems.append((display, str(problem), display in report.kept))
    refusal = svc.writer.refusal()
    return _page(
        "exporter.html",
        title="Exporter",
        report=report,
        problems=problems,
        checks=svc.health(),
        counts=svc.monitor.counts(),
        config=svc.config,
        writes=refusal.message if refusal is not None else "allowed",
        now=svc.clock(),
    )


# -- login ---------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a path on this server: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | tuple[str, int] | str:
    svc = current()
    target = _safe_next(request.values.get("next"))
    if svc.auth.disabled:
        return redirect(target)
    if request.method == "GET":
        return _page("login.html", title="Log in", next=target, error=None)
    sessions.check_csrf()
    token = request.form.get("token", "").strip()
    try:
        if not token:
            raise Unauthorized("enter a token")
        who = svc.auth.identify(
            f"Bearer {token}", client=request.remote_addr or "unknown", now=svc.clock()
        )
        if "read" not in who.scopes:
            raise Forbidden(f"token {who.name!r} lacks the 'read' scope the dashboard needs")
    except (Unauthorized, Forbidden, RateLimited) as exc:
        log.warning("dashboard login refused", extra={"error": exc.message})
        return _page("login.html", title="Log in", next=target, error=exc.message), exc.http_status
    sessions.log_in(svc.auth, who, svc.clock())
    log.info("dashboard login", extra={"token": who.name})
    return redirect(target)


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> BaseResponse:
    """End the session. A GET is safe: SameSite=Strict keeps other sites from sending it."""
    svc = current()
    sessions.log_out(svc.store, svc.clock(), svc.config.dashboard.session_hours * 3600)
    return redirect(url_for("dashboard.login"))
