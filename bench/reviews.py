#!/usr/bin/env python3
"""Review latencies, measured end to end with real psql clients.

  python3 bench/reviews.py [N]        # N rounds each (default 20)

On a throw-away PostgreSQL cluster (target and shared store) and the
release build of sluice, it measures:

- approve-to-run: from sending `POST /v1/reviews/ID/approve` to the held
  psql exiting with its statement done, when the approval goes through the
  same gateway (SQLite store) and through a second gateway sharing a
  PostgreSQL store (LISTEN/NOTIFY);
- deferred refusal: how long an agent waits for its "needs a human review"
  error (review recorded, impact estimated with EXPLAIN), next to a plain
  allowed UPDATE through the same gateway and the same UPDATE direct.

Prints median and p90 in milliseconds.
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE = os.path.join(ROOT, "target", "release", "sluice")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def pg_bin():
    base = "/usr/lib/postgresql"
    return os.path.join(base, sorted(os.listdir(base))[-1], "bin")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def as_postgres(cmd):
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.getuid() == 0 else cmd


def psql(port, db, sql, user="postgres"):
    out = subprocess.run(
        ["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", db, "-c", sql],
        capture_output=True, text=True, check=True)
    return out.stdout.strip()


class Gateway:
    def __init__(self, work, name, target_port, store):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.pg = free_port()
        self.api = free_port()
        cfg = os.path.join(self.dir, "sluice.toml")
        with open(cfg, "w") as f:
            f.write(f"""[gateway]
data_dir = "data"
api_listen = "127.0.0.1:{self.api}"
{store}
[postgres]
listen = "127.0.0.1:{self.pg}"
allow_plaintext_loopback = true

[[connections]]
name = "prod"
kind = "postgres"
address = "127.0.0.1:{target_port}"
database = "shop"
user = "postgres"
tls = "disable"
tags = {{ env = "prod" }}

[policy.groups]
approvers = ["bob"]
""")
        self.cfg = cfg
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen([SLUICE, "gateway", "--config", cfg], stdout=self.log, stderr=self.log,
                                     env={**os.environ, "SLUICE_LOG": "warn"})
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", self.api), 0.1).close()
                socket.create_connection(("127.0.0.1", self.pg), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        with open(os.path.join(self.dir, "data", "admin.token")) as f:
            self.admin = f.read().strip()

    def cli(self, *args):
        return subprocess.run([SLUICE, "--config", self.cfg, *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    def call(self, method, path, token, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.api}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())

    def conninfo(self, user, token):
        return f"host=127.0.0.1 port={self.pg} dbname=prod user={user} password={token} sslmode=disable"

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def approve_to_run(held_on, approve_on, token, bob, rounds):
    times = []
    for i in range(rounds):
        sql = f"UPDATE orders SET qty = qty + 1 WHERE id = {i % 50 + 1}"
        p = subprocess.Popen(["psql", "-X", "-At", held_on.conninfo("alice", token), "-c", sql],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        rid = None
        while rid is None:
            for r in approve_on.call("GET", "/v1/reviews", approve_on.admin):
                if r["statement"] == sql:
                    rid = r["id"]
            time.sleep(0.01)
        t0 = time.perf_counter()
        approve_on.call("POST", f"/v1/reviews/{rid}/approve", bob, {})
        p.wait()
        times.append((time.perf_counter() - t0) * 1000)
        assert p.returncode == 0, p.stderr.read()
    return times


def timed(make_cmd, rounds, ok):
    times = []
    for i in range(rounds):
        cmd = make_cmd(i)
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        times.append((time.perf_counter() - t0) * 1000)
        assert (r.returncode == 0) == ok, r.stderr
    return times


def report(name, times):
    times = sorted(times)
    p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
    print(f"{name:58s} median {statistics.median(times):7.1f} ms   p90 {p90:7.1f} ms   (n={len(times)})")


def main():
    if not os.path.exists(SLUICE):
        subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="sluice-review-bench-")
    os.chmod(work, 0o777)
    bindir = pg_bin()
    port = free_port()
    data = os.path.join(work, "pg")
    subprocess.run(as_postgres([f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-N"]),
                   check=True, capture_output=True)
    subprocess.run(as_postgres([f"{bindir}/pg_ctl", "-D", data, "-w", "-l", f"{data}/log", "start", "-o",
                                f"-p {port} -k {work} -c listen_addresses=127.0.0.1"]),
                   check=True, capture_output=True)
    gateways = []
    try:
        psql(port, "postgres", "CREATE DATABASE shop")
        psql(port, "postgres", "CREATE DATABASE store")
        psql(port, "shop", "CREATE TABLE orders (id int PRIMARY KEY, qty int); "
                           "INSERT INTO orders SELECT g, g FROM generate_series(1, 1000) g; ANALYZE orders")
        solo = Gateway(work, "solo", port, "")
        store = f'store = "postgres://postgres@127.0.0.1:{port}/store?sslmode=disable"'
        a = Gateway(work, "a", port, store)
        b = Gateway(work, "b", port, store)
        gateways = [solo, a, b]
        print(f"sluice {SLUICE}; PostgreSQL {bindir}; {N} rounds each")
        for gw in gateways:
            gw.alice = gw.cli("token", "issue", "--principal", "alice", "--connection", "prod", "--ttl", "1h")
            gw.bob = gw.cli("token", "issue", "--api", "--principal", "bob", "--ttl", "1h")
            gw.agent = gw.cli("token", "issue", "--principal", "alice", "--actor", "agent:bench",
                              "--connection", "prod", "--ttl", "1h")
        report("approve-to-run, same gateway (SQLite store)",
               approve_to_run(solo, solo, solo.alice, solo.bob, N))
        report("approve-to-run, other gateway (PostgreSQL store, NOTIFY)",
               approve_to_run(a, b, a.alice, b.bob, N))
        def update(i):
            return f"UPDATE orders SET qty = qty WHERE id = {i + 100}"
        direct = f"host=127.0.0.1 port={port} dbname=shop user=postgres"
        report("UPDATE direct (psql run incl. connect)",
               timed(lambda i: ["psql", "-X", "-At", direct, "-c", update(i)], N, True))
        report("SELECT through the gateway (psql run incl. connect)",
               timed(lambda i: ["psql", "-X", "-At", solo.conninfo("alice", solo.alice), "-c",
                                f"SELECT qty FROM orders WHERE id = {i + 1}"], N, True))
        report("UPDATE by an agent: deferred, new review (psql run)",
               timed(lambda i: ["psql", "-X", "-At", solo.conninfo("alice", solo.agent), "-c", update(i)],
                     N, False))
    finally:
        for gw in gateways:
            gw.stop()
        subprocess.run(as_postgres([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
