#!/usr/bin/env bash
# Installs what building sluice needs on a fresh Debian/Ubuntu machine:
# libclang, which the pg_query crate's build uses to bind PostgreSQL's own
# parser (libpg_query, compiled from source by cargo). Does nothing when
# it is already there.
set -euo pipefail
if ! dpkg -s libclang-dev >/dev/null 2>&1; then
    echo "installing: libclang-dev" >&2
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends libclang-dev >/dev/null
fi
