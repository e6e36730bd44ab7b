"""Who a facility user is to the operating system: the OS account a run executes as, and the OS groups it holds.

A run is its owner (Slurm, HTCondor and Kubernetes all work this way): the worker starts it under the owner's uid
and the gids of the owner's facility groups, so the kernel — not an environment variable — decides which files it
may read and write. This module maps names to accounts and, when the facility runs as root and the config allows
it, creates the accounts it needs (``useradd --system``, no home, no login shell).

Two modes (``identity.mode`` in the facility config):

* ``os`` — multi-user: every run as its owner's account. Needs root (to switch uid), so it is what ``auto``
  means when the facility runs as root.
* ``single-user`` — a laptop: every run as the account that runs the facility; said at start-up, and a config that
  asks for ``os`` without root is refused (it would otherwise pretend to isolate).

A site with existing accounts (LDAP/NSS) maps them explicitly (``identity.accounts`` / ``identity.groups``) and sets
``create_accounts: false``; names it does not map get ``account_prefix + name``.
"""

from __future__ import annotations

import grp
import hashlib
import logging
import os
import pwd
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserbatchError

log = logging.getLogger(__name__)

MODES = ("auto", "os", "single-user")
_LOCK = threading.Lock()


class IdentityError(UserbatchError):
    """A facility user or group has no usable OS account, or the config asks for isolation it cannot give."""


@dataclass(frozen=True)
class Credentials:
    """What a run executes as: uid, primary gid, supplementary gids (the owner's facility groups)."""

    user: str
    account: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class IdentityConfig:
    """The ``identity:`` section of the facility config, validated once."""

    mode: str = "auto"
    account_prefix: str = "ub_"
    group_prefix: str = "ubg_"
    create_accounts: bool = True
    accounts: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    network: str = "isolated"  # isolated: each local run in its own network namespace (loopback only) | host

    @classmethod
    def parse(cls, doc: Any, where: str) -> "IdentityConfig":
        doc = doc or {}
        known = {"mode", "account_prefix", "group_prefix", "create_accounts", "accounts", "groups", "network"}
        if not isinstance(doc, dict) or set(doc) - known:
            raise UserbatchError(f"{where}: identity takes {', '.join(sorted(known))}; got {doc!r}")
        mode = str(doc.get("mode", "auto"))
        if mode not in MODES:
            raise UserbatchError(f"{where}: identity.mode must be one of {', '.join(MODES)}; got {mode!r}")
        network = str(doc.get("network", "isolated"))
        if network not in ("isolated", "host"):
            raise UserbatchError(f"{where}: identity.network must be isolated or host; got {network!r}")
        for key in ("accounts", "groups"):
            if not isinstance(doc.get(key, {}) or {}, dict):
                raise UserbatchError(f"{where}: identity.{key} maps facility names to OS names")
        return cls(mode=mode, account_prefix=str(doc.get("account_prefix", "ub_")),
                   group_prefix=str(doc.get("group_prefix", "ubg_")),
                   create_accounts=bool(doc.get("create_accounts", True)),
                   accounts={str(k): str(v) for k, v in (doc.get("accounts") or {}).items()},
                   groups={str(k): str(v) for k, v in (doc.get("groups") or {}).items()}, network=network)


def is_root() -> bool:
    return os.geteuid() == 0


def effective_mode(cfg: IdentityConfig) -> str:
    """``os`` or ``single-user``; ``os`` without root is refused rather than pretended."""
    if cfg.mode == "auto":
        return "os" if is_root() else "single-user"
    if cfg.mode == "os" and not is_root():
        raise IdentityError("identity.mode is 'os' (runs as their owners) but the facility does not run as root, "
                            "so it cannot switch to the owners' accounts; run it as root, or set identity.mode: "
                            "single-user for a one-person facility")
    return cfg.mode


def _os_name(prefix: str, name: str) -> str:
    """``prefix + name``, kept within the 32 characters useradd allows (a hash keeps long names distinct)."""
    full = prefix + name
    if len(full) <= 32:
        return full
    return f"{prefix}{name[:31 - len(prefix) - 9]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def account_name(cfg: IdentityConfig, user: str) -> str:
    return cfg.accounts.get(user) or _os_name(cfg.account_prefix, user)


def group_name(cfg: IdentityConfig, group: str) -> str:
    return cfg.groups.get(group) or _os_name(cfg.group_prefix, group)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode not in (0, 9):  # 9: already exists (a concurrent creator won)
        raise IdentityError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.returncode}")


def ensure_os_group(cfg: IdentityConfig, group: str) -> int:
    """The gid of ``group``'s OS group, created when allowed."""
    name = group_name(cfg, group)
    with _LOCK:
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            pass
        if not (cfg.create_accounts and is_root()) or group in cfg.groups:
            raise IdentityError(f"facility group {group} has no OS group {name}; create it or map it in "
                                "identity.groups of the facility config")
        _run(["groupadd", "--system", name])
        log.info("created OS group %s for facility group %s", name, group)
        return grp.getgrnam(name).gr_gid


def ensure_os_user(cfg: IdentityConfig, user: str) -> tuple[int, int]:
    """(uid, primary gid) of ``user``'s OS account, created (no home, no login) when allowed."""
    name = account_name(cfg, user)
    with _LOCK:
        try:
            pw = pwd.getpwnam(name)
            return pw.pw_uid, pw.pw_gid
        except KeyError:
            pass
        if not (cfg.create_accounts and is_root()) or user in cfg.accounts:
            raise IdentityError(f"facility user {user} has no OS account {name}; create it or map it in "
                                "identity.accounts of the facility config")
        _run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
              "--shell", "/usr/sbin/nologin", name])
        log.info("created OS account %s for facility user %s", name, user)
        pw = pwd.getpwnam(name)
        return pw.pw_uid, pw.pw_gid


def credentials(cfg: IdentityConfig, user: str, groups: tuple[str, ...] | list[str] = ()) -> Credentials:
    """What a run of ``user`` executes as. Supplementary groups are exactly the user's facility groups (from the
    facility database, passed in), not whatever /etc/group says, so membership is the facility's decision."""
    if effective_mode(cfg) == "single-user":
        pw = pwd.getpwuid(os.getuid())
        return Credentials(user, pw.pw_name, os.getuid(), os.getgid(), tuple(os.getgroups()))
    uid, gid = ensure_os_user(cfg, user)
    gids = tuple(sorted({ensure_os_group(cfg, g) for g in groups}))
    return Credentials(user, account_name(cfg, user), uid, gid, gids)


__all__ = ["Credentials", "IdentityConfig", "IdentityError", "account_name", "credentials", "effective_mode",
           "ensure_os_group", "ensure_os_user", "group_name", "is_root"]
