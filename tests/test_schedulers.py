"""The quota file rendered for YARN, YuniKorn, Kubernetes and Slurm: every artefact parsed by a real parser, and
the rendered configs hold exactly the groups, users and limits of the quota file (odd names made safe, a user in
two groups, a group taking the defaults). Kubernetes manifests are validated against the API schemas bundled with
kubernetes-validate (offline). The committed examples under deploy/ must equal a fresh render.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from userbatch.errors import UserbatchError
from userbatch.cluster import kubernetes, naming, quotas, render, slurm, yarn
from userbatch.facility.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
YK_QUEUE = re.compile(r"^[a-zA-Z0-9_:#/@-]{1,64}$")
SLURM_ACCOUNT = re.compile(r"^[a-z0-9_]{1,60}$")

DOC = {
    "capacity": {"cores": 1000, "user_fraction": 0.2},
    "defaults": {"user": {"core_hours": 100, "max_cores": 4, "storage_gb": 50},
                 "group": {"core_hours": 1000, "max_cores": 16, "storage_gb": 500}},
    "admins": ["root_admin"],
    "users": {"alice": {"core_hours": 300, "max_cores": 8, "storage_gb": 10},
              "Jane.Doe": {"core_hours": 20, "max_cores": 2, "storage_gb": 1}},
    "groups": {
        "Cosmo.Team": {"members": ["alice", "Jane.Doe"], "quota": {"core_hours": 5000, "max_cores": 32,
                                                                   "storage_gb": 100}},
        "sn_ia": {"members": ["alice", "bob"]},  # no quota: the group defaults; bob: the user defaults
    },
    "runs": {"max_concurrent": 3},
    "scheduler": {"memory_per_core_gb": 2},
}
GROUPS = {"Cosmo.Team": (32, 5000.0, ["Jane.Doe", "alice"]), "sn_ia": (16, 1000.0, ["alice", "bob"])}
USERS = {"alice": (8, 300.0), "Jane.Doe": (2, 20.0), "bob": (4, 100.0), "root_admin": (4, 100.0)}


@pytest.fixture(scope="module")
def cfg():
    return parse_config(DOC, "test.yaml")


def sched_cores(max_cores: int) -> int:
    return max_cores + min(max_cores, 3)


# ------------------------------------------------------------------------------------------------ config


def test_scheduler_section_parsed_and_validated():
    assert parse_config(DOC).memory_per_core_gb == 2.0
    assert parse_config({}).memory_per_core_gb == 4.0
    assert load_config(ROOT / "conf" / "facility.yaml").memory_per_core_gb == 4.0
    for bad in ({"memory_per_core_gb": 0}, {"memory_per_core_gb": "x"}, {"cores": 2}, [1]):
        with pytest.raises(ConfigError, match="scheduler"):
            parse_config({"scheduler": bad})


def test_queue_names_are_safe_and_shared_with_queue_for(cfg):
    assert cfg.queue_for("alice", None) == "root.users.alice"
    assert cfg.queue_for("alice", "sn_ia") == "root.users.sn_ia"
    odd = cfg.queue_for("x", "Cosmo.Team")
    assert odd.count(".") == 2 and YK_QUEUE.match(odd.rsplit(".", 1)[1])
    assert cfg.queue_for("x", "Cosmo.Team") != cfg.queue_for("x", "Cosmo_Team")
    settings = render.submission_settings(cfg, "alice", "Cosmo.Team")
    assert settings["spark.yarn.queue"] == odd == settings["spark.kubernetes.driver.label.queue"]
    assert DNS_LABEL.match(settings["spark.kubernetes.namespace"])
    assert settings["spark.kubernetes.scheduler.name"] == "yunikorn"
    assert SLURM_ACCOUNT.match(settings["slurm.account"])
    assert render.submission_settings(cfg, "alice")["spark.kubernetes.namespace"] == "ub-user-alice"


# ------------------------------------------------------------------------------------------------ YARN


def yarn_props(text: str) -> dict[str, str]:
    root = ET.fromstring(text.encode())
    assert root.tag == "configuration"
    props = {}
    for p in root:
        assert p.tag == "property"
        assert [c.tag for c in p][:2] == ["name", "value"]
        name = p.findtext("name")
        assert name not in props, f"{name} twice"
        props[name] = p.findtext("value")
    return props


def test_capacity_scheduler_xml(cfg):
    props = yarn_props(yarn.capacity_scheduler_xml(cfg))
    cs = "yarn.scheduler.capacity."

    def children(q):
        return props[f"{cs}{q}.queues"].split(",")

    assert children("root") == ["users", "default"]
    for parent in ("root", "root.users"):  # capacities at each level sum to exactly 100
        assert sum(Decimal(props[f"{cs}{parent}.{c}.capacity"]) for c in children(parent)) == 100
    assert props[f"{cs}root.users.capacity"] == "20.00"
    leaves = {c for c in children("root.users")} - {quotas.SPARE_QUEUE}
    leaf = {g: cfg.queue_for("-", g).rsplit(".", 1)[1] for g in GROUPS}
    leaf.update({u: u if u != "Jane.Doe" else cfg.queue_for(u, None).rsplit(".", 1)[1] for u in USERS})
    assert leaves == set(leaf.values())  # exactly the groups and users of the file
    share = 1000 * 0.2
    for name, (cores, _, members) in GROUPS.items():
        q = f"{cs}root.users.{leaf[name]}"
        assert set(props[f"{q}.acl_submit_applications"].split(",")) == set(members)
        assert Decimal(props[f"{q}.maximum-capacity"]) >= Decimal(sched_cores(cores) / share * 100)
        assert Decimal(props[f"{q}.maximum-capacity"]) >= Decimal(props[f"{q}.capacity"])
        assert float(props[f"{q}.user-limit-factor"]) >= 1
        assert props[f"{q}.acl_administer_queue"] == "root_admin"
    for name, (cores, _) in USERS.items():
        q = f"{cs}root.users.{leaf[name]}"
        assert props[f"{q}.acl_submit_applications"] == name
        assert Decimal(props[f"{q}.capacity"]) == Decimal(sched_cores(cores) / share * 100).quantize(Decimal("0.01"))
    assert props[f"{cs}root.acl_submit_applications"] == " "
    maps = props[f"{cs}queue-mappings"].split(",")
    assert {m.split(":")[1] for m in maps if m.startswith("u:")} == set(USERS)
    assert {m.split(":", 2)[2] for m in maps if m.startswith("g:")} == {f"root.users.{leaf[g]}" for g in GROUPS}
    assert props[f"{cs}queue-mappings-override.enable"] == "false"


def test_largest_remainder_is_exact():
    out = yarn.largest_remainder({"a": 1, "b": 1, "c": 1})
    assert sum(out.values()) == 10000 and sorted(out.values()) == [3333, 3333, 3334]
    assert yarn.largest_remainder({"a": 0, "b": 0}) == {"a": 5000, "b": 5000}


def test_overcommitted_quotas_scale_to_100(cfg):
    small = parse_config({**DOC, "capacity": {"cores": 10, "user_fraction": 1.0}})
    props = yarn_props(yarn.capacity_scheduler_xml(small))
    kids = props["yarn.scheduler.capacity.root.users.queues"].split(",")
    assert quotas.SPARE_QUEUE not in kids
    assert sum(Decimal(props[f"yarn.scheduler.capacity.root.users.{k}.capacity"]) for k in kids) == 100
    for k in kids:
        assert Decimal(props[f"yarn.scheduler.capacity.root.users.{k}.maximum-capacity"]) <= 100


# ------------------------------------------------------------------------------------------------ YuniKorn


def test_yunikorn_queues(cfg):
    doc = yaml.safe_load(kubernetes.yunikorn_queues_yaml(cfg))
    (part,) = doc["partitions"]
    assert part["name"] == "default"
    assert [r["name"] for r in part["placementrules"]] == ["provided", "user"]
    (root,) = part["queues"]
    (users,) = root["queues"]
    assert users["name"] == "users" and users["parent"] is True
    queues = {q["name"]: q for q in users["queues"]}
    assert all(YK_QUEUE.match(n) for n in queues)
    assert set(queues) == {cfg.queue_for(n, None).rsplit(".", 1)[1] for n in [*GROUPS, *USERS]}
    for g, (cores, _, members) in GROUPS.items():
        q = queues[cfg.queue_for("-", g).rsplit(".", 1)[1]]
        assert q["resources"]["max"] == {"vcore": sched_cores(cores), "memory": f"{sched_cores(cores) * 2}Gi"}
        assert set(q["submitacl"].split(",")) == set(members)
        (limit,) = q["limits"]
        assert limit["maxresources"]["vcore"] == sched_cores(cores)
    limits = {tuple(lim["users"]): lim["maxresources"]["vcore"] for lim in users["limits"]}
    assert limits == {**{(u,): sched_cores(c) for u, (c, _) in USERS.items()}, ("*",): sched_cores(4)}
    assert users["limits"][-1]["users"] == ["*"]  # the wildcard comes last


# ------------------------------------------------------------------------------------------------ Kubernetes


def test_kubernetes_manifests_validate(cfg):
    kv = pytest.importorskip("kubernetes_validate")
    docs = list(yaml.safe_load_all(kubernetes.kubernetes_yaml(cfg)))
    assert docs == kubernetes.kubernetes_manifests(cfg)
    for d in docs:
        kv.validate(d, kv.latest_version(), strict=True)
        assert DNS_LABEL.match(d["metadata"]["name"])
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    expected = ({kubernetes.namespace_for(cfg, None, g) for g in GROUPS}
                | {kubernetes.namespace_for(cfg, u, None) for u in USERS})
    assert namespaces == expected and len(namespaces) == len(GROUPS) + len(USERS)
    quotas = {d["metadata"]["namespace"]: d["spec"]["hard"] for d in docs if d["kind"] == "ResourceQuota"}
    for g, (cores, _, _) in GROUPS.items():
        hard = quotas[kubernetes.namespace_for(cfg, None, g)]
        n = sched_cores(cores)
        assert hard == {"requests.cpu": str(n), "limits.cpu": str(n), "requests.memory": f"{2 * n}Gi",
                        "limits.memory": f"{2 * n}Gi", "pods": str(n)}
    for u, (cores, _) in USERS.items():
        assert quotas[kubernetes.namespace_for(cfg, u, None)]["limits.cpu"] == str(sched_cores(cores))


def test_kubernetes_validate_catches_a_broken_manifest():
    kv = pytest.importorskip("kubernetes_validate")
    with pytest.raises(kv.ValidationError):
        kv.validate({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
                     "spec": {"hard": {"cpu": {"not": "a quantity"}}}}, kv.latest_version(), strict=True)


# ------------------------------------------------------------------------------------------------ Slurm


def test_slurm_commands(cfg):
    text = slurm.slurm_commands(cfg)
    bash = shutil.which("bash")
    assert subprocess.run([bash, "-n"], input=text, text=True).returncode == 0
    accounts, budgets, users = set(), {}, {}
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("set "):
            continue
        assert line.startswith("sacctmgr -i "), line
        m = re.search(r"modify account where name=(\S+) set GrpTRES=cpu=(\d+) GrpTRESMins=cpu=(\d+)$", line)
        if m:
            accounts.add(m.group(1))
            budgets[m.group(1)] = (int(m.group(2)), int(m.group(3)))
        m = re.search(r"modify user where name=(\S+) account=(\S+) set MaxTRES=cpu=(\d+)$", line)
        if m:
            users[(m.group(1).strip("'"), m.group(2))] = int(m.group(3))
    assert all(SLURM_ACCOUNT.match(a) for a in accounts)
    expected = ({slurm.SLURM_ROOT} | {naming.slurm_account(None, g) for g in GROUPS}
                | {naming.slurm_account(u, None) for u in USERS})
    assert accounts == expected
    assert budgets[slurm.SLURM_ROOT] == (200, round(1000 * 0.2 * 730 * 60))
    for g, (cores, ch, members) in GROUPS.items():
        assert budgets[naming.slurm_account(None, g)] == (cores, round(ch * 60))
        for m in members:
            assert users[(m, naming.slurm_account(None, g))] == min(cores, USERS[m][0])
    for u, (cores, ch) in USERS.items():
        assert budgets[naming.slurm_account(u, None)] == (cores, round(ch * 60))
        assert users[(u, naming.slurm_account(u, None))] == cores
    assert "add coordinator account=userbatch names=root_admin" in text


@pytest.mark.parametrize("kind,kw", [
    ("template", {"template": "crossmatch", "params": ["left=dp1.object", "output=u_me.x; rm -rf /"]}),
    ("template", {"template": "periodogram", "mode": "spark-submit", "params": []}),
    ("bps", {"bps_file": "my submit.yaml"}),
])
def test_sbatch_scripts_parse(kind, kw):
    text = slurm.sbatch_script(kind, account="g_cosmo", cores=4, hours=1.5, **kw)
    assert subprocess.run([shutil.which("bash"), "-n"], input=text, text=True).returncode == 0
    assert "#SBATCH --account=g_cosmo" in text and "#SBATCH --cpus-per-task=4" in text
    assert "#SBATCH --time=01:30:00" in text
    if kind == "template":
        assert 'local[${SLURM_CPUS_PER_TASK}]' in text
        for param in kw["params"]:
            assert f"-p {__import__('shlex').quote(param)}" in text


@pytest.mark.parametrize("kind,kw,match", [
    ("shell", {}, "template"),
    ("template", {"template": "../x"}, "template name"),
    ("template", {"template": "crossmatch", "params": ["novalue"]}, "KEY=VALUE"),
    ("bps", {}, "submit YAML"),
    ("template", {"template": "crossmatch", "cores": 0}, "cores"),
])
def test_sbatch_bad_input(kind, kw, match):
    kw = {"account": "u_me", **kw}
    with pytest.raises(UserbatchError, match=match):
        slurm.sbatch_script(kind, **kw)
    with pytest.raises(UserbatchError, match="account"):
        slurm.sbatch_script("bps", bps_file="x.yaml", account="G Cosmo")


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("change,match", [
    ({"users": {"o'brien": {"core_hours": 1, "max_cores": 1}}}, "login name"),
    ({"groups": {"alice": {"members": []}}, "users": {"alice": {"core_hours": 1, "max_cores": 1}}}, "share"),
    ({"groups": {"unallocated": {"members": []}}}, "reserved"),
    ({"runs": {"queue_prefix": "root.a.b"}}, "queue_prefix"),
])
def test_bad_quota_files(change, match):
    cfg = parse_config({**DOC, **change})
    with pytest.raises(UserbatchError, match=match):
        render.render(cfg, "all")


def test_unknown_target(cfg):
    with pytest.raises(UserbatchError, match="target"):
        render.render(cfg, "mesos")


# ------------------------------------------------------------------------------------------------ CLI + deploy/


def test_cli_render_and_sbatch(tmp_path):
    from userbatch.cli import main

    conf = tmp_path / "f.yaml"
    conf.write_text(yaml.safe_dump(DOC))
    r = CliRunner().invoke(main, ["deploy", "render", "--output", str(tmp_path / "out"), "--config", str(conf)])
    assert r.exit_code == 0, r.output
    assert sorted(Path(p).name for p in r.output.split()) == sorted(render.FILES.values())
    yarn_props((tmp_path / "out" / "capacity-scheduler.xml").read_text())
    r = CliRunner().invoke(main, ["deploy", "sbatch", "crossmatch", "-p", "left=dp1.object", "--user", "alice",
                                  "--group", "sn_ia", "--config", str(conf)])
    assert r.exit_code == 0, r.output
    assert "#SBATCH --account=g_sn_ia" in r.output
    r = CliRunner().invoke(main, ["deploy", "sbatch", "--config", str(conf)])
    assert r.exit_code == 2 and "TEMPLATE or --bps" in r.output


def test_committed_examples_are_fresh():
    fresh = render.deploy_examples(load_config(ROOT / "conf" / "facility.yaml"))
    for path, text in fresh.items():
        committed = ROOT / "deploy" / path
        assert committed.is_file(), f"deploy/{path} missing: see deploy/README.md to render it"
        assert committed.read_text() == text, f"deploy/{path} is stale: render it again (deploy/README.md)"
