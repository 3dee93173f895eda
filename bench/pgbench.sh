#!/usr/bin/env bash
# pgbench -S (read-only, one indexed SELECT per transaction) in one run:
# directly against PostgreSQL, through PgBouncer (session mode), and through
# sluice (guardrails on: every statement parsed, classified and decided by
# the default policies on a connection tagged env = "prod", and recorded to
# the embedded SQLite store before it is forwarded). Prints TPS and mean
# latency for each, and ratios to direct.
#
#   bash bench/pgbench.sh            # 1 and 8 clients, 10 s each, simple protocol
#   DURATION=30 CLIENTS="1 4 8" MODE=prepared bash bench/pgbench.sh
#
# In simple mode every statement's text is new (pgbench inlines the key),
# so every statement is at least normalized: the worst case for inspection.
#
# WORKLOAD=rows replaces -S with a query returning 20 rows of names, emails
# and notes (half the emails masked): the cost of inline masking. The
# "sluice-clear" path is the same gateway for a principal policy lets see
# clear values, so the difference between the two is masking alone.
#
# BASELINE_BIN=/path/to/an/older/sluice adds a "baseline" path: that binary
# as a second gateway on the same target, in the same run (for example a
# build of the commit before guardrails, to measure what they cost).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-"1 8"}
MODE=${MODE:-simple}
SCALE=${SCALE:-10}
WORKLOAD=${WORKLOAD:-select}

bash scripts/install-test-deps.sh pgbouncer
cargo build --release --locked -q
SLUICE=$PWD/target/release/sluice

PGBIN=${SLUICE_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
WORK=$(mktemp -d /tmp/sluice-bench-XXXXXX)
chmod 777 "$WORK"
AS_PG=()
[ "$(id -u)" = 0 ] && AS_PG=(runuser -u postgres --)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PG_PORT=$(free_port); BOUNCER_PORT=$(free_port); SLUICE_PORT=$(free_port); API_PORT=$(free_port)
BASE_PORT=$(free_port); BASE_API_PORT=$(free_port)
PASSWORD=bench-$RANDOM$RANDOM

cleanup() {
    [ -n "${GW_PID:-}" ] && kill "$GW_PID" 2>/dev/null || true
    [ -n "${BASE_PID:-}" ] && kill "$BASE_PID" 2>/dev/null || true
    [ -n "${BOUNCER_PID:-}" ] && kill "$BOUNCER_PID" 2>/dev/null || true
    "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== setting up PostgreSQL ($PGBIN) on 127.0.0.1:$PG_PORT" >&2
"${AS_PG[@]}" "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust -N -E UTF8 --locale=C >/dev/null
printf 'local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n' > "$WORK/hba"
cp "$WORK/hba" "$WORK/pg/pg_hba.conf"
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -w -l "$WORK/pg.log" start \
    -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=100 -c shared_buffers=256MB" >/dev/null
psql -X -q -h "$WORK" -p "$PG_PORT" -U postgres -c "CREATE ROLE app LOGIN PASSWORD '$PASSWORD'" -c "CREATE DATABASE bench OWNER app"
export PGPASSWORD=$PASSWORD
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U app bench >/dev/null 2>&1
psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U app bench <<'SQL'
CREATE TABLE people AS
  SELECT g AS id, 'Person ' || g AS name,
         CASE WHEN g % 2 = 0 THEN 'user' || g || '@example.com' ELSE 'no email' END AS email,
         'joined in ' || (2000 + g % 25) || ', plan ' || (g % 7) AS note
  FROM generate_series(1, 100000) g;
ALTER TABLE people ADD PRIMARY KEY (id);
SQL
printf '\\set a random(1, 99980)\nSELECT id, name, email, note FROM people WHERE id BETWEEN :a AND :a + 19;\n' > "$WORK/rows.sql"
if [ "$WORKLOAD" = rows ]; then SCRIPT=(-f "$WORK/rows.sql"); else SCRIPT=(-S); fi

echo "== starting PgBouncer (session mode) on 127.0.0.1:$BOUNCER_PORT" >&2
cat > "$WORK/bouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench user=app password=$PASSWORD
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/users.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = $WORK/bouncer.log
INI
echo '"app" ""' > "$WORK/users.txt"
chmod 644 "$WORK"/bouncer.ini "$WORK"/users.txt
"${AS_PG[@]}" "$PGBOUNCER" "$WORK/bouncer.ini" >/dev/null 2>&1 &
BOUNCER_PID=$!

echo "== starting sluice on 127.0.0.1:$SLUICE_PORT (recording on, SQLite store)" >&2
cat > "$WORK/sluice.toml" <<TOML
[gateway]
data_dir = "$WORK/sluice-data"
api_listen = "127.0.0.1:$API_PORT"
[postgres]
listen = "127.0.0.1:$SLUICE_PORT"
allow_plaintext_loopback = true
[[connections]]
name = "bench"
kind = "postgres"
address = "127.0.0.1:$PG_PORT"
database = "bench"
user = "app"
password_env = "BENCH_TARGET_PASSWORD"
tls = "disable"
tags = { env = "prod" }
[policy.groups]
pii-readers = ["cleared"]
TOML
BENCH_TARGET_PASSWORD=$PASSWORD SLUICE_LOG=warn "$SLUICE" gateway --config "$WORK/sluice.toml" 2>"$WORK/sluice.log" &
GW_PID=$!
for _ in $(seq 100); do
    "$SLUICE" --config "$WORK/sluice.toml" connections list >/dev/null 2>&1 && break
    sleep 0.1
done
TOKEN=$("$SLUICE" --config "$WORK/sluice.toml" token issue --principal bench --connection bench --ttl 2h 2>/dev/null)
CLEAR_TOKEN=$("$SLUICE" --config "$WORK/sluice.toml" token issue --principal cleared --connection bench --ttl 2h 2>/dev/null)

if [ -n "${BASELINE_BIN:-}" ]; then
    echo "== starting the baseline $BASELINE_BIN on 127.0.0.1:$BASE_PORT" >&2
    sed -e "s|$WORK/sluice-data|$WORK/base-data|" -e "s|:$API_PORT\"|:$BASE_API_PORT\"|" \
        -e "s|:$SLUICE_PORT\"|:$BASE_PORT\"|" "$WORK/sluice.toml" > "$WORK/base.toml"
    BENCH_TARGET_PASSWORD=$PASSWORD SLUICE_LOG=warn "$BASELINE_BIN" gateway --config "$WORK/base.toml" 2>"$WORK/base.log" &
    BASE_PID=$!
    for _ in $(seq 100); do
        "$BASELINE_BIN" --config "$WORK/base.toml" connections list >/dev/null 2>&1 && break
        sleep 0.1
    done
    BASE_TOKEN=$("$BASELINE_BIN" --config "$WORK/base.toml" token issue --principal bench --connection bench --ttl 2h 2>/dev/null)
fi

run() { # label conninfo clients
    local out tps lat
    out=$(pgbench -n "${SCRIPT[@]}" -M "$MODE" -T "$DURATION" -c "$3" -j "$(( $3 < 2 ? $3 : 2 ))" "$2" 2>&1) || { echo "$out" >&2; exit 1; }
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
    echo "$1 $3 $tps $lat"
}

RESULTS=$WORK/results
: > "$RESULTS"
for c in $CLIENTS; do
    echo "== $c client(s), ${DURATION}s each" >&2
    run direct     "host=127.0.0.1 port=$PG_PORT dbname=bench user=app sslmode=disable" "$c" >> "$RESULTS"
    run pgbouncer  "host=127.0.0.1 port=$BOUNCER_PORT dbname=bench user=app sslmode=disable" "$c" >> "$RESULTS"
    if [ -n "${BASELINE_BIN:-}" ]; then
        PGPASSWORD=$BASE_TOKEN run baseline "host=127.0.0.1 port=$BASE_PORT dbname=bench user=bench sslmode=disable" "$c" >> "$RESULTS"
    fi
    PGPASSWORD=$TOKEN run sluice "host=127.0.0.1 port=$SLUICE_PORT dbname=bench user=bench sslmode=disable" "$c" >> "$RESULTS"
    PGPASSWORD=$TOKEN run sluice-tls "host=127.0.0.1 port=$SLUICE_PORT dbname=bench user=bench sslmode=require" "$c" >> "$RESULTS"
    PGPASSWORD=$CLEAR_TOKEN run sluice-clear "host=127.0.0.1 port=$SLUICE_PORT dbname=bench user=cleared sslmode=disable" "$c" >> "$RESULTS"
done

RECORDED=$("$SLUICE" --config "$WORK/sluice.toml" audit verify --json | sed -n 's/.*"checked": \([0-9]*\).*/\1/p')
echo
echo "pgbench ${SCRIPT[*]##*/} -M $MODE, scale $SCALE, ${DURATION}s per run, $(nproc) cores shared by server, proxy and pgbench"
awk -v recorded="$RECORDED" '
    { label[NR]=$1; clients[NR]=$2; tps[NR]=$3; lat[NR]=$4; if ($1=="direct") { dt[$2]=$3; dl[$2]=$4 } }
    END {
        printf "%-11s %7s %11s %12s %10s %14s\n", "path", "clients", "tps", "latency_ms", "tps/direct", "added_lat_us"
        for (i=1; i<=NR; i++)
            printf "%-11s %7d %11.0f %12.4f %10.3f %14.1f\n", label[i], clients[i], tps[i], lat[i], tps[i]/dt[clients[i]], (lat[i]-dl[clients[i]])*1000
        printf "audit chain verified after the run: %s events\n", recorded
    }' "$RESULTS"
