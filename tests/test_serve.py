"""``userbatch serve`` for real: the API and its worker in one process on a loopback port, the CLI talking to it
with a bearer token, runs surviving a server restart (adopted by the new worker) and cancelled through the API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

# a server process and runs through spark-submit
pytestmark = pytest.mark.slow

QUICK = "import userbatch\nspark = userbatch.session()\nprint('rows', spark.range(1000).count())\n"
LONG = ("import time, userbatch\nspark = userbatch.session()\n"
        "spark.sparkContext.parallelize(range(1), 1).map(lambda x: time.sleep(600) or x).collect()\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fx(facility, tmp_path):
    return facility("admins: [boss]\nruns: {max_concurrent: 2, default_cores: 1, default_max_hours: 0.5}\n",
                    env={"USERBATCH_HOME": str(tmp_path / "home"), "USERBATCH_USER": "nobody"})


@pytest.fixture
def server_env(fx):
    """The server's environment: the test's facility (``fx``)."""
    return dict(os.environ)


def _start(env, port, log):
    proc = subprocess.Popen([sys.executable, "-m", "userbatch.cli", "serve", "--port", str(port),
                             "--no-history-server"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
        assert proc.poll() is None, "the server exited at start"
    raise AssertionError("the server did not answer /health")


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def _cli(env, token, *args, timeout=400):
    e = dict(env, USERBATCH_API_URL=env["_URL"], USERBATCH_TOKEN=token)
    return subprocess.run([sys.executable, "-m", "userbatch.cli", *args], env=e, capture_output=True, text=True,
                          timeout=timeout)


def test_cli_through_the_api_and_runs_surviving_a_restart(fx, server_env, tmp_path):
    boss = fx.fac("boss")
    ann_token, bob_token = boss.create_token("ann")["token"], boss.create_token("bob")["token"]
    port = _free_port()
    server_env["_URL"] = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "serve.log", "ab")  # noqa: SIM115
    server = _start(server_env, port, log)
    try:
        (tmp_path / "quick.py").write_text(QUICK)
        out = _cli(server_env, ann_token, "submit", "--script", str(tmp_path / "quick.py"), "--wait")
        assert out.returncode == 0, out.stderr
        assert " succeeded " in out.stdout and " ann " in out.stdout and "charged" in out.stdout
        run_id = out.stdout.split()[0]
        assert "rows 1000" in _cli(server_env, ann_token, "logs", run_id).stdout
        denied = _cli(server_env, bob_token, "status", run_id)
        assert denied.returncode == 2 and denied.stderr.strip() == f"error: run {run_id} belongs to ann"
        bad = _cli(server_env, "ub_not_a_token", "runs")
        assert bad.returncode == 2 and "unknown or revoked token" in bad.stderr

        (tmp_path / "long.py").write_text(LONG)
        long_id = _cli(server_env, ann_token, "submit", "--script", str(tmp_path / "long.py")).stdout.strip()
        deadline = time.monotonic() + 300
        while boss.status(long_id)["state"] != "running" or not boss.status(long_id).get("progress", {}).get(
                "tasks_total"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        pid = boss.status(long_id)["pid"]
        _stop(server)  # the server goes away; the run goes on
        os.killpg(pid, 0)
        assert boss.status(long_id)["state"] == "running"
        server = _start(server_env, port, log)  # the new worker adopts it, so cancel can stop it
        cancelled = _cli(server_env, ann_token, "cancel", long_id)
        assert cancelled.returncode == 0, cancelled.stderr
        deadline = time.monotonic() + 120
        while boss.status(long_id)["state"] != "cancelled":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
        assert boss.status(long_id)["charged_core_hours"] > 0
        assert "adopting its live process" in (tmp_path / "serve.log").read_text()
    finally:
        _stop(server)
        log.close()
