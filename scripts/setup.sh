#!/usr/bin/env bash
# Set up everything userbatch needs on a fresh machine: Java 17, a Python 3.12 venv at .venv with the project
# installed (editable, with every extra: all, test, bench, docs), and — with --services — a PostgreSQL server on
# 127.0.0.1:5432 for the database tests and a local Slurm with accounting for the Slurm tests.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

want_services=0
[ "${1:-}" = "--services" ] && want_services=1

say() { echo "[setup] $*" >&2; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- Java (Spark 4 needs 17+) ---------------------------------------------------------------------------------
if ! command -v java >/dev/null 2>&1; then
  say "Java not found: installing Debian's openjdk-17-jre-headless"
  apt_install openjdk-17-jre-headless || die "no Java 17 and cannot install it (need root and apt); install a JRE 17 and re-run"
fi

# --- Python 3.12 ------------------------------------------------------------------------------------------------
find_py312() {
  for c in "${USERBATCH_PYTHON:-}" python3.12 \
           "$(command -v pyenv >/dev/null 2>&1 && echo "$(pyenv root)/versions/3.12.1/bin/python3.12")" \
           "$HOME/.pyenv/versions/3.12.1/bin/python3.12" /usr/bin/python3.12 /usr/local/bin/python3.12; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  for c in "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.12*/bin/python3.12; do
    [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}
PY312=$(find_py312) || die "Python 3.12 not found (the Rubin middleware needs it; 3.11 silently gets old releases). Install it (pyenv install 3.12) or set USERBATCH_PYTHON"

# --- venv + project -----------------------------------------------------------------------------------------------
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
  say "creating .venv with $PY312"
  rm -rf .venv
  "$PY312" -m venv .venv
fi
stamp=.venv/.userbatch-installed
want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing userbatch and its dependencies into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q -e ".[all,test,bench,docs]" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import userbatch, pyspark, deltalake, lsst.sphgeom, hats, fastapi, mlflow, sklearn, nbclient, lsst.ctrl.bps' \
    || die "dependency install failed"
  echo "$want" > "$stamp"
fi

# --- PostgreSQL for the facility-database tests ---------------------------------------------------------------------
if [ "$want_services" = 1 ]; then
  if ! .venv/bin/python - <<'PY' 2>/dev/null
import socket; socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
PY
  then
    say "no PostgreSQL on 127.0.0.1:5432: installing and starting Debian's postgresql"
    command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql || die "cannot install postgresql"
    ver=$(ls /etc/postgresql | sort -V | tail -1)
    conf=/etc/postgresql/$ver/main
    as_root sed -i -E 's/^(local|host)(\s+all\s+all\s+.*\s)(peer|scram-sha-256|md5)$/\1\2trust/' "$conf/pg_hba.conf" || true
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || as_root pg_ctlcluster "$ver" main start || die "cannot start PostgreSQL"
    for _ in $(seq 30); do
      .venv/bin/python -c 'import socket; socket.create_connection(("127.0.0.1", 5432), timeout=1).close()' 2>/dev/null && break
      sleep 1
    done
    as_root su postgres -c "psql -qc 'SELECT 1' test" >/dev/null 2>&1 || as_root su postgres -c "createdb test" || true
  fi
fi
# --- a real browser for the web UI's tests (tests/test_web_browser.py: Selenium drives headless Chromium) -------------
# Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver), installed when missing; without
# them that test skips and says why.
if [ "$want_services" = 1 ]; then
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    say "chromium and chromedriver already installed"
  else
    say "installing Debian's chromium and chromium-driver for the browser tests"
    apt_install chromium chromium-driver || say "cannot install chromium (need root and apt): the browser tests will skip"
  fi
fi
# --- a local Slurm with accounting for the Slurm tests (tests/test_slurm.py, the BPS-on-Slurm tests) ---------------
# Debian's slurm-wlm, slurmdbd, munge and mariadb-server, installed when missing; the daemons' config, state and
# logs under .services/slurm (userbatch.cluster.slurm_local). When they cannot start here, the Slurm tests skip and
# say why.
if [ "$want_services" = 1 ] && [ "$(id -u)" = 0 ]; then
  if .venv/bin/userbatch cluster slurm status --dir "$PWD/.services/slurm" >/dev/null 2>&1; then
    say "local Slurm already up (.services/slurm)"
  else
    say "starting a local Slurm (munge, MariaDB, slurmdbd, slurmctld, slurmd) under .services/slurm"
    timeout 900 .venv/bin/userbatch cluster slurm start --dir "$PWD/.services/slurm" >&2 \
      || say "WARNING: the local Slurm did not start; the Slurm tests will be skipped with the reason"
  fi
fi

# --- runs as their owners ---------------------------------------------------------------------------------------
# As root the facility runs every job under its owner's OS account (userbatch.facility.accounts), so those accounts
# must be able to execute this venv's Python and read the project: open (o+x, traverse only, not list) each
# directory above the venv, the interpreter it links to, and the repository. The accounts themselves are made by
# the facility (useradd --system) when first needed.
if [ "$(id -u)" = 0 ]; then
  real_py=$(readlink -f .venv/bin/python)
  for p in "$(pwd)" "$(dirname "$real_py")"; do
    while [ "$p" != "/" ]; do
      mode=$(stat -c %a "$p")
      if [ $(( 0$mode & 01 )) -eq 0 ]; then chmod o+x "$p"; say "opened $p for traversal (o+x) so runs can reach the venv"; fi
      p=$(dirname "$p")
    done
  done
  for t in unshare setpriv ip useradd; do
    command -v "$t" >/dev/null 2>&1 || apt_install util-linux iproute2 passwd || die "runs as their owners need $t"
  done
fi
say "ready: $(.venv/bin/python --version), $(java -version 2>&1 | head -1)"
