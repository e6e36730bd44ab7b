"""Runners for shared clusters: YARN and Kubernetes (with the YuniKorn scheduler).

Neither cluster is reachable from the facility's own machines, so both runners are *rendering* runners by
default (``launchable = False``): they turn a :class:`~userbatch.facility.runners.SubmitSpec` into the exact
``spark-submit`` command line (and, for Kubernetes, the driver and executor pod templates, or a spark-operator
``SparkApplication``) that a site with the cluster runs. A worker deployed where the cluster answers (a gateway
host, a pod in the cluster: ``deploy/kubernetes/facility``) sets the runner option ``launchable: true`` and
submits the runs itself. What they guarantee, because the facility's quotas depend on it:

* the run lands in the scheduler queue the facility config names (``SubmitSpec.queue``), and on Kubernetes in the
  namespace of its group;
* it gets a fixed number of executors of fixed size (dynamic allocation off), the facility having reserved
  exactly ``cores`` for it; the resource and identity settings a runner sets override the same keys in the user's
  ``spark_conf``, so a run cannot move itself to another queue or grow past its reservation;
* ``spark-submit`` stays in the foreground until the application ends and exits with its status
  (``waitAppCompletion``), because the worker tracks a run by its submit process;
* the run's environment (``SubmitSpec.env``) reaches the driver and the executors, wherever they run.

Both runners keep the facility's convention that the run directory (``spec.json``, the event log that accounting
reads, ``progress.json``) is a path: in cluster mode the driver runs on a cluster node, so that path must be on a
file system mounted at the same place there (a shared file system under YARN, the ``home_pvc`` /
``warehouse_pvc`` volumes below on Kubernetes).

Cancelling: in cluster mode, stopping the ``spark-submit`` process does not stop the application; use
:meth:`YarnRunner.cancel_argv` / :meth:`KubernetesRunner.cancel_argv`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import sys
from pathlib import Path

import yaml

from ..errors import UserbatchError
from .config import queue_segment
from .runners import DRIVER, Runner, SubmitSpec, spark_submit

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------ helpers

_MEM = re.compile(r"^\s*(\d+)\s*([a-z]*)\s*$")
_MIB_PER = {"": 1, "b": 1 / 2**20, "k": 1 / 1024, "kb": 1 / 1024, "m": 1, "mb": 1, "g": 1024, "gb": 1024,
            "t": 1024**2, "tb": 1024**2, "p": 1024**3, "pb": 1024**3}


def memory_mib(text: str) -> int:
    """A Spark memory string (``2g``, ``512m``, ``1024`` = MiB as Spark reads it) in MiB."""
    m = _MEM.match(str(text).lower())
    if not m or m.group(2) not in _MIB_PER:
        raise UserbatchError(f"memory {text!r} is not a Spark size such as 512m, 2g or 1t")
    mib = int(int(m.group(1)) * _MIB_PER[m.group(2)])
    if mib <= 0:
        raise UserbatchError(f"memory {text!r} is less than 1 MiB")
    return mib


def k8s_quantity(mib: int) -> str:
    """MiB as a Kubernetes quantity string: ``2Gi`` when it is whole GiB, else ``2432Mi``."""
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def default_overhead_mib(heap_mib: int) -> int:
    """Spark's default container overhead: 10 % of the heap, at least 384 MiB."""
    return max(int(heap_mib * 0.10), 384)


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def dns_label(name: str, max_len: int = 63) -> str:
    """``name`` as an RFC 1123 label (lower-case alphanumerics and ``-``, starting and ending alphanumeric).

    ``_`` becomes ``-``, which keeps facility names (``[a-z][a-z0-9_]*``) readable and distinct. Any other
    change (upper case, other characters) or a name longer than ``max_len`` gets ``-`` and 8 hex digits of the
    original name's SHA-256 appended to the cut-down name, so the result is deterministic and two names that
    differ only in what was dropped (``Team`` and ``team`` are two groups to the facility) do not share a label.
    """
    readable = name.replace("_", "-")
    label = re.sub(r"[^a-z0-9-]+", "-", readable.lower()).strip("-")
    if label == readable and len(label) <= max_len and label:
        return label
    keep = max_len - 9
    head = label[:keep].strip("-")
    return f"{head}-{_digest(name)}" if head else f"x{_digest(name)}"


def label_value(value: str, max_len: int = 63) -> str:
    """``value`` as a Kubernetes label value (``[A-Za-z0-9._-]``, alphanumeric at both ends, at most 63), with
    the same deterministic digest suffix as :func:`dns_label` when anything had to change."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("._-")
    if clean == value and len(clean) <= max_len:
        return clean
    head = clean[: max_len - 9].strip("._-")
    return f"{head}-{_digest(value)}" if head else f"x{_digest(value)}"


def _warn_ignored(kind: str, options: dict) -> None:
    if options:
        log.warning("the %s runner ignores option(s) %s", kind, ", ".join(sorted(options)))


def _flag(value, kind: str, option: str) -> bool:
    if not isinstance(value, bool):
        raise UserbatchError(f"the {kind} runner's {option} is true or false; got {value!r}")
    return value


def _archive_list(archives) -> list[str]:
    if not archives:
        return []
    if isinstance(archives, str):
        return [a.strip() for a in archives.split(",") if a.strip()]
    return [str(a) for a in archives]


# ------------------------------------------------------------------------------------------------ YARN


class YarnRunner(Runner):
    """A run as a YARN application in the run's queue (capacity or fair scheduler).

    Decisions, and why:

    * ``spark.yarn.submit.waitAppCompletion=true`` (Spark's default, written out so that no site default or user
      conf turns it off): the worker tracks a run by its ``spark-submit`` process — running while it lives, its
      exit status the run's outcome, then accounting reads the event log. With ``false`` the client returns as
      soon as YARN *accepts* the application: the worker would finish the run, release its cores to the next one
      and read an event log still being written, while the application goes on outside the quota.
    * ``spark.yarn.maxAppAttempts=1``: a second attempt would run the driver again — outputs committed twice and
      the work charged twice; the facility has its own rerun, which the user asks for.
    * ``spark.dynamicAllocation.enabled=false`` with ``--num-executors``: the facility reserved exactly ``cores``.
    * ``--queue`` and ``spark.yarn.queue`` both name the queue (Hadoop 3 schedulers accept the full path
      ``root.users.<group>`` the facility config builds); ``spark.yarn.tags`` carry user, group and run so that
      ``yarn application -list -appTags run:<id>`` finds a run.
    * In cluster mode the driver runs in the ApplicationMaster's container, whose environment comes from
      ``spark.yarn.appMasterEnv.*``; executors get ``spark.executorEnv.*``. Both are set from ``spec.env`` in
      either deploy mode (in client mode the AM is only the executor launcher, and the driver has the submit
      process's environment).
    * Python: ``archives`` ships a packed environment (``venv-pack``/``conda-pack`` tarball, e.g.
      ``hdfs:///envs/userbatch.tar.gz#environment``); the interpreter then defaults to ``./<alias>/bin/python`` of
      the first archive with an alias, else to ``python`` (option) or ``python3`` on the nodes. It is set with
      ``spark.pyspark.python`` so the submit host's ``PYSPARK_PYTHON`` (a path on this machine, which Spark
      would otherwise forward to the ApplicationMaster) is not used on the cluster.
    """

    kind = "yarn"
    launchable = False

    def __init__(self, deploy_mode: str = "cluster", spark_home: str | None = None, archives=None,
                 python: str | None = None, launchable: bool = False, **ignored_options):
        if deploy_mode not in ("cluster", "client"):
            raise UserbatchError(f"the yarn runner's deploy_mode is cluster or client; got {deploy_mode!r}")
        _warn_ignored(self.kind, ignored_options)
        self.launchable = _flag(launchable, "yarn", "launchable")
        self.deploy_mode = deploy_mode
        self.spark_home = spark_home
        self.archives = _archive_list(archives)
        self.python = python

    @property
    def submit_command(self) -> str:
        """``spark-submit`` of the site's Spark (``spark_home``), else the one on the gateway's PATH."""
        return str(Path(self.spark_home) / "bin" / "spark-submit") if self.spark_home else "spark-submit"

    @staticmethod
    def queue(spec: SubmitSpec) -> str:
        return spec.queue or "default"

    @staticmethod
    def tags(spec: SubmitSpec) -> str:
        """YARN application tags (comma-separated, so commas in values become ``_``)."""
        def clean(v):
            return str(v).replace(",", "_")
        tags = ["userbatch", f"user:{clean(spec.user)}"]
        if spec.group:
            tags.append(f"group:{clean(spec.group)}")
        tags.append(f"run:{clean(spec.run_id)}")
        return ",".join(tags)

    def cluster_python(self) -> str:
        if self.python:
            return self.python
        for archive in self.archives:
            if "#" in archive:
                return f"./{archive.rsplit('#', 1)[1]}/bin/python"
        return "python3"

    def master_args(self, spec: SubmitSpec) -> list[str]:
        args = ["--master", "yarn", "--deploy-mode", self.deploy_mode, "--queue", self.queue(spec),
                "--num-executors", str(spec.num_executors),
                "--executor-cores", str(spec.cores_per_executor),
                "--executor-memory", spec.executor_memory, "--driver-memory", spec.driver_memory]
        if self.archives:
            args += ["--archives", ",".join(self.archives)]
        if spec.os_user:  # the application runs as its owner on the cluster (Hadoop impersonation; kerberised
            args += ["--proxy-user", spec.os_user]  # sites allow the facility's principal in hadoop.proxyuser.*)
        return args

    def conf(self, spec: SubmitSpec) -> dict[str, str]:
        conf = super().conf(spec)
        for key, value in spec.env.items():
            conf[f"spark.yarn.appMasterEnv.{key}"] = value
            conf[f"spark.executorEnv.{key}"] = value
        conf.update({  # the facility's settings win over the user's spark_conf
            "spark.yarn.queue": self.queue(spec),
            "spark.yarn.tags": self.tags(spec),
            "spark.yarn.submit.waitAppCompletion": "true",
            "spark.yarn.maxAppAttempts": "1",
            "spark.dynamicAllocation.enabled": "false",  # sizes come from the flags, which win over --conf
            "spark.pyspark.python": self.cluster_python(),
            # cluster mode: the driver runs in the AM container with the shipped environment; client mode: here
            "spark.pyspark.driver.python": self.cluster_python() if self.deploy_mode == "cluster"
            else sys.executable,
        })
        return conf

    def cancel_argv(self, app_id: str) -> list[str]:
        """The command that stops the application (``app_id``: ``application_...``, which the driver writes to
        ``RUN_DIR/app_id``); stopping ``spark-submit`` alone leaves a cluster-mode application running."""
        return ["yarn", "application", "-kill", app_id]

    def stop_argv(self, spec):
        app = Path(spec.run_dir) / "app_id"
        return self.cancel_argv(app.read_text().strip()) if app.exists() else None

    def launch(self, spec, log_path, creds=None, network=False):
        if self.launchable:  # a site whose gateway reaches the cluster sets launchable on its runner
            return super().launch(spec, log_path)  # as the facility: the cluster runs it as --proxy-user
        raise UserbatchError(
            "the yarn runner cannot launch from this machine: no YARN cluster is reachable from it. Run the "
            "command of YarnRunner.argv(spec) on a gateway host of the cluster (with HADOOP_CONF_DIR set), or set "
            "runner.kind to local or standalone in the facility config")


# ------------------------------------------------------------------------------------------------ Kubernetes

DRIVER_CONTAINER = "spark-kubernetes-driver"
EXECUTOR_CONTAINER = "spark-kubernetes-executor"
#: YuniKorn's annotation naming the user (and groups) a pod is scheduled for; its per-user and per-group queue
#: limits match these names. YuniKorn's admission controller accepts it only from trusted submitters (the
#: facility worker's and the drivers' service accounts: ``admissionController.accessControl.trustControllers`` /
#: ``externalUsers`` in YuniKorn's configuration).
USER_INFO_ANNOTATION = "yunikorn.apache.org/user.info"
#: The spark-operator CRD the :func:`spark_application` renderer writes.
SPARK_OPERATOR_API = "sparkoperator.k8s.io/v1beta2"
#: Where the container image (``deploy/docker/Dockerfile``) keeps the project; the driver script below it.
IMAGE_PROJECT_DIR = "/opt/userbatch"


def yunikorn_user_info(user: str, group: str | None) -> str:
    """The value of YuniKorn's ``user.info`` annotation for a run of ``user`` charged to ``group``: JSON
    ``{"groups": [<group as a queue segment>], "user": <user>}`` — the names the rendered ``queues.yaml`` limits
    use (:func:`~userbatch.facility.config.queue_segment` for groups). One place: the runner and
    ``schedulers.submission_settings`` both call it."""
    return json.dumps({"user": user, "groups": [queue_segment(group)] if group else []}, sort_keys=True)


class KubernetesRunner(Runner):
    """A run as a Spark-on-Kubernetes application (cluster mode), scheduled by YuniKorn in its group's queue.

    * Namespace: one per group, ``<namespace_prefix><group>``, or ``<namespace_prefix>user-<user>`` for a run
      without a group, made a valid DNS label by :func:`dns_label` (the namespaces, their service account and
      role binding come from ``deploy/kubernetes``). A group named ``user_<name>`` would share user
      ``<name>``'s namespace: the facility config should not allow such group names.
    * Queue: the ``queue`` label YuniKorn places pods by — ``SubmitSpec.queue`` (the same queue the YARN runner
      uses), else ``root.<group>`` or ``root.users``; ``applicationId`` groups the driver and executors of a run
      into one YuniKorn application.
    * Resources: ``spark.executor.instances`` x ``spark.executor.cores`` with dynamic allocation off, and CPU
      limits equal to the requests, so a run never uses more cores than the facility reserved. The memory
      overhead is written out (Spark's default, 10 % of the heap and at least 384 MiB, unless the user's conf
      sets it) so that the pod templates show the requests Spark will make: pod memory = heap + overhead.
    * Pod templates (``podTemplateFile``) carry the labels, the scheduler, the service account, the resources and
      the volumes: ``home_pvc`` (mounted at ``USERBATCH_HOME``: run directories, event logs) and
      ``warehouse_pvc`` (mounted at ``USERBATCH_WAREHOUSE``), at the same paths as on the facility host so the
      paths in the run's spec and environment mean the same in the pods. Spark reads the templates on the submit
      host; :meth:`write_pod_templates` writes them into the run directory, where :meth:`conf` points.
    * The driver file is uploaded by ``spark-submit`` to ``spark.kubernetes.file.upload.path`` (option
      ``upload_path``; default ``RUN_DIR/upload``, on the shared volume).
    * ``secret_env`` (``{ENV_NAME: "secret-name:key"}``) takes those variables from Kubernetes secrets instead
      of the command line (e.g. a PostgreSQL URL with its password in ``USERBATCH_DB_URL``).
    * ``spark.kubernetes.submission.waitAppCompletion=true``: the worker tracks a run by its submit process (see
      :class:`YarnRunner`). The driver pod's name is fixed (``userbatch-<run>-driver``) so that
      :meth:`cancel_argv` can stop a run.
    """

    kind = "kubernetes"
    launchable = False

    def __init__(self, api_server: str = "https://kubernetes.default.svc", namespace_prefix: str = "ub-",
                 image: str = "userbatch/spark:latest", scheduler: str | None = "yunikorn",
                 service_account: str = "spark", warehouse_pvc: str | None = None,
                 warehouse_mount: str | None = None, home_pvc: str | None = None, home_mount: str | None = None,
                 upload_path: str | None = None, python: str = "python3", secret_env: dict | None = None,
                 launchable: bool = False, **ignored):
        if not api_server.startswith(("https://", "http://")):
            raise UserbatchError(f"the kubernetes runner's api_server is an http(s) URL; got {api_server!r}")
        _warn_ignored(self.kind, ignored)
        self.launchable = _flag(launchable, "kubernetes", "launchable")
        self.api_server = api_server.rstrip("/")
        self.namespace_prefix = namespace_prefix
        self.image = image
        self.scheduler = scheduler or None
        self.service_account = service_account
        self.warehouse_pvc, self.warehouse_mount = warehouse_pvc, warehouse_mount
        self.home_pvc, self.home_mount = home_pvc, home_mount
        self.upload_path = upload_path
        self.python = python
        self.secret_env = dict(secret_env or {})
        for env_name, ref in self.secret_env.items():
            if not isinstance(ref, str) or ref.count(":") != 1:
                raise UserbatchError(f"secret_env.{env_name} is 'secret-name:key'; got {ref!r}")

    # --------------------------------------------------------------------------------- identity and placement
    @property
    def master(self) -> str:
        return f"k8s://{self.api_server}"

    def namespace(self, spec: SubmitSpec) -> str:
        owner = spec.group if spec.group else f"user-{spec.user}"
        return dns_label(f"{self.namespace_prefix}{owner}")

    @staticmethod
    def queue(spec: SubmitSpec) -> str:
        return spec.queue or f"root.{spec.group or 'users'}"

    @staticmethod
    def driver_pod_name(spec: SubmitSpec) -> str:
        return dns_label(f"{spec.app_name}-driver")

    @staticmethod
    def executor_prefix(spec: SubmitSpec) -> str:
        return dns_label(spec.app_name, 47)  # Spark's limit for spark.kubernetes.executor.podNamePrefix

    def labels(self, spec: SubmitSpec) -> dict[str, str]:
        labels = {
            "queue": label_value(self.queue(spec)),
            "applicationId": label_value(spec.app_name),
            "userbatch/run-id": label_value(spec.run_id),
            "userbatch/user": label_value(spec.user),
        }
        if spec.group:
            labels["userbatch/group"] = label_value(spec.group)
        return labels

    @staticmethod
    def annotations(spec: SubmitSpec) -> dict[str, str]:
        """Pod annotations of a run's driver and executors: YuniKorn's ``user.info`` (:func:`yunikorn_user_info`),
        so the per-user and per-group limits of ``queues.yaml`` apply to the run's submitter, not to the service
        account that created the pods."""
        return {USER_INFO_ANNOTATION: yunikorn_user_info(spec.user, spec.group)}

    # --------------------------------------------------------------------------------- resources
    @staticmethod
    def executor_cores(spec: SubmitSpec) -> int:
        return spec.cores_per_executor

    @staticmethod
    def _overhead_mib(spec: SubmitSpec, role: str, heap_mib: int) -> int:
        user = spec.spark_conf.get(f"spark.{role}.memoryOverhead")
        return memory_mib(user) if user else default_overhead_mib(heap_mib)

    def pod_resources(self, spec: SubmitSpec, role: str) -> dict[str, dict[str, str]]:
        """The requests and limits Spark gives the ``driver`` or ``executor`` container (cpu = cores, memory =
        heap + overhead [+ spark.executor.pyspark.memory]), as Kubernetes quantity strings."""
        if role == "driver":
            cpu, heap = 1, memory_mib(spec.driver_memory)
        elif role == "executor":
            cpu, heap = self.executor_cores(spec), memory_mib(spec.executor_memory)
        else:
            raise ValueError(f"role is driver or executor, not {role!r}")
        total = heap + self._overhead_mib(spec, role, heap)
        if role == "executor" and spec.spark_conf.get("spark.executor.pyspark.memory"):
            total += memory_mib(spec.spark_conf["spark.executor.pyspark.memory"])
        amounts = {"cpu": str(cpu), "memory": k8s_quantity(total)}
        return {"requests": dict(amounts), "limits": dict(amounts)}

    # --------------------------------------------------------------------------------- spark-submit
    def master_args(self, spec: SubmitSpec) -> list[str]:
        return ["--master", self.master, "--deploy-mode", "cluster"]

    @staticmethod
    def template_paths(spec: SubmitSpec, directory: str | Path | None = None) -> tuple[Path, Path]:
        d = Path(directory or spec.run_dir)
        return d / "pod-driver.yaml", d / "pod-executor.yaml"

    def conf(self, spec: SubmitSpec) -> dict[str, str]:
        conf = super().conf(spec)
        for key, value in spec.env.items():
            if key not in self.secret_env:
                conf[f"spark.kubernetes.driverEnv.{key}"] = value
                conf[f"spark.executorEnv.{key}"] = value
        for key, ref in self.secret_env.items():
            conf[f"spark.kubernetes.driver.secretKeyRef.{key}"] = ref
            conf[f"spark.kubernetes.executor.secretKeyRef.{key}"] = ref
        driver_t, executor_t = self.template_paths(spec)
        cores = self.executor_cores(spec)
        driver_heap, executor_heap = memory_mib(spec.driver_memory), memory_mib(spec.executor_memory)
        conf.update({  # the facility's settings win over the user's spark_conf
            "spark.kubernetes.namespace": self.namespace(spec),
            "spark.kubernetes.container.image": self.image,
            "spark.kubernetes.authenticate.driver.serviceAccountName": self.service_account,
            "spark.kubernetes.driver.pod.name": self.driver_pod_name(spec),
            "spark.kubernetes.executor.podNamePrefix": self.executor_prefix(spec),
            "spark.kubernetes.driver.podTemplateFile": str(driver_t),
            "spark.kubernetes.executor.podTemplateFile": str(executor_t),
            "spark.kubernetes.driver.podTemplateContainerName": DRIVER_CONTAINER,
            "spark.kubernetes.executor.podTemplateContainerName": EXECUTOR_CONTAINER,
            "spark.kubernetes.submission.waitAppCompletion": "true",
            "spark.kubernetes.file.upload.path": self.upload_path or (Path(spec.run_dir) / "upload").as_uri(),
            "spark.dynamicAllocation.enabled": "false",
            "spark.executor.instances": str(spec.num_executors),
            "spark.executor.cores": str(cores),
            "spark.kubernetes.executor.request.cores": str(cores),
            "spark.kubernetes.executor.limit.cores": str(cores),
            "spark.executor.memory": spec.executor_memory,
            "spark.executor.memoryOverhead": f"{self._overhead_mib(spec, 'executor', executor_heap)}m",
            "spark.driver.cores": "1",
            "spark.kubernetes.driver.request.cores": "1",
            "spark.kubernetes.driver.limit.cores": "1",
            "spark.driver.memory": spec.driver_memory,
            "spark.driver.memoryOverhead": f"{self._overhead_mib(spec, 'driver', driver_heap)}m",
            "spark.pyspark.python": self.python,
            "spark.pyspark.driver.python": self.python,
        })
        if self.scheduler:
            conf["spark.kubernetes.scheduler.name"] = self.scheduler
        for role in ("driver", "executor"):
            for key, value in self.labels(spec).items():
                conf[f"spark.kubernetes.{role}.label.{key}"] = value
            for key, value in self.annotations(spec).items():
                conf[f"spark.kubernetes.{role}.annotation.{key}"] = value
        return conf

    # --------------------------------------------------------------------------------- pod templates
    def _volumes(self, spec: SubmitSpec) -> list[tuple[str, str, str]]:
        """(volume name, claim, mount path) for the facility's shared volumes."""
        out = []
        for name, claim, mount, env_key in (("userbatch-home", self.home_pvc, self.home_mount, "USERBATCH_HOME"),
                                            ("userbatch-warehouse", self.warehouse_pvc, self.warehouse_mount,
                                             "USERBATCH_WAREHOUSE")):
            if not claim:
                continue
            path = mount or spec.env.get(env_key)
            if not path:
                option = "home_mount" if name == "userbatch-home" else "warehouse_mount"
                raise UserbatchError(f"the kubernetes runner mounts {claim!r} but does not know where: set the "
                                     f"runner option {option} (or {env_key} in the run's environment)")
            out.append((name, claim, path))
        return out

    def pod_template(self, spec: SubmitSpec, role: str) -> dict:
        """The Pod manifest Spark starts the ``driver`` or ``executor`` pods from."""
        if role not in ("driver", "executor"):
            raise ValueError(f"role is driver or executor, not {role!r}")
        container = {
            "name": DRIVER_CONTAINER if role == "driver" else EXECUTOR_CONTAINER,
            "image": self.image,
            "resources": self.pod_resources(spec, role),
        }
        volumes = self._volumes(spec)
        if volumes:
            container["volumeMounts"] = [{"name": n, "mountPath": path} for n, _, path in volumes]
        pod_spec: dict = {"restartPolicy": "Never"}
        if self.scheduler:
            pod_spec["schedulerName"] = self.scheduler
        if role == "driver":
            pod_spec["serviceAccountName"] = self.service_account
        if spec.uid is not None:  # the run's owner, as on the facility host; never root, no privilege to gain
            pod_spec["securityContext"] = {"runAsUser": spec.uid, "runAsGroup": spec.gid, "fsGroup": spec.gid,
                                           "runAsNonRoot": True,
                                           **({"supplementalGroups": list(spec.gids)} if spec.gids else {})}
            container["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        pod_spec["containers"] = [container]
        if volumes:
            pod_spec["volumes"] = [{"name": n, "persistentVolumeClaim": {"claimName": claim}}
                                   for n, claim, _ in volumes]
        labels = {**self.labels(spec), "userbatch/role": role}
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"namespace": self.namespace(spec), "labels": labels,
                             "annotations": self.annotations(spec)}, "spec": pod_spec}

    def render_pod_template(self, spec: SubmitSpec, role: str) -> str:
        return yaml.safe_dump(self.pod_template(spec, role), sort_keys=False)

    def write_pod_templates(self, spec: SubmitSpec, directory: str | Path | None = None) -> tuple[Path, Path]:
        """Write both pod templates (into the run directory by default, where :meth:`conf` points)."""
        paths = self.template_paths(spec, directory)
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        for path, role in zip(paths, ("driver", "executor"), strict=True):
            path.write_text(self.render_pod_template(spec, role))
        return paths

    # --------------------------------------------------------------------------------- spark-operator
    def spark_application(self, spec: SubmitSpec, *, main_application_file: str | None = None,
                          spark_version: str | None = None, image_pull_policy: str = "IfNotPresent") -> dict:
        """The run as a spark-operator ``SparkApplication`` (``sparkoperator.k8s.io/v1beta2``), for a site that
        submits through the operator instead of the worker's ``spark-submit``.

        Everything that places and sizes the run comes from the same methods :meth:`conf` and
        :meth:`pod_template` use — namespace, queue (``batchSchedulerOptions.queue`` and the ``queue`` label),
        labels, the ``user.info`` annotation, image, service account, executors x cores (= ``spec.cores``),
        memory and overhead, the shared volumes and the environment (``secret_env`` as ``secretKeyRef``) — so the
        operator's run and the worker's run cannot differ in where they land or what they hold. The remaining
        Spark settings (event log, the user's ``spark_conf``, Python) go to ``sparkConf``; the settings the
        operator derives from the fields (and the pod templates, which live on the submit host) are left out.
        ``restartPolicy: Never`` for the reason :class:`YarnRunner` sets ``maxAppAttempts=1``.
        """
        conf = self.conf(spec)
        spark_conf = {k: str(v) for k, v in sorted(conf.items())
                      if k not in _OPERATOR_OWNED and not k.startswith(_OPERATOR_OWNED_PREFIXES)}
        cores = self.executor_cores(spec)
        volumes = self._volumes(spec)
        env = [{"name": k, "value": v} for k, v in sorted(spec.env.items()) if k not in self.secret_env]
        for name, ref in sorted(self.secret_env.items()):
            secret, key = ref.split(":")
            env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})

        def pod(role: str) -> dict:
            out: dict = {"labels": {**self.labels(spec), "userbatch/role": role},
                         "annotations": self.annotations(spec)}
            if env:
                out["env"] = copy.deepcopy(env)  # no shared nodes: YAML would write them as anchors
            if volumes:
                out["volumeMounts"] = [{"name": n, "mountPath": path} for n, _, path in volumes]
            return out

        driver = {"cores": 1, "coreRequest": "1", "coreLimit": "1", "memory": spec.driver_memory,
                  "memoryOverhead": conf["spark.driver.memoryOverhead"], "serviceAccount": self.service_account,
                  "podName": self.driver_pod_name(spec), **pod("driver")}
        executor = {"instances": spec.num_executors, "cores": cores, "coreRequest": str(cores),
                    "coreLimit": str(cores), "memory": spec.executor_memory,
                    "memoryOverhead": conf["spark.executor.memoryOverhead"], "deleteOnTermination": True,
                    **pod("executor")}
        body: dict = {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "image": self.image,
            "imagePullPolicy": image_pull_policy,
            "mainApplicationFile": main_application_file
            or f"local://{IMAGE_PROJECT_DIR}/python/userbatch/facility/{DRIVER.name}",
            "arguments": [spec.run_dir],
            "sparkVersion": spark_version or _spark_version(),
            "restartPolicy": {"type": "Never"},
            "dynamicAllocation": {"enabled": False},
            "sparkConf": spark_conf,
            "driver": driver,
            "executor": executor,
        }
        if volumes:
            body["volumes"] = [{"name": n, "persistentVolumeClaim": {"claimName": claim}} for n, claim, _ in volumes]
        if self.scheduler:
            body["batchScheduler"] = self.scheduler
            body["batchSchedulerOptions"] = {"queue": self.queue(spec)}
        return {"apiVersion": SPARK_OPERATOR_API, "kind": "SparkApplication",
                "metadata": {"name": dns_label(spec.app_name), "namespace": self.namespace(spec),
                             "labels": self.labels(spec)},
                "spec": body}

    def render_spark_application(self, spec: SubmitSpec, **options) -> str:
        return yaml.safe_dump(self.spark_application(spec, **options), sort_keys=False)

    def cancel_argv(self, spec: SubmitSpec, submit: str = "spark-submit") -> list[str]:
        """The command that stops the run's driver pod (and with it the executors); stopping ``spark-submit``
        alone leaves a cluster-mode application running."""
        return [submit, "--kill", f"{self.namespace(spec)}:{self.driver_pod_name(spec)}", "--master", self.master]

    def stop_argv(self, spec):
        return self.cancel_argv(spec, spark_submit() if self.launchable else "spark-submit")

    def launch(self, spec, log_path, creds=None, network=False):
        if self.launchable:  # a site whose API server is reachable sets launchable on its runner
            self.write_pod_templates(spec)
            return super().launch(spec, log_path)  # the pods run as the owner (their securityContext)
        raise UserbatchError(
            "the kubernetes runner cannot launch from this machine: no Kubernetes API server is reachable from "
            "it. Write the pod templates (KubernetesRunner.write_pod_templates) and run the command of "
            "KubernetesRunner.argv(spec) where the cluster is reachable, or set runner.kind to local or standalone "
            "in the facility config")


# ------------------------------------------------------------------------------------------------ spark-operator

#: Settings of :meth:`KubernetesRunner.conf` that a SparkApplication expresses with its own fields (or that only
#: mean something to a ``spark-submit`` the worker runs: pod templates and the upload path on the submit host).
_OPERATOR_OWNED = frozenset({
    "spark.app.name", "spark.kubernetes.namespace", "spark.kubernetes.container.image",
    "spark.kubernetes.authenticate.driver.serviceAccountName", "spark.kubernetes.driver.pod.name",
    "spark.kubernetes.driver.podTemplateFile", "spark.kubernetes.executor.podTemplateFile",
    "spark.kubernetes.driver.podTemplateContainerName", "spark.kubernetes.executor.podTemplateContainerName",
    "spark.kubernetes.submission.waitAppCompletion", "spark.kubernetes.file.upload.path",
    "spark.kubernetes.scheduler.name", "spark.executor.instances", "spark.executor.cores", "spark.executor.memory",
    "spark.executor.memoryOverhead", "spark.driver.cores", "spark.driver.memory", "spark.driver.memoryOverhead",
    "spark.kubernetes.executor.request.cores", "spark.kubernetes.executor.limit.cores",
    "spark.kubernetes.driver.request.cores", "spark.kubernetes.driver.limit.cores",
})
_OPERATOR_OWNED_PREFIXES = (
    "spark.kubernetes.driverEnv.", "spark.executorEnv.", "spark.kubernetes.driver.secretKeyRef.",
    "spark.kubernetes.executor.secretKeyRef.", "spark.kubernetes.driver.label.", "spark.kubernetes.executor.label.",
    "spark.kubernetes.driver.annotation.", "spark.kubernetes.executor.annotation.",
)


def _spark_version() -> str:
    """The version of the pyspark wheel this environment (and the image built from it) has."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyspark")
    except PackageNotFoundError:
        return "4.3.0"


def spark_application(spec: SubmitSpec, runner: KubernetesRunner | None = None, **options) -> dict:
    """A run as a spark-operator ``SparkApplication`` manifest: :meth:`KubernetesRunner.spark_application` of
    ``runner`` (default: a :class:`KubernetesRunner` with the default options). ``options`` go to that method
    (``main_application_file``, ``spark_version``, ``image_pull_policy``)."""
    return (runner or KubernetesRunner()).spark_application(spec, **options)


#: The ClusterRole (deploy/kubernetes/facility/rbac.yaml) bound in every run namespace: what spark-submit (the
#: worker, or the spark-operator) and a driver need there — pods, services, config maps, PVCs, SparkApplications.
SPARK_CLUSTER_ROLE = "userbatch-spark"
#: An example of the shared file system behind ``home_pvc`` / ``warehouse_pvc`` (a site replaces the server).
EXAMPLE_SHARED_VOLUMES = {
    "userbatch-home": {"nfs": {"server": "nfs.example.org", "path": "/export/userbatch/home"}},
    "userbatch-warehouse": {"nfs": {"server": "nfs.example.org", "path": "/export/userbatch/warehouse"}},
}


def run_namespace_manifests(runner: KubernetesRunner, namespace: str, *, worker_namespace: str = "userbatch",
                            worker_service_account: str = "userbatch-worker", volume_sources: dict | None = None,
                            capacity: str = "10Ti") -> list[dict]:
    """What a run namespace (``ub-<group>``, ``ub-user-<user>``: the Namespaces of ``quotas.yaml``) needs besides
    its ResourceQuota for the runs :class:`KubernetesRunner` submits there.

    * the drivers' ServiceAccount (``runner.service_account``) and a RoleBinding of :data:`SPARK_CLUSTER_ROLE`
      for it and for the worker's ServiceAccount (in ``worker_namespace``), which creates the driver pods;
    * the runner's ``home_pvc`` and ``warehouse_pvc`` claims. A PersistentVolumeClaim belongs to one namespace
      and a PersistentVolume binds one claim, so each namespace gets its own ReadWriteMany PV on the *same*
      shared file system (``volume_sources``: claim name -> PV source, e.g. ``{"nfs": {...}}``), bound by
      ``volumeName`` — the run directory and the warehouse are then the same files in the worker's pod and in
      every driver and executor, at the same paths, as the runner requires.

    The ``userbatch-db`` Secret (``secret_env``) is not rendered: it holds credentials; copy it in per namespace.
    """
    sources = volume_sources if volume_sources is not None else EXAMPLE_SHARED_VOLUMES
    labels = {"app.kubernetes.io/part-of": "userbatch"}
    docs: list[dict] = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": runner.service_account, "namespace": namespace, "labels": labels}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": SPARK_CLUSTER_ROLE, "namespace": namespace, "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SPARK_CLUSTER_ROLE},
         "subjects": [{"kind": "ServiceAccount", "name": runner.service_account, "namespace": namespace},
                      {"kind": "ServiceAccount", "name": worker_service_account, "namespace": worker_namespace}]},
    ]
    for claim in (runner.home_pvc, runner.warehouse_pvc):
        if not claim:
            continue
        if claim not in sources:
            raise UserbatchError(f"no volume source for claim {claim!r}: give one in volume_sources")
        pv = dns_label(f"{claim}-{namespace}", 253)
        docs.append({"apiVersion": "v1", "kind": "PersistentVolume",
                     "metadata": {"name": pv, "labels": labels},
                     "spec": {"capacity": {"storage": capacity}, "accessModes": ["ReadWriteMany"],
                              "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                              "claimRef": {"namespace": namespace, "name": claim}, **sources[claim]}})
        docs.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": claim, "namespace": namespace, "labels": labels},
                     "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                              "resources": {"requests": {"storage": capacity}}}})
    return docs


def deploy_spark_examples(cfg, namespaces: list[str] | None = None) -> dict[str, str]:
    """``deploy/kubernetes/spark/`` rendered from a facility config whose runner is ``kind: kubernetes`` (the
    config of ``deploy/kubernetes/facility/configmap.yaml``): ``sparkapplication.yaml``, the SparkApplication
    of an example run (user ``demo`` charged to group ``dp1_team``, 8 cores), and ``run-namespaces.yaml``,
    :func:`run_namespace_manifests` for every run namespace (default: the Namespaces of
    ``schedulers.kubernetes_manifests(cfg)``, i.e. of ``deploy/kubernetes/quotas.yaml``). Paths relative to
    ``deploy/kubernetes/spark``; ``tests/test_deploy.py`` fails when the files differ from a fresh render."""
    if cfg.runner.get("kind") != "kubernetes":
        raise UserbatchError("the Spark-on-Kubernetes examples need a facility config with runner.kind kubernetes")
    runner = KubernetesRunner(**{k: v for k, v in cfg.runner.items() if k != "kind"})
    user, group, run_id = "demo", "dp1_team", "0123456789ab"
    home = runner.home_mount or "/var/lib/userbatch/home"
    env = {"USERBATCH_HOME": home, "USERBATCH_WAREHOUSE": runner.warehouse_mount or "/var/lib/userbatch/warehouse",
           "USERBATCH_USER": user, "USERBATCH_GROUPS": group, "USERBATCH_RUN_ID": run_id,
           "USERBATCH_JOB": "template:crossmatch", "PYTHONUNBUFFERED": "1"}
    if cfg.mlflow.get("tracking_uri"):
        env["MLFLOW_TRACKING_URI"] = cfg.mlflow["tracking_uri"]
    if cfg.mlflow.get("artifact_root"):
        env["USERBATCH_MLFLOW_ARTIFACTS"] = cfg.mlflow["artifact_root"]
    for name in runner.secret_env:
        env[name] = "(from the secret)"
    spec = SubmitSpec(run_id=run_id, run_dir=f"{home}/runs/{run_id}", user=user, group=group,
                      queue=cfg.queue_for(user, group), cores=8, executor_cores=4, executor_memory="8g",
                      driver_memory="2g", env=env)
    if namespaces is None:
        from .schedulers import kubernetes_manifests

        namespaces = [d["metadata"]["name"] for d in kubernetes_manifests(cfg) if d["kind"] == "Namespace"]
    banner = ("# Generated (userbatch.facility.cluster_runners.deploy_spark_examples, from the facility.yaml of\n"
              "# ../facility/configmap.yaml) — do not edit; see deploy/README.md.\n")
    app = (banner + "# A run (user demo, group dp1_team, 8 cores = 2 executors x 4) as a spark-operator "
           "SparkApplication:\n# what KubernetesRunner.spark_application renders for each run.\n"
           + runner.render_spark_application(spec, spark_version=_spark_version()))
    docs = [d for ns in namespaces for d in run_namespace_manifests(runner, ns)]
    rbac = (banner + "# Per run namespace (ub-<group>, ub-user-<user>; the Namespaces of ../quotas.yaml): the "
            "drivers' ServiceAccount, the\n# RoleBinding of ClusterRole userbatch-spark (facility/rbac.yaml) and "
            "the shared home and warehouse volumes.\n# Also create the userbatch-db Secret (key db-url) in each.\n"
            + yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True))
    return {"sparkapplication.yaml": app, "run-namespaces.yaml": rbac}
