#!/usr/bin/env bash
# Make sure PostgreSQL's server binaries (initdb, pg_ctl) exist for the postgres tests.
# Idempotent: exits 0 at once when initdb is on the PATH or in /usr/lib/postgresql/*/bin
# (where tests/pg_server.py also looks). Otherwise installs Debian's `postgresql` with
# apt-get (as root, or through sudo), quietly. Exits non-zero if it cannot.
set -euo pipefail

have_initdb() {
    command -v initdb >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if have_initdb; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_postgres: initdb not found and apt-get is unavailable; install PostgreSQL" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "ensure_postgres: initdb not found; run as root to install postgresql" >&2
        exit 1
    fi
fi

echo "ensure_postgres: installing postgresql with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Debian's postinst creates the `postgres` user the tests run the server as. Without
# this setting it would also create and start a "main" cluster on port 5432: the tests
# make and stop their own, so none is wanted.
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    $SUDO mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
$SUDO apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confold postgresql >/dev/null

if ! have_initdb; then
    echo "ensure_postgres: postgresql installed but initdb is still missing" >&2
    exit 1
fi
