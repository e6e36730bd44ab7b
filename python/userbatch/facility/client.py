"""A client for the facility's REST API (:mod:`userbatch.facility.api`) with the same methods as
:class:`~.service.Facility`.

The CLI talks to whichever it is given — the facility in its own process, or this client when
``USERBATCH_API_URL`` is set (:func:`client_from_env`) — and prints the same thing: every method returns the
same plain dicts, and an error comes back as the same exception class with the server's message (401
:class:`~.service.AuthError`, 403 :class:`~userbatch.errors.AccessDenied`, 404 :class:`~.service.RunNotFound` or
:class:`~userbatch.errors.TableNotFound`, 409 :class:`~.ledger.QuotaExceeded`, 400
:class:`~userbatch.errors.UserbatchError` or the more precise subclass the server names).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import errors
from ..extras import missing

try:
    import httpx
except ModuleNotFoundError as exc:
    raise missing("facility", exc) from exc

from ..config import settings
from ..errors import AccessDenied, TableNotFound, UserbatchError
from .ledger import QuotaExceeded
from .service import AuthError, RunNotFound, wait_for_run

_BY_STATUS: dict[int, type[UserbatchError]] = {401: AuthError, 403: AccessDenied, 404: RunNotFound,
                                               409: QuotaExceeded, 400: UserbatchError}


def _known_errors() -> dict[str, type[UserbatchError]]:
    """Exception classes the server may name in an error body, so the caller gets the precise one back."""
    from .config import ConfigError
    from .templates import TemplateError

    known = {name: cls for name, cls in vars(errors).items()
             if isinstance(cls, type) and issubclass(cls, UserbatchError)}
    known.update({c.__name__: c for c in (AuthError, RunNotFound, QuotaExceeded, TemplateError, ConfigError)})
    try:  # the workflows module pulls in sqlglot; it is optional here
        from .workflows import WorkflowError

        known["WorkflowError"] = WorkflowError
    except ImportError:  # pragma: no cover
        pass
    return known


def _seg(value: Any) -> str:
    """A path segment, every reserved character escaped (a run id ``../x`` stays one segment)."""
    return quote(str(value), safe="")


class Client:
    """The facility over HTTP as ``token``'s owner.

    ``http`` injects a ready ``httpx.Client`` (e.g. FastAPI's ``TestClient``) and ``transport`` an httpx transport;
    otherwise the client opens its own connection pool to ``base_url``."""

    def __init__(self, base_url: str, token: str, timeout: float = 30, *, http: httpx.Client | None = None,
                 transport: httpx.BaseTransport | None = None):
        if not token:
            raise AuthError("an API token is needed (export USERBATCH_TOKEN=...); an admin creates one with "
                            "'userbatch admin token create USER'")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._own = http is None
        self.http = http or httpx.Client(timeout=timeout, transport=transport)
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def close(self) -> None:
        if self._own:
            self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- transport
    def _request(self, method: str, path: str, *, params: dict | None = None, body: Any = None) -> httpx.Response:
        headers = dict(self._headers)
        content = None
        if body is not None:
            content = json.dumps(body, default=str).encode()
            headers["Content-Type"] = "application/json"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            r = self.http.request(method, self.base_url + path, params=query, content=content, headers=headers)
        except httpx.TimeoutException:
            raise UserbatchError(f"the userbatch API at {self.base_url} did not answer {method} {path} within "
                                 f"{self.timeout:g} s; try again later") from None
        except httpx.TransportError as e:
            raise UserbatchError(f"cannot reach the userbatch API at {self.base_url} ({e.__class__.__name__}: {e}); "
                                 "is 'userbatch serve' running there? (USERBATCH_API_URL)") from None
        if r.is_success:
            return r
        raise self._error(r, path)

    def _error(self, r: httpx.Response, path: str) -> UserbatchError:
        name = None
        try:
            doc = r.json()
            detail = doc.get("detail") if isinstance(doc, dict) else doc
            name = doc.get("error") if isinstance(doc, dict) else None
        except ValueError:
            detail = r.text.strip()
        if not isinstance(detail, str):
            detail = json.dumps(detail)
        detail = detail or r.reason_phrase
        if r.status_code >= 500:
            return UserbatchError(f"the userbatch API at {self.base_url} failed on {path} "
                                  f"({r.status_code} {r.reason_phrase}): {detail}; the server log says more")
        default = _BY_STATUS.get(r.status_code, UserbatchError)
        if r.status_code == 404 and path.startswith("/tables"):
            default = TableNotFound
        cls = _known_errors().get(name or "")
        fits = cls is not None and (issubclass(cls, default)
                                    or (r.status_code == 404 and cls in (RunNotFound, TableNotFound)))
        return (cls if fits else default)(detail)

    def _get(self, path: str, **params) -> Any:
        return self._request("GET", path, params=params).json()

    def _post(self, path: str, body: Any = None, **params) -> Any:
        return self._request("POST", path, params=params, body=body).json()

    # ------------------------------------------------------------------------------------------- identity
    def whoami(self) -> dict:
        return self._get("/me")

    @property
    def user(self) -> str:
        return self.whoami()["user"]

    def health(self) -> dict:
        return self._get("/health")

    # ------------------------------------------------------------------------------------------- submit
    def submit(self, template: str | None = None, params: dict | None = None, job_file: str | None = None,
               script: tuple[str, str] | None = None, script_args: list[str] | None = None,
               workflow: str | None = None, group: str | None = None, cores: int | None = None,
               max_hours: float | None = None, bps: dict | None = None) -> dict:
        """Queue a run and return it at once (see :meth:`.service.Facility.submit`); a job file is read here and
        sent as its template and parameters."""
        if job_file:
            from .templates import read_job_file

            name, file_values = read_job_file(job_file, template=template)
            params = {**file_values, **(params or {})}
            template = name
        body: dict[str, Any] = {"group": group, "cores": cores, "max_hours": max_hours}
        if template is not None:
            body.update(template=template, params=dict(params or {}))
        if script:
            body["script"] = {"name": script[0], "text": script[1], "args": list(script_args or [])}
        if workflow is not None:
            body["workflow"] = workflow
        if bps is not None:
            body["bps"] = dict(bps)
        return self._post("/runs", body)

    # ------------------------------------------------------------------------------------------- runs
    def status(self, run_id: str) -> dict:
        return self._get(f"/runs/{_seg(run_id)}")

    def runs(self, user: str | None = None, state: str | None = None, all_users: bool = False,
             limit: int = 100) -> list[dict]:
        return self._get("/runs", user=user, state=state, all_users=all_users or None, limit=limit)

    def logs(self, run_id: str, tail: int | None = 200) -> str:
        return self._request("GET", f"/runs/{_seg(run_id)}/logs", params={"tail": tail or 0}).text

    def cancel(self, run_id: str) -> dict:
        return self._post(f"/runs/{_seg(run_id)}/cancel")

    def wait(self, run_id: str, timeout_s: float = 600, poll_s: float = 1.0) -> dict:
        return wait_for_run(self.status, run_id, timeout_s, poll_s)

    def results(self, run_id: str) -> dict:
        return self._get(f"/runs/{_seg(run_id)}/results")

    def rerun(self, run_id: str, output_map: dict | None = None, wait: bool = False) -> dict:
        new = self._post(f"/runs/{_seg(run_id)}/rerun", {"output_map": dict(output_map or {})})
        return self.wait(new["id"]) if wait else new

    def export(self, run_id: str, dest: str | Path) -> Path:
        """Fetch the run's bundle into ``dest`` (a directory, or the .tar.gz path to write)."""
        r = self._request("GET", f"/runs/{_seg(run_id)}/export")
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / f"userbatch-run-{Path(str(run_id)).name}.tar.gz"
        dest.write_bytes(r.content)
        return dest

    # ------------------------------------------------------------------------------------------- tables
    def tables(self, namespace: str | None = None) -> list[dict]:
        return self._get("/tables", namespace=namespace)

    def provenance(self, table: str, version: int | None = None, depth: int = 8) -> dict:
        return self._get(f"/tables/{_seg(table)}/provenance", version=version, depth=depth)

    def vacuum(self, table: str | None = None, all_tables: bool = False, retain_days: float | None = None,
               dry_run: bool = False, min_age_hours: float | None = None) -> dict:
        body = {"retain_days": retain_days, "dry_run": dry_run, "min_age_hours": min_age_hours}
        if all_tables and not table:
            return self._post("/vacuum", body)
        if not table or all_tables:
            raise UserbatchError("name a table, or give --all (every table you own)")
        return self._post(f"/tables/{_seg(table)}/vacuum", body)

    def optimize(self, table: str) -> dict:
        return self._post(f"/tables/{_seg(table)}/optimize")

    def restore(self, table: str, version: int) -> dict:
        return self._post(f"/tables/{_seg(table)}/restore", {"version": version})

    # ------------------------------------------------------------------------------------------- quotas
    def quota_show(self, user: str | None = None) -> dict:
        return self._get("/quota", user=user)

    def quota_set(self, kind: str, subject: str, core_hours: float | None = None, max_cores: int | None = None,
                  storage_gb: float | None = None) -> dict:
        body = {"core_hours": core_hours, "max_cores": max_cores, "storage_gb": storage_gb}
        return self._request("PUT", f"/quotas/{_seg(kind)}/{_seg(subject)}", body=body).json()

    def audit_log(self, limit: int = 50) -> list[dict]:
        return self._get("/audit", limit=limit)

    def capacity(self) -> dict:
        return self._get("/capacity")

    # ------------------------------------------------------------------------------------------- admin
    def add_user(self, name: str, admin: bool = False, groups: list[str] | None = None) -> dict:
        return self._post("/users", {"name": name, "admin": admin, "groups": list(groups or [])})

    def add_group(self, name: str, members: list[str] | None = None, description: str = "") -> dict:
        return self._post("/groups", {"name": name, "members": list(members or []), "description": description})

    def create_token(self, user: str | None = None, label: str = "", expires_days: float | None = None) -> dict:
        return self._post("/tokens", {"user": user, "label": label, "expires_days": expires_days})

    def tokens(self, user: str | None = None) -> list[dict]:
        return self._get("/tokens", user=user)

    def revoke_all_tokens(self, user: str | None = None) -> dict:
        return self._request("DELETE", "/tokens", params={"user": user}).json()

    def set_admin(self, user: str, admin: bool) -> dict:
        return self._request("PATCH", f"/users/{_seg(user)}", body={"admin": admin}).json()

    def set_active(self, user: str, active: bool) -> dict:
        return self._request("PATCH", f"/users/{_seg(user)}", body={"active": active}).json()

    def fsck(self, repair: bool = False) -> list[dict]:
        return self._get("/fsck", repair=repair)

    def revoke_token(self, token_id: str) -> dict:
        return self._request("DELETE", f"/tokens/{_seg(token_id)}").json()

    def users(self) -> list[dict]:
        return self._get("/users")

    def groups(self) -> list[dict]:
        return self._get("/groups")

    # ------------------------------------------------------------------------------------------- workflows
    def add_workflow(self, text: str, group: str | None = None) -> dict:
        return self._post("/workflows", {"text": text, "group": group})

    def workflows(self) -> list[dict]:
        return self._get("/workflows")

    def run_workflow(self, name_or_id: str) -> dict:
        return self._post(f"/workflows/{_seg(name_or_id)}/run")


def client_from_env() -> Client | None:
    """A :class:`Client` for ``USERBATCH_API_URL`` with ``USERBATCH_TOKEN``, or None when no API URL is set (the
    CLI then runs the facility in its own process)."""
    s = settings()
    url, token = s.api_url, s.api_token
    if not url:
        return None
    if not token:
        raise AuthError(f"USERBATCH_API_URL is set ({url}) but USERBATCH_TOKEN is not: export the API token an "
                        "admin gave you ('userbatch admin token create USER'), or unset USERBATCH_API_URL to use "
                        "the facility directly")
    return Client(url, token, timeout=s.api_timeout)
