"""The runners by name: ``runner: {kind: ...}`` in the facility config picks one.

The facility's own runners are listed here; another package adds one through the entry-point group
``userbatch.runners`` (name -> a :class:`~userbatch.cluster.base.Runner` subclass), as ctrl_bps finds its WMS
plug-ins — no caller changes.
"""

from __future__ import annotations

import inspect
import logging
from importlib.metadata import entry_points

from ..config import settings
from ..errors import UserbatchError
from .base import Runner
from .kubernetes import KubernetesRunner
from .local import LocalRunner
from .slurm import SlurmRunner
from .standalone import StandaloneRunner
from .yarn import YarnRunner

log = logging.getLogger(__name__)


#: The facility's own runners, by the ``kind`` the facility config names.
RUNNERS: dict[str, type[Runner]] = {
    "local": LocalRunner,
    "standalone": StandaloneRunner,
    "yarn": YarnRunner,
    "kubernetes": KubernetesRunner,
    "slurm": SlurmRunner,
}
#: Entry-point group through which other packages add runners.
ENTRY_POINT_GROUP = "userbatch.runners"


def runners() -> dict[str, type[Runner]]:
    """Every runner by kind: the facility's own, then those of installed plug-ins (which cannot replace them).

    Returns
    -------
    dict of str to type
        Kind name to :class:`~userbatch.cluster.base.Runner` subclass.
    """
    found = dict(RUNNERS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            log.warning("runner plug-in %s=%s ignored: %r is a built-in runner", ep.name, ep.value, ep.name)
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not take the facility down; say which
            log.warning("runner plug-in %s=%s cannot be loaded: %s", ep.name, ep.value, exc)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Runner)):
            log.warning("runner plug-in %s=%s is not a Runner subclass; ignored", ep.name, ep.value)
            continue
        found[ep.name] = cls
    return found


def runner_for(kind: str, **options) -> Runner:
    """The runner named in the facility config (``runner: {kind: local|standalone|yarn|kubernetes, ...}``).

    Parameters
    ----------
    kind : str
        A key of :func:`runners`.
    **options
        The rest of the config's ``runner:`` section, passed to the runner's constructor. ``executor_cores`` /
        ``executor_memory`` (any kind) size every run's executors; the worker reads them (see
        :func:`~userbatch.cluster.base.executor_cores`), not the runner. The standalone runner's ``master``
        defaults to ``USERBATCH_SPARK_MASTER``.

    Returns
    -------
    Runner
    """
    options = {k: v for k, v in options.items() if k not in ("executor_cores", "executor_memory")}
    if kind == "standalone" and not options.get("master"):
        options["master"] = settings().spark.standalone_master
    known = runners()
    if kind not in known:
        raise UserbatchError(f"runner kind {kind!r} is not one of {', '.join(known)}")
    cls = known[kind]
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        ignored = sorted(set(options) - set(params))
        if ignored:
            log.warning("runner %s ignores option(s) %s", kind, ", ".join(ignored))
        options = {k: v for k, v in options.items() if k in params}
    return cls(**options)
