#!/usr/bin/env bash
# Make sure PostgreSQL's server binaries (initdb, pg_ctl) exist for the postgres tests.
# Idempotent: exits 0 at once when initdb is on the PATH or in /usr/lib/postgresql/*/bin
# (where tests/pg_server.py also looks). Otherwise installs Debian's `postgresql` with
# apt-get (tests/apt_install.sh). Exits non-zero if it cannot.
set -euo pipefail
. "$(dirname "$0")/apt_install.sh"

have_initdb() {
    command -v initdb >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if have_initdb; then
    exit 0
fi
apt_ready ensure_postgres "initdb"
# Debian's postinst creates the `postgres` user the tests run the server as. Without
# this setting it would also create and start a "main" cluster on port 5432: the tests
# make and stop their own, so none is wanted.
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    $SUDO mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
apt_install postgresql

if ! have_initdb; then
    echo "ensure_postgres: postgresql installed but initdb is still missing" >&2
    exit 1
fi
