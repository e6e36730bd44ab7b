"""The REST API (and its client) on SQLite and PostgreSQL, without Spark: the app never starts a worker, so every run
stays queued and each test checks what the facility decided — who may do what (an authorization matrix with each
allowed counterpart), tokens, quotas and their audit, bad input refused with a clear message before anything is
queued — and that the client gives back exactly what the facility in-process gives."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import warnings
from html.parser import HTMLParser
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select, text
from swagger_ui_bundle import swagger_ui_path
from userbatch.errors import AccessDenied, TableNotFound, UserbatchError
from userbatch.facility.api import create_app
from userbatch.facility.client import Client, client_from_env
from userbatch.facility.ledger import QuotaExceeded
from userbatch.facility.models import RunRow, TokenRow
from userbatch.facility.service import AuthError, Facility, RunNotFound
from userbatch.facility.templates import TemplateError
from userbatch.tables.catalog import Catalog, TableEntry
from userbatch.tables.db import transaction

with warnings.catch_warnings():  # Starlette 1.x would rather its TestClient ran on httpx2; httpx works the same
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

CONFIG = """
capacity: {cores: 100, user_fraction: 0.10}
defaults:
  user:  {core_hours: 10, max_cores: 4, storage_gb: 5}
  group: {core_hours: 50, max_cores: 8, storage_gb: 50}
admins: [admin]
groups:
  team:
    description: A's collaboration (B is not a member)
    members: [a]
    quota: {core_hours: 30, max_cores: 8, storage_gb: 10}
runs: {max_concurrent: 2, default_cores: 1, default_max_hours: 1.0}
"""

XMATCH = {"left": "dp1.obj", "right": "dp1.gaia", "radius_arcsec": 1.5}

WORKFLOW = """
name: bright
steps:
  - name: result
    sql: SELECT objectId, coord_ra, coord_dec FROM dp1.obj WHERE r_psfFlux > 1000
    output: u_a.bright
"""


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def env(db_url, facility, tmp_path):
    """The API over a fresh facility: admin, A (member of team) and B with tokens; public input tables dp1.obj and
    dp1.gaia, A's private table u_a.secret; and one queued crossmatch run of A's."""
    fx = facility(CONFIG)
    config, engine = fx.config, fx.engine
    bootstrap = fx.fac("admin")
    tokens = {user: bootstrap.create_token(user, label="test")["token"] for user in ("admin", "a", "b")}
    tc = TestClient(create_app(db_url, config))
    tc.__enter__()  # one event loop for the whole test, not one thread per request
    for name in ("dp1.obj", "dp1.gaia"):
        Catalog(db_url, user="admin").register(TableEntry(name=name, location=str(tmp_path / name), format="parquet"))
    Catalog(db_url, user="a").register(TableEntry(name="u_a.secret", location=str(tmp_path / "secret"),
                                                  format="parquet", visibility="private"))
    r = tc.post("/runs", json={"template": "crossmatch", "params": {**XMATCH, "output": "u_a.xm"}},
                headers=_auth(tokens["a"]))
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["state"] == "queued" and run["user"] == "a"
    yield SimpleNamespace(tc=tc, db_url=db_url, engine=engine, config=config, tokens=tokens, run=run["id"],
                          h={u: _auth(t) for u, t in tokens.items()}, tmp=tmp_path, fx=fx)
    tc.__exit__(None, None, None)


def _facility(env, user: str) -> Facility:
    return env.fx.fac(user)


def _snapshot(env) -> dict:
    """What a refused request must leave unchanged: runs and their states, users, quotas, audit trail, tokens."""
    tables = {"ub_runs": "*", "ub_users": "*", "ub_quotas": "*", "ub_audit": "*", "ub_workflows": "*",
              "ub_tokens": "id, digest, revoked"}  # a token's last_used_at moves with every request
    with env.engine.connect() as conn:
        return {t: sorted(map(tuple, conn.execute(text(f"SELECT {cols} FROM {t}")).all()), key=repr)
                for t, cols in tables.items()}


def _finish(env, run_id: str) -> None:
    """What the worker does when a run succeeds (no Spark here): final state, result, reservation released."""
    from userbatch.facility import ledger

    with transaction(env.engine, lock=True) as s:
        run = s.get(RunRow, run_id)
        run.state, run.stage, run.ended_at = "succeeded", "succeeded", ledger.now()
        run.result = json.dumps({"inputs": [{"table": "dp1.obj", "version": 0}, {"table": "dp1.gaia", "version": 0}],
                                 "outputs": [{"table": "u_a.xm", "version": 0, "rows": 3}]})
        ledger.charge(s, run, 0.01, 0.01, "test")


def _n_runs(env) -> int:
    with env.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(RunRow)).scalar()


# ------------------------------------------------------------------------------------------------ authorization

# (name, method, path, json body, who may, expected status for them, prepare: finish A's run first)
MATRIX = [
    ("status", "GET", "/runs/{run}", None, "a", 200, False),
    ("cancel", "POST", "/runs/{run}/cancel", None, "a", 200, False),
    ("logs", "GET", "/runs/{run}/logs", None, "a", 200, False),
    ("results", "GET", "/runs/{run}/results", None, "a", 200, False),
    ("rerun", "POST", "/runs/{run}/rerun", {}, "a", 201, True),
    ("export", "GET", "/runs/{run}/export", None, "a", 200, False),
    ("admin-reads-run", "GET", "/runs/{run}", None, "admin", 200, False),
    ("admin-cancels-run", "POST", "/runs/{run}/cancel", None, "admin", 200, False),
    ("list-all-runs", "GET", "/runs?all_users=true", None, "admin", 200, False),
    ("list-a-runs", "GET", "/runs?user=a", None, "a", 200, False),
    ("a-quota", "GET", "/quota?user=a", None, "a", 200, False),
    ("provenance-private", "GET", "/tables/u_a.secret/provenance", None, "a", 200, False),
    ("table-private", "GET", "/tables/u_a.secret", None, "a", 200, False),
    ("submit-into-u_a", "POST", "/runs", {"template": "crossmatch", "params": {**XMATCH, "output": "u_a.by_b"}},
     "a", 201, False),
    ("submit-on-team", "POST", "/runs", {"template": "crossmatch", "params": {**XMATCH, "output": "u_b.x"},
                                         "group": "team"}, "admin", 201, False),
    ("set-quota", "PUT", "/quotas/user/b", {"core_hours": 1000}, "admin", 200, False),
    ("add-user", "POST", "/users", {"name": "carol"}, "admin", 201, False),
    ("add-group", "POST", "/groups", {"name": "club", "members": ["b"]}, "admin", 201, False),
    ("list-users", "GET", "/users", None, "admin", 200, False),
    ("audit", "GET", "/audit", None, "admin", 200, False),
    ("token-for-a", "POST", "/tokens", {"user": "a"}, "admin", 201, False),
]


@pytest.mark.parametrize("name,method,path,body,allowed,ok,finish", MATRIX, ids=[m[0] for m in MATRIX])
def test_authz_matrix(env, name, method, path, body, allowed, ok, finish):
    if finish:
        _finish(env, env.run)
    path = path.format(run=env.run)
    before = _snapshot(env)
    r = env.tc.request(method, path, json=body, headers=env.h["b"])
    # another user's private table answers as one that does not exist: a 403 would say who owns what
    status, error = (404, "TableNotFound") if name.endswith("-private") else (403, "AccessDenied")
    assert r.status_code == status, r.text
    assert r.json()["detail"] and r.json()["error"] == error
    assert "belongs to" not in r.json()["detail"] or status == 403
    assert _snapshot(env) == before, "a refused request changed the facility"

    r = env.tc.request(method, path, json=body, headers=env.h[allowed])
    assert r.status_code == ok, r.text
    if name.startswith("submit") or name == "rerun":
        assert r.json()["state"] == "queued"
    if name == "rerun":
        assert r.json()["rerun_of"] == env.run
    if "cancel" in name:
        assert r.json()["state"] == "cancelled"
    if name == "export":
        assert r.headers["content-type"] == "application/gzip"


def test_denials_say_why(env):
    r = env.tc.get(f"/runs/{env.run}", headers=env.h["b"])
    assert r.json()["detail"] == f"run {env.run} belongs to a"
    r = env.tc.post("/runs", json={"template": "crossmatch", "params": {**XMATCH, "output": "u_a.by_b"}},
                    headers=env.h["b"])
    assert "u_b" in r.json()["detail"] and "u_a.by_b" in r.json()["detail"]
    r = env.tc.put("/quotas/user/b", json={"core_hours": 1}, headers=env.h["b"])
    assert r.json()["detail"] == "only an admin may change quotas"


def test_tables_lists_only_what_the_caller_can_read(env):
    def names(who):
        return [t["name"] for t in env.tc.get("/tables", headers=env.h[who]).json()]

    assert names("a") == ["dp1.gaia", "dp1.obj", "u_a.secret"]
    assert names("b") == ["dp1.gaia", "dp1.obj"]
    t = env.tc.get("/tables", params={"namespace": "u_a"}, headers=env.h["a"]).json()
    assert t == [{"name": "u_a.secret", "owner": "a", "group": None, "visibility": "private", "format": "parquet",
                  "description": ""}]
    r = env.tc.get("/tables/u_a.secret/provenance", headers=env.h["a"])
    assert r.json() == {"table": "u_a.secret", "version": None, "note": "parquet table: no history"}


def test_other_users_tokens_cannot_be_revoked_and_identity_is_the_tokens(env):
    tid = env.tc.post("/tokens", json={"label": "mine"}, headers=env.h["a"]).json()["id"]
    r = env.tc.delete(f"/tokens/{tid}", headers=env.h["b"])
    assert r.status_code == 400 and f"no token {tid} of yours" in r.json()["detail"]
    assert env.tc.delete(f"/tokens/{tid}", headers=env.h["a"]).json() == {"id": tid, "revoked": True}
    assert env.tc.get("/me", headers=env.h["a"]).json() == {"user": "a", "groups": ["team"], "admin": False}
    assert env.tc.get("/me", headers=env.h["admin"]).json()["admin"] is True


# ------------------------------------------------------------------------------------------------ authentication

BAD_CREDENTIALS = {
    "missing": {},
    "other-scheme": {"Authorization": "Token abc"},
    "empty-bearer": {"Authorization": "Bearer"},
    "basic": {"Authorization": "Basic YTpi"},
    "unknown": {"Authorization": "Bearer ub_not-a-real-token"},
}


def test_bad_credentials_are_401(env):
    before = _snapshot(env)
    for case, headers in BAD_CREDENTIALS.items():
        for method, path in (("GET", "/runs"), ("POST", "/runs"), ("GET", "/quota"), ("GET", f"/runs/{env.run}"),
                             ("PUT", "/quotas/user/a")):
            r = env.tc.request(method, path, headers=headers, json={"core_hours": 1} if method != "GET" else None)
            where = (case, method, path, r.text)
            assert r.status_code == 401, where
            assert r.headers["www-authenticate"] == "Bearer", where
            assert r.json()["error"] == "AuthError", where
            if case == "unknown":
                assert r.json()["detail"] == "unknown or revoked token", where
            else:
                assert "Authorization: Bearer <token>" in r.json()["detail"], where
    assert _snapshot(env) == before
    assert env.tc.get("/health").json()["status"] == "ok"  # no token needed


def test_revoked_token_is_401(env):
    t = env.tc.post("/tokens", json={"user": "b", "label": "laptop"}, headers=env.h["admin"]).json()
    assert env.tc.get("/runs", headers=_auth(t["token"])).status_code == 200
    assert env.tc.delete(f"/tokens/{t['id']}", headers=env.h["admin"]).json()["revoked"] is True
    r = env.tc.get("/runs", headers=_auth(t["token"]))
    assert r.status_code == 401 and r.json()["detail"] == "unknown or revoked token"
    assert env.tc.get("/runs", headers=env.h["b"]).status_code == 200  # B's other token still works


def test_tokens_are_stored_as_sha256_digests_only(env):
    t = env.tc.post("/tokens", json={"user": "b", "label": "ci"}, headers=env.h["admin"]).json()
    assert t["token"].startswith("ub_") and len(t["token"]) > 40
    with env.engine.connect() as conn:
        row = conn.execute(select(TokenRow).where(TokenRow.id == t["id"])).one()
        assert row.digest == hashlib.sha256(t["token"].encode()).hexdigest()
        dump = json.dumps([list(map(str, r)) for tbl in ("ub_tokens", "ub_audit", "ub_users")
                           for r in conn.execute(text(f"SELECT * FROM {tbl}")).all()])
    for token in [t["token"], *env.tokens.values()]:
        assert token not in dump and token[3:] not in dump
    assert hashlib.sha256(t["token"].encode()).hexdigest() in dump


# ------------------------------------------------------------------------------------------------ quotas

def test_over_quota_submit_is_409_says_what_is_left_and_queues_nothing(env):
    n, before = _n_runs(env), env.tc.get("/quota", headers=env.h["a"]).json()
    assert before["user"]["reserved"] == 1.0 and before["user"]["remaining"] == 9.0
    r = env.tc.post("/runs", json={"template": "crossmatch", "params": {**XMATCH, "output": "u_a.big"}, "cores": 4,
                                   "max_hours": 3}, headers=env.h["a"])
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "QuotaExceeded"
    assert "user a has 9.00 core-hours left of 10.00" in r.json()["detail"]
    assert "reserves 12.00" in r.json()["detail"]
    r = env.tc.post("/runs", json={"template": "crossmatch", "params": {**XMATCH, "output": "u_a.big"}, "cores": 5},
                    headers=env.h["a"])
    assert r.status_code == 409 and "at most 4 cores" in r.json()["detail"]
    r = env.tc.post("/runs", json={"template": "crossmatch", "params": {**XMATCH, "output": "u_a.big"}, "cores": 4,
                                   "max_hours": 8, "group": "team"}, headers=env.h["admin"])
    assert r.status_code == 409 and "user admin has 10.00 core-hours left" in r.json()["detail"]
    assert _n_runs(env) == n
    assert env.tc.get("/quota", headers=env.h["a"]).json() == before


def test_quota_change_by_admin_is_audited_and_applies(env):
    r = env.tc.put("/quotas/user/a", json={"core_hours": 42, "max_cores": 6}, headers=env.h["admin"])
    assert r.status_code == 200 and r.json() == {"core_hours": 42.0, "max_cores": 6, "storage_gb": 5.0}
    last = env.tc.get("/audit", params={"limit": 5}, headers=env.h["admin"]).json()[0]
    assert (last["actor"], last["action"], last["subject"]) == ("admin", "quota.set", "user:a")
    assert last["before"] == {"core_hours": 10.0, "max_cores": 4, "storage_gb": 5.0}
    assert last["after"] == {"core_hours": 42.0, "max_cores": 6, "storage_gb": 5.0}
    q = env.tc.get("/quota", headers=env.h["a"]).json()
    assert q["user"]["core_hours"] == 42.0 and q["user"]["max_cores"] == 6
    assert [g["subject"] for g in q["groups"]] == ["team"]
    assert env.tc.get("/quota", params={"user": "a"}, headers=env.h["admin"]).json() == q
    r = env.tc.put("/quotas/team/a", json={"core_hours": 1}, headers=env.h["admin"])
    assert r.status_code == 400 and "user or a group" in r.json()["detail"]
    r = env.tc.put("/quotas/user/a", json={"core_hours": -1}, headers=env.h["admin"])
    assert r.status_code == 400 and "cannot be negative" in r.json()["detail"]
    assert env.tc.get("/capacity", headers=env.h["b"]).json()["user_capacity_core_hours"] == pytest.approx(7300)


def test_cancel_of_a_queued_run_releases_its_reservation(env):
    r = env.tc.post("/runs", json={"template": "crossmatch", "params": {**XMATCH, "output": "u_a.t"}, "cores": 2,
                                   "max_hours": 2, "group": "team"}, headers=env.h["a"])
    assert r.status_code == 201, r.text
    q = env.tc.get("/quota", headers=env.h["a"]).json()
    assert q["user"]["reserved"] == 5.0 and q["groups"][0]["reserved"] == 4.0
    for rid in (env.run, r.json()["id"]):
        c = env.tc.post(f"/runs/{rid}/cancel", headers=env.h["a"])
        assert c.status_code == 200 and c.json()["state"] == "cancelled"
    q = env.tc.get("/quota", headers=env.h["a"]).json()
    assert q["user"]["reserved"] == 0.0 and q["groups"][0]["reserved"] == 0.0
    assert q["user"]["used"] == 0.0 and q["user"]["remaining"] == 10.0
    again = env.tc.post(f"/runs/{env.run}/cancel", headers=env.h["a"])
    assert again.status_code == 400 and "already ended (cancelled)" in again.json()["detail"]


# ------------------------------------------------------------------------------------------------ bad input

BAD_SUBMITS = [
    ("unknown-template", {"template": "nope", "params": {}}, 400, "no job template 'nope'"),
    ("template-path", {"template": "../crossmatch", "params": {}}, 400, "no paths"),
    ("unknown-parameter", {"template": "crossmatch", "params": {**XMATCH, "output": "u_a.o", "radius": 2}}, 400,
     "has no parameter(s) radius"),
    ("missing-parameter", {"template": "crossmatch", "params": XMATCH}, 400, "needs parameter 'output'"),
    ("bad-value", {"template": "crossmatch", "params": {**XMATCH, "output": "u_a.o", "radius_arcsec": -1}}, 400,
     "radius_arcsec"),
    ("table-dotdot", {"template": "crossmatch", "params": {**XMATCH, "output": "u_a..o"}}, 400, "u_a..o"),
    ("table-slash", {"template": "crossmatch", "params": {**XMATCH, "left": "dp1/obj", "output": "u_a.o"}}, 400,
     "dp1/obj"),
    ("table-traversal", {"template": "crossmatch", "params": {**XMATCH, "output": "../../etc.o"}}, 400,
     "../../etc.o"),
    ("unknown-input", {"template": "crossmatch", "params": {**XMATCH, "left": "dp1.none", "output": "u_a.o"}}, 404,
     "no table named dp1.none"),
    ("two-kinds", {"template": "crossmatch", "params": {**XMATCH, "output": "u_a.o"},
                   "script": {"name": "x.py", "text": "print(1)"}}, 400, "submit exactly one of"),
    ("nothing", {}, 400, "submit exactly one of"),
    ("script-syntax", {"script": {"name": "x.py", "text": "def (:"}}, 400, "syntax error at line 1"),
    ("zero-cores", {"script": {"name": "x.py", "text": "pass"}, "cores": -1}, 400, "cores must be >= 1"),
    ("cores-not-int", {"script": {"name": "x.py", "text": "pass"}, "cores": "many"}, 400, "cores"),
    ("unknown-field", {"script": {"name": "x.py", "text": "pass"}, "priority": 9}, 400, "priority"),
    ("group-unknown", {"script": {"name": "x.py", "text": "pass"}, "group": "nobody"}, 403, "not a member"),
]


def test_bad_submits_are_refused_clearly_and_queue_nothing(env):
    before = _snapshot(env)
    for case, body, status, message in BAD_SUBMITS:
        r = env.tc.post("/runs", json=body, headers=env.h["a"])
        assert (case, r.status_code) == (case, status), r.text
        assert message in r.json()["detail"], (case, r.json()["detail"])
    assert _snapshot(env) == before


WORKFLOW_BAD = [
    ("malformed-yaml", "name: w\nsteps: [unclosed\n", "not valid YAML"),
    ("insert", "name: w\nsteps:\n  - name: s\n    sql: INSERT INTO u_a.t SELECT * FROM dp1.obj\n", "read-only"),
    ("drop", "name: w\nsteps:\n  - name: s\n    sql: DROP TABLE dp1.obj\n", "read-only"),
]


def test_bad_workflows_are_refused_and_queue_nothing(env):
    pytest.importorskip("userbatch.facility.workflows")
    before = _snapshot(env)
    for case, yaml_text, message in WORKFLOW_BAD:
        for endpoint, body in (("/runs", {"workflow": yaml_text}), ("/workflows", {"text": yaml_text})):
            r = env.tc.post(endpoint, json=body, headers=env.h["a"])
            assert (case, endpoint, r.status_code) == (case, endpoint, 400), r.text
            assert r.json()["error"] == "WorkflowError", (case, r.text)
            assert message in r.json()["detail"], (case, r.json()["detail"])
    assert _snapshot(env) == before


def test_workflows_register_list_and_run(env):
    pytest.importorskip("userbatch.facility.workflows")
    r = env.tc.post("/workflows", json={"text": WORKFLOW}, headers=env.h["a"])
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "bright" and r.json()["owner"] == "a"
    assert [w["name"] for w in env.tc.get("/workflows", headers=env.h["a"]).json()] == ["bright"]
    assert env.tc.get("/workflows", headers=env.h["b"]).json() == []
    r = env.tc.post("/workflows/bright/run", headers=env.h["b"])
    assert r.status_code == 400 and "no workflow 'bright' of yours" in r.json()["detail"]
    r = env.tc.post("/workflows/bright/run", headers=env.h["a"])
    assert r.status_code == 201 and r.json()["kind"] == "workflow" and r.json()["state"] == "queued"
    assert env.tc.get("/workflows", headers=env.h["a"]).json()[0]["last_run_id"] == r.json()["id"]
    r = env.tc.post("/workflows", json={"text": WORKFLOW}, headers=env.h["b"])  # B may not write u_a
    assert r.status_code == 403


BAD_IDS = [
    ("GET", "/runs/..%2Fx", 404, "is not a run id"),
    ("GET", "/runs/..%2F..%2Fetc%2Fpasswd/export", 404, "is not a run id"),
    ("POST", "/runs/..%2Fx/cancel", 404, "is not a run id"),
    ("GET", "/runs/%2E%2E/logs", 404, "is not a run id"),
    ("GET", "/runs/ABC;rm/results", 404, "is not a run id"),
    ("GET", "/runs/0123456789ab", 404, "no run 0123456789ab"),
    ("GET", "/tables/u_a..x/provenance", 400, "exactly one dot"),
    ("GET", "/tables/u_a%2F..%2Fsecret/provenance", 400, "u_a/../secret"),
    ("GET", "/tables/..%2F..%2Fetc.passwd/provenance", 400, "exactly one dot"),
    ("GET", "/tables/u_a.Secret/provenance", 400, "must start with a lower-case letter"),
    ("GET", "/tables/dp1.none/provenance", 404, "no table named dp1.none"),
    ("GET", "/tables/dp1.obj/provenance?version=-1", 400, "version"),
    ("GET", "/runs?state=bogus", 400, "unknown state 'bogus'"),
    ("GET", "/runs?limit=0", 400, "limit"),
    ("GET", "/nowhere", 404, "no endpoint GET /nowhere"),
]


def test_bad_ids_and_names_are_refused(env):
    before = _snapshot(env)
    for method, path, status, message in BAD_IDS:
        r = env.tc.request(method, path, headers=env.h["a"])
        assert (path, r.status_code) == (path, status), r.text
        assert message in r.json()["detail"], (path, r.json()["detail"])
    assert _snapshot(env) == before


# ------------------------------------------------------------------------------------------------ the rest

def test_run_endpoints_for_the_owner(env):
    h = env.h["a"]
    run = env.tc.get(f"/runs/{env.run}", headers=h).json()
    assert run["params"]["radius_arcsec"] == 1.5 and run["reserved_core_hours"] == 1.0
    assert [r["id"] for r in env.tc.get("/runs", headers=h).json()] == [env.run]
    assert env.tc.get("/runs", params={"state": "active"}, headers=h).json()[0]["id"] == env.run
    assert env.tc.get("/runs", params={"state": "succeeded"}, headers=h).json() == []
    assert env.tc.get("/runs", params={"all_users": True}, headers=env.h["admin"]).json()[0]["id"] == env.run
    assert env.tc.get(f"/runs/{env.run}/results", headers=h).json() == {"id": env.run, "state": "queued",
                                                                         "outputs": [], "inputs": []}
    r = env.tc.get(f"/runs/{env.run}/logs", params={"tail": 5}, headers=h)
    assert r.status_code == 200 and r.text == "" and r.headers["content-type"].startswith("text/plain")
    r = env.tc.post(f"/runs/{env.run}/rerun", headers=h)
    assert r.status_code == 400 and "did not succeed (queued)" in r.json()["detail"]
    r = env.tc.get(f"/runs/{env.run}/export", headers=h)
    assert r.headers["content-disposition"] == f'attachment; filename="userbatch-run-{env.run}.tar.gz"'
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers()}
    assert {"spec.json", "job.yaml", "submit.sh", "templates/crossmatch.yaml"} <= names


def _facility_part(answer: dict) -> dict:
    """An admin answer without its OS part (``os_account``/``os_groups``: present when the facility runs as root and
    makes the accounts runs execute as; test_isolation checks them)."""
    return {k: v for k, v in answer.items() if not k.startswith("os_")}


def test_admin_endpoints(env):
    h = env.h["admin"]
    assert _facility_part(env.tc.post("/users", json={"name": "carol", "groups": ["team"]}, headers=h).json()) == {
        "user": "carol", "admin": False, "groups": ["team"]}
    assert _facility_part(env.tc.post("/groups", json={"name": "club", "members": ["b"]}, headers=h).json()) == {
        "group": "club", "members": ["b"]}
    users = {u["user"]: u for u in env.tc.get("/users", headers=h).json()}
    assert set(users) == {"a", "admin", "b", "carol"} and users["b"]["groups"] == ["club"]
    assert [g["group"] for g in env.tc.get("/groups", headers=env.h["b"]).json()] == ["club"]
    r = env.tc.post("/users", json={"name": "Bad Name"}, headers=h)
    assert r.status_code == 400 and "lower-case identifier" in r.json()["detail"]
    actions = [a["action"] for a in env.tc.get("/audit", headers=h).json()]
    assert "user.add" in actions and "group.add" in actions and "token.create" in actions


def test_openapi_lists_the_main_paths(env):
    spec = env.tc.get("/openapi.json").json()
    assert spec["info"]["title"] == "userbatch"
    for path in ("/runs", "/runs/{run_id}", "/runs/{run_id}/logs", "/runs/{run_id}/cancel", "/runs/{run_id}/results",
                 "/runs/{run_id}/rerun", "/runs/{run_id}/export", "/quota", "/quotas/{kind}/{subject}", "/audit",
                 "/capacity", "/tables", "/tables/{name}/provenance", "/workflows", "/workflows/{name}/run",
                 "/users", "/groups", "/tokens", "/tokens/{token_id}", "/health"):
        assert path in spec["paths"], path
    assert "bearer" in json.dumps(spec["components"]["securitySchemes"]).lower()
    assert env.tc.get("/docs").status_code == 200


class _Assets(HTMLParser):
    """The ``<script src>`` and ``<link href>`` of a page."""

    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.urls.append(("script", a["src"]))
        if tag == "link" and a.get("href"):
            self.urls.append(("stylesheet" if "stylesheet" in (a.get("rel") or "") else "icon", a["href"]))


def test_the_docs_page_loads_nothing_from_outside(env):
    """/docs works on a network with no internet: every script, stylesheet and icon comes from the API itself."""
    r = env.tc.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = _Assets()
    page.feed(r.text)
    kinds = sorted(kind for kind, _ in page.urls)
    assert kinds == ["icon", "script", "stylesheet"], page.urls
    assert "http://" not in r.text and "https://" not in r.text  # no absolute URL anywhere, inline script included
    expected = {"script": ("text/javascript", "application/javascript"), "stylesheet": ("text/css",),
                "icon": ("image/png",)}
    for kind, url in page.urls:
        assert urlsplit(url).scheme == "" and urlsplit(url).netloc == "" and url.startswith("/"), url
        asset = env.tc.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].split(";")[0] in expected[kind], (url, asset.headers["content-type"])
        assert len(asset.content) > 500, url
    # the page's Swagger UI renders the spec the API writes: OpenAPI 3.1 needs Swagger UI 5 or later
    spec = env.tc.get("/openapi.json").json()
    bundle = env.tc.get(next(url for kind, url in page.urls if kind == "script")).text
    served = swagger_ui_path.name.removeprefix("swagger-ui-")  # e.g. 5.31.0
    assert f'"{served}"' in bundle  # the file served is that release's bundle
    if spec["openapi"].startswith("3.1"):
        assert int(served.split(".")[0]) >= 5, served
    # the OAuth2 redirect page Swagger UI links to is served too; ReDoc (CDN only) is gone, not half-there
    assert env.tc.get("/docs/oauth2-redirect").status_code == 200
    assert env.tc.get("/redoc").status_code == 404
    assert env.tc.get("/static/swagger/nope.js").status_code == 404


# ------------------------------------------------------------------------------------------------ the client

def _client(env, user: str) -> Client:
    return Client("http://testserver", env.tokens[user], http=env.tc)


def test_client_gives_what_the_facility_gives(env):
    a, fa = _client(env, "a"), _facility(env, "a")
    assert a.status(env.run) == fa.status(env.run)
    assert a.runs() == fa.runs()
    assert a.runs(state="active", limit=5) == fa.runs(state="active", limit=5)
    assert a.quota_show() == fa.quota_show()
    assert a.results(env.run) == fa.results(env.run)
    assert a.capacity() == fa.capacity()
    assert a.groups() == fa.groups()
    admin, fadmin = _client(env, "admin"), _facility(env, "admin")
    assert admin.runs(all_users=True) == fadmin.runs(all_users=True)
    assert admin.quota_show("a") == fadmin.quota_show("a")
    assert admin.users() == fadmin.users()
    assert admin.audit_log(10) == fadmin.audit_log(10)


def test_client_round_trip_and_errors(env, tmp_path):
    a, b, admin = _client(env, "a"), _client(env, "b"), _client(env, "admin")
    job = tmp_path / "job.yaml"
    job.write_text("template: crossmatch\nparameters: {left: dp1.obj, right: dp1.gaia, output: u_a.fromfile}\n")
    run = a.submit(job_file=str(job), params={"radius_arcsec": 3.0}, cores=1, max_hours=0.5)
    assert run["kind"] == "template" and run["params"]["output"] == "u_a.fromfile"
    assert run["params"]["radius_arcsec"] == 3.0 and run["reserved_core_hours"] == 0.5
    s = a.submit(script=("my_job.py", "print('hi')"), script_args=["--n", "3"], group="team")
    assert (s["kind"], s["name"], s["group"]) == ("script", "my_job.py", "team")
    assert a.cancel(s["id"])["state"] == "cancelled"
    assert a.wait(s["id"], timeout_s=5)["state"] == "cancelled"
    assert a.logs(run["id"], tail=None) == ""
    bundle = a.export(env.run, tmp_path)
    assert bundle == tmp_path / f"userbatch-run-{env.run}.tar.gz" and tarfile.is_tarfile(bundle)
    assert a.provenance("u_a.secret")["note"] == "parquet table: no history"
    assert [t["name"] for t in b.tables()] == ["dp1.gaia", "dp1.obj"]
    assert admin.quota_set("user", "b", core_hours=1.0) == {"core_hours": 1.0, "max_cores": 4, "storage_gb": 5.0}
    tok = admin.create_token("b", label="x")
    assert Client("http://testserver", tok["token"], http=env.tc).whoami()["user"] == "b"
    assert admin.revoke_token(tok["id"]) == {"id": tok["id"], "revoked": True}
    assert admin.add_user("dave", groups=["team"])["groups"] == ["team"]
    assert _facility_part(admin.add_group("club", members=["dave"])) == {"group": "club", "members": ["dave"]}

    with pytest.raises(AccessDenied, match=f"run {env.run} belongs to a"):
        b.status(env.run)
    with pytest.raises(RunNotFound, match="is not a run id"):
        a.status("../x")
    with pytest.raises(TableNotFound, match="no table named dp1.none"):
        a.provenance("dp1.none")
    with pytest.raises(TableNotFound, match="no table named u_a.secret"):  # not a 403 naming its owner
        b.provenance("u_a.secret")
    with pytest.raises(QuotaExceeded, match="user b has 1.00 core-hours left"):
        b.submit(script=("x.py", "pass"), cores=2, max_hours=1)
    with pytest.raises(TemplateError, match="no job template 'nope'"):
        a.submit(template="nope")
    with pytest.raises(AccessDenied, match="only an admin"):
        b.audit_log()
    with pytest.raises(UserbatchError, match="no token"):
        b.revoke_token("0000")
    with pytest.raises(AuthError, match="unknown or revoked token"):
        Client("http://testserver", tok["token"], http=env.tc).runs()


def test_client_workflows(env):
    pytest.importorskip("userbatch.facility.workflows")
    a = _client(env, "a")
    w = a.add_workflow(WORKFLOW)
    assert a.workflows() == [w] == _facility(env, "a").workflows()
    assert a.run_workflow("bright")["kind"] == "workflow"
    with pytest.raises(UserbatchError, match="not valid YAML"):
        a.add_workflow("steps: [")


def test_client_from_env_and_unreachable_server(monkeypatch):
    monkeypatch.delenv("USERBATCH_API_URL", raising=False)
    monkeypatch.delenv("USERBATCH_TOKEN", raising=False)
    assert client_from_env() is None
    monkeypatch.setenv("USERBATCH_API_URL", "http://127.0.0.1:9")
    with pytest.raises(AuthError, match="USERBATCH_TOKEN is not"):
        client_from_env()
    monkeypatch.setenv("USERBATCH_TOKEN", "ub_x")
    c = client_from_env()
    assert isinstance(c, Client) and c.base_url == "http://127.0.0.1:9"
    with pytest.raises(UserbatchError, match="cannot reach the userbatch API at http://127.0.0.1:9"):
        c.runs()


def test_table_upkeep_is_for_owners_and_admins_over_http(env):
    """Vacuum, optimize and restore over the API: another user is refused and nothing on disk changes; the owner
    and an admin may; a private table of someone else's answers as one that does not exist."""
    from pathlib import Path

    from helpers import sky_points

    from userbatch.tables.write import write_table

    cat = Catalog(env.db_url, user="a")
    write_table(sky_points(200, seed=1), "u_a.stars", "create", catalog=cat)
    write_table(sky_points(20, seed=2, id_start=9000), "u_a.stars", "append", catalog=cat)
    root = Path(cat.get("u_a.stars").location)

    def listing():
        return sorted(str(p) for p in root.rglob("*"))

    before = listing()
    vac = {"retain_days": 0, "min_age_hours": 0}
    for path, body in (("/tables/u_a.stars/vacuum", vac), ("/tables/u_a.stars/optimize", None),
                       ("/tables/u_a.stars/restore", {"version": 0})):
        r = env.tc.post(path, json=body, headers=env.h["b"])
        assert r.status_code == 403 and r.json()["error"] == "AccessDenied", r.text
        assert listing() == before
    r = env.tc.post("/tables/u_a.secret/vacuum", json=vac, headers=env.h["b"])
    assert r.status_code == 404 and r.json()["error"] == "TableNotFound"
    r = env.tc.post("/vacuum", json=vac, headers=env.h["b"])
    assert r.status_code == 200 and r.json()["tables"] == [] and listing() == before
    r = env.tc.post("/tables/u_a.stars/vacuum", json={"retain_days": -1}, headers=env.h["a"])
    assert r.status_code == 400 and "retain_days" in r.json()["detail"]  # refused by the API's validation
    r = env.tc.post("/tables/u_a.stars/optimize", headers=env.h["a"])
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    r = env.tc.post("/tables/u_a.stars/restore", json={"version": 0}, headers=env.h["admin"])
    assert r.status_code == 200 and r.json()["version"] == 3, r.text
    r = env.tc.post("/tables/u_a.stars/vacuum", json=vac, headers=env.h["admin"])
    assert r.status_code == 200 and r.json()["tables"][0]["kept_versions"] == [3], r.text
    assert listing() != before
