"""The pieces of run isolation that need no Spark and no root: the launch command and clean environment, the
identity rendered for cluster targets, the run-kind registry, the readers that never follow a run's links, the
export bundle's quoting, workflow text never read as a path, and exact group names in storage accounting."""

from __future__ import annotations


import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from userbatch.errors import UserbatchError
from userbatch.facility.accounts import Credentials, IdentityConfig, account_name, group_name
from userbatch.cluster.kubernetes import KubernetesRunner
from userbatch.cluster.yarn import YarnRunner
from userbatch.facility.isolation import clean_environment, wrap
from userbatch.cluster.base import SubmitSpec


def _spec(**over) -> SubmitSpec:
    base = {"run_id": "abc123def456", "run_dir": "/ub/runs/abc123def456", "user": "alice", "cores": 2,
            "env": {"USERBATCH_RUN_ID": "abc123def456"}}
    return SubmitSpec(**{**base, **over})


def test_the_launch_drops_to_the_owner_in_fresh_namespaces():
    creds = Credentials("alice", "ub_alice", 2001, 2001, (3001, 3002))
    argv = wrap(["spark-submit", "driver.py", "RUN"], creds, network=True)
    assert argv[:7] == ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--"]
    drop = argv[argv.index("setpriv"):]
    assert drop[:8] == ["setpriv", "--reuid=2001", "--regid=2001", "--groups=3001,3002", "--inh-caps=-all",
                        "--bounding-set=-all", "--no-new-privs", "--"]
    assert drop[8:] == ["spark-submit", "driver.py", "RUN"]
    assert "--net" not in wrap(["x"], creds, network=False)
    assert wrap(["x"], None, network=True) == ["x"]  # single-user: as ourselves


def test_a_runs_environment_holds_no_facility_state():
    base = {"USERBATCH_DB_URL": "postgresql://facility", "PGPASSWORD": "s3cret", "AWS_SECRET_ACCESS_KEY": "k",
            "USERBATCH_HOME": "/facility/home", "HOME": "/root", "LSST_RESOURCES": "x", "PATH": "/anything",
            "PYTHONPATH": "/tasks", "MLFLOW_TRACKING_PASSWORD": "p"}
    env = clean_environment({"USERBATCH_RUN_TOKEN": "ubr_x", "USERBATCH_DB_URL": "sneaked"}, "/runs/r1", base)
    assert "USERBATCH_DB_URL" not in env and "PGPASSWORD" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert "MLFLOW_TRACKING_PASSWORD" not in env
    assert env["HOME"] == "/runs/r1" and env["USERBATCH_HOME"] == "/runs/r1/home"
    assert env["LSST_RESOURCES"] == "x" and env["PYTHONPATH"] == "/tasks" and env["USERBATCH_RUN_TOKEN"] == "ubr_x"


def test_os_names_are_prefixed_mapped_and_fit_useradd():
    cfg = IdentityConfig(accounts={"alice": "asmith"}, groups={"dp1_team": "dp1"})
    assert account_name(cfg, "alice") == "asmith" and account_name(cfg, "bob") == "ub_bob"
    assert group_name(cfg, "dp1_team") == "dp1" and group_name(cfg, "club") == "ubg_club"
    long = account_name(cfg, "a" * 32)
    assert len(long) <= 32 and long != account_name(cfg, "a" * 31 + "b")
    with pytest.raises(UserbatchError, match="identity.mode"):
        IdentityConfig.parse({"mode": "everyone"}, "test")


def test_cluster_targets_render_the_owner():
    spec = _spec(os_user="ub_alice", uid=2001, gid=2001, gids=(3001,))
    pod = KubernetesRunner(image="img:1").pod_template(spec, "executor")
    assert pod["spec"]["securityContext"] == {"runAsUser": 2001, "runAsGroup": 2001, "fsGroup": 2001,
                                              "runAsNonRoot": True, "supplementalGroups": [3001]}
    assert pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    assert "securityContext" not in KubernetesRunner(image="img:1").pod_template(_spec(), "driver")["spec"]
    argv = YarnRunner().argv(spec)
    assert argv[argv.index("--proxy-user") + 1] == "ub_alice"
    assert "--proxy-user" not in YarnRunner().argv(_spec())


def test_run_kinds_are_registered_by_name():
    from userbatch.facility import run_kinds

    assert {run_kinds.get(k).name for k in ("template", "script", "workflow", "bps")} == \
        {"template", "script", "workflow", "bps"}
    assert type(run_kinds.get("bps")).__module__ == "userbatch.images.run_kind"
    with pytest.raises(UserbatchError, match="unknown run kind 'nope'"):
        run_kinds.get("nope")
    with pytest.raises(UserbatchError, match="bps restart"):
        run_kinds.get("bps").rerun({"run_id": "r1"})


def test_facility_does_not_import_images():
    import ast

    root = Path(__file__).resolve().parents[1] / "python" / "userbatch" / "facility"
    offenders = []
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.startswith("userbatch.images") or (node.level and node.module.startswith("images"))
                    or (node.level == 2 and node.module.startswith("images"))):
                offenders.append(f"{path.name}: {node.module}")
    assert offenders == []


def test_run_files_are_read_without_following_links(tmp_path):
    from userbatch.facility.runfiles import read_json, tail_lines

    secret = tmp_path / "facility.db"
    secret.write_text("SQLite format 3 secret")
    (tmp_path / "result.json").symlink_to(secret)
    (tmp_path / "driver.log").symlink_to(secret)
    assert read_json(tmp_path / "result.json") is None
    assert tail_lines(tmp_path / "driver.log", 10) == ""
    log = tmp_path / "real.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert tail_lines(log, 3) == "line 99997\nline 99998\nline 99999"
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"x": "y" * 1000}))
    assert read_json(big, limit=100) is None and read_json(big)["x"] == "y" * 1000
    os.mkfifo(tmp_path / "fifo.json")
    assert read_json(tmp_path / "fifo.json") is None  # does not block on a FIFO the run planted


@pytest.fixture
def fac(facility):
    return facility("admins: [admin]\nruns: {default_cores: 1, default_max_hours: 0.5}\n").fac("alice")


def test_export_quotes_every_value(fac, tmp_path):
    """An output-map key with a command substitution stays text in submit.sh (it ran when the script ran)."""
    from userbatch.facility import ledger
    from userbatch.facility.models import RunRow
    from userbatch.tables.db import transaction

    marker = tmp_path / "pwned"
    evil = f'u_alice.x$(touch {marker})`touch {marker}`'
    run = fac.submit(script=("x.py", "print(1)"), output_map={evil: "u_alice.y"})
    with transaction(fac.engine, lock=True) as s:
        r = s.get(RunRow, run["id"])
        r.state = "succeeded"
        ledger.charge(s, r, 0.0, 0.0, "test")
    bundle = fac.export(run["id"], tmp_path)
    with tarfile.open(bundle) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("submit.sh"))
        text = tar.extractfile(member).read().decode()
    script = tmp_path / "submit.sh"
    # everything up to the spark-submit line, which needs the package; the exports are what could inject
    script.write_text("\n".join(line for line in text.splitlines() if not line.startswith("spark-submit"))
                      + "\necho \"$USERBATCH_OUTPUT_MAP\"\n")
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True)
    assert not marker.exists()
    assert json.loads(out.stdout) == {evil: "u_alice.y"}


def test_workflow_text_is_never_opened_as_a_server_path(fac, tmp_path):
    secret = tmp_path / "server_only.yaml"
    secret.write_text("name: stolen\nsteps:\n  - {name: s, sql: 'SELECT 1', output: u_alice.t}\n")
    with pytest.raises(UserbatchError, match="send the file's text, not its path"):
        fac.submit(workflow=str(secret))
    with pytest.raises(UserbatchError, match="send the file's text, not its path"):
        fac.add_workflow(str(secret))


def test_group_storage_matches_the_group_name_exactly(ub_env):
    """``g_a_b`` must not count ``g_acb``'s tables ('_' is a LIKE wildcard)."""
    from userbatch.facility.ledger import storage_used_gb
    from userbatch.tables.catalog import Catalog, TableEntry
    from userbatch.tables.db import engine_for
    from sqlalchemy.orm import Session

    cat = Catalog(user="u")
    for name in ("g_acb.t", "g_a_b.t"):
        loc = ub_env / name
        loc.mkdir()
        (loc / "data").write_bytes(b"x" * (1000 if "c" in name else 10))
        cat.register(TableEntry(name=name, location=str(loc), ra_column=None, dec_column=None))
    with Session(engine_for(os.environ["USERBATCH_DB_URL"])) as s:
        assert storage_used_gb(s, "group", "a_b") * 1e9 == pytest.approx(10)


def test_bps_runs_take_only_the_submitters_directory(fac, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("directory ownership by OS account needs root")
    import pwd

    from userbatch.errors import AccessDenied

    sub = tmp_path / "submit"
    sub.mkdir()
    (sub / "userbatch_plan.json").write_text("{}")
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(sub, nobody, nobody)
    with pytest.raises(AccessDenied, match="not alice's submit directory"):
        fac.submit(bps={"name": "w", "submit_path": str(sub)})



def test_a_bps_run_exports(fac, tmp_path):
    """Export of a bps run used to raise KeyError ('workflow'); it now carries the run kind's own files."""
    from userbatch.facility import ledger
    from userbatch.facility.models import RunRow
    from userbatch.tables.db import transaction

    sub = tmp_path / "submit"
    sub.mkdir()
    (sub / "userbatch_plan.json").write_text(json.dumps({"name": "w", "jobs": [], "final": None}))
    run = fac.submit(bps={"name": "w", "submit_path": str(sub)})
    with transaction(fac.engine, lock=True) as s:
        r = s.get(RunRow, run["id"])
        r.state = "succeeded"
        ledger.charge(s, r, 0.0, 0.0, "test")
    with tarfile.open(fac.export(run["id"], tmp_path)) as tar:
        names = {Path(m.name).name: m for m in tar.getmembers()}
        assert json.loads(tar.extractfile(names["bps.json"]).read())["submit_path"] == str(sub)
    with pytest.raises(UserbatchError, match="bps restart"):
        fac.rerun(run["id"])
