"""The run API: what a running job may ask of the facility, served by the worker on a Unix socket.

A run has no database URL and, on the local runner, no network beyond its own loopback (:mod:`.isolation`); the
one door it has is this socket, which file-system namespaces do not hide. Every request carries the run's delegated
token (scope ``run``: acts as its owner, only while the run lives, never as an admin) and is answered by the same
:class:`~.service.Facility` rules as the public API — here only the catalog (:mod:`.catalog_api`) and ``/me``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path

from ..extras import missing, require

try:
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
except ModuleNotFoundError as exc:
    raise missing("facility", exc) from exc

from ..errors import UserbatchError
from ..tables.db import engine_for
from .catalog_api import catalog_router
from .config import FacilityConfig
from .mlflow_service import MlflowServer
from .service import Facility, Identity
from .status import status_for

log = logging.getLogger(__name__)

#: Largest request body the run API reads (a catalog entry is a few kB).
MAX_BODY_BYTES = 1 << 20


def socket_path(db_url: str, home: Path) -> Path:
    """Where the worker for ``db_url`` listens: under /run when root (short, root-owned, not in /tmp where another
    account could plant the name first), else in the facility home."""
    key = hashlib.sha256(db_url.encode()).hexdigest()[:16]
    if os.geteuid() == 0 and Path("/run").is_dir():
        d = Path("/run/userbatch")
        d.mkdir(mode=0o755, exist_ok=True)
        os.chmod(d, 0o755)
        return d / f"{key}.sock"
    d = home / "workers"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{key}.sock"


#: Largest body forwarded to MLflow (a model's artifacts are uploaded one file per request).
MAX_MLFLOW_BODY_BYTES = 1 << 30
_HOP_HEADERS = {"authorization", "host", "content-length", "connection", "keep-alive", "transfer-encoding",
                "cookie"}


def create_run_app(db_url: str, config: FacilityConfig, mlflow_server: MlflowServer | None = None) -> FastAPI:
    engine = engine_for(db_url)
    bearer = HTTPBearer(auto_error=False)
    app = FastAPI(title="userbatch run API", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def _limit(request: Request, call_next):
        size = request.headers.get("content-length")
        limit = MAX_MLFLOW_BODY_BYTES if request.url.path.startswith("/mlflow/") else MAX_BODY_BYTES
        if size and size.isdigit() and int(size) > limit:
            return JSONResponse({"detail": f"request body over {limit} bytes", "error": "UserbatchError"},
                                status_code=413)
        return await call_next(request)

    @app.exception_handler(UserbatchError)
    async def _error(request: Request, exc: UserbatchError):
        return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=status_for(exc))

    def facility(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Facility:
        identity = Identity.from_token(creds.credentials if creds else None, engine)
        return Facility(identity, db_url=db_url, config=config, start_worker=False)

    @app.get("/me")
    def me(fac: Facility = Depends(facility)) -> dict:
        return {"user": fac.user, "groups": list(fac.identity.groups), "admin": fac.identity.is_admin,
                "run_id": fac.identity.run_id}

    app.include_router(catalog_router(facility))

    @app.api_route("/mlflow/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def mlflow_proxy(path: str, request: Request,
                           creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Response:
        """MLflow's REST API as the run's owner: the run shows its delegated token, the facility answers with the
        owner's MLflow credentials (the run never holds them)."""
        httpx = require("httpx", "facility")
        from starlette.concurrency import run_in_threadpool

        identity = await run_in_threadpool(Identity.from_token, creds.credentials if creds else None, engine)
        if mlflow_server is None:
            raise UserbatchError("this facility has no MLflow tracking server for runs")
        url = await run_in_threadpool(mlflow_server.ensure_started)
        auth = await run_in_threadpool(mlflow_server.credentials, identity.user)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with httpx.AsyncClient(timeout=600) as client:
            r = await client.request(request.method, f"{url}/{path}", params=list(request.query_params.multi_items()),
                                     content=await request.body(), headers=headers, auth=auth)
        keep = {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "content-disposition")}
        return Response(r.content, status_code=r.status_code, headers=keep)

    return app


class RunApiServer:
    """uvicorn on a Unix socket in a daemon thread, for the worker's lifetime."""

    def __init__(self, db_url: str, config: FacilityConfig, path: Path, mlflow_server: MlflowServer | None = None):
        uvicorn = require("uvicorn", "facility")

        self.path = Path(path)
        self.mlflow = mlflow_server
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        cfg = uvicorn.Config(create_run_app(db_url, config, mlflow_server), uds=str(self.path), log_level="warning",
                             lifespan="off", access_log=False)
        self._server = uvicorn.Server(cfg)
        self._server.install_signal_handlers = lambda: None  # a thread cannot; the worker handles signals
        self._thread = threading.Thread(target=self._server.run, name="userbatch-run-api", daemon=True)

    def start(self, timeout_s: float = 30.0) -> "RunApiServer":
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise UserbatchError(f"the run API did not start on {self.path}")
            time.sleep(0.02)
        os.chmod(self.path, 0o666)  # any run may connect; its token says who it is
        log.info("run API listening on %s", self.path)
        return self

    def stop(self) -> None:
        if self.mlflow is not None:
            self.mlflow.stop()
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if self.path.exists():
            self.path.unlink()


__all__ = ["RunApiServer", "create_run_app", "socket_path"]
