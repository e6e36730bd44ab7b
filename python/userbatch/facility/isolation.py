"""How a run's processes are started so that the run is its owner and nothing more.

:func:`wrap` turns a command into one that runs

* in a new PID namespace (``unshare --pid --fork --kill-child --mount-proc``): the run's first process is its
  namespace's init, so when it ends, is cancelled or hits its time limit the kernel kills everything it started —
  a ``setsid`` or double-forked child included; ``/proc`` inside shows only the run's own processes;
* in a new network namespace with only loopback (``identity.network: isolated``, local runs): the run reaches no
  service of the facility host — not PostgreSQL, not another run's Spark — except the facility's run API, a Unix
  socket it is given;
* under the owner's uid, primary gid and exactly their facility groups' gids (``setpriv``; no capabilities, no
  new privileges), with umask 002;
* with a clean environment (:func:`clean_environment`): no database URL, no facility secret — only what the run
  needs, and a delegated token that acts as its owner while it lives.

Without root (single-user mode) none of the switching is possible; the run is started as the facility's own account
in its own session, with the same clean environment, and the facility says at start-up that it is single-user.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .accounts import Credentials

#: Variables a run inherits from the facility's environment (the software stack, not the facility's state).
PASS_PREFIXES = ("LSST_", "DAF_BUTLER_", "DYLD_", "SPARK_HOME", "JAVA_HOME", "HADOOP_CONF_DIR", "YARN_CONF_DIR",
                 "PYTHONPATH", "LANG", "LC_", "TZ", "EUPS_", "PROJ_")
#: Never passed, whatever the prefixes say.
DENY = ("USERBATCH_DB_URL", "USERBATCH_TEST_PG_URL", "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN", "PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def clean_environment(run_env: dict[str, str], run_dir: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a run: the stack's variables from ``base`` (default: ours), then ``run_env``."""
    base = dict(os.environ if base is None else base)
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in base.items() if k.startswith(PASS_PREFIXES) and k not in DENY}
    env.update({
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": run_dir,
        "TMPDIR": str(Path(run_dir) / "tmp"),
        # MLflow stages Spark models in /tmp/mlflow by default: shared by every account, so the run's own instead
        "MLFLOW_DFS_TMP": str(Path(run_dir) / "tmp" / "mlflow"),
        "USERBATCH_HOME": str(Path(run_dir) / "home"),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYTHONUNBUFFERED": "1",
        "LANG": base.get("LANG", "C.UTF-8"),
    })
    env.update({k: v for k, v in run_env.items() if k not in DENY})
    return env


def tools_available() -> str | None:
    """None when unshare, setpriv and ip are on this machine; else what is missing."""
    missing = [t for t in ("unshare", "setpriv", "ip") if shutil.which(t) is None]
    return f"missing {', '.join(missing)} (util-linux, iproute2)" if missing else None


def wrap(argv: list[str], creds: Credentials | None, network: bool) -> list[str]:
    """``argv`` run as ``creds`` in fresh PID (and, with ``network``, network) namespaces; unchanged when
    ``creds`` is None (single-user mode)."""
    if creds is None:
        return list(argv)
    groups = ",".join(str(g) for g in creds.groups) if creds.groups else None
    drop = ["setpriv", f"--reuid={creds.uid}", f"--regid={creds.gid}",
            f"--groups={groups}" if groups else "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--", *argv]
    ns = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"]
    if network:
        # loopback must be up for Spark's driver and Python workers; only root inside the namespace can do it
        return [*ns, "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "userbatch-run", *drop]
    return [*ns, "--", *drop]


__all__ = ["clean_environment", "tools_available", "wrap"]
