"""Tokens as the Rubin Science Platform gives them: scoped, expiring, listable, revocable; a run's delegated token
acts only as its owner, only while the run lives, and never as an admin. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from userbatch.errors import AccessDenied, UserbatchError

CONFIG = """
admins: [root_admin]
groups:
  team: {members: [alice]}
runs: {max_queued: 3, default_cores: 1, default_max_hours: 0.5}
tokens: {default_days: 7}
"""


@pytest.fixture
def env(db_url, facility):
    fx = facility(CONFIG)
    return {"engine": fx.engine, "admin": fx.fac("root_admin"), "alice": fx.fac("alice"), "db_url": db_url}


def _run_token(env, user: str, state: str = "running"):
    """A run of ``user`` in ``state`` with its delegated token, as the worker makes them."""
    from userbatch.facility import ledger
    from userbatch.facility.config import load_config
    from userbatch.facility.models import RunRow
    from userbatch.facility.worker import Worker
    from userbatch.tables.db import transaction

    worker = Worker.__new__(Worker)  # only its token minting, no lock, no API
    with transaction(env["engine"], lock=True) as s:
        run = RunRow(id=hashlib.sha256(f"{user}{state}".encode()).hexdigest()[:12], user=user, group=None,
                     kind="script", name="x.py", spec="{}", state=state, stage=state, runner="local", cores=1,
                     max_hours=0.5, reserved_core_hours=0.5, period=load_config().period_label(),
                     submitted_at=ledger.now(), started_at=ledger.now(), run_dir="/nonexistent", error="",
                     result="{}", cancel_requested=False)
        s.add(run)
        s.flush()
        token = worker._run_token(s, run)
    return run.id, token


def test_a_run_token_acts_as_its_owner_and_never_as_an_admin(env):
    from userbatch.facility.service import Facility, Identity

    run_id, token = _run_token(env, "root_admin")
    ident = Identity.from_token(token, env["engine"])
    assert ident.user == "root_admin" and ident.run_id == run_id and ident.is_admin is False
    fac = Facility(ident, db_url=env["db_url"], start_worker=False)
    for attempt in (lambda: fac.create_token(), lambda: fac.create_token("alice"),
                    lambda: fac.quota_set("user", "alice", core_hours=1e6), lambda: fac.users(),
                    lambda: fac.submit(script=("x.py", "print(1)")), lambda: fac.revoke_all_tokens("alice"),
                    lambda: fac.set_admin("alice", True), lambda: fac.fsck()):
        with pytest.raises(AccessDenied):
            attempt()


def test_a_run_token_dies_with_its_run(env):
    from userbatch.facility.models import RunRow
    from userbatch.facility.service import AuthError, Identity
    from userbatch.tables.db import transaction

    run_id, token = _run_token(env, "alice")
    Identity.from_token(token, env["engine"])
    with transaction(env["engine"], lock=True) as s:
        s.get(RunRow, run_id).state = "succeeded"
    with pytest.raises(AuthError, match="ended with its run"):
        Identity.from_token(token, env["engine"])


def test_tokens_expire_list_and_revoke(env):
    from userbatch.facility import ledger
    from userbatch.facility.models import TokenRow
    from userbatch.facility.service import AuthError, Identity
    from userbatch.tables.db import transaction

    alice = env["alice"]
    t1 = alice.create_token(label="laptop")
    t2 = alice.create_token(label="short", expires_days=0.5)
    assert Identity.from_token(t1["token"], env["engine"]).user == "alice"
    listed = {t["id"]: t for t in alice.tokens()}
    assert set(listed) >= {t1["id"], t2["id"]} and "token" not in listed[t1["id"]]
    assert listed[t1["id"]]["expires_at"][:10] == (ledger.now() + timedelta(days=7)).isoformat()[:10]
    with transaction(env["engine"], lock=True) as s:  # time passes for the short one
        s.get(TokenRow, t2["id"]).expires_at = ledger.now() - timedelta(seconds=1)
    with pytest.raises(AuthError, match="expired"):
        Identity.from_token(t2["token"], env["engine"])
    with pytest.raises(UserbatchError, match="between a moment and 10 years"):
        alice.create_token(expires_days=0)
    with pytest.raises(AccessDenied):
        alice.tokens("root_admin")
    assert alice.revoke_all_tokens()["revoked"] >= 2
    with pytest.raises(AuthError, match="revoked"):
        Identity.from_token(t1["token"], env["engine"])


def test_demoted_admins_and_disabled_users(env):
    from userbatch.facility.service import AuthError, Facility, Identity

    admin = env["admin"]
    admin.add_user("deputy", admin=True)
    assert Identity.lookup("deputy", env["engine"]).is_admin
    admin.set_admin("deputy", False)
    assert not Identity.lookup("deputy", env["engine"]).is_admin
    tok = env["alice"].create_token()
    queued = env["alice"].submit(script=("x.py", "print(1)"))
    out = admin.set_active("alice", False)
    assert out["runs_refused"] == 1
    assert env["alice"].status(queued["id"])["state"] == "cancelled"
    with pytest.raises(AuthError, match="revoked|disabled"):
        Identity.from_token(tok["token"], env["engine"])
    with pytest.raises(AuthError, match="disabled"):
        Identity.lookup("alice", env["engine"])
    with pytest.raises(UserbatchError, match="cannot disable themselves"):
        admin.set_active("root_admin", False)
    admin.set_active("alice", True)
    assert Facility(Identity.lookup("alice", env["engine"]), db_url=env["db_url"], start_worker=False).user == "alice"


def test_queued_runs_are_capped_and_max_hours_has_a_floor(env):
    from userbatch.facility.ledger import QuotaExceeded

    alice = env["alice"]
    with pytest.raises(UserbatchError, match="max-hours"):
        alice.submit(script=("x.py", "print(1)"), max_hours=1e-9)
    for _ in range(3):
        alice.submit(script=("x.py", "print(1)"))
    with pytest.raises(QuotaExceeded, match="3 runs queued"):
        alice.submit(script=("x.py", "print(1)"))


def test_thirty_concurrent_first_requests_with_fresh_tokens(env):
    """Each first use of a token writes last_used_at; on SQLite a read-then-write transaction used to fail."""
    from fastapi.testclient import TestClient

    from userbatch.facility.api import create_app

    tokens = [env["admin"].create_token("alice")["token"] for _ in range(30)]
    client = TestClient(create_app(env["db_url"]))
    barrier = threading.Barrier(30)

    def me(token):
        barrier.wait()
        return client.get("/quota", headers={"Authorization": f"Bearer {token}"}).status_code

    with ThreadPoolExecutor(30) as pool:
        codes = list(pool.map(me, tokens))
    assert codes == [200] * 30


def test_request_bodies_are_limited(env):
    from fastapi.testclient import TestClient

    from userbatch.facility.api import MAX_BODY_BYTES, create_app

    token = env["alice"].create_token()["token"]
    client = TestClient(create_app(env["db_url"]))
    r = client.post("/runs", content=b"x" * (MAX_BODY_BYTES + 1),
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert r.status_code == 413 and "request body over" in r.json()["detail"]


def test_single_user_mode_refuses_a_multi_user_config(monkeypatch):
    from userbatch.facility import accounts

    monkeypatch.setattr(accounts.os, "geteuid", lambda: 1000)
    assert accounts.effective_mode(accounts.IdentityConfig(mode="auto")) == "single-user"
    with pytest.raises(accounts.IdentityError, match="does not run as root"):
        accounts.effective_mode(accounts.IdentityConfig(mode="os"))


def test_runs_of_a_worker_that_died_elsewhere_are_reconciled_by_lease(env):
    """A run left ``running`` by a worker on another host is finished once its lease lapses — not by host name —
    and a run whose worker still renews its lease is left alone."""
    from userbatch.facility import ledger
    from userbatch.facility.models import RunRow
    from userbatch.facility.worker import LEASE_S, Worker
    from userbatch.tables.db import transaction

    stale, live = _run_token(env, "alice")[0], _run_token(env, "root_admin")[0]
    with transaction(env["engine"], lock=True) as s:
        for run_id, age in ((stale, LEASE_S * 3), (live, 1)):
            r = s.get(RunRow, run_id)
            r.host, r.pid = "another-host", 4242
            r.heartbeat_at = ledger.now() - timedelta(seconds=age)
    Worker(db_url=env["db_url"]).reconcile()
    assert env["alice"].status(stale)["state"] == "failed"
    assert "worker that ran it stopped" in env["alice"].status(stale)["error"]
    assert env["admin"].status(live)["state"] == "running"
