#!/usr/bin/env bash
# The browser tests drive Debian's chromium (Playwright's own browser download does not
# work everywhere). Install it when it is missing and we are allowed to.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is missing and this is not root: run 'sudo apt-get install chromium'," \
         "or the browser tests will be skipped" >&2
    exit 0
fi
echo "installing Debian's chromium for the browser tests..."
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
