#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian/Ubuntu
# machine: libclang (install-build-deps.sh), PostgreSQL
# server binaries (the tests start their own instances), psql and pgbench,
# OpenSSH server and clients, tmux and asciinema.
# Does nothing for what is already there.
set -euo pipefail
bash "$(dirname "$0")/install-build-deps.sh"

have_pg_server() {
    [ -n "${SLUICE_PG_BIN:-}" ] && [ -x "$SLUICE_PG_BIN/postgres" ] && return 0
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1
}

missing=()
have_pg_server || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v pgbench >/dev/null 2>&1 || missing+=(postgresql)
if [ "$(id -u)" = 0 ] && ! command -v runuser >/dev/null 2>&1; then missing+=(util-linux); fi
# The SSH tests start their own OpenSSH server and drive it with the real
# clients; tmux types into terminal sessions; asciinema plays recordings.
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v asciinema >/dev/null 2>&1 || missing+=(asciinema)
for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # The package's own cluster is not needed; the tests start their own.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
