"""A real single-node Slurm with accounting on this machine: ``userbatch cluster slurm start|stop|status``.

What a site runs, at the size of one machine: ``munged`` (its own key and socket), a private MariaDB on
127.0.0.1 (its own data directory; the ``slurm`` database user has a generated password that only root can read),
``slurmdbd`` on it, ``slurmctld`` and ``slurmd`` — all with their configuration, state, spool, pids and logs under
one directory (default ``<facility home>/slurm``), so that nothing in ``/etc`` is touched and ``stop`` leaves no
daemon behind. The order is the one Slurm needs: munge, database, slurmdbd, the cluster registered in accounting,
slurmctld (fatal without slurmdbd), slurmd.

The configuration is the one :mod:`userbatch.cluster.slurm` assumes: ``AccountingStorageEnforce=associations,
limits,safe`` (Slurm itself refuses a job that could overrun its account's ``GrpTRESMins``), priority/multifactor
with usage that does not decay and resets each period (``GrpTRESMins`` then behaves like the ledger's allocation),
``proctrack/linuxproc`` and ``task/none`` (no cgroups in a container). Client commands find it through
``SLURM_CONF`` (:func:`slurm_env`); the facility's Slurm runner is given that path.

Debian's packages (``slurm-wlm slurmdbd munge mariadb-server``) are installed when missing and we are root, as the
set-up script installs PostgreSQL. Every client call here has a timeout: a daemon that is not up yet must not hang
the caller.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..config import settings
from ..errors import UserbatchError

log = logging.getLogger(__name__)

#: The Debian packages a local Slurm needs, and a program each provides.
PACKAGES = {"slurm-wlm": "slurmctld", "slurmdbd": "slurmdbd", "munge": "munged", "mariadb-server": "mariadbd"}
#: Name of the cluster in Slurm's accounting.
CLUSTER = "userbatch"
PARTITION = "batch"
#: Ports (loopback only): slurmctld, slurmd, slurmdbd, MariaDB.
PORTS = {"slurmctld": 6817, "slurmd": 6818, "slurmdbd": 6819, "mariadb": 13306}
DAEMONS = ("munged", "mariadb", "slurmdbd", "slurmctld", "slurmd")


def default_dir() -> Path:
    """``<facility home>/slurm``."""
    return settings().home / "slurm"


def conf_path(root: str | Path | None = None) -> Path:
    """The ``slurm.conf`` of the local Slurm under ``root`` (default :func:`default_dir`)."""
    return Path(root or default_dir()) / "etc" / "slurm.conf"


def slurm_env(conf: str | Path, base: dict | None = None) -> dict[str, str]:
    """An environment in which Slurm's client commands talk to the Slurm of ``conf``."""
    env = dict(os.environ if base is None else base)
    env["SLURM_CONF"] = str(conf)
    return env


def _run(argv: list[str], conf: Path, timeout: float = 10.0, check: bool = False, **kw):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=slurm_env(conf),
                              stdin=subprocess.DEVNULL, **kw)
    except subprocess.TimeoutExpired:
        if check:
            raise UserbatchError(f"{' '.join(argv)} did not answer within {timeout:g} s") from None
        return subprocess.CompletedProcess(argv, 124, "", "timeout")
    if check and done.returncode != 0:
        raise UserbatchError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return done


def _pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    try:  # a zombie is not a daemon
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().split(") ")[-1][:1] == "Z":
                return None
    except OSError:
        return None
    return pid


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _wait(what: str, ok, timeout: float, log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(0.5)
    tail = ""
    if log_file is not None and log_file.exists():
        tail = "; its log ends: " + " | ".join(log_file.read_text(errors="replace").strip().splitlines()[-5:])
    raise UserbatchError(f"{what} did not come up within {timeout:g} s{tail}")


def ensure_packages() -> None:
    """Install Debian's Slurm, slurmdbd, munge and MariaDB when a program is missing (root only)."""
    missing = [pkg for pkg, prog in PACKAGES.items()
               if not (shutil.which(prog) or Path("/usr/sbin", prog).exists())]
    if not missing:
        return
    if os.geteuid() != 0:
        raise UserbatchError(f"a local Slurm needs the Debian packages {' '.join(missing)}; install them as root "
                             f"(apt-get install {' '.join(missing)})")
    log.info("installing %s", " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0 and argv[1] == "install":
            raise UserbatchError(f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr.strip()[-500:]}")


def _memory_mb() -> int:
    with open("/proc/meminfo") as fh:
        total_kb = int(next(line for line in fh if line.startswith("MemTotal")).split()[1])
    return max(1024, total_kb // 1024 - 2048)


def _paths(root: Path) -> dict[str, Path]:
    return {name: root / name for name in ("etc", "munge", "mysql", "state", "spool", "log", "run")}


def _write_configs(root: Path, cpus: int, memory_mb: int) -> Path:
    p = _paths(root)
    host = socket.gethostname().split(".")[0]
    secret = p["mysql"] / "slurm.password"
    if not secret.exists():
        secret.write_text(secrets.token_hex(16))
        os.chmod(secret, 0o600)
    password = secret.read_text().strip()
    munge_socket = p["munge"] / "munge.socket"
    conf = p["etc"] / "slurm.conf"
    conf.write_text("\n".join([
        "# written by 'userbatch cluster slurm start' (userbatch.cluster.slurm_local); rewritten at each start",
        f"ClusterName={CLUSTER}",
        f"SlurmctldHost={host}(127.0.0.1)",
        "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={PORTS['slurmctld']}", f"SlurmdPort={PORTS['slurmd']}",
        "AuthType=auth/munge", f"AuthInfo=socket={munge_socket}", "CredType=cred/munge",
        f"StateSaveLocation={p['state']}", f"SlurmdSpoolDir={p['spool']}/slurmd",
        f"SlurmctldPidFile={p['run']}/slurmctld.pid", f"SlurmdPidFile={p['run']}/slurmd.pid",
        f"SlurmctldLogFile={p['log']}/slurmctld.log", f"SlurmdLogFile={p['log']}/slurmd.log",
        "SlurmctldDebug=info", "SlurmdDebug=info",
        # no systemd, no cgroups in a container: processes are tracked through /proc
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill", "SchedulerParameters=bf_interval=1,sched_interval=1",
        "ReturnToService=2", "KillWait=5", "MinJobAge=60", "InactiveLimit=0", "Waittime=0",
        "MessageTimeout=20", "SlurmdTimeout=120",
        "JobAcctGatherType=jobacct_gather/linux", "JobAcctGatherFrequency=10",
        "AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=127.0.0.1",
        f"AccountingStoragePort={PORTS['slurmdbd']}", "AccountingStorageTRES=cpu,mem,node",
        f"AccountingStoragePass={munge_socket}",  # with slurmdbd: the munge socket of its connections
        # Slurm itself refuses what its account limits do not allow (GrpTRESMins, MaxTRES), before it starts
        "AccountingStorageEnforce=associations,limits,safe",
        # usage does not decay and resets each period: GrpTRESMins is then a budget like the ledger's allocation
        "PriorityType=priority/multifactor", "PriorityDecayHalfLife=0", "PriorityUsageResetPeriod=MONTHLY",
        "PriorityWeightFairshare=10000", "PriorityWeightAge=1000", "PriorityCalcPeriod=1",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        ""]))
    os.chmod(conf, 0o644)
    dbd = p["etc"] / "slurmdbd.conf"
    dbd.write_text("\n".join([
        "# written by 'userbatch cluster slurm start'; holds the database password: root only",
        "AuthType=auth/munge", f"AuthInfo=socket={munge_socket}",
        "DbdHost=localhost", "DbdAddr=127.0.0.1", f"DbdPort={PORTS['slurmdbd']}", "SlurmUser=root",
        "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1", f"StoragePort={PORTS['mariadb']}",
        "StorageUser=slurm", f"StoragePass={password}", "StorageLoc=slurm_acct_db",
        f"PidFile={p['run']}/slurmdbd.pid", f"LogFile={p['log']}/slurmdbd.log", "DebugLevel=info", ""]))
    os.chmod(dbd, 0o600)
    return conf


def _start_munge(root: Path) -> None:
    p = _paths(root)
    key = p["munge"] / "munge.key"
    if not key.exists():
        key.write_bytes(secrets.token_bytes(1024))
    os.chmod(key, 0o400)
    if _pid(p["run"] / "munged.pid"):
        return
    subprocess.run(["munged", "--force", "--num-threads=10", f"--key-file={key}", f"--socket={p['munge']}/munge.socket",
                    f"--pid-file={p['run']}/munged.pid", f"--log-file={p['log']}/munged.log",
                    f"--seed-file={p['munge']}/munged.seed"], check=True, capture_output=True, timeout=30)
    _wait("munged", lambda: (p["munge"] / "munge.socket").exists(), 20, p["log"] / "munged.log")


def _mysql(root: Path, sql: str) -> None:
    p = _paths(root)
    done = subprocess.run(["mariadb", "--no-defaults", f"--socket={p['mysql']}/mysqld.sock", "-uroot", "-e", sql],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise UserbatchError(f"MariaDB refused the set-up of Slurm's database: {done.stderr.strip()[-300:]}")


def _start_mariadb(root: Path) -> None:
    p = _paths(root)
    data = p["mysql"] / "data"
    if not (data / "mysql").is_dir():
        data.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                               "--skip-test-db", "--auth-root-authentication-method=socket"],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise UserbatchError(f"mariadb-install-db failed: {done.stderr.strip()[-500:]}")
    if not _pid(p["run"] / "mariadb.pid"):
        if _port_open(PORTS["mariadb"]):
            raise UserbatchError(f"port {PORTS['mariadb']} is taken by another process: is a local Slurm of "
                                 "another directory running? ('userbatch cluster slurm stop --dir ...')")
        mysqld = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        with open(p["log"] / "mariadb.out", "ab") as out:
            subprocess.Popen([mysqld, "--no-defaults", f"--datadir={data}", f"--socket={p['mysql']}/mysqld.sock",
                              f"--port={PORTS['mariadb']}", "--bind-address=127.0.0.1", "--user=root",
                              f"--pid-file={p['run']}/mariadb.pid", f"--log-error={p['log']}/mariadb.log",
                              "--skip-name-resolve", "--innodb-buffer-pool-size=64M"],
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait("MariaDB", lambda: (p["mysql"] / "mysqld.sock").exists() and _port_open(PORTS["mariadb"]), 60,
              p["log"] / "mariadb.log")
    password = (p["mysql"] / "slurm.password").read_text().strip()
    _mysql(root, "CREATE DATABASE IF NOT EXISTS slurm_acct_db; "
                 f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                 f"ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                 "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")


def _node() -> str:
    return socket.gethostname().split(".")[0]


def start(root: str | Path | None = None, cpus: int | None = None, memory_mb: int | None = None,
          timeout: float = 120.0) -> dict:
    """Start (or finish starting) the local Slurm under ``root``; idempotent.

    Parameters
    ----------
    root : str or Path, optional
        Its directory (configuration, state, logs); default ``<facility home>/slurm``.
    cpus : int, optional
        CPUs of the one node (default: this machine's).
    memory_mb : int, optional
        The node's ``RealMemory`` (default: this machine's less 2 GiB).
    timeout : float
        Seconds each daemon may take to answer.

    Returns
    -------
    dict
        :func:`status` once every daemon answers and the node is usable.
    """
    if os.geteuid() != 0:
        raise UserbatchError("a local Slurm runs its daemons as root (slurmd must start jobs as their owners)")
    ensure_packages()
    root = Path(root or default_dir()).resolve()
    p = _paths(root)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # job owners read slurm.conf and reach the munge socket below
    for name, mode in (("etc", 0o755), ("munge", 0o755), ("mysql", 0o700), ("state", 0o700), ("spool", 0o755),
                       ("log", 0o700), ("run", 0o755)):
        p[name].mkdir(exist_ok=True)
        os.chmod(p[name], mode)
    before = conf_path(root).read_text() if conf_path(root).is_file() else None
    conf = _write_configs(root, cpus or os.cpu_count() or 1, memory_mb or _memory_mb())
    if before is not None and before != conf.read_text() and _pid(p["run"] / "slurmctld.pid"):
        _run(["scontrol", "reconfigure"], conf, timeout=30)  # running daemons take the new configuration
    _start_munge(root)
    _start_mariadb(root)
    if not _pid(p["run"] / "slurmdbd.pid"):
        _run(["slurmdbd"], conf, timeout=30, check=True)
    _wait("slurmdbd", lambda: _run(["sacctmgr", "-n", "-P", "list", "cluster"], conf, timeout=5).returncode == 0,
          timeout, p["log"] / "slurmdbd.log")
    if CLUSTER not in _run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], conf, timeout=10).stdout:
        _run(["sacctmgr", "-i", "add", "cluster", CLUSTER], conf, timeout=20, check=True)
    if not _pid(p["run"] / "slurmctld.pid"):
        _run(["slurmctld"], conf, timeout=30, check=True)
    _wait("slurmctld", lambda: _run(["scontrol", "ping"], conf, timeout=5).stdout.count("UP") >= 1, timeout,
          p["log"] / "slurmctld.log")
    if not _pid(p["run"] / "slurmd.pid"):
        (p["spool"] / "slurmd").mkdir(exist_ok=True)
        _run(["slurmd"], conf, timeout=30, check=True)

    def node_ready() -> bool:
        state = _run(["sinfo", "-h", "-n", _node(), "-o", "%T"], conf, timeout=5).stdout.strip().lower()
        if state.startswith(("down", "drain")):
            _run(["scontrol", "update", f"nodename={_node()}", "state=resume"], conf, timeout=5)
        return state.startswith(("idle", "mixed", "allocated", "completing"))

    _wait("slurmd (the node)", node_ready, timeout, p["log"] / "slurmd.log")
    log.info("local Slurm up under %s (SLURM_CONF=%s)", root, conf)
    return status(root)


def status(root: str | Path | None = None) -> dict:
    """Where the local Slurm under ``root`` stands: each daemon's pid (None: not running), the node's state.

    Parameters
    ----------
    root : str or Path, optional
        Its directory; default ``<facility home>/slurm``.

    Returns
    -------
    dict
        ``dir``, ``conf``, ``daemons`` (name -> pid or None), ``node``, ``node_state``, ``running``.
    """
    root = Path(root or default_dir()).resolve()
    p = _paths(root)
    daemons = {name: _pid(p["run"] / f"{name}.pid") for name in DAEMONS}
    conf = conf_path(root)
    node_state = None
    if daemons["slurmctld"] and conf.exists():
        node_state = _run(["sinfo", "-h", "-n", _node(), "-o", "%T"], conf, timeout=5).stdout.strip() or None
    return {"dir": str(root), "conf": str(conf), "cluster": CLUSTER, "partition": PARTITION,
            "daemons": daemons, "node": _node(), "node_state": node_state,
            "running": all(daemons.values()) and bool(node_state)}


def stop(root: str | Path | None = None, timeout: float = 30.0) -> dict:
    """Stop every daemon of the local Slurm under ``root`` (jobs still running are killed with it).

    Parameters
    ----------
    root : str or Path, optional
        Its directory; default ``<facility home>/slurm``.
    timeout : float
        Seconds each daemon gets to exit before it is killed.

    Returns
    -------
    dict
        ``stopped``: the daemons that were running.
    """
    root = Path(root or default_dir()).resolve()
    p = _paths(root)
    conf = conf_path(root)
    running = {name: _pid(p["run"] / f"{name}.pid") for name in DAEMONS}
    if running["slurmctld"] and conf.exists():
        _run(["scancel", "--quiet", "--full", "-p", PARTITION], conf, timeout=10)  # every job, every user
        _run(["scontrol", "shutdown"], conf, timeout=15)
    for name in ("slurmd", "slurmctld", "slurmdbd", "mariadb", "munged"):
        pid = running[name]
        if not pid:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid(p["run"] / f"{name}.pid") == pid:
            time.sleep(0.2)
        if _pid(p["run"] / f"{name}.pid") == pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    stopped = sorted(n for n, pid in running.items() if pid)
    log.info("local Slurm under %s stopped (%s)", root, ", ".join(stopped) or "nothing was running")
    return {"dir": str(root), "stopped": stopped}


def as_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, default=str)
