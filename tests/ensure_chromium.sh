#!/usr/bin/env bash
# Make sure Debian's chromium and its driver exist for the browser tests (tests/test_ui.py).
# Idempotent: exits 0 at once when both are on the PATH; otherwise installs them with
# apt-get (tests/apt_install.sh; a few minutes: tests/services.py calls this after
# collection, before the first test, outside any test timeout).
set -euo pipefail
. "$(dirname "$0")/apt_install.sh"

have_chromium() {
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}

if have_chromium; then
    exit 0
fi
apt_ready ensure_chromium "chromium/chromedriver"
apt_install chromium chromium-driver
have_chromium
