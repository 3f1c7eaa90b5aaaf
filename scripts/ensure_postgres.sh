#!/usr/bin/env bash
# The PostgreSQL tests start a throwaway cluster from Debian's server binaries
# (tests/helpers/postgres.py). Install them when they are missing and we are allowed to;
# without them those tests fail, saying so: none is skipped for want of a server.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL's server binaries are missing and this is not root: run" \
         "'sudo apt-get install postgresql', or the PostgreSQL tests will fail" >&2
    exit 0
fi
echo "installing Debian's postgresql for the PostgreSQL tests..."
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
