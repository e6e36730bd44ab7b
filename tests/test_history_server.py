"""The Spark History Server that ``userbatch serve`` runs: over a directory linking a real Spark application's
event log it lists that application in its REST API, it listens on loopback only, and stopping it closes the port.
The run page's link, the config key and its refusals are checked without a JVM."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from userbatch.errors import UserbatchError
from userbatch.facility import history_server as hs
from userbatch.facility.config import ConfigError, parse_config

APP = textwrap.dedent('''
    import sys
    from pyspark.sql import SparkSession
    from userbatch.cluster.base import event_log_conf
    builder = SparkSession.builder.master("local[1]").appName("hs-test").config("spark.ui.enabled", "false")
    for key, value in event_log_conf(sys.argv[1]).items():  # the event log exactly as a facility run writes it
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    assert spark.range(100).count() == 100
    print("APP", spark.sparkContext.applicationId)
    spark.stop()
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a Spark application and the History Server: two JVMs
def test_the_history_server_lists_a_runs_application(tmp_path):
    run_dir = tmp_path / "runs" / "r1"  # a run directory as the worker lays it out
    (run_dir / "eventlog").mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", APP, str(run_dir)], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-2000:]
    app_id = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("APP "))
    history = tmp_path / "history"
    assert hs.link_event_logs(tmp_path / "runs", history) == 1
    assert hs.link_event_logs(tmp_path / "runs", history) == 0  # once
    port = _free_port()
    server = hs.start(history, port, update_interval_s=1, wait_s=90)
    try:
        listed, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline and app_id not in listed:
            r = httpx.get(f"http://127.0.0.1:{port}/api/v1/applications", timeout=5)
            try:  # while it starts, the server may answer 200 with a page that is not yet the JSON listing
                listed = [a["id"] for a in r.json()] if r.status_code == 200 else []
            except ValueError:
                listed = []
            time.sleep(1)
        assert app_id in listed
        page = httpx.get(hs.history_url(app_id, port), timeout=10, follow_redirects=True)
        assert page.status_code == 200 and app_id in page.text
        # loopback only: the port does not answer on this machine's other addresses
        others = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1"}
        for addr in others:
            if not addr.startswith("127."):
                with socket.socket() as s:
                    s.settimeout(1)
                    assert s.connect_ex((addr, port)) != 0, addr
        with pytest.raises(UserbatchError, match="in use"):
            hs.start(history, port, wait_s=5)
    finally:
        hs.stop(server)
    assert server.proc.poll() is not None
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_start_refuses_a_missing_directory(tmp_path):
    with pytest.raises(UserbatchError, match="no event-log directory"):
        hs.start(tmp_path / "nope", _free_port())


def test_history_url_and_config():
    assert hs.history_url("local-1700000000000", 18080) == "http://127.0.0.1:18080/history/local-1700000000000/jobs/"
    assert hs.history_url("a/../b") == "http://127.0.0.1:18080/history/a%2F..%2Fb/jobs/"
    assert parse_config({}).history_port == hs.DEFAULT_PORT
    assert parse_config({"history": {"port": 19090}}).history_port == 19090
    for bad in ({"port": 80}, {"port": "x"}, {"port": True}, {"host": "0.0.0.0"}, [1]):
        with pytest.raises(ConfigError, match="history takes port"):
            parse_config({"history": bad})


def test_a_run_with_an_application_links_to_its_history(facility):
    """``Facility.status`` gives ``history_url`` once the run has a Spark application id, not before."""
    from userbatch.facility.models import RunRow
    from userbatch.tables.db import transaction

    fx = facility("admins: [boss]\nhistory: {port: 19191}\n")
    fac = fx.fac("a")
    run = fac.submit(script=("x.py", "print(1)\n"))
    assert "history_url" not in fac.status(run["id"])
    with transaction(fx.engine) as s:
        s.get(RunRow, run["id"]).app_id = "local-123"
    assert fac.status(run["id"])["history_url"] == "http://127.0.0.1:19191/history/local-123/jobs/"
