"""Kubernetes (with the YuniKorn scheduler): the runner (driver and executor pod templates, or a spark-operator
``SparkApplication``), the per-group namespaces, ResourceQuotas and YuniKorn queues rendered from the quota file.

Like YARN, a rendering runner by default (``launchable = False``); a worker in a pod of the cluster
(``deploy/kubernetes/facility``) sets ``launchable: true``. The same guarantees as :mod:`.yarn`: the run lands in
its group's namespace and queue, with fixed executors, the facility's settings winning; pods run as the run's
owner (runAsUser/runAsGroup/fsGroup/supplementalGroups); the run directory is on the ``home_pvc`` /
``warehouse_pvc`` volumes. Cancelling: :meth:`KubernetesRunner.cancel_argv`.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import yaml

from ..errors import UserbatchError
from ..facility.config import FacilityConfig, Limits, queue_segment
from .base import DRIVER, Runner, SubmitSpec, option_flag, spark_submit, warn_ignored
from .naming import (
    DEFAULT_NAMESPACE_PREFIX,
    default_overhead_mib,
    dns_label,
    k8s_namespace,
    k8s_namespace_prefix,
    k8s_quantity,
    label_value,
    memory_mib,
)
from .quotas import (
    banner,
    check_clashes,
    check_user,
    groups_of,
    leaf_queue,
    probe_spec,
    queue_prefix,
    scheduler_cores,
    scheduler_memory,
    share_cores,
    users_of,
)

log = logging.getLogger(__name__)


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

    def __init__(self, api_server: str = "https://kubernetes.default.svc",
                 namespace_prefix: str = DEFAULT_NAMESPACE_PREFIX,
                 image: str = "userbatch/spark:latest", scheduler: str | None = "yunikorn",
                 service_account: str = "spark", warehouse_pvc: str | None = None,
                 warehouse_mount: str | None = None, home_pvc: str | None = None, home_mount: str | None = None,
                 upload_path: str | None = None, python: str = "python3", secret_env: dict | None = None,
                 launchable: bool = False, **ignored):
        if not api_server.startswith(("https://", "http://")):
            raise UserbatchError(f"the kubernetes runner's api_server is an http(s) URL; got {api_server!r}")
        warn_ignored(self.kind, ignored)
        self.launchable = option_flag(launchable, "kubernetes", "launchable")
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
        return k8s_namespace(spec.user, spec.group, self.namespace_prefix)

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
            "sparkVersion": spark_version or installed_spark_version(),
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


def installed_spark_version() -> str:
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


YUNIKORN_SCHEDULER = "yunikorn"


def namespace_for(cfg: FacilityConfig, user: str | None, group: str | None) -> str:
    """The Kubernetes namespace of a run (:func:`~userbatch.cluster.naming.k8s_namespace`, one place for the name)."""
    return k8s_namespace(user or "-", group, k8s_namespace_prefix(cfg.runner))


def k8s_runner(cfg: FacilityConfig) -> KubernetesRunner:
    opts = {k: v for k, v in cfg.runner.items() if k != "kind"} if cfg.runner.get("kind") == "kubernetes" else {}
    return KubernetesRunner(**opts)


def _yk_resources(cfg: FacilityConfig, cores: int) -> dict:
    return {"vcore": cores, "memory": scheduler_memory(cfg, cores)}


def yunikorn_queues_yaml(cfg: FacilityConfig) -> str:
    """YuniKorn's ``queues.yaml``: partition ``default``, queue ``root.<users>`` with a child per group and per
    named user, each with ``resources.max`` from its quota.

    Limits: on the user share, one per named user (their ``max_cores`` across all their queues, as the facility
    counts it) and a last ``*`` wildcard with the user defaults for everyone else; on a group's queue, a limit
    for the group. Placement: the ``provided`` queue (the ``queue`` label the Kubernetes runner sets) if it
    exists, else the user's own queue under the user share, created on first use — so users the file does not
    name still land under the wildcard limit. A subject with ``max_cores: 0`` gets no resources and nobody in its
    submit ACL (YuniKorn refuses all-zero quotas). ``maxapplications`` is left out: YuniKorn would then require
    it on every child.
    """
    users_leaf = queue_prefix(cfg)
    check_clashes(cfg)
    admins = ",".join(sorted(check_user(a) for a in cfg.admins)) or " "
    users, groups = users_of(cfg), groups_of(cfg)

    def queue(name: str, lim: Limits, members: list[str], limits: list[dict]) -> dict:
        q: dict = {"name": name, "submitacl": ",".join(members) if lim.max_cores > 0 and members else " ",
                   "adminacl": admins}
        if lim.max_cores > 0:
            q["resources"] = {"max": _yk_resources(cfg, scheduler_cores(cfg, lim))}
            if limits:
                q["limits"] = limits
        return q

    children = []
    for g, (lim, members) in groups.items():
        limit = [{"limit": f"group {g}", "groups": [queue_segment(g)],
                  "maxresources": _yk_resources(cfg, scheduler_cores(cfg, lim))}]
        children.append(queue(leaf_queue(cfg, g), lim, members, limit))
    for u, lim in users.items():
        children.append(queue(leaf_queue(cfg, u), lim, [u], []))
    children.sort(key=lambda q: q["name"])
    user_limits = [{"limit": f"user {u}", "users": [u], "maxresources": _yk_resources(cfg, scheduler_cores(cfg, lim))}
                   for u, lim in users.items() if lim.max_cores > 0]
    if cfg.user_defaults.max_cores > 0:
        user_limits.append({"limit": "users the file does not name", "users": ["*"],
                            "maxresources": _yk_resources(cfg, scheduler_cores(cfg, cfg.user_defaults))})
    share = int(share_cores(cfg))
    users_q = {"name": users_leaf, "parent": True, "submitacl": " ", "adminacl": admins,
               "resources": {"max": _yk_resources(cfg, share)}, "limits": user_limits, "queues": children}
    if not user_limits:
        del users_q["limits"]
    doc = {"partitions": [{
        "name": "default",
        "placementrules": [
            {"name": "provided", "create": False},
            {"name": "user", "create": True, "parent": {"name": "fixed", "value": cfg.queue_prefix}},
        ],
        "queues": [{"name": "root", "submitacl": " ", "adminacl": admins, "queues": [users_q]}],
    }]}
    return f"# {banner(cfg)}\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def kubernetes_manifests(cfg: FacilityConfig) -> list[dict]:
    """A Namespace and a ResourceQuota per group and per named user, named as the Kubernetes runner names them.

    The quota caps ``requests``/``limits`` of cpu and memory at the subject's scheduler cores (``max_cores`` +
    drivers) and ``memory_per_core_gb`` per core, and ``pods`` at that many cores (every Spark pod holds at least
    one core). The namespaces carry the facility's labels and YuniKorn's queue annotation, so pods in them that
    name no queue still land in the subject's queue.
    """
    check_clashes(cfg)
    runner = k8s_runner(cfg)
    out = []
    subjects = [("group", g, lim) for g, (lim, _) in groups_of(cfg).items()]
    subjects += [("user", u, lim) for u, lim in users_of(cfg).items()]
    for kind, name, lim in subjects:
        spec = probe_spec(cfg, name if kind == "user" else "-", name if kind == "group" else None)
        ns = runner.namespace(spec)
        labels = {"app.kubernetes.io/part-of": "userbatch", f"userbatch/{kind}": label_value(name)}
        cores = scheduler_cores(cfg, lim)
        mem = scheduler_memory(cfg, cores)
        out.append({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "labels": labels,
                                 "annotations": {"yunikorn.apache.org/queue": spec.queue}}})
        out.append({"apiVersion": "v1", "kind": "ResourceQuota",
                    "metadata": {"name": dns_label(f"userbatch-{kind}-quota"), "namespace": ns, "labels": labels},
                    "spec": {"hard": {"requests.cpu": str(cores), "limits.cpu": str(cores),
                                      "requests.memory": mem, "limits.memory": mem, "pods": str(cores)}}})
    return out


def kubernetes_yaml(cfg: FacilityConfig) -> str:
    """:func:`kubernetes_manifests` as one multi-document YAML file (``kubectl apply -f``)."""
    docs = kubernetes_manifests(cfg)
    return f"# {banner(cfg)}\n" + yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False,
                                                      explicit_start=True)
