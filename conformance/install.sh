#!/usr/bin/env bash
# conformance/install.sh - install the Autobahn|Testsuite (wstest 25.10.1, the RFC 6455
# conformance suite) used by conformance/autobahn.sh.
#
#   sudo conformance/install.sh            # into ${AUTOBAHN_HOME:-/opt/switchboard-autobahn}
#
# Debian 12 (bookworm), as root. Idempotent: a second run is a fast no-op (< 1 s).
#
# The suite is Python 2 only and bookworm has no Python 2, so Debian 11 (bullseye) is
# added as an apt source pinned at Pin-Priority 100: a priority-100 release never
# upgrades or replaces an installed bookworm package, it only supplies packages that
# bookworm lacks (python2.7 and its few libraries).
#
# Layout:
#   $AUTOBAHN_HOME/env/py3   Python 3 venv holding `virtualenv` (bookworm's venv module
#                            cannot create Python 2 environments)
#   $AUTOBAHN_HOME/env/py2   Python 2.7 virtualenv with wstest, pinned by
#                            conformance/requirements-py2.lock
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HOME_DIR="${AUTOBAHN_HOME:-/opt/switchboard-autobahn}"
SUITE_VERSION="25.10.1"
VIRTUALENV_VERSION="20.21.1" # last virtualenv that can still create Python 2.7 envs
WSTEST="$HOME_DIR/env/py2/bin/wstest"
STAMP="$HOME_DIR/.installed"
LOCK="$HERE/requirements-py2.lock"

log() { echo "install.sh: $*" >&2; }

# Fast path: already installed from the very same lock file.
lock_sum="$(sha256sum "$LOCK" | cut -d' ' -f1)"
if [ -x "$WSTEST" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SUITE_VERSION $lock_sum" ] \
  && "$WSTEST" -a 2>/dev/null | grep -q "AutobahnTestSuite $SUITE_VERSION"; then
  log "Autobahn|Testsuite $SUITE_VERSION already installed in $HOME_DIR"
  exit 0
fi

[ "$(id -u)" = 0 ] || { log "must run as root (apt-get, $HOME_DIR)"; exit 2; }
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-unknown}")"
[ "$codename" = bookworm ] || log "WARNING: written for Debian 12 (bookworm), this is '$codename'"

export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }

# 1. System packages: python3-venv (bookworm), python2.7 + headers (bullseye) and a C
#    compiler (wsaccel, ujson and cffi build C extensions on Python 2).
need=()
for p in python3 python3-venv gcc libc6-dev; do installed "$p" || need+=("$p"); done
py2_needed=0
for p in python2.7 python2.7-dev; do installed "$p" || py2_needed=1; done
if [ "$py2_needed" = 1 ]; then
  pin=/etc/apt/preferences.d/switchboard-bullseye-python2
  if [ ! -f "$pin" ]; then
    log "pinning Debian bullseye at priority 100 ($pin)"
    printf '%s\n' \
      '# Added by switchboard conformance/install.sh: bullseye only supplies python2.7' \
      '# (priority 100 never upgrades or replaces an installed bookworm package).' \
      'Package: *' 'Pin: release n=bullseye' 'Pin-Priority: 100' >"$pin"
  fi
  # Add a bullseye source unless one is configured already (a duplicate source only
  # makes apt print warnings).
  if ! cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
    2>/dev/null | grep -qE '^[^#]*\bbullseye\b'; then
    src=/etc/apt/sources.list.d/switchboard-bullseye-python2.sources
    log "adding apt source $src"
    printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bullseye' \
      'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' >"$src"
  fi
  need+=(python2.7 python2.7-dev)
fi
if [ "${#need[@]}" -gt 0 ]; then
  log "apt-get install ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# 2. Python 3 venv with virtualenv (Debian's own python3, not a pyenv/conda one on PATH).
mkdir -p "$HOME_DIR/env"
[ -x "$HOME_DIR/env/py3/bin/python" ] || /usr/bin/python3 -m venv "$HOME_DIR/env/py3"
"$HOME_DIR/env/py3/bin/python" -m pip show virtualenv 2>/dev/null | grep -qx "Version: $VIRTUALENV_VERSION" \
  || "$HOME_DIR/env/py3/bin/python" -m pip install -q "virtualenv==$VIRTUALENV_VERSION"

# 3. Python 2.7 virtualenv with wstest from the lock.
[ -x "$HOME_DIR/env/py2/bin/python" ] \
  || "$HOME_DIR/env/py3/bin/virtualenv" -q -p /usr/bin/python2.7 "$HOME_DIR/env/py2"
log "pip install autobahntestsuite==$SUITE_VERSION (constraints: $LOCK)"
"$HOME_DIR/env/py2/bin/python" -m pip install -q --no-cache-dir -c "$LOCK" "autobahntestsuite==$SUITE_VERSION"
"$WSTEST" -a 2>/dev/null | grep -q "AutobahnTestSuite $SUITE_VERSION" \
  || { log "ERROR: $WSTEST does not report AutobahnTestSuite $SUITE_VERSION"; exit 1; }
echo "$SUITE_VERSION $lock_sum" >"$STAMP"
log "Autobahn|Testsuite $SUITE_VERSION ready: $WSTEST"
