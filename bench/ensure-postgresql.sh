#!/bin/sh
# Make sure PostgreSQL's server programs (initdb, pg_ctl, postgres) are installed for the
# tests and the scale-out benchmark, which start throwaway servers of their own, and
# that no packaged cluster is left running afterwards.
# Installs Debian's postgresql package non-interactively when initdb is missing.
# Needs root for the install (apt-get) and to stop the packaged cluster.
set -eu

found() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; }

if found; then
    echo "postgresql: already installed"
else
    if [ "$(id -u)" -ne 0 ]; then
        echo "PostgreSQL is missing; run this script as root to install Debian's postgresql package" >&2
        exit 1
    fi
    echo "postgresql: installing Debian's postgresql package"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql \
        >/dev/null 2>&1 || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql \
        >/dev/null; }
fi

# The tests start their own servers; the package's cluster must not keep running.
if [ "$(id -u)" -eq 0 ] && command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r version cluster _port status _rest; do
        if [ "$status" = online ]; then pg_ctlcluster "$version" "$cluster" stop || true; fi
    done
fi

if ! found; then
    echo "postgresql: initdb still not found after installing postgresql" >&2
    exit 1
fi
