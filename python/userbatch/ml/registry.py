"""Registered models: names owned by the user who first registered them, versions, aliases, and loading one back.

MLflow's open-source registry has no permissions, so userbatch keeps the rule the catalog keeps for tables: a
registered model belongs to whoever created it (tag ``userbatch.owner``); only the owner (or a facility admin) adds
versions or moves aliases, anyone may use it. Names and aliases are checked here so that a bad one is a clear
error rather than an MLflow stack trace.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from ..errors import AccessDenied, UserbatchError
from ..extras import require
from ..facility.config import load_config
from .models import Predictor
from .tracking import configure

log = logging.getLogger(__name__)

OWNER_TAG = "userbatch.owner"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")


class ModelNotFound(UserbatchError):
    """No registered model (or version, or alias) of that name."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise UserbatchError(f"model name {name!r} must be 1-128 letters, digits, '_', '.', '-' (no '..')")
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.match(alias) or alias.lower() == "latest" or re.fullmatch(
            r"[vV]\d+", alias):
        raise UserbatchError(f"model alias {alias!r} must start with a letter, use letters, digits, '_', '-', and "
                             "not be 'latest' or look like a version (v1)")
    return alias


def _is_admin(user: str) -> bool:

    try:
        return user in load_config().admins
    except UserbatchError:
        return False


def _registered(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(e, "error_code", "")) or "not found" in str(e).lower():
            return None
        raise


def check_can_register(client, name: str, user: str) -> None:
    """Raise :class:`AccessDenied` when ``name`` is another user's registered model."""
    check_name(name)
    rm = _registered(client, name)
    if rm is None:
        return
    owner = rm.tags.get(OWNER_TAG)
    if owner and owner != user and not _is_admin(user):
        raise AccessDenied(f"registered model {name!r} belongs to {owner}; choose another name "
                           f"(e.g. {user}.{name})")


def register(client, model_uri: str, name: str, run_id: str, user: str, alias: str | None = None) -> int:
    """A new version of ``name`` from ``model_uri`` (creating the model, owned by ``user``); optionally aliased."""
    check_can_register(client, name, user)
    if alias:
        check_alias(alias)
    if _registered(client, name) is None:
        try:
            client.create_registered_model(name, tags={OWNER_TAG: user},
                                           description=f"registered by userbatch for {user}")
        except Exception:  # noqa: BLE001 - created concurrently: fine if it is ours
            check_can_register(client, name, user)
    mv = client.create_model_version(name, model_uri, run_id=run_id, tags={OWNER_TAG: user})
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    log.info("registered %s version %s%s", name, mv.version, f" as @{alias}" if alias else "")
    return int(mv.version)


def set_alias(client, name: str, alias: str, version: int, user: str) -> None:
    check_can_register(client, name, user)
    check_alias(alias)
    resolve_version(client, name, version=version)
    client.set_registered_model_alias(name, alias, str(version))


@dataclass
class ModelRef:
    name: str
    version: int
    alias: str | None
    run_id: str | None
    uri: str


def resolve_version(client, name: str, version: int | None = None, alias: str | None = None) -> ModelRef:
    """The model version asked for: by number, by alias, or the latest."""
    from mlflow.exceptions import MlflowException

    check_name(name)
    rm = _registered(client, name)
    if rm is None:
        known = sorted(m.name for m in client.search_registered_models(max_results=200))
        raise ModelNotFound(f"no registered model {name!r}" + (f"; known: {', '.join(known)}" if known else ""))
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    if alias:
        try:
            mv = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            aliases = sorted(getattr(rm, "aliases", {}) or {})
            raise ModelNotFound(f"model {name!r} has no alias {alias!r}"
                                + (f"; aliases: {', '.join(aliases)}" if aliases else "")) from None
    else:
        v = int(version) if version is not None else (versions[-1] if versions else None)
        if v is None or v not in versions:
            raise ModelNotFound(f"model {name!r} has no version {version}; versions: "
                                f"{', '.join(map(str, versions)) or 'none'}")
        mv = client.get_model_version(name, str(v))
    return ModelRef(name, int(mv.version), alias, mv.run_id, f"models:/{name}/{mv.version}")


def load(name: str, version: int | None = None, alias: str | None = None):
    """``(Predictor, ModelRef, metadata)`` of a registered model version, whichever flavor it was logged with."""
    mlflow = require("mlflow", "ml")


    client = configure()
    ref = resolve_version(client, name, version=version, alias=alias)
    info = mlflow.models.get_model_info(ref.uri)
    meta = (info.metadata or {}).get("userbatch")
    if not meta:
        raise UserbatchError(f"model {name} v{ref.version} was not trained by userbatch (no feature columns and "
                             "classes in its metadata); score it with mlflow.pyfunc instead")
    if "spark" in info.flavors:
        import mlflow.spark

        model = mlflow.spark.load_model(ref.uri)
        flavor = "spark"
    elif "sklearn" in info.flavors:
        import mlflow.sklearn

        model = mlflow.sklearn.load_model(ref.uri)
        flavor = "sklearn"
    else:
        raise UserbatchError(f"model {name} v{ref.version} has flavors {', '.join(info.flavors)}; "
                             "userbatch scores spark and sklearn models")
    pred = Predictor(flavor, model, list(meta["feature_columns"]), list(meta["classes"]),
                     bool(meta.get("probabilities", True)))
    return pred, ref, meta


def list_models() -> list[dict]:
    """Registered models: name, owner, latest version, aliases."""
    client = configure()
    out = []
    for rm in client.search_registered_models(max_results=1000):
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{rm.name}'"))
        out.append({"name": rm.name, "owner": rm.tags.get(OWNER_TAG, ""), "latest_version": versions[-1]
                    if versions else None, "versions": len(versions),
                    "aliases": {a: int(v) for a, v in (getattr(rm, "aliases", {}) or {}).items()}})
    return sorted(out, key=lambda m: m["name"])


def describe(name: str, version: int | None = None, alias: str | None = None) -> dict:
    """One model version: its MLflow run, validation metrics, classes, features and training tables."""
    mlflow = require("mlflow", "ml")


    client = configure()
    ref = resolve_version(client, name, version=version, alias=alias)
    info = mlflow.models.get_model_info(ref.uri)
    meta = (info.metadata or {}).get("userbatch", {})
    run = client.get_run(ref.run_id) if ref.run_id else None
    return {"name": ref.name, "version": ref.version, "uri": ref.uri, "mlflow_run_id": ref.run_id,
            "flavors": sorted(info.flavors), "algorithm": meta.get("algorithm"), "classes": meta.get("classes"),
            "feature_columns": meta.get("feature_columns"), "training_inputs": meta.get("training_inputs", []),
            "metrics": dict(run.data.metrics) if run else {},
            "facility_run_id": run.data.tags.get("userbatch.run_id") if run else None,
            "signature": str(info.signature) if info.signature else None}
