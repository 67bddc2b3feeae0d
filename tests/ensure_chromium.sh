#!/usr/bin/env bash
# Make sure Debian's chromium and its driver exist for the browser tests (tests/test_ui.py).
# Idempotent: exits 0 at once when both are on the PATH; otherwise installs them (as root or through sudo -n)
# with apt-get (a few minutes: tests/services.py calls this after collection, before the
# first test, outside any test timeout).
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: chromium/chromedriver not found and apt-get is unavailable" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "ensure_chromium: run as root to install chromium and chromium-driver" >&2
        exit 1
    fi
fi
echo "ensure_chromium: installing chromium and chromium-driver with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
