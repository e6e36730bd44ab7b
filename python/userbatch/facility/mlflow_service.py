"""MLflow for runs that cannot open its store: a tracking server the facility starts, reached through the run API.

A run executes as its owner with no access to the facility's files, so it cannot open MLflow's SQLite store or
artifact directory. Instead the worker starts a real ``mlflow server`` (its ``basic-auth`` app, artifacts served
by the server) over the facility's store the first time a run asks, and the run API forwards ``/mlflow/...`` to it
with the run owner's MLflow credentials: the run presents only its delegated token, the facility says who it is.
Each facility user has an MLflow user of the same name (made by the facility's MLflow admin); experiments and
registered models a run creates are therefore its owner's in MLflow's own permission model, readable by everyone
(``default_permission = READ``), changeable by their owner.

Inside the run, :func:`userbatch.facility.driver` listens on the run's own loopback and pipes MLflow's HTTP to the
run API's Unix socket, so ``mlflow`` works unchanged (``MLFLOW_TRACKING_URI=http://127.0.0.1:<port>/mlflow``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..extras import require

log = logging.getLogger(__name__)

#: Where experiments a run creates keep their artifacts: the tracking server's own default
#: (``mlflow-artifacts:/<experiment id>``), stored under its ``--artifacts-destination`` and served by it — the path
#: shape MLflow's permission checks expect (``<experiment id>/<run id>/artifacts/...``).
RUN_ARTIFACT_ROOT = "mlflow-artifacts:"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """One ``mlflow server --app-name basic-auth`` over ``backend_uri``, with per-user credentials kept by the
    facility (files 0600 in ``state_dir``). Started on first use; stopped with the worker."""

    def __init__(self, backend_uri: str, artifacts_dir: str, state_dir: Path):
        self.backend_uri, self.artifacts_dir, self.state_dir = backend_uri, artifacts_dir, Path(state_dir)
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.url: str | None = None

    # ------------------------------------------------------------------------------------------ state files
    def _secret_file(self, name: str) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.state_dir, 0o700)
        return self.state_dir / name

    def _load(self, name: str) -> dict:
        p = self._secret_file(name)
        return json.loads(p.read_text()) if p.exists() else {}

    def _save(self, name: str, doc: dict) -> None:
        p = self._secret_file(name)
        tmp = p.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        tmp.replace(p)

    @property
    def admin(self) -> tuple[str, str]:
        doc = self._load("admin.json")
        if not doc:
            doc = {"username": "userbatch_admin", "password": secrets.token_urlsafe(24)}
            self._save("admin.json", doc)
        return doc["username"], doc["password"]

    # ------------------------------------------------------------------------------------------ lifecycle
    def ensure_started(self, timeout_s: float = 120.0) -> str:
        """The server's base URL, starting it if needed."""
        httpx = require("httpx", "facility")
        require("mlflow", "ml", what="the facility's MLflow server for runs", load=False)

        with self._lock:
            if self._proc is not None and self._proc.poll() is None and self.url:
                return self.url
            user, password = self.admin
            ini = self._secret_file("basic_auth.ini")
            ini.write_text("[mlflow]\ndefault_permission = READ\n"
                           f"database_uri = sqlite:///{self.state_dir / 'auth.db'}\n"
                           f"admin_username = {user}\nadmin_password = {password}\n"
                           "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
            os.chmod(ini, 0o600)
            if self.backend_uri.startswith("sqlite:///"):
                Path(self.backend_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            Path(self.artifacts_dir).mkdir(parents=True, exist_ok=True)
            port = _free_port()
            mlflow_bin = Path(sys.executable).with_name("mlflow")
            argv = [str(mlflow_bin) if mlflow_bin.exists() else "mlflow", "server", "--app-name", "basic-auth",
                    "--backend-store-uri", self.backend_uri, "--artifacts-destination", self.artifacts_dir,
                    "--serve-artifacts", "--default-artifact-root", "mlflow-artifacts:/", "--host", "127.0.0.1",
                    "--port", str(port), "--workers", "1"]
            env = dict(os.environ, MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_FLASK_SERVER_SECRET_KEY=password)
            out = open(self._secret_file("server.log"), "ab")  # noqa: SIM115 - handed to the child
            try:
                self._proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              env=env, start_new_session=True)
            finally:
                out.close()
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"mlflow server exited ({self._proc.returncode}); see "
                                       f"{self.state_dir / 'server.log'}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        self.url = url
                        log.info("MLflow tracking server for runs at %s (store %s)", url, self.backend_uri)
                        return url
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            raise RuntimeError(f"mlflow server did not answer within {timeout_s:.0f} s")

    def stop(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                import signal

                os.killpg(self._proc.pid, signal.SIGTERM)
                try:
                    self._proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc, self.url = None, None

    # ------------------------------------------------------------------------------------------ users
    def credentials(self, user: str) -> tuple[str, str]:
        """The MLflow user of facility user ``user`` (created with a random password the first time)."""
        httpx = require("httpx", "facility")

        with self._lock:
            users = self._load("users.json")
            if user in users:
                return user, users[user]
            password = secrets.token_urlsafe(24)
            r = httpx.post(f"{self.url}/api/2.0/mlflow/users/create", json={"username": user, "password": password},
                           auth=self.admin, timeout=30)
            if r.status_code >= 400 and "already exists" in r.text:
                r = httpx.patch(f"{self.url}/api/2.0/mlflow/users/update-password",
                                json={"username": user, "password": password}, auth=self.admin, timeout=30)
            if r.status_code >= 400:
                raise RuntimeError(f"could not create MLflow user {user}: {r.status_code} {r.text[:200]}")
            users[user] = password
            self._save("users.json", users)
            return user, password


__all__ = ["RUN_ARTIFACT_ROOT", "MlflowServer"]
