"""Names and sizes every cluster target shares: Kubernetes DNS labels and label values, memory strings, the
short digests that keep shortened names unique, and the Slurm account of a user or group.

One place for each rule, so a runner, a renderer and a check never build the same name two ways.
"""

from __future__ import annotations

import hashlib
import logging
import re

from ..errors import UserbatchError

log = logging.getLogger(__name__)


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


def digest(name: str) -> str:
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
    return f"{head}-{digest(name)}" if head else f"x{digest(name)}"


def label_value(value: str, max_len: int = 63) -> str:
    """``value`` as a Kubernetes label value (``[A-Za-z0-9._-]``, alphanumeric at both ends, at most 63), with
    the same deterministic digest suffix as :func:`dns_label` when anything had to change."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("._-")
    if clean == value and len(clean) <= max_len:
        return clean
    head = clean[: max_len - 9].strip("._-")
    return f"{head}-{digest(value)}" if head else f"x{digest(value)}"


class SchedulerConfigError(UserbatchError):
    """The quota file cannot be rendered for a scheduler as written (a name clash, a name a scheduler refuses)."""


def slurm_account(user: str | None, group: str | None) -> str:
    """The Slurm account a run is charged to: ``g_<group>``, else the user's own ``u_<user>`` — the facility's
    namespace convention, so a group and a user of the same name keep separate accounts. Slurm folds account
    names to lower case, so anything but ``[a-z0-9_]`` is replaced and a digest of the original appended."""
    if not (group or user):
        raise SchedulerConfigError("a Slurm account belongs to a user or a group")
    name = f"g_{group}" if group else f"u_{user}"
    clean = re.sub(r"[^a-z0-9_]+", "_", name.lower())
    if clean == name and len(name) <= 60:
        return name
    return f"{clean[:51].rstrip('_')}_{digest(name)}"


#: The prefix of the Kubernetes namespaces of runs (``runner.namespace_prefix`` in the facility config).
DEFAULT_NAMESPACE_PREFIX = "ub-"


def k8s_namespace(user: str, group: str | None, prefix: str = DEFAULT_NAMESPACE_PREFIX) -> str:
    """The Kubernetes namespace of a run: one per group, ``<prefix><group>``, else ``<prefix>user-<user>``.

    Parameters
    ----------
    user : str
        The facility user the run belongs to.
    group : str or None
        The group the run is charged to.
    prefix : str
        The namespace prefix of the deployment.

    Returns
    -------
    str
        A valid DNS label.
    """
    owner = group if group else f"user-{user}"
    return dns_label(f"{prefix}{owner}")


def k8s_namespace_prefix(runner_options: dict) -> str:
    """The namespace prefix a facility config's ``runner:`` section gives (the default unless it is Kubernetes)."""
    if runner_options.get("kind") != "kubernetes":
        return DEFAULT_NAMESPACE_PREFIX
    return runner_options.get("namespace_prefix", DEFAULT_NAMESPACE_PREFIX)

