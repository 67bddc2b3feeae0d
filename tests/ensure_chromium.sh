#!/usr/bin/env bash
# Make sure Debian's chromium and its driver exist for the browser tests (tests/test_ui.py).
# Idempotent: exits 0 at once when both are on the PATH; otherwise, as root, installs them
# with apt-get (a few minutes: .ci/run calls this before pytest, outside any test timeout).
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: install Debian's chromium and chromium-driver (apt-get, as root)" >&2
    exit 1
fi
echo "ensure_chromium: installing chromium and chromium-driver with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
