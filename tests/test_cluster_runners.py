"""Runners rendered, not run: the exact spark-submit command lines of the local, standalone, YARN and Kubernetes
runners, queue and namespace derivation, environment propagation and the Kubernetes pod templates.

No cluster is reachable here, so the cluster runners are checked by what they render; one test hands the YARN
command line to the pyspark wheel's spark-submit with ``--version`` (it parses every option, then stops) to show
that Spark accepts its syntax.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from userbatch.errors import UserbatchError
from userbatch.cluster.kubernetes import KubernetesRunner
from userbatch.cluster.naming import dns_label, k8s_quantity, label_value, memory_mib
from userbatch.cluster.yarn import YarnRunner
from userbatch.cluster.base import DRIVER, SubmitSpec
from userbatch.cluster.local import LocalRunner
from userbatch.cluster.registry import runner_for
from userbatch.cluster.standalone import StandaloneRunner

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def sample(**over) -> SubmitSpec:
    base = {"run_id": "abc123def456", "run_dir": "/ub/home/runs/abc123def456", "user": "alice",
            "group": "dp1_team", "queue": "root.users.dp1_team", "cores": 4, "executor_cores": 2,
            "executor_memory": "2g", "driver_memory": "1g",
            "env": {"USERBATCH_HOME": "/ub/home", "USERBATCH_RUN_ID": "abc123def456",
                    "USERBATCH_WAREHOUSE": "/ub/warehouse"}}
    base.update(over)
    return SubmitSpec(**base)


def conf_of(argv: list[str]) -> dict[str, str]:
    out = {}
    for i, a in enumerate(argv):
        if a == "--conf":
            key, value = argv[i + 1].split("=", 1)
            assert key not in out, f"{key} given twice"
            out[key] = value
    return out


def flags_of(argv: list[str]) -> list[str]:
    """The options before the first --conf (the master arguments)."""
    return argv[1:argv.index("--conf")]


def quantity_mib(q: str) -> int:
    m = re.fullmatch(r"(\d+)(Mi|Gi)", q)
    assert m, q
    return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)


# ------------------------------------------------------------------------------------------------ local, standalone


def test_local_runner_argv():
    spec = sample(cores=3)
    argv = LocalRunner().argv(spec)
    assert argv[:3] == ["spark-submit", "--master", "local[3]"]
    assert argv[-2:] == [str(DRIVER), spec.run_dir]
    conf = conf_of(argv)
    assert conf["spark.app.name"] == "userbatch-abc123def456"
    assert conf["spark.eventLog.dir"] == "file:///ub/home/runs/abc123def456/eventlog"
    assert conf["spark.driver.memory"] == "1g"


def test_standalone_runner_argv_and_master_check():
    spec = sample(cores=6, executor_cores=4)
    argv = StandaloneRunner("spark://head:7077").argv(spec)
    assert flags_of(argv) == ["--master", "spark://head:7077", "--deploy-mode", "client",
                              "--total-executor-cores", "6", "--executor-cores", "3", "--executor-memory", "2g"]
    assert argv[-2:] == [str(DRIVER), spec.run_dir]
    # executors x cores per executor is exactly the cores reserved, for any request
    for cores in range(1, 33):
        for per in (1, 2, 3, 4, 8):
            s = sample(cores=cores, executor_cores=per)
            assert s.num_executors * s.cores_per_executor == cores and s.cores_per_executor <= per
    small = StandaloneRunner("spark://head:7077").argv(sample(cores=1, executor_cores=4))
    assert flags_of(small)[flags_of(small).index("--executor-cores") + 1] == "1"
    for bad in ("local[2]", "yarn", "k8s://https://x", ""):
        with pytest.raises(UserbatchError, match="spark://"):
            StandaloneRunner(bad)
    with pytest.raises(UserbatchError, match="spark://"):
        runner_for("standalone", master="http://head:8080")


# ------------------------------------------------------------------------------------------------ YARN


def test_yarn_argv_is_exactly_this():
    spec = sample()
    assert YarnRunner().argv(spec) == [
        "spark-submit", "--master", "yarn", "--deploy-mode", "cluster", "--queue", "root.users.dp1_team",
        "--num-executors", "2", "--executor-cores", "2", "--executor-memory", "2g", "--driver-memory", "1g",
        "--conf", "spark.app.name=userbatch-abc123def456",
        "--conf", "spark.driver.extraJavaOptions=-Dlog4j2.level=warn",
        "--conf", "spark.driver.memory=1g",
        "--conf", "spark.dynamicAllocation.enabled=false",
        "--conf", "spark.eventLog.compress=false",
        "--conf", "spark.eventLog.dir=file:///ub/home/runs/abc123def456/eventlog",
        "--conf", "spark.eventLog.enabled=true",
        "--conf", "spark.eventLog.rolling.enabled=false",
        "--conf", "spark.executorEnv.USERBATCH_HOME=/ub/home",
        "--conf", "spark.executorEnv.USERBATCH_RUN_ID=abc123def456",
        "--conf", "spark.executorEnv.USERBATCH_WAREHOUSE=/ub/warehouse",
        "--conf", "spark.pyspark.driver.python=python3",
        "--conf", "spark.pyspark.python=python3",
        "--conf", "spark.ui.enabled=false",
        "--conf", "spark.ui.showConsoleProgress=false",
        "--conf", "spark.yarn.appMasterEnv.USERBATCH_HOME=/ub/home",
        "--conf", "spark.yarn.appMasterEnv.USERBATCH_RUN_ID=abc123def456",
        "--conf", "spark.yarn.appMasterEnv.USERBATCH_WAREHOUSE=/ub/warehouse",
        "--conf", "spark.yarn.maxAppAttempts=1",
        "--conf", "spark.yarn.queue=root.users.dp1_team",
        "--conf", "spark.yarn.submit.waitAppCompletion=true",
        "--conf", "spark.yarn.tags=userbatch,user:alice,group:dp1_team,run:abc123def456",
        str(DRIVER), "/ub/home/runs/abc123def456",
    ]


def test_yarn_queue_tags_and_sizes():
    spec = sample(queue=None, group=None, cores=1, executor_cores=4)
    argv = YarnRunner().argv(spec)
    flags = flags_of(argv)
    assert flags[flags.index("--queue") + 1] == "default"
    assert flags[flags.index("--num-executors") + 1] == "1"
    assert flags[flags.index("--executor-cores") + 1] == "1"  # never more than the run's cores
    conf = conf_of(argv)
    assert conf["spark.yarn.queue"] == "default"
    assert conf["spark.yarn.tags"] == "userbatch,user:alice,run:abc123def456"  # no group: no group tag


def test_yarn_facility_settings_win_over_user_conf():
    spec = sample(spark_conf={"spark.yarn.queue": "root.prod", "spark.dynamicAllocation.enabled": "true",
                              "spark.yarn.submit.waitAppCompletion": "false", "spark.sql.shuffle.partitions": "7",
                              "spark.yarn.appMasterEnv.USERBATCH_RUN_ID": "someone-else"})
    conf = conf_of(YarnRunner().argv(spec))
    assert conf["spark.yarn.queue"] == "root.users.dp1_team"
    assert conf["spark.dynamicAllocation.enabled"] == "false"
    assert conf["spark.yarn.submit.waitAppCompletion"] == "true"
    assert conf["spark.yarn.appMasterEnv.USERBATCH_RUN_ID"] == "abc123def456"
    assert conf["spark.sql.shuffle.partitions"] == "7"  # the user's own tuning passes through


def test_yarn_env_reaches_driver_and_executors():
    spec = sample(env={"USERBATCH_DB_URL": "postgresql+psycopg2://db/ub", "PYTHONUNBUFFERED": "1"})
    conf = conf_of(YarnRunner().argv(spec))
    for key, value in spec.env.items():
        assert conf[f"spark.yarn.appMasterEnv.{key}"] == value
        assert conf[f"spark.executorEnv.{key}"] == value


def test_yarn_archives_python_and_client_mode():
    runner = YarnRunner(archives="hdfs:///envs/ub.tar.gz#environment, hdfs:///data/ref.zip",
                        spark_home="/opt/spark")
    argv = runner.argv(sample(), runner.submit_command)
    assert argv[0] == "/opt/spark/bin/spark-submit"
    flags = flags_of(argv)
    assert flags[-2:] == ["--archives", "hdfs:///envs/ub.tar.gz#environment,hdfs:///data/ref.zip"]
    conf = conf_of(argv)
    assert conf["spark.pyspark.python"] == conf["spark.pyspark.driver.python"] == "./environment/bin/python"
    client = conf_of(YarnRunner(deploy_mode="client", archives=["a.tgz#env"]).argv(sample()))
    assert client["spark.pyspark.python"] == "./env/bin/python"
    assert client["spark.pyspark.driver.python"] == sys.executable  # the driver runs here in client mode
    with pytest.raises(UserbatchError, match="cluster or client"):
        YarnRunner(deploy_mode="yarn-cluster")
    assert YarnRunner().cancel_argv("application_1_0001") == ["yarn", "application", "-kill", "application_1_0001"]


def _spark_submit() -> str | None:
    exe = Path(sys.executable).with_name("spark-submit")
    return str(exe) if exe.exists() and shutil.which("java") else None


@pytest.mark.skipif(_spark_submit() is None, reason="needs the pyspark wheel's spark-submit and java")
def test_spark_submit_accepts_the_yarn_command_line(tmp_path):
    argv = YarnRunner(archives="hdfs:///envs/ub.tar.gz#environment").argv(sample(), _spark_submit())
    # --version just before the application: spark-submit parses every option before it (an unknown option or
    # a --conf without '=' exits 1 — checked by hand, not here, to keep this fast), prints its version and stops
    # before it needs a cluster
    checked = [*argv[:-2], "--version", *argv[-2:]]
    env = {k: v for k, v in os.environ.items() if k != "SPARK_HOME"}
    env.update(PYSPARK_PYTHON=sys.executable, JAVA_TOOL_OPTIONS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
    done = subprocess.run(checked, check=False, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "version 4." in (done.stdout + done.stderr)


# ------------------------------------------------------------------------------------------------ Kubernetes


def test_kubernetes_master_and_key_settings():
    spec = sample()
    argv = KubernetesRunner().argv(spec)
    assert flags_of(argv) == ["--master", "k8s://https://kubernetes.default.svc", "--deploy-mode", "cluster"]
    assert argv[-2:] == [str(DRIVER), spec.run_dir]
    conf = conf_of(argv)
    expected = {
        "spark.kubernetes.namespace": "ub-dp1-team",
        "spark.kubernetes.container.image": "userbatch/spark:latest",
        "spark.kubernetes.authenticate.driver.serviceAccountName": "spark",
        "spark.kubernetes.scheduler.name": "yunikorn",
        "spark.kubernetes.submission.waitAppCompletion": "true",
        "spark.dynamicAllocation.enabled": "false",
        "spark.executor.instances": "2",
        "spark.executor.cores": "2",
        "spark.kubernetes.executor.limit.cores": "2",
        "spark.executor.memory": "2g",
        "spark.executor.memoryOverhead": "384m",
        "spark.driver.memory": "1g",
        "spark.kubernetes.driver.pod.name": "userbatch-abc123def456-driver",
        "spark.kubernetes.executor.podNamePrefix": "userbatch-abc123def456",
        "spark.kubernetes.driver.podTemplateFile": "/ub/home/runs/abc123def456/pod-driver.yaml",
        "spark.kubernetes.executor.podTemplateFile": "/ub/home/runs/abc123def456/pod-executor.yaml",
        "spark.kubernetes.file.upload.path": "file:///ub/home/runs/abc123def456/upload",
        "spark.eventLog.dir": "file:///ub/home/runs/abc123def456/eventlog",
    }
    assert {k: conf.get(k) for k in expected} == expected
    for role in ("driver", "executor"):
        assert conf[f"spark.kubernetes.{role}.label.queue"] == "root.users.dp1_team"
        assert conf[f"spark.kubernetes.{role}.label.applicationId"] == "userbatch-abc123def456"
        assert conf[f"spark.kubernetes.{role}.label.userbatch/run-id"] == "abc123def456"
        assert conf[f"spark.kubernetes.{role}.label.userbatch/user"] == "alice"
        assert conf[f"spark.kubernetes.{role}.label.userbatch/group"] == "dp1_team"
    custom = KubernetesRunner(api_server="https://k8s.example.org:6443/", namespace_prefix="lsst-",
                              image="reg/ub:1", scheduler=None, upload_path="s3a://ub/upload")
    conf = conf_of(custom.argv(spec))
    assert flags_of(custom.argv(spec))[1] == "k8s://https://k8s.example.org:6443"
    assert conf["spark.kubernetes.namespace"] == "lsst-dp1-team"
    assert conf["spark.kubernetes.file.upload.path"] == "s3a://ub/upload"
    assert "spark.kubernetes.scheduler.name" not in conf
    with pytest.raises(UserbatchError, match="http"):
        KubernetesRunner(api_server="kubernetes.default.svc")


def test_kubernetes_queue_and_namespace_without_group():
    spec = sample(group=None, queue=None, user="bob")
    runner = KubernetesRunner()
    assert runner.namespace(spec) == "ub-user-bob"
    assert runner.queue(spec) == "root.users"
    assert runner.queue(sample(queue=None)) == "root.dp1_team"
    labels = runner.labels(spec)
    assert labels["queue"] == "root.users" and "userbatch/group" not in labels


@pytest.mark.parametrize("group", ["dp1_team", "DP1_Team", "Dp1_Team", "a.b c", "__x__", "9lives", "é_group",
                                   "g" * 80, "team_" + "x" * 70])
def test_namespace_is_a_dns_label(group):
    ns = KubernetesRunner().namespace(sample(group=group))
    assert DNS_LABEL.match(ns) and len(ns) <= 63, ns
    assert ns == KubernetesRunner().namespace(sample(group=group))  # deterministic
    assert ns.startswith("ub-")


def test_namespace_sanitising_keeps_plain_names_readable_and_distinct():
    ns = KubernetesRunner().namespace
    assert ns(sample(group="dp1_team")) == "ub-dp1-team"
    assert ns(sample(group="9lives")) == "ub-9lives"
    upper = ns(sample(group="DP1_Team"))
    assert upper.startswith("ub-dp1-team-") and upper != ns(sample(group="dp1_team"))  # two groups, two namespaces
    long_a, long_b = ns(sample(group="g" * 80)), ns(sample(group="g" * 79 + "h"))
    assert len(long_a) == len(long_b) == 63 and long_a != long_b
    assert long_a[:54] == long_b[:54] == "ub-" + "g" * 51  # cut, then 8 hex digits of the full name
    assert dns_label("x" * 63) == "x" * 63
    assert len(dns_label("x" * 64)) == 63
    assert DNS_LABEL.match(dns_label("___"))
    assert dns_label("userbatch-" + "a" * 60, 47) == dns_label("userbatch-" + "a" * 60, 47)
    assert len(dns_label("userbatch-" + "a" * 60, 47)) == 47


@pytest.mark.parametrize("value", ["alice", "root.users.dp1_team", "Dp1_Team", "a b/c", "-x-", "z" * 70, "", "é"])
def test_label_values_are_valid(value):
    v = label_value(value)
    assert LABEL_VALUE.match(v) and len(v) <= 63, v
    if re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", value):
        assert v == value  # valid values are left alone


def test_kubernetes_labels_of_odd_users_are_valid():
    labels = KubernetesRunner().labels(sample(user="Ann Smith@ncsa", group="A/B", queue="root.users.A/B"))
    for key, value in labels.items():
        assert LABEL_VALUE.match(value) and len(value) <= 63, (key, value)


def test_kubernetes_env_and_secrets():
    spec = sample(env={"USERBATCH_DB_URL": "postgresql://u:pw@db/ub", "USERBATCH_USER": "alice", "A": "x=y"})
    conf = conf_of(KubernetesRunner().argv(spec))
    for key, value in spec.env.items():
        assert conf[f"spark.kubernetes.driverEnv.{key}"] == value
        assert conf[f"spark.executorEnv.{key}"] == value
    runner = KubernetesRunner(secret_env={"USERBATCH_DB_URL": "userbatch-db:url"})
    argv = runner.argv(spec)
    assert not any("pw@db" in a for a in argv)  # the password stays off the command line
    conf = conf_of(argv)
    assert conf["spark.kubernetes.driver.secretKeyRef.USERBATCH_DB_URL"] == "userbatch-db:url"
    assert conf["spark.kubernetes.executor.secretKeyRef.USERBATCH_DB_URL"] == "userbatch-db:url"
    assert conf["spark.kubernetes.driverEnv.USERBATCH_USER"] == "alice"
    with pytest.raises(UserbatchError, match="secret-name:key"):
        KubernetesRunner(secret_env={"X": "no-key"})


def test_kubernetes_facility_settings_win_over_user_conf():
    spec = sample(spark_conf={"spark.kubernetes.namespace": "kube-system", "spark.executor.instances": "50",
                              "spark.kubernetes.driver.label.queue": "root.prod",
                              "spark.dynamicAllocation.enabled": "true"})
    conf = conf_of(KubernetesRunner().argv(spec))
    assert conf["spark.kubernetes.namespace"] == "ub-dp1-team"
    assert conf["spark.executor.instances"] == "2"
    assert conf["spark.kubernetes.driver.label.queue"] == "root.users.dp1_team"
    assert conf["spark.dynamicAllocation.enabled"] == "false"


@pytest.mark.parametrize("role", ["driver", "executor"])
def test_pod_templates_are_pod_manifests(tmp_path, role):
    spec = sample(cores=6, executor_cores=3, executor_memory="8g", driver_memory="2g")
    runner = KubernetesRunner(warehouse_pvc="ub-warehouse", home_pvc="ub-home")
    pod = yaml.safe_load(runner.render_pod_template(spec, role))
    assert pod["apiVersion"] == "v1" and pod["kind"] == "Pod"
    assert pod["metadata"]["namespace"] == "ub-dp1-team"
    labels = pod["metadata"]["labels"]
    assert labels["queue"] == "root.users.dp1_team" and labels["applicationId"] == "userbatch-abc123def456"
    assert labels["userbatch/run-id"] == "abc123def456" and labels["userbatch/role"] == role
    assert all(isinstance(v, str) and LABEL_VALUE.match(v) for v in labels.values())
    assert pod["spec"]["schedulerName"] == "yunikorn"
    assert pod["spec"]["restartPolicy"] == "Never"
    (container,) = pod["spec"]["containers"]
    assert container["name"] == f"spark-kubernetes-{role}" and container["image"] == "userbatch/spark:latest"
    res = container["resources"]
    assert res["requests"] == res["limits"]
    assert all(isinstance(v, str) for v in res["requests"].values())  # quantities are strings
    conf = conf_of(runner.argv(spec))
    if role == "executor":
        assert res["requests"]["cpu"] == "3" == conf["spark.executor.cores"]
        heap, overhead = 8192, 819  # 10 % of 8 GiB
        assert pod["spec"].get("serviceAccountName") is None
    else:
        assert res["requests"]["cpu"] == "1" == conf["spark.driver.cores"]
        heap, overhead = 2048, 384
        assert pod["spec"]["serviceAccountName"] == "spark"
    assert conf[f"spark.{role}.memoryOverhead"] == f"{overhead}m"
    assert quantity_mib(res["requests"]["memory"]) == heap + overhead
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"userbatch-home": "/ub/home", "userbatch-warehouse": "/ub/warehouse"}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]}
    assert claims == {"userbatch-home": "ub-home", "userbatch-warehouse": "ub-warehouse"}


def test_pod_template_resources_follow_the_spec():
    runner = KubernetesRunner()
    pod = runner.pod_template(sample(executor_memory="2g", executor_cores=2), "executor")
    assert pod["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "2", "memory": "2432Mi"}
    assert "volumes" not in pod["spec"] and "volumeMounts" not in pod["spec"]["containers"][0]
    tuned = sample(executor_memory="4g", spark_conf={"spark.executor.memoryOverhead": "1g",
                                                     "spark.executor.pyspark.memory": "1g"})
    res = runner.pod_template(tuned, "executor")["spec"]["containers"][0]["resources"]
    assert res["limits"]["memory"] == "6Gi"
    assert conf_of(runner.argv(tuned))["spark.executor.memoryOverhead"] == "1024m"
    assert "schedulerName" not in KubernetesRunner(scheduler=None).pod_template(sample(), "driver")["spec"]
    with pytest.raises(ValueError):
        runner.pod_template(sample(), "worker")


def test_pod_template_volume_needs_a_mount_path():
    with pytest.raises(UserbatchError, match="warehouse_mount"):
        KubernetesRunner(warehouse_pvc="ub-warehouse").pod_template(sample(env={}), "driver")
    pod = KubernetesRunner(warehouse_pvc="w", warehouse_mount="/data/wh").pod_template(sample(env={}), "executor")
    assert pod["spec"]["containers"][0]["volumeMounts"] == [{"name": "userbatch-warehouse", "mountPath": "/data/wh"}]


def test_write_pod_templates_where_conf_points(tmp_path):
    spec = sample(run_dir=str(tmp_path / "run"))
    runner = KubernetesRunner()
    driver, executor = runner.write_pod_templates(spec)
    conf = conf_of(runner.argv(spec))
    assert str(driver) == conf["spark.kubernetes.driver.podTemplateFile"]
    assert str(executor) == conf["spark.kubernetes.executor.podTemplateFile"]
    assert yaml.safe_load(driver.read_text()) == runner.pod_template(spec, "driver")
    assert yaml.safe_load(executor.read_text()) == runner.pod_template(spec, "executor")
    elsewhere = runner.write_pod_templates(spec, tmp_path / "out")
    assert all(p.parent == tmp_path / "out" and p.is_file() for p in elsewhere)


def test_kubernetes_cancel_argv():
    assert KubernetesRunner().cancel_argv(sample()) == [
        "spark-submit", "--kill", "ub-dp1-team:userbatch-abc123def456-driver",
        "--master", "k8s://https://kubernetes.default.svc"]


def test_stop_argv_is_what_the_worker_runs_before_signalling_spark_submit(tmp_path):
    """Cluster deploy mode outlives spark-submit: the worker's cancel asks the cluster first (YARN once the
    driver has written the application id; Kubernetes by driver pod name); client-mode runners need nothing."""
    spec = sample(run_dir=str(tmp_path))
    assert YarnRunner().stop_argv(spec) is None  # no application yet: only the process group is signalled
    (tmp_path / "app_id").write_text("application_7_0042\n")
    assert YarnRunner().stop_argv(spec) == ["yarn", "application", "-kill", "application_7_0042"]
    assert KubernetesRunner().stop_argv(spec) == KubernetesRunner().cancel_argv(spec)
    assert LocalRunner().stop_argv(spec) is None
    assert StandaloneRunner("spark://127.0.0.1:7077").stop_argv(spec) is None


# ------------------------------------------------------------------------------------------------ helpers


def test_memory_and_quantities():
    assert memory_mib("2g") == 2048 and memory_mib("512m") == 512 and memory_mib("1024") == 1024
    assert memory_mib("1T") == 1024**2 and memory_mib("2gb") == 2048
    for bad in ("two", "2x", "-1g", "0", "100k"):
        with pytest.raises(UserbatchError):
            memory_mib(bad)
    assert k8s_quantity(2048) == "2Gi" and k8s_quantity(2432) == "2432Mi"


# ------------------------------------------------------------------------------------------------ runner_for


@pytest.mark.parametrize("kind, cls", [("yarn", YarnRunner), ("kubernetes", KubernetesRunner)])
def test_runner_for_cluster_kinds_render_but_do_not_launch(tmp_path, kind, cls):
    runner = runner_for(kind)
    assert type(runner) is cls and runner.kind == kind and not runner.launchable
    spec = sample(run_dir=str(tmp_path))
    assert runner.argv(spec)[-2:] == [str(DRIVER), str(tmp_path)]
    with pytest.raises(UserbatchError) as err:
        runner.launch(spec, tmp_path / "driver.log")
    msg = str(err.value)
    assert f"the {kind} runner cannot launch from this machine" in msg
    assert "argv(spec)" in msg and "runner.kind" in msg
    assert not (tmp_path / "driver.log").exists()


def test_runner_for_passes_options_and_warns_about_unknown_ones(caplog):
    with caplog.at_level(logging.WARNING, logger="userbatch.cluster"):
        yarn = runner_for("yarn", deploy_mode="client", archives=["a.tgz#e"], max_concurrent=2)
        k8s = runner_for("kubernetes", namespace_prefix="lsst-", warehouse_pvc="wh", warehuose_mount="/x")
    assert yarn.deploy_mode == "client" and yarn.archives == ["a.tgz#e"]
    assert k8s.namespace(sample()) == "lsst-dp1-team" and k8s.warehouse_pvc == "wh"
    assert "max_concurrent" in caplog.text and "warehuose_mount" in caplog.text
    assert isinstance(runner_for("local"), LocalRunner)
    assert isinstance(runner_for("standalone", master="spark://h:7077"), StandaloneRunner)
    with pytest.raises(UserbatchError, match="not one of"):
        runner_for("mesos")


def test_a_launchable_kubernetes_runner_writes_its_templates_before_submitting(tmp_path, monkeypatch):
    from userbatch.cluster import base as runners

    calls = []
    monkeypatch.setattr(runners.Runner, "launch", lambda self, spec, log_path: calls.append((spec, log_path)))
    runner = KubernetesRunner()
    runner.launchable = True  # what a site whose API server answers would set
    spec = sample(run_dir=str(tmp_path))
    runner.launch(spec, tmp_path / "driver.log")
    assert calls == [(spec, tmp_path / "driver.log")]
    assert (tmp_path / "pod-driver.yaml").is_file() and (tmp_path / "pod-executor.yaml").is_file()


def test_executor_cores_option_fits_small_workers():
    from userbatch.cluster.base import executor_cores

    assert executor_cores({}) == 4 and executor_cores({"executor_cores": 1}) == 1
    # the worker's spec: 2 cores as 2 executors of 1 core on a cluster of 1-core workers
    spec = sample(cores=2, executor_cores=min(2, executor_cores({"executor_cores": 1})))
    assert (spec.num_executors, spec.cores_per_executor) == (2, 1)
    assert runner_for("standalone", master="spark://127.0.0.1:7077", executor_cores=1).kind == "standalone"
    for bad in (0, "x"):
        with pytest.raises(UserbatchError, match="executor_cores"):
            executor_cores({"executor_cores": bad})
