"""Settings: one typed object, from the environment over a settings file over defaults, read once per environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from userbatch.config import RunContext, Settings, Tuning, reload_settings, settings
from userbatch.errors import UserbatchError


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    import os

    for k in list(os.environ):
        if k.startswith(("USERBATCH_", "SPARK_MASTER", "SPARK_REMOTE", "MLFLOW_TRACKING_URI")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("USERBATCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_defaults_are_typed_and_under_the_home(clean_env):
    s = settings()
    assert isinstance(s, Settings) and s.home == clean_env.resolve()
    assert s.db_url == f"sqlite:///{clean_env.resolve() / 'facility.db'}"
    assert s.warehouse == clean_env.resolve() / "warehouse"
    assert s.tuning == Tuning() and s.tuning.rows_per_task == 600_000
    assert s.run == RunContext() and s.run.write_namespaces is None and not s.in_run
    assert s.spark.master is None and s.spark.driver_memory == "6g" and s.spark.ui is False


def test_read_once_per_environment(clean_env, monkeypatch):
    a, b = settings(), settings()
    assert a is b  # nothing re-read while the environment stands still
    monkeypatch.setenv("USERBATCH_ROWS_PER_TASK", "1234")
    c = settings()
    assert c is not a and c.tuning.rows_per_task == 1234


def test_environment_wins_over_the_settings_file(clean_env, monkeypatch):
    clean_env.mkdir(parents=True)
    (clean_env / "settings.toml").write_text(
        'db_url = "postgresql://db.example/ub"\ngroups = ["a", "b"]\n'
        '[tuning]\nrows_per_task = 1000\nlight_path_max_rows = 7\n[spark]\ndriver_memory = "3g"\nui = true\n')
    s = reload_settings()
    assert s.db_url == "postgresql://db.example/ub" and s.groups == ("a", "b")
    assert s.tuning.rows_per_task == 1000 and s.tuning.light_path_max_rows == 7
    assert s.spark.driver_memory == "3g" and s.spark.ui is True
    assert {"db_url", "groups"} <= s.given and "warehouse" not in s.given
    monkeypatch.setenv("USERBATCH_ROWS_PER_TASK", "5")
    monkeypatch.setenv("USERBATCH_DRIVER_MEMORY", "9g")
    s = settings()
    assert s.tuning.rows_per_task == 5 and s.tuning.light_path_max_rows == 7 and s.spark.driver_memory == "9g"


def test_run_context_from_the_worker_environment(clean_env, monkeypatch):
    monkeypatch.setenv("USERBATCH_RUN_ID", "abc")
    monkeypatch.setenv("USERBATCH_PINS", '{"cfg.pinned": "3"}')  # a table no test writes (runctx remembers writes)
    monkeypatch.setenv("USERBATCH_OUTPUT_MAP", '{"u_a.t": "u_a.t_rerun_abc"}')
    monkeypatch.setenv("USERBATCH_WRITE_NAMESPACES", "u_a,g_team")
    run = settings().run
    assert run.run_id == "abc" and run.pins == {"cfg.pinned": 3}
    assert run.output_map == {"u_a.t": "u_a.t_rerun_abc"} and run.write_namespaces == ("u_a", "g_team")
    from userbatch.errors import AccessDenied
    from userbatch.tables import runctx

    assert runctx.pinned_version("cfg.pinned") == 3 and runctx.output_name("u_a.t") == "u_a.t_rerun_abc"
    runctx.check_writable("g_team.x")
    with pytest.raises(AccessDenied, match="only in namespace"):
        runctx.check_writable("dp1.object")


@pytest.mark.parametrize("name, value, message", [
    ("USERBATCH_ROWS_PER_TASK", "many", "must be a number"),
    ("USERBATCH_PINS", "{not json", "not valid JSON"),
    ("USERBATCH_OUTPUT_MAP", "[1, 2]", "must be a JSON object"),
    ("USERBATCH_SETTINGS", "/nonexistent/settings.toml", "not a file"),
])
def test_bad_settings_say_which(clean_env, monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(UserbatchError, match=message):
        settings()


def test_a_broken_settings_file_is_named(clean_env, monkeypatch, tmp_path):
    bad = Path(tmp_path / "s.toml")
    bad.write_text("db_url = \n")
    monkeypatch.setenv("USERBATCH_SETTINGS", str(bad))
    with pytest.raises(UserbatchError, match="s.toml cannot be read"):
        settings()


def test_every_setting_is_documented():
    """docs/operator-guide/settings.md names every field of the settings object (and the tuning and Spark ones)."""
    from dataclasses import fields

    from userbatch.config import SparkSettings

    page = (Path(__file__).resolve().parents[1] / "docs" / "operator-guide" / "settings.md").read_text()
    missing = [f.name for cls in (Settings, Tuning, SparkSettings) for f in fields(cls)
               if f.name not in ("run", "spark", "tuning", "given") and f"`{f.name}`" not in page]
    assert not missing, f"settings not documented in docs/operator-guide/settings.md: {missing}"


def test_env_names_lists_exactly_what_the_settings_read(clean_env):
    """ENV_NAMES (which deployment manifests are checked against) is every variable _build reads, and only those."""
    from userbatch import config

    asked = set()

    class Recording(dict):
        def get(self, key, default=None):
            asked.add(key)
            return super().get(key, default)

    config._build(Recording({"USERBATCH_HOME": str(clean_env)}))
    assert asked == set(config.ENV_NAMES)
