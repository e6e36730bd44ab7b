"""The facility's REST API: every :class:`~.service.Facility` operation over HTTP, for one caller per request.

A request names its caller with a bearer token (``Authorization: Bearer <token>``; an admin makes one with
``userbatch admin token create USER``); the token is looked up by its SHA-256 digest, and the request runs as that
:class:`~.service.Identity` through a :class:`~.service.Facility`, which does all the checking. The API itself
adds no rules, so the CLI in-process and the CLI through :mod:`.client` behave the same.

Errors are JSON ``{"detail": "<message>", "error": "<exception class>"}`` with the status saying what kind:
401 no usable token, 403 not allowed, 404 no such run or table, 409 over quota, 400 any other input the caller
can fix (request-body validation included). OpenAPI docs are at ``/docs``: Swagger UI served from the facility
itself (its files come from the ``swagger-ui-bundle-v2`` package, under :data:`DOCS_STATIC`), so the page works on a
network with no internet; FastAPI's default page loads them from a CDN and is blank there.

:func:`serve` runs the API under uvicorn, and beside it the facility worker (the API never starts one per
request), in a thread that stops when the server does.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..extras import missing, require

try:
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel, ConfigDict, Field
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from swagger_ui_bundle import swagger_ui_path
except ModuleNotFoundError as exc:
    raise missing("facility", exc) from exc

from ..config import settings
from ..errors import UserbatchError
from ..tables.db import engine_for
from .catalog_api import catalog_router
from .config import FacilityConfig, load_config
from .service import Facility, Identity
from .status import status_for
from .web import web_router

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------ request bodies

class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScriptBody(_Body):
    name: str = Field(description="file name of the PySpark script, e.g. my_job.py")
    text: str = Field(description="the script's source")
    args: list[str] = Field(default_factory=list, description="arguments passed to the script")


class SubmitBody(_Body):
    """Exactly one of ``template`` (with ``params``), ``script`` or ``workflow``."""

    template: str | None = Field(None, description="job template name ('userbatch jobs list')")
    params: dict[str, Any] | None = Field(None, description="template parameters")
    script: ScriptBody | None = None
    workflow: str | None = Field(None, description="a SQL workflow, as YAML text")
    bps: dict[str, Any] | None = Field(None, description="a BPS workflow prepared by the userbatch WMS plugin "
                                       "({name, submit_path}; the submit path must be on the facility's filesystem)")
    group: str | None = Field(None, description="charge this group's allocation (you must be a member)")
    cores: int | None = Field(None, description="cores to run on (default from the facility config)")
    max_hours: float | None = Field(None, description="wall-time limit; cores x hours is reserved from the quota")


class RerunBody(_Body):
    output_map: dict[str, str] | None = Field(None, description="write output OLD as NEW")


class QuotaBody(_Body):
    core_hours: float | None = None
    max_cores: int | None = None
    storage_gb: float | None = None


class VacuumBody(_Body):
    retain_days: float | None = Field(None, ge=0, le=36600, description="keep every version this recent (default 7)")
    dry_run: bool = Field(False, description="only report what would be removed")
    min_age_hours: float | None = Field(None, ge=0, le=87840,
                                        description="never remove a file younger than this (default 24)")


class RestoreBody(_Body):
    version: int = Field(ge=0, description="the version to bring back as a new version")


class WorkflowBody(_Body):
    text: str = Field(description="the workflow YAML")
    group: str | None = None


class UserBody(_Body):
    name: str
    admin: bool = False
    groups: list[str] = Field(default_factory=list)


class GroupBody(_Body):
    name: str
    members: list[str] = Field(default_factory=list)
    description: str = ""


class TokenBody(_Body):
    user: str | None = Field(None, description="whose token (default the caller; others need an admin)")
    label: str = Field("", max_length=128)
    expires_days: float | None = Field(None, gt=0, le=3660, description="lifetime (default: the facility's)")


class UserStateBody(_Body):
    admin: bool | None = Field(None, description="make an admin (true) or demote (false)")
    active: bool | None = Field(None, description="disable (false: tokens revoked, runs stopped) or enable")


#: Largest request body the API reads: a script or workflow is text, a few hundred kB at most.
MAX_BODY_BYTES = 4 << 20


# ------------------------------------------------------------------------------------------------ the app

def _error(status: int, message: str, kind: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": message, "error": kind}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _table_dict(e) -> dict:
    return {"name": e.name, "owner": e.owner, "group": e.group, "visibility": e.visibility, "format": e.format,
            "description": e.description}


#: where the API serves Swagger UI's own files (JavaScript, CSS, favicon) for ``/docs``
DOCS_STATIC = "/static/swagger"


def _add_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) with every asset served by ``app`` under :data:`DOCS_STATIC`, and the OAuth2 redirect
    page Swagger UI expects beside it. FastAPI's own page (``docs_url``) would load them from a CDN."""
    app.mount(DOCS_STATIC, StaticFiles(directory=Path(str(swagger_ui_path))), name="swagger")
    redirect = app.swagger_ui_oauth2_redirect_url

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API docs",
                                   oauth2_redirect_url=redirect,
                                   swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_STATIC}/favicon-32x32.png")

    @app.get(redirect, include_in_schema=False)
    def docs_oauth2_redirect():
        return get_swagger_ui_oauth2_redirect_html()


def create_app(db_url: str | None = None, config: FacilityConfig | None = None) -> FastAPI:
    """The API for the facility database at ``db_url`` (default: the settings'), under ``config`` (default: the
    facility config file). Requests never start a worker: the serving process runs one (:func:`serve`)."""
    db_url = db_url or settings().db_url
    config = config or load_config()
    engine = engine_for(db_url)
    bearer = HTTPBearer(auto_error=False, description="an API token: 'userbatch admin token create USER'")

    # docs_url=None: FastAPI's page loads Swagger UI from a CDN; _add_docs serves it from here. No ReDoc (CDN only).
    app = FastAPI(title="userbatch", version=_version(), docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                  description="The Rubin User Batch facility: Spark runs over catalog tables under quotas.")
    _add_docs(app)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_BODY_BYTES):
            return _error(413, f"request body over {MAX_BODY_BYTES} bytes; send large inputs as tables",
                          "UserbatchError")
        if size is None and request.method in ("POST", "PUT", "PATCH") and \
                "chunked" in request.headers.get("transfer-encoding", ""):
            return _error(411, "send a Content-Length (chunked request bodies are not accepted)", "UserbatchError")
        return await call_next(request)

    @app.exception_handler(UserbatchError)
    async def _userbatch_error(request: Request, exc: UserbatchError):
        status = status_for(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if status >= 500:  # pragma: no cover - no mapping gives one today
            log.error("%s %s: %s", request.method, request.url.path, exc)
        return _error(status, str(exc), type(exc).__name__, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _error(400, _validation_message(exc), "UserbatchError")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no endpoint {request.method} {request.url.path}; /docs lists them"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; /docs lists the endpoints"
        return _error(exc.status_code, message, "HTTPException", getattr(exc, "headers", None))

    def facility(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Facility:
        identity = Identity.from_token(creds.credentials if creds else None, engine)
        return Facility(identity, db_url=db_url, config=config, start_worker=False)

    # Route order matters: a run id or table name is a {..:path} parameter (so that ``a/../b`` reaches the
    # facility and is refused with its message instead of matching no route), hence the longer routes first.

    @app.get("/health", tags=["service"])
    def health() -> dict:
        """Liveness (no token needed)."""
        return {"status": "ok", "version": _version()}

    @app.get("/me", tags=["service"])
    def me(fac: Facility = Depends(facility)) -> dict:
        """Who the token belongs to."""
        i = fac.identity
        return {"user": i.user, "groups": list(i.groups), "admin": i.is_admin}

    # --------------------------------------------------------------------------------------------- runs
    @app.post("/runs", status_code=201, tags=["runs"])
    def submit(body: SubmitBody, fac: Facility = Depends(facility)) -> dict:
        """Queue a run: a template with parameters, a script, or a workflow (YAML text). Returns at once."""
        script = (body.script.name, body.script.text) if body.script else None
        return fac.submit(template=body.template, params=body.params, script=script,
                          script_args=body.script.args if body.script else None, workflow=body.workflow,
                          bps=body.bps, group=body.group, cores=body.cores, max_hours=body.max_hours)

    @app.get("/runs", tags=["runs"])
    def runs(user: str | None = None, state: str | None = None, all_users: bool = False,
             limit: int = Query(100, ge=1, le=10_000), fac: Facility = Depends(facility)) -> list[dict]:
        """Your runs, newest first (another user's, or everyone's, for admins)."""
        return fac.runs(user=user, state=state, all_users=all_users, limit=limit)

    @app.get("/runs/{run_id:path}/logs", response_class=PlainTextResponse, tags=["runs"])
    def logs(run_id: str, tail: int = Query(200, ge=0, description="last lines; 0 for all"),
             fac: Facility = Depends(facility)) -> str:
        """The run's driver log (text)."""
        return fac.logs(run_id, tail or None)

    @app.post("/runs/{run_id:path}/cancel", tags=["runs"])
    def cancel(run_id: str, fac: Facility = Depends(facility)) -> dict:
        """Cancel a queued run (its reservation is released) or stop a running one (used time is charged)."""
        return fac.cancel(run_id)

    @app.get("/runs/{run_id:path}/results", tags=["runs"])
    def results(run_id: str, fac: Facility = Depends(facility)) -> dict:
        """The tables a run wrote (with versions) and the inputs it read."""
        return fac.results(run_id)

    @app.post("/runs/{run_id:path}/rerun", status_code=201, tags=["runs"])
    def rerun(run_id: str, body: RerunBody | None = None, fac: Facility = Depends(facility)) -> dict:
        """Submit the run again with its inputs pinned to the versions it read."""
        return fac.rerun(run_id, output_map=body.output_map if body else None)

    @app.get("/runs/{run_id:path}/export", response_class=Response, tags=["runs"],
             responses={200: {"content": {"application/gzip": {}}, "description": "the bundle (tar.gz)"}})
    def export(run_id: str, fac: Facility = Depends(facility)) -> Response:
        """A self-contained bundle (tar.gz) to run this job elsewhere."""
        with tempfile.TemporaryDirectory(prefix="userbatch-export-") as tmp:
            path = Path(fac.export(run_id, tmp))
            data = path.read_bytes()
        return Response(data, media_type="application/gzip",
                        headers={"Content-Disposition": f'attachment; filename="{path.name}"'})

    @app.get("/runs/{run_id:path}", tags=["runs"])
    def status(run_id: str, fac: Facility = Depends(facility)) -> dict:
        """A run: state, stage, Spark progress, reservation and charge, result."""
        return fac.status(run_id)

    # --------------------------------------------------------------------------------------------- quotas
    @app.get("/quota", tags=["quotas"])
    def quota_show(user: str | None = None, fac: Facility = Depends(facility)) -> dict:
        """Your allocation and your groups' (another user's for admins): used, reserved, remaining."""
        return fac.quota_show(user)

    @app.put("/quotas/{kind}/{subject}", tags=["quotas"])
    def quota_set(kind: str, subject: str, body: QuotaBody, fac: Facility = Depends(facility)) -> dict:
        """Change a user's or group's allocation (admins; audited). Returns the new limits."""
        return fac.quota_set(kind, subject, core_hours=body.core_hours, max_cores=body.max_cores,
                             storage_gb=body.storage_gb)

    @app.get("/audit", tags=["quotas"])
    def audit(limit: int = Query(50, ge=1, le=10_000), fac: Facility = Depends(facility)) -> list[dict]:
        """Recent quota, user, group and token changes, with values before and after (admins)."""
        return fac.audit_log(limit)

    @app.get("/capacity", tags=["quotas"])
    def capacity(fac: Facility = Depends(facility)) -> dict:
        """Allocations against the facility's user-computing capacity."""
        return fac.capacity()

    # --------------------------------------------------------------------------------------------- tables
    @app.get("/tables", tags=["tables"])
    def tables(namespace: str | None = None, fac: Facility = Depends(facility)) -> list[dict]:
        """The tables you can read."""
        from ..tables.catalog import Catalog

        cat = Catalog(db_url=db_url, user=fac.user, groups=fac.identity.groups)
        return [_table_dict(e) for e in cat.list(namespace)]

    @app.get("/tables/{name:path}/provenance", tags=["tables"])
    def provenance(name: str, version: int | None = Query(None, ge=0), depth: int = Query(8, ge=0, le=64),
                   fac: Facility = Depends(facility)) -> dict:
        """How a table version came to be: its run, parameters and inputs, walked back."""
        return fac.provenance(name, version, depth=depth)

    @app.post("/tables/{name:path}/vacuum", tags=["tables"])
    def vacuum_table(name: str, body: VacuumBody | None = None, fac: Facility = Depends(facility)) -> dict:
        """Remove the files no version worth keeping reads (owners; admins any)."""
        b = body or VacuumBody()
        return fac.vacuum(name, retain_days=b.retain_days, dry_run=b.dry_run, min_age_hours=b.min_age_hours)

    @app.post("/vacuum", tags=["tables"])
    def vacuum_all(body: VacuumBody | None = None, fac: Facility = Depends(facility)) -> dict:
        """Vacuum every table you own (every table, for admins) and your dropped tables' directories."""
        b = body or VacuumBody()
        return fac.vacuum(all_tables=True, retain_days=b.retain_days, dry_run=b.dry_run,
                          min_age_hours=b.min_age_hours)

    @app.post("/tables/{name:path}/optimize", tags=["tables"])
    def optimize_table(name: str, fac: Facility = Depends(facility)) -> dict:
        """Compact a table's partitions into one file each (a new version)."""
        return fac.optimize(name)

    @app.post("/tables/{name:path}/restore", tags=["tables"])
    def restore_table(name: str, body: RestoreBody, fac: Facility = Depends(facility)) -> dict:
        """A new version of the table equal to an earlier one."""
        return fac.restore(name, body.version)

    @app.get("/tables/{name:path}", tags=["tables"])
    def table(name: str, fac: Facility = Depends(facility)) -> dict:
        """One table you can read."""
        from ..tables.catalog import Catalog

        return _table_dict(Catalog(db_url=db_url, user=fac.user, groups=fac.identity.groups).get(name))

    # --------------------------------------------------------------------------------------------- workflows
    @app.post("/workflows", status_code=201, tags=["workflows"])
    def add_workflow(body: WorkflowBody, fac: Facility = Depends(facility)) -> dict:
        """Register (or replace) a workflow of yours; with a schedule the facility submits it when due."""
        return fac.add_workflow(body.text, group=body.group)

    @app.get("/workflows", tags=["workflows"])
    def workflows(fac: Facility = Depends(facility)) -> list[dict]:
        """Your registered workflows (everyone's for admins)."""
        return fac.workflows()

    @app.post("/workflows/{name:path}/run", status_code=201, tags=["workflows"])
    def run_workflow(name: str, fac: Facility = Depends(facility)) -> dict:
        """Run a registered workflow now (by name or id)."""
        return fac.run_workflow(name)

    # --------------------------------------------------------------------------------------------- admin
    @app.get("/users", tags=["admin"])
    def users(fac: Facility = Depends(facility)) -> list[dict]:
        """Every user, with their groups (admins)."""
        return fac.users()

    @app.post("/users", status_code=201, tags=["admin"])
    def add_user(body: UserBody, fac: Facility = Depends(facility)) -> dict:
        """Add a user, or add them to groups (admins; audited)."""
        return fac.add_user(body.name, admin=body.admin, groups=body.groups)

    @app.get("/groups", tags=["admin"])
    def groups(fac: Facility = Depends(facility)) -> list[dict]:
        """Your groups with their members (every group for admins)."""
        return fac.groups()

    @app.post("/groups", status_code=201, tags=["admin"])
    def add_group(body: GroupBody, fac: Facility = Depends(facility)) -> dict:
        """Add a group, or members to it (admins; audited)."""
        return fac.add_group(body.name, members=body.members, description=body.description)

    @app.post("/tokens", status_code=201, tags=["admin"])
    def create_token(body: TokenBody | None = None, fac: Facility = Depends(facility)) -> dict:
        """A new API token (yours, or anyone's for an admin). The token is in this answer only: it is stored as
        its SHA-256 digest."""
        body = body or TokenBody()
        return fac.create_token(body.user, label=body.label, expires_days=body.expires_days)

    @app.get("/tokens", tags=["admin"])
    def tokens(user: str | None = None, fac: Facility = Depends(facility)) -> list[dict]:
        """Your tokens (another user's for an admin): ids, labels, expiry; never the tokens themselves."""
        return fac.tokens(user)

    @app.delete("/tokens", tags=["admin"])
    def revoke_all_tokens(user: str | None = None, fac: Facility = Depends(facility)) -> dict:
        """Revoke every token of yours (another user's for an admin)."""
        return fac.revoke_all_tokens(user)

    @app.patch("/users/{name}", tags=["admin"])
    def user_state(name: str, body: UserStateBody, fac: Facility = Depends(facility)) -> dict:
        """Demote or promote an admin; disable or enable a user (admins; audited)."""
        out: dict[str, Any] = {"user": name}
        if body.admin is not None:
            out.update(fac.set_admin(name, body.admin))
        if body.active is not None:
            out.update(fac.set_active(name, body.active))
        return out

    @app.get("/fsck", tags=["admin"])
    def fsck(repair: bool = False, fac: Facility = Depends(facility)) -> list[dict]:
        """Where the file system disagrees with the catalog (owners, groups, modes); ``repair`` fixes it."""
        return fac.fsck(repair=repair)

    app.include_router(catalog_router(facility))
    app.include_router(web_router(db_url, config), prefix="/ui")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/runs", status_code=303)

    @app.delete("/tokens/{token_id:path}", tags=["admin"])
    def revoke_token(token_id: str, fac: Facility = Depends(facility)) -> dict:
        """Revoke a token of yours (anyone's for an admin)."""
        return fac.revoke_token(token_id)

    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("userbatch")
    except Exception:  # noqa: BLE001 - running from a source tree that is not installed
        return "0+unknown"


def _worker_loop(db_url: str, config: FacilityConfig, stop: threading.Event, retry_s: float = 5.0) -> None:
    """Run the facility worker until ``stop``; while another process holds the worker lock (a background worker
    the CLI started), wait for it to exit and take over."""
    from .worker import Worker

    worker = Worker(db_url=db_url, config=config)
    waiting_logged = False
    while not stop.is_set():
        try:
            if not worker.acquire():
                if not waiting_logged:
                    log.info("another worker serves %s; taking over when it exits", db_url)
                    waiting_logged = True
                stop.wait(retry_s)
                continue
            log.info("worker started for %s", db_url)
            worker.run(stop=stop)
        except Exception:  # noqa: BLE001 - keep serving: log, back off, start again
            log.exception("the worker failed; restarting it in %.0f s", retry_s)
            stop.wait(retry_s)
        finally:
            worker.release()


def serve(host: str = "127.0.0.1", port: int = 8765, db_url: str | None = None, with_worker: bool = True,
          history_port: int | None = None, with_history: bool = True) -> None:
    """Run the API (uvicorn) until interrupted; beside it, ``with_worker``, the facility worker in a daemon thread,
    and ``with_history``, the Spark History Server over the runs' event logs (loopback only, on ``history_port``,
    default the config's ``history.port``), both stopped when the server shuts down.

    Parameters
    ----------
    host, port : str, int
        Where the API listens.
    db_url : str, optional
        The facility database (default: the settings').
    with_worker : bool
        Run the worker in this process.
    history_port : int, optional
        The History Server's port (default: the facility config's).
    with_history : bool
        Start the History Server.
    """
    from . import history_server

    uvicorn = require("uvicorn", "facility")

    if not logging.getLogger().handlers:  # the worker's and the facility's log lines go beside uvicorn's
        logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(name)s] %(message)s")
    db_url = db_url or settings().db_url
    config = load_config()
    if history_port is not None:
        config = dataclasses.replace(config, history_port=history_port)
    app = create_app(db_url, config)
    stop = threading.Event()
    threads = []
    if with_worker:
        threads.append(threading.Thread(target=_worker_loop, args=(db_url, config, stop), daemon=True,
                                        name="userbatch-worker"))
    history = None
    if with_history:
        runs_root, history_dir = settings().home / "runs", settings().home / "history"
        history_server.link_event_logs(runs_root, history_dir)
        try:
            history = history_server.start(history_dir, config.history_port)
        except UserbatchError as e:  # no Java, port taken: the API and the worker still serve; say why
            log.error("the Spark History Server did not start (%s); serving without it", e)
        threads.append(threading.Thread(target=_link_loop, args=(runs_root, history_dir, stop), daemon=True,
                                        name="userbatch-history-links"))
    for t in threads:
        t.start()
    # uvicorn re-raises the SIGTERM it caught once it has shut down; with the default handler that would end the
    # process before the cleanup below (and leave the History Server running), so SIGTERM becomes SystemExit
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        if history is not None:
            history_server.stop(history)


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _link_loop(runs_root: Path, history_dir: Path, stop: threading.Event, every_s: float = 10.0) -> None:
    """Link new runs' event logs for the History Server until ``stop``."""
    from .history_server import link_event_logs

    while not stop.wait(every_s):
        try:
            link_event_logs(runs_root, history_dir)
        except OSError:  # a run directory removed or changed under us: try again next time
            log.exception("linking event logs for the History Server failed; trying again in %.0f s", every_s)
