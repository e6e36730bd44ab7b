#!/usr/bin/env bash
# Container entrypoint of the userbatch image (deploy/docker/Dockerfile).
#
# Spark on Kubernetes starts the driver pod with the container args `driver --properties-file ... <app> <args>`
# and each executor pod with `executor`, leaving the command to the image's ENTRYPOINT, as Spark's own images
# (/opt/entrypoint.sh, resource-managers/kubernetes/docker in the Spark sources) expect. The pyspark wheel has no
# such script; this one does the same two things with the wheel's Spark:
#   driver    -> spark-submit in client mode inside the driver pod, bound to the pod's address;
#   executor  -> the JVM running KubernetesExecutorBackend, configured from the SPARK_* variables the driver
#                sets on the executor pod (SPARK_DRIVER_URL, SPARK_EXECUTOR_ID, ...).
# Any other command (userbatch serve, userbatch worker, mlflow server, a shell) runs unchanged.
set -euo pipefail

# An arbitrary UID (OpenShift, runAsUser) without a passwd entry breaks Hadoop's user lookup: add one if we can.
if ! getent passwd "$(id -u)" >/dev/null 2>&1 && [ -w /etc/passwd ]; then
  echo "$(id -u):x:$(id -u):$(id -g):${SPARK_USER_NAME:-anonymous uid}:${HOME:-/tmp}:/bin/false" >> /etc/passwd
fi

: "${SPARK_HOME:?SPARK_HOME must point at the pyspark wheel (set in the image)}"
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-/opt/venv/bin/python}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$PYSPARK_PYTHON}"

spark_classpath() {
  local cp="${SPARK_HOME}/jars/*"
  [ -n "${SPARK_EXTRA_CLASSPATH:-}" ] && cp="${cp}:${SPARK_EXTRA_CLASSPATH}"
  [ -n "${HADOOP_CONF_DIR:-}" ] && cp="${HADOOP_CONF_DIR}:${cp}"
  cp="${SPARK_CONF_DIR:-${SPARK_HOME}/conf}:${cp}"
  [ -n "${SPARK_DIST_CLASSPATH:-}" ] && cp="${cp}:${SPARK_DIST_CLASSPATH}"
  echo "$cp"
}

case "${1:-}" in
  driver)
    shift
    cmd=("${SPARK_HOME}/bin/spark-submit"
         --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS:-0.0.0.0}"
         --deploy-mode client
         "$@")
    ;;
  executor)
    shift
    for v in SPARK_DRIVER_URL SPARK_EXECUTOR_ID SPARK_EXECUTOR_CORES SPARK_APPLICATION_ID SPARK_EXECUTOR_POD_IP \
             SPARK_EXECUTOR_MEMORY; do
      [ -n "${!v:-}" ] || { echo "entrypoint: executor mode needs $v (set by the Spark driver)" >&2; exit 2; }
    done
    # SPARK_JAVA_OPT_0, _1, ... in numeric order: the executor's JVM options from the driver
    java_opts=()
    while IFS= read -r opt; do
      [ -n "$opt" ] && java_opts+=("$opt")
    done < <(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^[^=]*=//')
    cmd=("${JAVA_HOME:-/opt/java}/bin/java"
         "${java_opts[@]}"
         "-Xms${SPARK_EXECUTOR_MEMORY}" "-Xmx${SPARK_EXECUTOR_MEMORY}"
         -cp "$(spark_classpath)"
         org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend
         --driver-url "${SPARK_DRIVER_URL}"
         --executor-id "${SPARK_EXECUTOR_ID}"
         --cores "${SPARK_EXECUTOR_CORES}"
         --app-id "${SPARK_APPLICATION_ID}"
         --hostname "${SPARK_EXECUTOR_POD_IP}"
         --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}"
         --podName "${SPARK_EXECUTOR_POD_NAME:-$(hostname)}")
    ;;
  "")
    cmd=(userbatch --help)
    ;;
  *)
    cmd=("$@")
    ;;
esac

exec /usr/bin/tini -s -- "${cmd[@]}"
