"""deploy/: the container image definition, the facility's Kubernetes manifests, the Spark-on-Kubernetes
templates and the YARN guide, checked without a cluster or a Docker engine: every YAML parses, the core kinds
validate against the Kubernetes OpenAPI schemas (kubernetes-validate, offline, strict), the kustomization lists
the files present, the generated Spark files equal a fresh render, the names in the manifests are the names the
code uses, and the Dockerfile and its entrypoint are structurally sound."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from userbatch.cluster import kubernetes, render
from userbatch.cluster.kubernetes import (SPARK_CLUSTER_ROLE, USER_INFO_ANNOTATION, KubernetesRunner, spark_application,
                                          yunikorn_user_info)
from userbatch.cluster.render import deploy_spark_examples
from userbatch.facility.config import load_config, parse_config
from userbatch.cluster.base import DRIVER, SubmitSpec
from userbatch.cluster.registry import runner_for

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
FACILITY = K8S / "facility"
SPARK = K8S / "spark"
# kinds whose schemas kubernetes-validate has (CRDs such as SparkApplication and Kustomization are checked by hand)
CORE_KINDS = {"Namespace", "Secret", "ConfigMap", "Service", "StatefulSet", "Deployment", "ServiceAccount",
              "ClusterRole", "RoleBinding", "PersistentVolume", "PersistentVolumeClaim", "ResourceQuota"}
# the environment variables the code reads (python/userbatch/config.py, facility/config.py, ml/tracking.py)
CODE_ENV = {"USERBATCH_DB_URL", "USERBATCH_WAREHOUSE", "USERBATCH_HOME", "USERBATCH_FACILITY_CONFIG",
            "MLFLOW_TRACKING_URI"}
IMAGE = "registry.example.org/userbatch/spark"


def docs_of(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


#: YAML under deploy/kubernetes that is a scheduler's configuration, not Kubernetes objects
NOT_OBJECTS = {"yunikorn-queues.yaml"}


def all_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(K8S.rglob("*.yaml")) if p.name not in NOT_OBJECTS for d in docs_of(p)]


def facility_cfg():
    cm = next(d for d in docs_of(FACILITY / "configmap.yaml") if d["kind"] == "ConfigMap")
    return parse_config(yaml.safe_load(cm["data"]["facility.yaml"]), "configmap.yaml")


def containers(doc: dict) -> list[dict]:
    return doc["spec"]["template"]["spec"]["containers"] if doc["kind"] in ("Deployment", "StatefulSet") else []


@pytest.fixture(scope="module")
def kv():
    return pytest.importorskip("kubernetes_validate")


# ------------------------------------------------------------------------------------------------ parsing, schemas


def test_every_yaml_parses_and_has_a_kind():
    found = all_docs()
    assert {p.parent.name for p, _ in found} >= {"facility", "spark", "kubernetes"}
    for path, doc in found:
        assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), path
    for name in NOT_OBJECTS:
        assert docs_of(K8S / name)[0]["partitions"]


def test_core_kinds_validate_strictly(kv):
    checked = 0
    for path, doc in all_docs():
        if doc["kind"] in CORE_KINDS:
            try:
                kv.validate(doc, kv.latest_version(), strict=True)
            except kv.ValidationError as e:  # pragma: no cover - the message names the field
                pytest.fail(f"{path.relative_to(ROOT)} {doc['kind']} {doc['metadata'].get('name')}: {e}")
            checked += 1
        else:
            assert doc["kind"] in ("Kustomization", "SparkApplication"), (path, doc["kind"])
    assert checked >= 25


def test_kustomization_lists_exactly_the_facility_files():
    kust = docs_of(FACILITY / "kustomization.yaml")[0]
    assert kust["kind"] == "Kustomization" and kust["namespace"] == "userbatch"
    present = {p.name for p in FACILITY.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kust["resources"]) == sorted(present) and len(kust["resources"]) == len(present)
    assert [i["name"] for i in kust["images"]] == [IMAGE]


def test_facility_objects_live_in_the_facility_namespace():
    for path in FACILITY.glob("*.yaml"):
        for doc in docs_of(path):
            if doc["kind"] in ("Namespace", "ClusterRole", "PersistentVolume", "Kustomization"):
                continue
            assert doc["metadata"]["namespace"] == "userbatch", (path.name, doc["kind"])


# ------------------------------------------------------------------------------------------------ the facility


def test_the_configmap_facility_config_parses_with_a_kubernetes_runner():
    cfg = facility_cfg()
    assert cfg.runner["kind"] == "kubernetes" and cfg.runner["launchable"] is True
    runner = runner_for(**cfg.runner)
    assert isinstance(runner, KubernetesRunner) and runner.launchable and runner.scheduler == "yunikorn"
    assert cfg.mlflow["tracking_uri"] == "http://mlflow.userbatch.svc:5000"
    # the quota side is the default file's, so the rendered scheduler configs in deploy/ hold for this config
    base = load_config(ROOT / "conf" / "facility.yaml")
    for field in ("total_cores", "user_fraction", "users", "groups", "max_concurrent_runs", "queue_prefix",
                  "memory_per_core_gb"):
        assert getattr(cfg, field) == getattr(base, field), field
    assert kubernetes.kubernetes_yaml(cfg).split("\n", 1)[1] == (K8S / "quotas.yaml").read_text().split("\n", 1)[1]


def workloads() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for p in FACILITY.glob("*.yaml") for d in docs_of(p)
            if d["kind"] in ("Deployment", "StatefulSet")}


def test_the_workloads():
    w = workloads()
    assert set(w) == {"postgres", "mlflow", "userbatch-api", "userbatch-worker"}
    (api,), (worker,), (mlflow,) = (containers(w[n]) for n in ("userbatch-api", "userbatch-worker", "mlflow"))
    assert api["args"][:3] == ["userbatch", "serve", "--no-worker"] and "0.0.0.0" in api["args"]
    assert worker["args"] == ["userbatch", "worker"]
    assert w["userbatch-worker"]["spec"]["replicas"] == 1
    assert w["userbatch-worker"]["spec"]["strategy"]["type"] == "Recreate"
    assert w["userbatch-worker"]["spec"]["template"]["spec"]["serviceAccountName"] == "userbatch-worker"
    args = mlflow["args"]
    assert args[:2] == ["mlflow", "server"] and args[args.index("--artifacts-destination") + 1] == "/mlartifacts"
    assert args[args.index("--host") + 1] == "0.0.0.0" and "--backend-store-uri" in args
    for name, doc in w.items():
        for c in containers(doc):
            assert c.get("resources", {}).get("requests") and c["resources"].get("limits"), name
            assert c.get("livenessProbe") or c.get("readinessProbe"), name
            if name != "postgres":
                assert c["image"].startswith(IMAGE + ":"), name


def env_names(c: dict) -> set[str]:
    return {e["name"] for e in c.get("env", [])}


def test_env_names_are_the_ones_the_code_reads():
    from userbatch.config import ENV_NAMES

    # the settings object reads its variables by name (ENV_NAMES, checked complete in test_config); a few more
    # are names the facility passes to child processes
    source = "\n".join(p.read_text() for p in (ROOT / "python" / "userbatch").rglob("*.py"))
    known = set(ENV_NAMES) | {n for n in CODE_ENV if f'"{n}"' in source}
    for name in CODE_ENV:
        assert name in known, name
    w = workloads()
    mounts = {}
    for n in ("userbatch-api", "userbatch-worker"):
        (c,) = containers(w[n])
        assert env_names(c) == CODE_ENV, n
        env = {e["name"]: e for e in c["env"]}
        assert env["USERBATCH_DB_URL"]["valueFrom"]["secretKeyRef"] == {"name": "userbatch-db", "key": "db-url"}
        assert env["USERBATCH_FACILITY_CONFIG"]["value"] == "/etc/userbatch/facility.yaml"
        mounts[n] = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/etc/userbatch", env["USERBATCH_HOME"]["value"], env["USERBATCH_WAREHOUSE"]["value"]} <= mounts[n]
    # every USERBATCH_* / MLFLOW_* variable any manifest sets is read somewhere in the code
    for _, doc in all_docs():
        for c in containers(doc):
            for name in env_names(c):
                if name.startswith(("USERBATCH_", "MLFLOW_")) and name != "MLFLOW_BACKEND_STORE_URI":
                    assert name in ENV_NAMES or f'"{name}"' in source, name
    # the runner mounts the shared volumes where the facility pods have them
    cfg = facility_cfg()
    (c,) = containers(w["userbatch-worker"])
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert cfg.runner["home_mount"] == env["USERBATCH_HOME"]
    assert cfg.runner["warehouse_mount"] == env["USERBATCH_WAREHOUSE"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in w["userbatch-worker"]["spec"]["template"]["spec"]
              ["volumes"] if "persistentVolumeClaim" in v}
    assert {cfg.runner["home_pvc"], cfg.runner["warehouse_pvc"]} == claims
    secret = next(d for d in docs_of(FACILITY / "secrets.yaml") if d["kind"] == "Secret")
    ref_secret, ref_key = cfg.runner["secret_env"]["USERBATCH_DB_URL"].split(":")
    assert secret["metadata"]["name"] == ref_secret and ref_key in secret["stringData"]


def test_worker_rbac_covers_the_run_namespaces():
    cfg = facility_cfg()
    role = next(d for d in docs_of(FACILITY / "rbac.yaml") if d["kind"] == "ClusterRole")
    assert role["metadata"]["name"] == SPARK_CLUSTER_ROLE
    core = next(r for r in role["rules"] if r["apiGroups"] == [""] and "pods" in r["resources"])
    assert {"create", "delete", "watch"} <= set(core["verbs"]) and "configmaps" in core["resources"]
    bound = {d["metadata"]["namespace"] for d in docs_of(SPARK / "run-namespaces.yaml") if d["kind"] == "RoleBinding"}
    quota_ns = {d["metadata"]["name"] for d in docs_of(K8S / "quotas.yaml") if d["kind"] == "Namespace"}
    assert bound == quota_ns == {kubernetes.namespace_for(cfg, "demo", "dp1_team"),
                                 kubernetes.namespace_for(cfg, "demo", None),
                                 kubernetes.namespace_for(cfg, "admin", None)}


# ------------------------------------------------------------------------------------------------ Spark on k8s


def test_generated_spark_files_equal_a_fresh_render():
    for name, text in deploy_spark_examples(facility_cfg()).items():
        assert (SPARK / name).read_text() == text, f"deploy/kubernetes/spark/{name} is stale: render it again"


def check_spark_application(app: dict) -> None:
    assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2" and app["kind"] == "SparkApplication"
    assert app["metadata"]["name"] and app["metadata"]["namespace"]
    spec = app["spec"]
    assert spec["type"] == "Python" and spec["pythonVersion"] == "3" and spec["mode"] == "cluster"
    assert spec["image"] and spec["mainApplicationFile"].startswith("local:///")
    assert re.match(r"^4\.3\.\d+$", spec["sparkVersion"])
    assert spec["batchScheduler"] == "yunikorn" and spec["batchSchedulerOptions"]["queue"].startswith("root.")
    assert spec["restartPolicy"] == {"type": "Never"} and spec["dynamicAllocation"] == {"enabled": False}
    for role in ("driver", "executor"):
        assert spec[role]["cores"] >= 1 and spec[role]["memory"]
        assert spec[role]["labels"]["queue"] == spec["batchSchedulerOptions"]["queue"]
        assert USER_INFO_ANNOTATION in spec[role]["annotations"]
    assert spec["executor"]["instances"] >= 1
    assert all(isinstance(v, str) for v in spec["sparkConf"].values())


def test_the_sparkapplication_template():
    (app,) = docs_of(SPARK / "sparkapplication.yaml")
    check_spark_application(app)
    spec = app["spec"]
    assert spec["mainApplicationFile"] == "local:///opt/userbatch/python/userbatch/facility/driver.py"
    assert spec["executor"]["instances"] * spec["executor"]["cores"] == 8
    assert spec["batchSchedulerOptions"]["queue"] == "root.users.dp1_team"
    assert app["metadata"]["namespace"] == "ub-dp1-team"


@pytest.mark.parametrize("user,group,cores,executor_cores", [("alice", "dp1_team", 12, 4), ("bob", None, 3, 2),
                                                             ("carol", "Team.X", 5, 4)])
def test_rendered_spark_application_matches_the_runner(user, group, cores, executor_cores):
    cfg = facility_cfg()
    runner = runner_for(**cfg.runner)
    spec = SubmitSpec(run_id="r1", run_dir="/var/lib/userbatch/home/runs/r1", user=user, group=group,
                      queue=cfg.queue_for(user, group), cores=cores, executor_cores=executor_cores,
                      env={"USERBATCH_HOME": "/var/lib/userbatch/home", "USERBATCH_DB_URL": "ignored"})
    app = spark_application(spec, runner)
    check_spark_application(app)
    body = app["spec"]
    assert body["executor"]["instances"] * body["executor"]["cores"] == cores
    assert app["metadata"]["namespace"] == runner.namespace(spec) == kubernetes.namespace_for(cfg, user, group)
    assert body["batchSchedulerOptions"]["queue"] == runner.queue(spec) == cfg.queue_for(user, group)
    assert body["arguments"] == [spec.run_dir] and body["mainApplicationFile"].endswith("/" + DRIVER.name)
    # the same identity and sizes as the spark-submit path
    conf = runner.conf(spec)
    assert conf["spark.executor.instances"] == str(body["executor"]["instances"])
    assert conf["spark.executor.cores"] == str(body["executor"]["cores"])
    assert body["executor"]["memoryOverhead"] == conf["spark.executor.memoryOverhead"]
    assert body["driver"]["podName"] == conf["spark.kubernetes.driver.pod.name"]
    assert body["driver"]["serviceAccount"] == conf["spark.kubernetes.authenticate.driver.serviceAccountName"]
    for role in ("driver", "executor"):
        assert body[role]["annotations"][USER_INFO_ANNOTATION] == yunikorn_user_info(user, group)
        for key, value in runner.labels(spec).items():
            assert body[role]["labels"][key] == value == conf[f"spark.kubernetes.{role}.label.{key}"]
        env = {e["name"]: e for e in body[role]["env"]}
        assert env["USERBATCH_DB_URL"]["valueFrom"]["secretKeyRef"] == {"name": "userbatch-db", "key": "db-url"}
        assert env["USERBATCH_HOME"]["value"] == "/var/lib/userbatch/home"
    assert not any(k.startswith(("spark.kubernetes.driverEnv.", "spark.executorEnv."))
                   or "podTemplateFile" in k for k in body["sparkConf"])
    assert "ignored" not in yaml.safe_dump(app)  # the secret's variable is never written as a value


def test_user_info_annotation_has_one_source():
    cfg = facility_cfg()
    runner = runner_for(**cfg.runner)
    for user, group in (("demo", "dp1_team"), ("demo", None), ("eve", "a.b")):
        spec = SubmitSpec(run_id="x", run_dir="/r", user=user, group=group, queue=cfg.queue_for(user, group))
        settings = render.submission_settings(cfg, user, group)
        conf = runner.conf(spec)
        pod = runner.pod_template(spec, "executor")
        for role in ("driver", "executor"):
            key = f"spark.kubernetes.{role}.annotation.{USER_INFO_ANNOTATION}"
            assert settings[key] == conf[key] == pod["metadata"]["annotations"][USER_INFO_ANNOTATION]
        import json
        assert json.loads(conf[key]) == {"user": user, "groups": [cfg.queue_for(user, group).split(".")[-1]]
                                         if group else []}


def test_launchable_is_a_checked_runner_option():
    from userbatch.errors import UserbatchError

    assert runner_for("yarn", launchable=True).launchable and not runner_for("yarn").launchable
    with pytest.raises(UserbatchError, match="true or false"):
        runner_for("kubernetes", launchable="yes")


# ------------------------------------------------------------------------------------------------ the image


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    logical, out = "", []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        logical += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            op, _, rest = logical.strip().partition(" ")
            out.append((op.upper(), rest.strip()))
            logical = ""
    return out


def test_dockerfile_structure():
    ins = dockerfile_instructions()
    ops = [op for op, _ in ins]
    known = {"FROM", "RUN", "ENV", "WORKDIR", "COPY", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "ARG", "LABEL"}
    assert set(ops) <= known and ops[0] == "FROM" and "python:3.12" in ins[0][1]
    body = "\n".join(rest for _, rest in ins)
    assert "openjdk-17-jre-headless" in body and "pip install -e /opt/userbatch" in body
    assert "PYSPARK_PYTHON=" in body and "SPARK_HOME=" in body
    user = [rest for op, rest in ins if op == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "RUN")  # nothing runs as root after
    (entry,) = [rest for op, rest in ins if op == "ENTRYPOINT"]
    assert yaml.safe_load(entry) == ["/opt/entrypoint.sh"]
    # every COPY source exists in the build context (the repository root)
    for op, rest in ins:
        if op == "COPY":
            for src in rest.split()[:-1]:
                assert (ROOT / src).exists(), src
    # the image's project path is the one the SparkApplication's mainApplicationFile and the runner assume
    assert "WORKDIR /opt/userbatch" in "\n".join(f"{o} {r}" for o, r in ins)


def test_entrypoint_script():
    script = DEPLOY / "docker" / "entrypoint.sh"
    text = script.read_text()
    bash = shutil.which("bash")
    assert bash
    assert subprocess.run([bash, "-n", str(script)], capture_output=True).returncode == 0
    assert text.startswith("#!") and "driver)" in text and "executor)" in text
    assert "--deploy-mode client" in text and "KubernetesExecutorBackend" in text
    for var in ("SPARK_DRIVER_URL", "SPARK_EXECUTOR_ID", "SPARK_EXECUTOR_CORES", "SPARK_APPLICATION_ID",
                "SPARK_EXECUTOR_POD_IP", "SPARK_EXECUTOR_MEMORY", "SPARK_RESOURCE_PROFILE_ID"):
        assert var in text, var


def test_entrypoint_passes_other_commands_through(tmp_path):
    """Run the script with a stub tini: `userbatch ...` and other commands run unchanged; `executor` without the
    driver's variables stops with a message instead of starting a JVM."""
    stub = tmp_path / "tini"
    stub.write_text('#!/bin/sh\n[ "$1" = -s ] && shift; [ "$1" = -- ] && shift; echo "RUN $*"\n')
    stub.chmod(0o755)
    text = (DEPLOY / "docker" / "entrypoint.sh").read_text().replace("/usr/bin/tini", str(stub))
    script = tmp_path / "entrypoint.sh"
    script.write_text(text)
    env = {"PATH": "/usr/bin:/bin", "SPARK_HOME": "/opt/spark", "HOME": str(tmp_path)}
    out = subprocess.run(["bash", str(script), "userbatch", "worker"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "RUN userbatch worker", out.stderr
    out = subprocess.run(["bash", str(script), "driver", "--properties-file", "/p", "app.py"], capture_output=True,
                         text=True, env=env)
    assert out.stdout.startswith("RUN /opt/spark/bin/spark-submit --conf spark.driver.bindAddress=0.0.0.0 "
                                 "--deploy-mode client --properties-file /p app.py"), out.stderr
    out = subprocess.run(["bash", str(script), "executor"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "SPARK_DRIVER_URL" in out.stderr
    full = {**env, "SPARK_DRIVER_URL": "spark://d:7078", "SPARK_EXECUTOR_ID": "1", "SPARK_EXECUTOR_CORES": "4",
            "SPARK_APPLICATION_ID": "app", "SPARK_EXECUTOR_POD_IP": "10.0.0.2", "SPARK_EXECUTOR_MEMORY": "8g",
            "SPARK_JAVA_OPT_1": "-Db=2", "SPARK_JAVA_OPT_0": "-Da=1", "JAVA_HOME": "/opt/java"}
    out = subprocess.run(["bash", str(script), "executor"], capture_output=True, text=True, env=full)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("RUN /opt/java/bin/java -Da=1 -Db=2 -Xms8g -Xmx8g -cp ")
    assert "KubernetesExecutorBackend --driver-url spark://d:7078 --executor-id 1 --cores 4" in out.stdout


# ------------------------------------------------------------------------------------------------ docs


def test_yarn_guide_and_deploy_readme():
    guide = (DEPLOY / "yarn" / "README.md").read_text()
    for word in ("capacity-scheduler.xml", "yarn.acl.enable", "HADOOP_CONF_DIR", "kind: yarn", "root.users",
                 "spark.yarn.archive", "venv-pack"):
        assert word in guide, word
    readme = (DEPLOY / "README.md").read_text()
    for word in ("docker/", "kubernetes/facility", "kubernetes/spark", "yarn/README.md", "kubectl apply -k",
                 "userbatch submit"):
        assert word in readme, word
