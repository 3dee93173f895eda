#!/usr/bin/env bash
# SSH through the gateway against SSH straight to the same OpenSSH server,
# in the same run:
#   - a 1 GiB scp download (scp speaks SFTP underneath), MB/s and the ratio;
#   - the round trip of an exec (`true`) over an open connection (OpenSSH
#     connection sharing), so each run measures the channel and the
#     command, not the key exchange; median and p90 of N runs.
# Usage: bash bench/ssh.sh [SIZE_MIB=1024] [RUNS=50]
# Needs the release binary (cargo build --release), openssh-server and
# openssh-client. Everything listens on loopback and is removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
RUNS=${2:-50}
BIN=${SLUICE_BIN:-target/release/sluice}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }

W=$(mktemp -d /tmp/sluice-bench-ssh.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for s in "$W"/ctl-*; do [ -e "$s" ] && ssh -S "$s" -O exit x 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SSHD_PORT=$(port); GW_PORT=$(port); API_PORT=$(port); PG_PORT=$(port)
USER_NAME=$(id -un)

ssh-keygen -q -t ed25519 -N '' -f "$W/host" -C bench
ssh-keygen -q -t ed25519 -N '' -f "$W/client" -C bench
ssh-keygen -q -t ed25519 -N '' -f "$W/gwkey" -C bench
cat "$W/client.pub" "$W/gwkey.pub" > "$W/authorized_keys"
mkdir -p /run/sshd 2>/dev/null || true
cat > "$W/sshd_config" <<EOF
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $W/host
PidFile $W/sshd.pid
AuthorizedKeysFile $W/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
EOF
/usr/sbin/sshd -D -e -f "$W/sshd_config" 2>"$W/sshd.log" & PIDS+=($!)

cat > "$W/sluice.toml" <<EOF
[gateway]
data_dir = "$W/data"
api_listen = "127.0.0.1:$API_PORT"
[postgres]
listen = "127.0.0.1:$PG_PORT"
[ssh]
listen = "127.0.0.1:$GW_PORT"
[[connections]]
name = "bench"
kind = "ssh"
address = "127.0.0.1:$SSHD_PORT"
user = "$USER_NAME"
auth = "key"
private_key_file = "$W/gwkey"
host_keys = ["$(cut -d' ' -f1,2 "$W/host.pub")"]
EOF
"$BIN" gateway --config "$W/sluice.toml" >"$W/gateway.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$GW_PORT) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$SSHD_PORT) 2>/dev/null && break
    sleep 0.1
done
TOKEN=$("$BIN" --config "$W/sluice.toml" token issue --principal bench --connection bench --ttl 1h)
printf '#!/bin/sh\necho %s\n' "$TOKEN" > "$W/askpass"; chmod +x "$W/askpass"
echo "[127.0.0.1]:$SSHD_PORT $(cut -d' ' -f1,2 "$W/host.pub")" > "$W/known_hosts"
echo "[127.0.0.1]:$GW_PORT $(cut -d' ' -f1,2 "$W/data/ssh_host_ed25519_key.pub")" >> "$W/known_hosts"

COMMON=(-F /dev/null -o UserKnownHostsFile="$W/known_hosts" -o StrictHostKeyChecking=yes -o LogLevel=ERROR)
DIRECT=("${COMMON[@]}" -i "$W/client" -o IdentitiesOnly=yes -o PreferredAuthentications=publickey)
GATEWAY=("${COMMON[@]}" -o PubkeyAuthentication=no -o PreferredAuthentications=keyboard-interactive)
export SSH_ASKPASS="$W/askpass" SSH_ASKPASS_REQUIRE=force DISPLAY=:0

head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$W/payload"
SRC_SHA=$(sha256sum "$W/payload" | cut -d' ' -f1)

now() { date +%s%N; }
scp_once() { # label, options..., source
    local label=$1; shift
    local t0 t1
    rm -f "$W/got"
    t0=$(now)
    scp -q "$@" "$W/got"
    t1=$(now)
    [ "$(sha256sum "$W/got" | cut -d' ' -f1)" = "$SRC_SHA" ] || { echo "$label: copy differs" >&2; exit 1; }
    echo $(( (t1 - t0) / 1000 ))
}
best() { sort -n | head -1; }
# Best of three each, alternating, so neither side gets a warmer cache.
D=(); G=()
for _ in 1 2 3; do
    D+=("$(scp_once direct "${DIRECT[@]}" -P "$SSHD_PORT" "$USER_NAME@127.0.0.1:$W/payload")")
    G+=("$(scp_once gateway "${GATEWAY[@]}" -P "$GW_PORT" "bench@127.0.0.1:$W/payload")")
done
D_US=$(printf '%s\n' "${D[@]}" | best); G_US=$(printf '%s\n' "${G[@]}" | best)
mbs() { python3 -c "print(f'{$SIZE_MIB * 1048576 / ($1 / 1e6) / 1e6:.0f}')"; }
echo "scp ${SIZE_MIB} MiB download (best of 3):"
echo "  direct   $(mbs "$D_US") MB/s"
echo "  gateway  $(mbs "$G_US") MB/s"
python3 -c "print(f'  ratio    {$D_US / $G_US:.2f} of direct')"

# Exec round trips over one open connection each.
ssh "${DIRECT[@]}" -p "$SSHD_PORT" -o ControlMaster=yes -o ControlPath="$W/ctl-direct" -fN "$USER_NAME@127.0.0.1"
ssh "${GATEWAY[@]}" -p "$GW_PORT" -o ControlMaster=yes -o ControlPath="$W/ctl-gw" -fN "bench@127.0.0.1"
rtt() { # control path, port, destination
    local out=()
    for _ in $(seq "$RUNS"); do
        local t0 t1
        t0=$(now); ssh -F /dev/null -o ControlPath="$1" -p "$2" "$3" true; t1=$(now)
        out+=($(( (t1 - t0) / 1000 )))
    done
    printf '%s\n' "${out[@]}" | sort -n | python3 -c "
import sys; v=[int(x) for x in sys.stdin]; print(f'{v[len(v)//2]/1000:.2f} {v[int(len(v)*0.9)]/1000:.2f}')"
}
read -r DM DP < <(rtt "$W/ctl-direct" "$SSHD_PORT" "$USER_NAME@127.0.0.1")
read -r GM GP < <(rtt "$W/ctl-gw" "$GW_PORT" "bench@127.0.0.1")
echo "exec round trip over an open connection ($RUNS runs, median / p90 ms):"
echo "  direct   $DM / $DP"
echo "  gateway  $GM / $GP"
python3 -c "print(f'  added    {$GM - $DM:.2f} ms (median)')"
