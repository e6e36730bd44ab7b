"""The file system follows the catalog: who owns a namespace and a table directory, and its mode.

A run executes as its owner (:mod:`.accounts`), so these modes are what keep one user's private table from another
user's script — the catalog's visibility is only the facility's own view of the same rule.

* The facility's state (database file, MLflow store, worker locks) is the facility account's, mode 0600/0700.
  The facility home, the runs directory and the warehouse root are 0711: runs may pass through to what is theirs
  but cannot list or open anything else.
* A run directory belongs to the run's owner, mode 0700: no run reads another's.
* A namespace ``u_<user>`` (or one the config gives a user) is the user's, 0711; ``g_<group>`` (or one given to a
  group) is root's with the group's gid, 02771 — members create tables there, new entries inherit the group.
* A table's directory: private 0700, group 02770 with the table's group, public 0755 (02775 in a group namespace).
  Files inside are created group-writable and world-readable (runs use umask 002); the table directory's mode is
  the gate, so changing visibility is one chmod.

:func:`fsck` reports every place where catalog and file system disagree and, with ``repair``, fixes it.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..tables.catalog import TableEntry
from .accounts import IdentityConfig, effective_mode, ensure_os_group, ensure_os_user
from .config import FacilityConfig

log = logging.getLogger(__name__)

STATE_FILE_MODE = 0o600
PASS_THROUGH_MODE = 0o711
USER_NAMESPACE_MODE = 0o711
GROUP_NAMESPACE_MODE = 0o2771
RUN_DIR_MODE = 0o700


def multi_user(config: FacilityConfig) -> bool:
    return effective_mode(config.identity) == "os"


def sqlite_path(db_url: str) -> Path | None:
    return Path(db_url.removeprefix("sqlite:///")) if db_url.startswith("sqlite:///") else None


def secure_facility_state(config: FacilityConfig, home: Path, db_url: str, warehouse: Path) -> None:
    """Close the facility's own files to runs and open the pass-through directories (idempotent)."""
    if not multi_user(config):
        return
    for d in (home, home / "runs", warehouse):
        d.mkdir(parents=True, exist_ok=True)
        _set(d, 0, 0, PASS_THROUGH_MODE)
    for d in (home / "workers",):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
    files = [home / "mlflow.db"]
    db = sqlite_path(db_url)
    if db is not None:
        files += [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"),
                  db.with_name(db.name + "-journal")]
    for f in files:
        if f.exists() and not f.is_symlink():
            os.chmod(f, STATE_FILE_MODE)
    for d in (home / "mlartifacts", home / "spark"):
        if d.is_dir():
            os.chmod(d, 0o700)
    blocked = unreachable_ancestor(warehouse) or unreachable_ancestor(home / "runs")
    if blocked:
        log.warning("%s is not traversable by other accounts (mode %o): runs cannot reach their tables or run "
                    "directories below it; chmod o+x it", blocked, stat.S_IMODE(blocked.stat().st_mode))


def unreachable_ancestor(path: Path) -> Path | None:
    """The first ancestor of ``path`` that other accounts cannot pass through, or None."""
    for p in reversed(Path(path).resolve().parents):
        try:
            if not p.stat().st_mode & stat.S_IXOTH:
                return p
        except OSError:
            return p
    return None


def _set(path: Path, uid: int, gid: int, mode: int) -> None:
    """chown + chmod one path, never following a symlink (a run may have planted one)."""
    if path.is_symlink():
        raise PermissionError(f"{path} is a symbolic link; refusing to change it")
    os.chown(path, uid, gid, follow_symlinks=False)
    os.chmod(path, mode)


# ---------------------------------------------------------------------------------------------- namespaces
def namespace_owner(config: FacilityConfig, ns: str) -> tuple[str, str] | None:
    """("user", name) or ("group", name) for a namespace someone may write; None for the facility's own."""
    spec = config.namespaces.get(ns) or {}
    if spec.get("owner"):
        return "user", str(spec["owner"])
    if spec.get("group"):
        return "group", str(spec["group"])
    if ns.startswith("u_") and len(ns) > 2:
        return "user", ns[2:]
    if ns.startswith("g_") and len(ns) > 2:
        return "group", ns[2:]
    return None


def namespace_expectation(config: FacilityConfig, ns: str) -> tuple[int, int, int]:
    """(uid, gid, mode) the namespace directory should have."""
    owner = namespace_owner(config, ns)
    ident: IdentityConfig = config.identity
    if owner is None:
        return 0, 0, 0o755
    kind, name = owner
    if kind == "user":
        uid, gid = ensure_os_user(ident, name)
        return uid, gid, USER_NAMESPACE_MODE
    return 0, ensure_os_group(ident, name), GROUP_NAMESPACE_MODE


def ensure_namespace(config: FacilityConfig, warehouse: Path, ns: str) -> Path:
    """The namespace directory, created and owned as :func:`namespace_expectation` says."""
    d = Path(warehouse) / ns
    d.mkdir(parents=True, exist_ok=True)
    if multi_user(config):
        _set(d, *namespace_expectation(config, ns))
    return d


# ---------------------------------------------------------------------------------------------- tables
def table_expectation(config: FacilityConfig, entry: TableEntry) -> tuple[int, int, int]:
    """(uid, gid, mode) of a table's directory, from its owner, group, visibility and namespace."""
    ident = config.identity
    uid, gid = ensure_os_user(ident, entry.owner)
    owner = namespace_owner(config, entry.namespace)
    in_group_ns = owner is not None and owner[0] == "group"
    if entry.visibility == "group" and entry.group:
        return uid, ensure_os_group(ident, entry.group), 0o2770
    if in_group_ns:
        gid = ensure_os_group(ident, owner[1])
    if entry.visibility == "private":
        return uid, gid, 0o700
    return uid, gid, 0o2775 if in_group_ns else 0o755


def apply_table(config: FacilityConfig, entry: TableEntry) -> None:
    """Give a table's directory the owner, group and mode its catalog entry says (the top directory only: it is
    the gate; the margin and log inside inherit nothing that matters)."""
    if not multi_user(config) or entry.format == "hats" and not Path(entry.location).is_dir():
        return
    loc = Path(entry.location)
    if not loc.exists():
        loc.mkdir(parents=True, mode=0o700)
    _set(loc, *table_expectation(config, entry))


def hand_back(config: FacilityConfig, entry: TableEntry) -> None:
    """Give the files the facility itself wrote inside a table (an optimize's data files, a restore's commit) to the
    table directory's owner and group, as if the owner had written them: upkeep must not leave a user's table
    holding files the user cannot manage or that storage accounting would miss."""
    if not multi_user(config):
        return
    loc = Path(entry.location)
    st = loc.lstat()
    if stat.S_ISLNK(st.st_mode):
        return
    for dirpath, dirs, files in os.walk(loc, followlinks=False):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISLNK(info.st_mode) and (info.st_uid, info.st_gid) != (st.st_uid, st.st_gid):
                os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)


@dataclass(frozen=True)
class Finding:
    path: str
    what: str
    expected: str
    found: str
    repaired: bool = False

    def as_dict(self) -> dict:
        return {"path": self.path, "what": self.what, "expected": self.expected, "found": self.found,
                "repaired": self.repaired}


def _describe(uid: int, gid: int, mode: int) -> str:
    return f"uid={uid} gid={gid} mode={mode:o}"


def fsck(config: FacilityConfig, warehouse: Path, entries: list[TableEntry], repair: bool = False) -> list[dict]:
    """Every namespace and table directory whose owner, group or mode disagrees with the catalog and config."""
    findings: list[Finding] = []

    def check(path: Path, want: tuple[int, int, int], what: str) -> None:
        try:
            st = path.lstat()
        except FileNotFoundError:
            findings.append(Finding(str(path), f"{what}: missing", _describe(*want), "absent"))
            return
        if stat.S_ISLNK(st.st_mode):
            findings.append(Finding(str(path), f"{what}: is a symbolic link", _describe(*want), "symlink"))
            return
        found = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
        if found != want:
            fixed = False
            if repair:
                _set(path, *want)
                fixed = True
            findings.append(Finding(str(path), what, _describe(*want), _describe(*found), fixed))

    if not multi_user(config):
        return []
    namespaces = sorted({e.namespace for e in entries} | {p.name for p in Path(warehouse).iterdir()
                                                          if p.is_dir() and not p.is_symlink()}
                        if Path(warehouse).is_dir() else {e.namespace for e in entries})
    for ns in namespaces:
        check(Path(warehouse) / ns, namespace_expectation(config, ns), f"namespace {ns}")
    for e in entries:
        loc = Path(e.location)
        if not loc.is_relative_to(Path(warehouse)):
            continue  # registered from outside the warehouse (a HATS catalog): not the facility's to manage
        check(loc, table_expectation(config, e), f"table {e.name} ({e.visibility})")
    return [f.as_dict() for f in findings]


__all__ = ["RUN_DIR_MODE", "apply_table", "ensure_namespace", "fsck", "hand_back", "multi_user",
           "namespace_owner", "secure_facility_state", "unreachable_ancestor"]
