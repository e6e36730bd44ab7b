"""The web UI's routes, under ``/ui``: sign-in with an API token, then pages for runs, a run (with its provenance
graph), submitting a templated job, quotas, tables (schema, history, a cone search) and, for admins, users, groups,
quotas and capacity.

Every page acts through a :class:`~userbatch.facility.service.Facility` for the signed-in identity
(:mod:`userbatch.facility.web.sessions`), so it shows
what the API would show that caller and nothing else; a facility refusal is an HTML page with the API's status
(403, 404, 409, 400). Every POST carries the session's CSRF token and is refused (403) without it, before
anything is done. Pages are readable without JavaScript; htmx (served from ``static/``, never a CDN) refreshes the
runs table and a live run's progress.
"""

from __future__ import annotations

import functools
import inspect
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, quote

import yaml

from ...extras import missing

try:
    import jinja2
    from fastapi import APIRouter, Depends, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
    from starlette.exceptions import HTTPException
except ModuleNotFoundError as exc:
    raise missing("facility", exc) from exc

from ...errors import UserbatchError
from ...tables.db import engine_for
from ..config import FacilityConfig
from ..models import ACTIVE_STATES, STATES
from ..service import AuthError, Facility
from ..status import status_for
from .sessions import DEFAULT_SESSION_HOURS, WebSession, close_session, open_session, resume_session
from .svg import partition_map_svg, provenance_svg, usage_bars_svg, usage_over_time_svg

HERE = Path(__file__).resolve().parent
#: The files ``/ui/static/<name>`` serves: these and nothing else.
STATIC = {"htmx.min.js": "text/javascript", "ui.css": "text/css", "htmx.LICENSE": "text/plain"}
COOKIE, LOGIN_COOKIE = "ub_session", "ub_login_csrf"
RUN_KINDS = ("template", "script", "workflow", "bps")
#: Rows a cone search on a table page shows at most.
CONE_ROW_LIMIT = 50
MAX_FORM_BYTES = 256 << 10
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                autoescape=jinja2.select_autoescape(default=True), undefined=jinja2.StrictUndefined)
_templates.filters["q"] = lambda s: quote(str(s), safe="")
_templates.filters["gb"] = lambda b: f"{(b or 0) / 1e9:,.3f}"


def _html(name: str, status_code: int = 200, headers: dict | None = None, **ctx) -> HTMLResponse:
    return HTMLResponse(_templates.get_template(name).render(**ctx), status_code=status_code,
                        headers={**SECURITY_HEADERS, **(headers or {})})


def _error_page(ws: WebSession | None, status: int, message: str) -> HTMLResponse:
    return _html("error.html", status, me=ws.identity if ws else None, csrf=ws.csrf if ws else "",
                 status=status, message=message)


def _safe_next(path: str | None) -> str:
    """Where to go after signing in: a page of this UI, never another site."""
    if path and path.startswith("/ui/") and not path.startswith("//") and "\\" not in path and "\n" not in path:
        return path
    return "/ui/runs"


def _elapsed(run: dict) -> str:
    if not run.get("started_at"):
        return ""
    start = datetime.fromisoformat(run["started_at"])
    end = datetime.fromisoformat(run["ended_at"]) if run.get("ended_at") else datetime.now(timezone.utc)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    s = max(0, int((end - start).total_seconds()))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _progress(run: dict) -> dict:
    """Tasks done and in all (from the run's progress file while it runs), and the percentage for the bar."""
    p = run.get("progress") or {}
    done, total = int(p.get("tasks_done") or 0), int(p.get("tasks_total") or 0)
    if run["state"] == "succeeded":
        done, total = max(done, total, 1), max(done, total, 1)
    pct = round(100 * done / total) if total else 0
    return {"done": done, "total": total, "pct": pct, "stage": p.get("stage") or ""}


def _run_row(fac: Facility, run: dict) -> dict:
    full = fac.status(run["id"]) if run["state"] in ("starting", "running") else run
    return {**run, "progress": _progress(full), "elapsed": _elapsed(run)}


def _parse_params(text: str) -> dict:
    text = (text or "").strip()
    if not text:
        return {}
    try:
        doc = yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as e:
        raise UserbatchError(f"the parameters are not YAML or JSON: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise UserbatchError("the parameters must be a mapping (name: value), as YAML or JSON")
    return doc


def _number(form: dict, name: str, kind: Callable = float) -> Any:
    value = (form.get(name) or "").strip()
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        raise UserbatchError(f"{name} must be a number, not {value!r}") from None


def mlflow_links(result: dict, ui: str | None) -> list[tuple[str, str]]:
    """(label, URL) of a classifier run's MLflow run and model version in MLflow's UI (none without a UI)."""
    if not ui:
        return []
    links = []
    m = result.get("mlflow") or {}
    if m.get("run_id") and m.get("experiment_id") is not None:
        links.append((f"MLflow run {m['run_id']}", f"{ui}/#/experiments/{quote(str(m['experiment_id']))}/runs/"
                                                    f"{quote(str(m['run_id']))}"))
    for name, version in ((m.get("registered_model"), m.get("model_version")),
                          ((result.get("model") or {}).get("name"), (result.get("model") or {}).get("version"))):
        if name and version is not None:
            links.append((f"model {name} v{version}", f"{ui}/#/models/{quote(str(name))}/versions/"
                                                      f"{quote(str(version))}"))
    return links


def web_router(db_url: str, config: FacilityConfig, *, session_hours: float = DEFAULT_SESSION_HOURS,
               secure_cookies: bool | None = None) -> APIRouter:
    """The UI's routes for the facility at ``db_url``, to include under ``/ui``.

    Parameters
    ----------
    db_url : str
        The facility database.
    config : FacilityConfig
        The facility config every page's :class:`~userbatch.facility.service.Facility` runs under.
    session_hours : float
        How long a sign-in lasts.
    secure_cookies : bool, optional
        Mark cookies ``Secure``; by default when the request came over https.

    Returns
    -------
    fastapi.APIRouter
        The routes (paths relative to the ``/ui`` prefix).
    """
    engine = engine_for(db_url)
    router = APIRouter(include_in_schema=False)

    def secure(request: Request) -> bool:
        return request.url.scheme == "https" if secure_cookies is None else secure_cookies

    def session(request: Request) -> WebSession:
        try:
            return resume_session(engine, request.cookies.get(COOKIE))
        except AuthError:
            target = "/ui/login?next=" + quote(_safe_next(request.url.path + (
                "?" + request.url.query if request.url.query else "")), safe="")
            raise HTTPException(303, "sign in first", headers={"Location": target, "HX-Redirect": target}) from None

    def fac_of(ws: WebSession) -> Facility:
        return Facility(ws.identity, db_url=db_url, config=config, start_worker=False)

    def page(fn):
        """A page: ``fn(fac, ws, ...)`` returns a response; a facility refusal becomes an error page with the
        API's status for it."""
        @functools.wraps(fn)
        def wrapper(*args, ws: WebSession, **kwargs):
            try:
                return fn(*args, fac=fac_of(ws), ws=ws, **kwargs)
            except UserbatchError as e:
                return _error_page(ws, status_for(e), str(e))

        # what FastAPI sees: the page's own parameters, and the session as a dependency
        params = [p for p in inspect.signature(fn).parameters.values() if p.name not in ("fac", "ws")]
        wrapper.__signature__ = inspect.Signature(params + [inspect.Parameter(
            "ws", inspect.Parameter.KEYWORD_ONLY, default=Depends(session), annotation=WebSession)])
        return wrapper

    async def form_of(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, "form too large")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            return {}
        return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}

    async def checked_form(request: Request, ws: WebSession) -> dict[str, str] | HTMLResponse:
        """The POSTed form, or a 403 page when its CSRF token is missing or not this session's."""
        form = await form_of(request)
        if not ws.csrf_ok(form.get("csrf")):
            return _error_page(ws, 403, "this form's CSRF token is missing or out of date; reload the page and "
                                        "try again")
        return form

    async def act(ws: WebSession, fn: Callable[[Facility], Response]) -> Response:
        """Run a state-changing facility call off the event loop; a refusal becomes an error page."""
        def call():
            try:
                return fn(fac_of(ws))
            except UserbatchError as e:
                return _error_page(ws, status_for(e), str(e))
        return await run_in_threadpool(call)

    def base(ws: WebSession, **ctx) -> dict:
        return {"me": ws.identity, "csrf": ws.csrf, **ctx}

    # ------------------------------------------------------------------------------------------ static, sign-in
    @router.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, f"no static file {name}")
        return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name],
                        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})

    @router.get("")
    @router.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse("/ui/runs", status_code=303)

    @router.get("/login")
    def login_form(request: Request, next: str = "") -> HTMLResponse:  # noqa: A002 - the query parameter's name
        import secrets

        login_csrf = secrets.token_urlsafe(24)
        resp = _html("login.html", me=None, csrf=login_csrf, next=_safe_next(next), message="")
        resp.set_cookie(LOGIN_COOKIE, login_csrf, max_age=3600, httponly=True, samesite="strict",
                        secure=secure(request), path="/ui/login")
        return resp

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await form_of(request)
        expected = request.cookies.get(LOGIN_COOKIE) or ""
        sent = form.get("csrf") or ""
        if not expected or not sent or not WebSession(None, expected, "").csrf_ok(sent):  # type: ignore[arg-type]
            return _error_page(None, 403, "the sign-in form's CSRF token is missing or out of date; reload it")
        try:
            secret, _ = await run_in_threadpool(open_session, engine, (form.get("token") or "").strip(),
                                                session_hours)
        except AuthError as e:
            return _html("login.html", 401, me=None, csrf=expected, next=_safe_next(form.get("next")),
                         message=f"sign-in refused: {e}")
        resp = RedirectResponse(_safe_next(form.get("next")), status_code=303)
        resp.set_cookie(COOKIE, secret, max_age=int(session_hours * 3600), httponly=True, samesite="strict",
                        secure=secure(request), path="/")
        resp.delete_cookie(LOGIN_COOKIE, path="/ui/login")
        return resp

    @router.post("/logout")
    async def logout(request: Request, ws: WebSession = Depends(session)) -> Response:
        form = await checked_form(request, ws)
        if isinstance(form, Response):
            return form
        await run_in_threadpool(close_session, engine, ws)
        resp = RedirectResponse("/ui/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # ------------------------------------------------------------------------------------------ runs
    def runs_rows(fac: Facility, state: str, kind: str) -> list[dict]:
        runs = fac.runs(state=state or None, limit=200)
        return [_run_row(fac, r) for r in runs if not kind or r["kind"] == kind]

    def filters(state: str, kind: str) -> tuple[str, str]:
        if state and state not in (*STATES, "active"):
            raise UserbatchError(f"unknown state {state!r}")
        if kind and kind not in RUN_KINDS:
            raise UserbatchError(f"unknown kind {kind!r}; one of {', '.join(RUN_KINDS)}")
        return state, kind

    @router.get("/runs")
    @page
    def runs_page(state: str = "", kind: str = "", *, fac: Facility, ws: WebSession) -> HTMLResponse:
        state, kind = filters(state, kind)
        return _html("runs.html", **base(ws, runs=runs_rows(fac, state, kind), state=state, kind=kind,
                                         states=(*STATES, "active"), kinds=RUN_KINDS,
                                         query=f"state={quote(state)}&kind={quote(kind)}"))

    @router.get("/runs/rows")
    @page
    def runs_fragment(state: str = "", kind: str = "", *, fac: Facility, ws: WebSession) -> HTMLResponse:
        state, kind = filters(state, kind)
        return _html("runs_rows.html", runs=runs_rows(fac, state, kind),
                     query=f"state={quote(state)}&kind={quote(kind)}")

    def run_live_ctx(fac: Facility, run_id: str) -> dict:
        run = fac.status(run_id)
        return {"run": run, "progress": _progress(run), "elapsed": _elapsed(run), "log": fac.logs(run_id, 40),
                "active": run["state"] in ACTIVE_STATES}

    @router.get("/runs/{run_id}/live")
    @page
    def run_live(run_id: str, *, fac: Facility, ws: WebSession) -> HTMLResponse:
        return _html("run_live.html", csrf=ws.csrf, **run_live_ctx(fac, run_id))

    @router.get("/runs/{run_id}/log")
    @page
    def run_log(run_id: str, *, fac: Facility, ws: WebSession) -> Response:
        return PlainTextResponse(fac.logs(run_id, None), headers=SECURITY_HEADERS)

    @router.get("/runs/{run_id}/export")
    @page
    def run_export(run_id: str, *, fac: Facility, ws: WebSession) -> Response:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="userbatch-export-") as tmp:
            path = Path(fac.export(run_id, tmp))
            data = path.read_bytes()
        return Response(data, media_type="application/gzip",
                        headers={"Content-Disposition": f'attachment; filename="{path.name}"'})

    @router.get("/runs/{run_id}")
    @page
    def run_page(run_id: str, *, fac: Facility, ws: WebSession) -> HTMLResponse:
        live = run_live_ctx(fac, run_id)
        run = live["run"]
        result = run.get("result") or {}
        trees, notes = [], []
        for out in result.get("outputs", []):
            try:
                trees.append(fac.provenance(out["table"], out.get("version")))
            except UserbatchError as e:
                notes.append(f"{out['table']}: {e}")
        return _html("run.html", **base(ws, **live, inputs=result.get("inputs", []),
                                        outputs=result.get("outputs", []), graph=provenance_svg(trees),
                                        graph_notes=notes, params_json=json.dumps(run.get("params"), indent=2),
                                        mlflow=mlflow_links(result, fac.config.mlflow_ui_url())))

    @router.post("/runs/{run_id}/cancel")
    async def run_cancel(run_id: str, request: Request, ws: WebSession = Depends(session)) -> Response:
        form = await checked_form(request, ws)
        if isinstance(form, Response):
            return form

        def go(fac: Facility) -> Response:
            fac.cancel(run_id)
            return RedirectResponse(f"/ui/runs/{quote(run_id)}", status_code=303)
        return await act(ws, go)

    @router.post("/runs/{run_id}/rerun")
    async def run_rerun(run_id: str, request: Request, ws: WebSession = Depends(session)) -> Response:
        form = await checked_form(request, ws)
        if isinstance(form, Response):
            return form

        def go(fac: Facility) -> Response:
            new = fac.rerun(run_id)
            return RedirectResponse(f"/ui/runs/{quote(new['id'])}", status_code=303)
        return await act(ws, go)

    # ------------------------------------------------------------------------------------------ submit
    def templates_info() -> list[dict]:
        from ..templates import list_templates, load_template

        out = []
        for name in list_templates():
            t = load_template(name)
            out.append({"name": name, "description": " ".join(t.description.split()),
                        "params": [{"name": p.name, "type": p.type, "required": p.required, "default": p.default,
                                    "help": " ".join(p.help.split())} for p in t.params.values()]})
        return out

    def submit_form(ws: WebSession, status: int = 200, message: str = "", form: dict | None = None) -> HTMLResponse:
        return _html("submit.html", status, **base(ws, templates=templates_info(), message=message,
                                                   form=form or {}, groups=ws.identity.groups))

    @router.get("/submit")
    @page
    def submit_page(template: str = "", *, fac: Facility, ws: WebSession) -> HTMLResponse:
        return submit_form(ws, form={"template": template})

    @router.post("/submit")
    async def submit(request: Request, ws: WebSession = Depends(session)) -> Response:
        form = await checked_form(request, ws)
        if isinstance(form, Response):
            return form

        def go(fac: Facility) -> Response:
            try:
                run = fac.submit(template=form.get("template") or None, params=_parse_params(form.get("params", "")),
                                 group=form.get("group") or None, cores=_number(form, "cores", int),
                                 max_hours=_number(form, "max_hours"))
            except UserbatchError as e:
                return submit_form(ws, status_for(e), str(e), form)
            return RedirectResponse(f"/ui/runs/{quote(run['id'])}", status_code=303)
        return await act(ws, go)

    # ------------------------------------------------------------------------------------------ quota
    @router.get("/quota")
    @page
    def quota_page(*, fac: Facility, ws: WebSession) -> HTMLResponse:
        q = fac.quota_show()
        balances = [q["user"], *q["groups"]]
        hours = usage_bars_svg([{"label": f"{b['subject_kind']} {b['subject']}", "used": b["used"],
                                 "reserved": b["reserved"], "limit": b["core_hours"]} for b in balances],
                               f"core-hours in {q['user']['period']}")
        limits = {f"u_{q['user']['subject']}": q["user"]["storage_gb"],
                  **{f"g_{g['subject']}": g["storage_gb"] for g in q["groups"]}}
        storage = usage_bars_svg([{"label": s["namespace"], "used": s["live_bytes"] / 1e9,
                                   "reserved": s["time_travel_bytes"] / 1e9, "limit": limits.get(s["namespace"], 0.0)}
                                  for s in q.get("storage", [])], "GB", "live (dark), kept for time travel (light)")
        return _html("quota.html", **base(ws, balances=balances, storage=q.get("storage", []), hours_svg=hours,
                                          storage_svg=storage, over_time_svg=usage_over_time_svg(q.get("usage", []))))

    # ------------------------------------------------------------------------------------------ tables
    def catalog(fac: Facility):
        from ...tables.catalog import Catalog

        return Catalog(db_url=db_url, user=fac.user, groups=fac.identity.groups)

    @router.get("/tables")
    @page
    def tables_page(*, fac: Facility, ws: WebSession) -> HTMLResponse:
        return _html("tables.html", **base(ws, tables=catalog(fac).list()))

    @router.get("/tables/{name}")
    @page
    def table_page(name: str, ra: str = "", dec: str = "", radius_arcsec: str = "", *, fac: Facility,
                   ws: WebSession) -> HTMLResponse:
        from ...tables import delta

        cat = catalog(fac)
        entry = cat.get(name)  # a table the caller cannot read answers as one that does not exist (404)
        schema, history, sky = [], [], ""
        if entry.format == "delta" and Path(entry.location).is_dir():
            snap = delta.snapshot(entry.location)
            schema = [(f.name, str(f.type)) for f in snap.schema]
            if entry.spatial:
                sky = partition_map_svg(_partitions_of(snap))
            history = [{"version": h["version"], "timestamp": h["timestamp"].isoformat(timespec="seconds"),
                        "operation": h["mode"] or h["operation"], "user": h["provenance"].get("user"),
                        "run_id": h["provenance"].get("run_id")} for h in delta.history(entry.location)[:50]]
        search = {"ra": ra, "dec": dec, "radius_arcsec": radius_arcsec, "rows": None, "columns": [],
                  "message": "", "more": False}
        if ra or dec or radius_arcsec:
            try:
                search.update(cone(entry, cat, _number({"ra": ra}, "ra"), _number({"dec": dec}, "dec"),
                                   _number({"radius_arcsec": radius_arcsec}, "radius_arcsec")))
            except UserbatchError as e:
                search["message"] = str(e)
        return _html("table.html", **base(ws, t=entry, schema=schema, history=history, search=search,
                                          limit=CONE_ROW_LIMIT, sky=sky))

    def _partitions_of(snap) -> list[tuple[int, int, int]]:
        """(order, pixel, rows) of each partition of a snapshot, from its files' paths and row counts."""
        from ...tables.snapshots import path_pixel

        rows: dict = {}
        for path, n in zip(snap.files.column("path").to_pylist(), snap.files.column("num_records").to_pylist()):
            pix = path_pixel(path)
            if pix is not None:
                rows[pix] = rows.get(pix, 0) + int(n or 0)
        return [(o, p, n) for (o, p), n in sorted(rows.items())]

    def cone(entry, cat, ra, dec, radius) -> dict:
        from ...ops.search import cone_search

        if ra is None or dec is None or radius is None:
            raise UserbatchError("give ra, dec and radius_arcsec")
        table = cone_search(entry, ra, dec, radius, catalog=cat).to_arrow(engine="arrow")
        rows = table.slice(0, CONE_ROW_LIMIT).to_pylist()
        return {"rows": rows, "columns": table.column_names, "more": table.num_rows > CONE_ROW_LIMIT,
                "total": table.num_rows}

    # ------------------------------------------------------------------------------------------ admin
    @router.get("/admin")
    @page
    def admin_page(done: str = "", *, fac: Facility, ws: WebSession) -> HTMLResponse:
        users = fac.users()  # refused (403) for anyone but an admin
        return _html("admin.html", **base(ws, users=users, groups=fac.groups(), quotas=fac.quotas(),
                                          capacity=fac.capacity(), audit=fac.audit_log(20), done=done))

    @router.post("/admin/quota")
    async def admin_quota(request: Request, ws: WebSession = Depends(session)) -> Response:
        form = await checked_form(request, ws)
        if isinstance(form, Response):
            return form

        def go(fac: Facility) -> Response:
            kind, subject = form.get("kind", ""), form.get("subject", "")
            if kind not in ("user", "group"):
                raise UserbatchError("kind must be user or group")
            fac.quota_set(kind, subject, core_hours=_number(form, "core_hours"),
                          max_cores=_number(form, "max_cores", int), storage_gb=_number(form, "storage_gb"))
            return RedirectResponse(f"/ui/admin?done={quote(kind + ' ' + subject)}", status_code=303)
        return await act(ws, go)

    return router


__all__ = ["web_router"]
