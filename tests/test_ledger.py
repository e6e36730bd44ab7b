"""The facility database and the quota ledger, on SQLite and PostgreSQL: migrations match the models, quotas are
enforced with a message, concurrent submitters (threads and processes) never overspend, admins' changes are
audited, capacity warns on over-allocation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import sqlalchemy as sa
from helpers import FacilityUnder
from sqlalchemy import func, select

from userbatch.errors import AccessDenied, TableNotFound, UserbatchError
from userbatch.facility.config import load_config
from userbatch.facility.ledger import QuotaExceeded
from userbatch.facility.models import AuditRow, RunRow
from userbatch.facility.service import Facility
from userbatch.tables.db import Base, engine_for

CONFIG = """
capacity: {cores: 100, user_fraction: 0.10}
period: month
defaults:
  user:  {core_hours: 10, max_cores: 4, storage_gb: 5}
  group: {core_hours: 12, max_cores: 8, storage_gb: 50}
admins: [boss]
groups:
  team: {members: [ann, bob], quota: {core_hours: 12, max_cores: 8, storage_gb: 50}}
"""


@pytest.fixture
def fac_env(db_url, facility, tmp_path):
    """The facility under CONFIG on each database; the tests take its URL (threads and processes open their own)."""
    facility(CONFIG, env={"USERBATCH_HOME": str(tmp_path / "home")})
    return db_url


def fac(user: str, db_url: str) -> Facility:
    return FacilityUnder(db_url).fac(user)


def _script():
    return ("noop.py", "print('hello')\n")


# ------------------------------------------------------------------------------------------------ migrations

def test_migrations_match_the_models(fac_env):
    """The Alembic head creates exactly the tables and columns the ORM declares (nothing forgotten)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import userbatch.facility.models  # noqa: F401 - registers the facility tables
    import userbatch.tables.catalog  # noqa: F401

    engine = engine_for(fac_env)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    diff = [d for d in diff if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version")]
    assert diff == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0005"


def test_a_database_from_before_migrations_is_upgraded(tmp_path):
    """A facility.db the foundation made (catalog table only, no alembic_version) keeps its rows and gains the
    facility tables."""
    path = tmp_path / "old.db"
    raw = sa.create_engine(f"sqlite:///{path}")
    with raw.begin() as conn:
        conn.execute(sa.text("CREATE TABLE ub_tables (name VARCHAR(128) PRIMARY KEY, location TEXT NOT NULL, "
                             "format VARCHAR(16) NOT NULL, ra_column VARCHAR(128), dec_column VARCHAR(128), "
                             "coord_unit VARCHAR(16) NOT NULL, partition_order INTEGER, pixel_threshold INTEGER, "
                             "highest_order INTEGER, margin_radius_arcsec FLOAT, owner VARCHAR(128) NOT NULL, "
                             "\"group\" VARCHAR(128), visibility VARCHAR(16) NOT NULL, description TEXT NOT NULL, "
                             "properties TEXT NOT NULL, created_at DATETIME NOT NULL)"))
        conn.execute(sa.text("INSERT INTO ub_tables VALUES ('dp1.x', '/tmp/x', 'delta', 'ra', 'dec', 'deg', NULL, "
                             "NULL, NULL, NULL, 'me', NULL, 'public', '', '{}', '2026-01-01 00:00:00')"))
    raw.dispose()
    engine = engine_for(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM ub_tables")).scalar() == "dp1.x"
        assert conn.execute(sa.text("SELECT count(*) FROM ub_runs")).scalar() == 0


# ------------------------------------------------------------------------------------------------ quotas

def test_over_quota_submission_is_refused_with_what_is_left(fac_env):
    ann = fac("ann", fac_env)
    ann.submit(script=_script(), cores=2, max_hours=3)  # reserves 6 of 10
    with pytest.raises(QuotaExceeded, match=r"user ann has 4\.00 core-hours left of 10\.00.*reserved by active runs "
                                            r"6\.00.*reserves 6\.00"):
        ann.submit(script=_script(), cores=2, max_hours=3)
    with pytest.raises(QuotaExceeded, match="at most 4 cores"):
        ann.submit(script=_script(), cores=6, max_hours=0.1)
    with engine_for(fac_env).connect() as conn:  # the refusals queued nothing
        assert conn.execute(select(func.count()).select_from(RunRow)).scalar() == 1
    q = ann.quota_show()
    assert (q["user"]["reserved"], q["user"]["remaining"]) == (6.0, 4.0)
    assert [g["subject"] for g in q["groups"]] == ["team"]


def test_group_allocation_is_shared_by_its_members(fac_env):
    ann, bob = fac("ann", fac_env), fac("bob", fac_env)
    ann.submit(script=_script(), group="team", cores=4, max_hours=2)  # 8 of the group's 12
    with pytest.raises(QuotaExceeded, match="group team has 4.00 core-hours left"):
        bob.submit(script=_script(), group="team", cores=3, max_hours=2)
    bob.submit(script=_script(), group="team", cores=2, max_hours=2)
    with pytest.raises(AccessDenied, match="not a member of group other"):
        bob.submit(script=_script(), group="other", cores=1, max_hours=1)


def test_cancelling_a_queued_run_releases_its_reservation(fac_env):
    ann = fac("ann", fac_env)
    run = ann.submit(script=_script(), cores=2, max_hours=4)
    assert ann.quota_show()["user"]["reserved"] == 8.0
    assert ann.cancel(run["id"])["state"] == "cancelled"
    q = ann.quota_show()["user"]
    assert (q["reserved"], q["used"]) == (0.0, 0.0)
    ann.submit(script=_script(), cores=2, max_hours=4)  # the released hours can be reserved again


def _parallel_threads(db_url, users, attempts_each, cores, hours, group=None):
    ok, refused, errors = [], [], []

    def worker(user):
        f = fac(user, db_url)
        for _ in range(attempts_each):
            try:
                ok.append(f.submit(script=_script(), cores=cores, max_hours=hours, group=group)["id"])
            except QuotaExceeded:
                refused.append(user)
            except Exception as e:  # noqa: BLE001 - anything else is a bug the assertion shows
                errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(u,)) for u in users for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ok, refused, errors


def test_parallel_submitters_in_threads_never_overspend(fac_env):
    """16 threads (4 each for two users of one group) race 64 submissions of 1 core-hour against a 12 core-hour
    group allocation and 10-hour user allocations: exactly 12 are accepted, whatever the interleaving."""
    ok, refused, errors = _parallel_threads(fac_env, ["ann", "bob"], 8, 1, 1.0, group="team")
    assert errors == []
    assert len(ok) == 12 and len(refused) == 64 - 12
    with engine_for(fac_env).connect() as conn:
        total = conn.execute(select(func.sum(RunRow.reserved_core_hours)).where(RunRow.group == "team")).scalar()
    assert total == pytest.approx(12.0)


@pytest.mark.slow
def test_parallel_submitters_in_processes_never_overspend(fac_env, tmp_path):
    """8 separate processes, 5 submissions each, against one user's 10 core-hour allocation."""
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(os.path.join(os.path.dirname(__file__), '..', 'python'))!r})
        from userbatch.facility.config import load_config
        from userbatch.facility.ledger import QuotaExceeded
        from userbatch.facility.service import Facility, Identity
        from userbatch.tables.db import engine_for
        url = {fac_env!r}
        f = Facility(Identity.lookup("ann", engine_for(url), load_config()), db_url=url, start_worker=False)
        ok = 0
        for _ in range(5):
            try:
                f.submit(script=("noop.py", "print(1)"), cores=1, max_hours=1.0)
                ok += 1
            except QuotaExceeded:
                pass
        print(json.dumps(ok))
    """)
    fac("ann", fac_env)  # create the user (and migrate) before the race
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=dict(os.environ)) for _ in range(8)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    accepted = sum(json.loads(o[0].strip().splitlines()[-1]) for o in outs)
    assert accepted == 10
    with engine_for(fac_env).connect() as conn:
        assert conn.execute(select(func.count()).select_from(RunRow)).scalar() == 10


# ------------------------------------------------------------------------------------------------ admin

def test_only_admins_change_quotas_and_every_change_is_audited(fac_env):
    ann, boss = fac("ann", fac_env), fac("boss", fac_env)
    with pytest.raises(AccessDenied, match="only an admin"):
        ann.quota_set("user", "ann", core_hours=1000)
    assert boss.quota_set("user", "ann", core_hours=30, max_cores=2) == {"core_hours": 30.0, "max_cores": 2,
                                                                         "storage_gb": 5.0}
    with pytest.raises(UserbatchError, match="cannot be negative"):
        boss.quota_set("user", "ann", core_hours=-1)
    with engine_for(fac_env).connect() as conn:
        rows = conn.execute(select(AuditRow).where(AuditRow.action == "quota.set")).all()
    assert len(rows) == 1 and rows[0].actor == "boss"
    assert json.loads(rows[0].before)["core_hours"] == 10.0 and json.loads(rows[0].after)["core_hours"] == 30.0
    assert ann.quota_show()["user"]["core_hours"] == 30.0
    with pytest.raises(AccessDenied):
        ann.audit_log()
    assert boss.audit_log()[0]["action"] == "quota.set"


def test_a_lowered_quota_refuses_a_queued_run_at_start(fac_env):
    """Admission runs again when the worker starts a run: a quota lowered meanwhile fails it before launch."""
    from userbatch.facility.worker import Worker

    ann, boss = fac("ann", fac_env), fac("boss", fac_env)
    run = ann.submit(script=_script(), cores=2, max_hours=2)
    boss.quota_set("user", "ann", core_hours=1)
    w = Worker(db_url=fac_env, config=load_config())
    w.start_queued()
    r = ann.status(run["id"])
    assert r["state"] == "failed" and "refused at start" in r["error"] and r["charged_core_hours"] == 0.0
    assert ann.quota_show()["user"]["reserved"] == 0.0


def test_capacity_reports_and_warns_on_over_allocation(fac_env):
    boss = fac("boss", fac_env)
    fac("ann", fac_env)
    cap = boss.capacity()
    assert cap["user_capacity_core_hours"] == pytest.approx(100 * 0.10 * 730)
    assert cap["allocated_user_core_hours"] == 20.0 and cap["warnings"] == []  # boss + ann, 10 each
    boss.quota_set("group", "team", core_hours=8000)
    cap = boss.capacity()
    assert cap["allocated_core_hours"] > cap["user_capacity_core_hours"]
    assert "exceed the user-computing capacity" in cap["warnings"][0]


def test_bad_inputs_are_refused_and_queue_nothing(fac_env):
    ann = fac("ann", fac_env)
    with pytest.raises(UserbatchError, match="no job template 'nope'"):
        ann.submit(template="nope")
    with pytest.raises(UserbatchError, match="must be a lower-case identifier"):
        ann.submit(template="../crossmatch")
    with pytest.raises(UserbatchError, match="has no parameter"):
        ann.submit(template="crossmatch", params={"left": "dp1.a", "right": "dp1.b", "output": "u_ann.c",
                                                  "bogus": 1})
    with pytest.raises(UserbatchError, match="syntax error at line 1"):
        ann.submit(script=("bad.py", "def (:\n"))
    with pytest.raises(UserbatchError, match="exactly one dot|must look like"):
        ann.submit(template="crossmatch", params={"left": "dp1/../a.b", "right": "dp1.b", "output": "u_ann.c"})
    with pytest.raises(AccessDenied, match="may write tables only in u_ann"):
        ann.submit(template="crossmatch", params={"left": "dp1.a", "right": "dp1.b", "output": "u_bob.c"})
    with pytest.raises(TableNotFound, match="no table named dp1.a"):
        ann.submit(template="crossmatch", params={"left": "dp1.a", "right": "dp1.b", "output": "u_ann.c"})
    with pytest.raises(UserbatchError, match="exactly one of"):
        ann.submit()
    for sql in ("DROP TABLE dp1.x", "INSERT INTO dp1.x SELECT 1", "SELECT * FROM parquet.`/etc/passwd`",
                "SELECT reflect('java.lang.System', 'exit', 1)"):
        with pytest.raises(UserbatchError):
            ann.submit(workflow=f"name: w\nsteps:\n  - name: a\n    sql: \"{sql}\"\n")
    with pytest.raises(UserbatchError, match="YAML"):
        ann.submit(workflow="name: w\nsteps: [\n")
    bad_job = os.path.join(os.environ["USERBATCH_HOME"], "bad.yaml")
    os.makedirs(os.path.dirname(bad_job), exist_ok=True)
    with open(bad_job, "w") as fh:
        fh.write("template: crossmatch\nparameters: [unclosed\n")
    with pytest.raises(UserbatchError, match="not valid YAML"):
        ann.submit(job_file=bad_job)
    for bad_id in ("../etc", "x" * 40, "ZZZZ"):
        with pytest.raises(UserbatchError):
            ann.status(bad_id)
    with engine_for(fac_env).connect() as conn:
        assert conn.execute(select(func.count()).select_from(RunRow)).scalar() == 0


def test_a_run_waits_while_the_users_running_cores_are_at_their_limit(fac_env):
    """max_cores bounds what runs at once: the second 3-core run stays queued while the first holds 3 of 4."""
    from userbatch.facility.worker import Worker
    from userbatch.tables.db import transaction

    ann = fac("ann", fac_env)
    first = ann.submit(script=_script(), cores=3, max_hours=1)
    second = ann.submit(script=_script(), cores=3, max_hours=1)
    with transaction(engine_for(fac_env)) as s:
        s.get(RunRow, first["id"]).state = "running"  # as if the worker had launched it
    w = Worker(db_url=fac_env, config=load_config())
    w.start_queued()
    assert ann.status(second["id"])["state"] == "queued" and not w.procs
    assert ann.quota_show()["user"]["running_cores"] == 3


def test_storage_over_quota_refuses_new_runs(fac_env, tmp_path):
    from userbatch.tables.catalog import Catalog, TableEntry

    ann, boss = fac("ann", fac_env), fac("boss", fac_env)
    loc = tmp_path / "u_ann" / "big"
    loc.mkdir(parents=True)
    (loc / "part-0.parquet").write_bytes(b"x" * 200_000)
    Catalog(db_url=fac_env, user="ann").register(TableEntry(name="u_ann.big", location=str(loc), format="parquet"))
    boss.quota_set("user", "ann", storage_gb=0.0001)  # 100 kB
    assert ann.quota_show()["user"]["storage_used_gb"] == pytest.approx(0.0002)
    with pytest.raises(QuotaExceeded, match="storage quota; drop tables"):
        ann.submit(script=_script(), cores=1, max_hours=0.1)
