# Sourced by tests/ensure_postgres.sh and tests/ensure_chromium.sh: installing Debian
# packages for the test session, as root or through `sudo -n`, quietly.
#
#   apt_ready WHO WHAT     exits the calling script with 1, saying why, unless packages can
#                          be installed here (apt-get, and root or sudo); sets $SUDO.
#                          WHO prefixes the messages, WHAT names what is missing.
#   apt_install PACKAGE... apt-get update, then install them without recommends.
#
# tests/services.py runs the scripts one at a time (a file lock), so two pytest processes
# never race for dpkg's lock.

SUDO=""
APT_WHO=""

apt_ready() {
    APT_WHO=$1
    local what=$2
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$APT_WHO: $what not found and apt-get is unavailable; install it by hand" >&2
        exit 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "$APT_WHO: $what not found; run as root (or with sudo) to install it" >&2
            exit 1
        fi
        SUDO="sudo -n"
    fi
    export DEBIAN_FRONTEND=noninteractive
}

apt_install() {
    echo "$APT_WHO: installing $* with apt-get" >&2
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confold "$@" >/dev/null
}
