//! Test harness: real PostgreSQL servers on free loopback ports, the real
//! `sluice` binary as the gateway, and real clients (`psql`, `pgbench`,
//! tokio-postgres).

#![allow(dead_code)]

pub mod sshd;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The target's password, used to check it never leaks anywhere.
pub const TARGET_PASSWORD: &str = "target-Pa55-never-leaks";

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// Directory of the PostgreSQL server binaries.
pub fn pg_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SLUICE_PG_BIN") {
        return PathBuf::from(p);
    }
    for v in ["17", "16", "15", "14"] {
        let p = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if p.join("postgres").exists() {
            return p;
        }
    }
    panic!("no PostgreSQL server binaries found; set SLUICE_PG_BIN");
}

/// A command run as the `postgres` user when the tests run as root
/// (the server refuses to run as root).
fn pg_command(bin: &str) -> Command {
    let path = pg_bin().join(bin);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run_ok(mut c: Command, what: &str) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    if is_root() {
        // The postgres user must reach its data directory inside.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
    }
    dir
}

/// One initdb, reused across test binaries and runs; each server starts
/// from a copy of it.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let name = pg_bin().to_string_lossy().replace('/', "_");
        let fixed = PathBuf::from(format!("/tmp/sluice-pg-template{name}"));
        if fixed.join("data").join("PG_VERSION").exists() {
            return fixed.join("data");
        }
        let dir = scratch_dir("sluice-pg-template-").keep();
        let data = dir.join("data");
        let mut c = pg_command("initdb");
        c.args([
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-N",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        run_ok(c, "initdb");
        // Another test binary may have won the race; either copy will do.
        if std::fs::rename(&dir, &fixed).is_ok() {
            fixed.join("data")
        } else {
            data
        }
    })
}

/// Authentication the test server demands over TCP.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Auth {
    Scram,
    Md5,
    Password,
    Trust,
}

/// A PostgreSQL server owned by one test.
pub struct PgServer {
    pub port: u16,
    pub socket_dir: PathBuf,
    pub data: PathBuf,
    pub ca_cert: Option<PathBuf>,
    _dir: tempfile::TempDir,
    stopped: bool,
}

impl PgServer {
    /// Starts a server with `app` (password [`TARGET_PASSWORD`]) owning database `shop`.
    pub fn start(auth: Auth, ssl: bool) -> PgServer {
        let dir = scratch_dir("sluice-pg-");
        let data = dir.path().join("data");
        let mut cp = Command::new("cp");
        cp.args(["-a", template().to_str().unwrap(), data.to_str().unwrap()]);
        run_ok(cp, "copy template");
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir).unwrap();
        if is_root() {
            run_ok(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres", socket_dir.to_str().unwrap()]);
                    c
                },
                "chown",
            );
        }
        let method = match auth {
            Auth::Scram => "scram-sha-256",
            Auth::Md5 => "md5",
            Auth::Password => "password",
            Auth::Trust => "trust",
        };
        let hba = format!("local all all trust\nhost all all 127.0.0.1/32 {method}\nhost all all ::1/128 {method}\n");
        write_as_postgres(&data.join("pg_hba.conf"), &hba);
        let mut conf = String::from("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n");
        if auth == Auth::Md5 {
            conf.push_str("password_encryption = md5\n");
        }
        let mut ca_cert = None;
        if ssl {
            let (ca, cert, key) = make_ca_and_leaf();
            write_as_postgres(&data.join("server.crt"), &cert);
            write_as_postgres(&data.join("server.key"), &key);
            let ca_path = dir.path().join("ca.pem");
            std::fs::write(&ca_path, ca).unwrap();
            ca_cert = Some(ca_path);
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        let mut existing = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        existing.push_str(&conf);
        write_as_postgres(&data.join("postgresql.conf"), &existing);
        let port = free_port();
        let mut c = pg_command("pg_ctl");
        c.args([
            "-D",
            data.to_str().unwrap(),
            "-w",
            "-t",
            "30",
            "-l",
            data.join("log").to_str().unwrap(),
            "start",
            "-o",
        ])
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            socket_dir.display()
        ));
        run_ok(c, "pg_ctl start");
        let server = PgServer {
            port,
            socket_dir,
            data,
            ca_cert,
            _dir: dir,
            stopped: false,
        };
        server.admin_sql(&format!(
            "CREATE ROLE app LOGIN PASSWORD '{TARGET_PASSWORD}'"
        ));
        server.admin_sql("CREATE DATABASE shop OWNER app");
        server.admin_sql_db(
            "shop",
            "SET ROLE app; CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL, qty int NOT NULL); \
             INSERT INTO orders (item, qty) SELECT 'item' || g, g FROM generate_series(1, 100) g;",
        );
        server
    }

    /// Runs SQL as the superuser over the Unix socket.
    pub fn admin_sql(&self, sql: &str) -> String {
        self.admin_sql_db("postgres", sql)
    }

    /// Runs SQL as the superuser in a database.
    pub fn admin_sql_db(&self, db: &str, sql: &str) -> String {
        let mut c = Command::new("psql");
        c.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ]);
        String::from_utf8(run_ok(c, "admin psql").stdout).unwrap()
    }

    /// Stops the server at once (a target that goes away).
    pub fn stop_now(&mut self) {
        let mut c = pg_command("pg_ctl");
        c.args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"]);
        let _ = c.output();
        self.stopped = true;
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if !self.stopped {
            self.stop_now();
        }
    }
}

fn write_as_postgres(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    if is_root() {
        let mut c = Command::new("chown");
        c.args(["postgres:postgres", path.to_str().unwrap()]);
        run_ok(c, "chown");
    }
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// A CA certificate, and a leaf for 127.0.0.1/localhost signed by it (PEM).
pub fn make_ca_and_leaf() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

/// A running `sluice gateway` process with its own data directory.
pub struct Gateway {
    pub pg_port: u16,
    pub ssh_port: u16,
    pub api_port: u16,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
    child: Child,
    pub log: PathBuf,
}

/// A `[[connections]]` entry for a test server.
pub fn connection_toml(name: &str, server: &PgServer, tls: &str, tags: &str) -> String {
    let ca = match (&server.ca_cert, tls) {
        (Some(p), "verify-full") => format!("tls_ca_file = {:?}\n", p.to_str().unwrap()),
        _ => String::new(),
    };
    format!(
        "[[connections]]\nname = \"{name}\"\nkind = \"postgres\"\naddress = \"127.0.0.1:{}\"\ndatabase = \"shop\"\nuser = \"app\"\npassword_env = \"SLUICE_TEST_TARGET_PASSWORD\"\ntls = \"{tls}\"\n{ca}tags = {{ {tags} }}\n",
        server.port
    )
}

impl Gateway {
    /// Starts the gateway with the given extra config (connections, store).
    pub fn start(gateway_extra: &str, postgres_extra: &str, connections: &str) -> Gateway {
        Gateway::start_with_ssh(gateway_extra, postgres_extra, "", connections)
    }

    /// Starts the gateway with an `[ssh]` section too.
    pub fn start_with_ssh(
        gateway_extra: &str,
        postgres_extra: &str,
        ssh_extra: &str,
        connections: &str,
    ) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("sluice-gw-")
            .tempdir()
            .unwrap();
        let pg_port = free_port();
        let ssh_port = free_port();
        let api_port = free_port();
        let config = dir.path().join("sluice.toml");
        std::fs::write(
            &config,
            format!(
                "[gateway]\ndata_dir = \"data\"\napi_listen = \"127.0.0.1:{api_port}\"\n{gateway_extra}\n\n[postgres]\nlisten = \"127.0.0.1:{pg_port}\"\n{postgres_extra}\n\n[ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\n{ssh_extra}\n\n{connections}"
            ),
        )
        .unwrap();
        let log = dir.path().join("gateway.log");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["gateway", "--config", config.to_str().unwrap()])
            .env("SLUICE_TEST_TARGET_PASSWORD", TARGET_PASSWORD)
            .env("SLUICE_LOG", "debug")
            .env_remove("SLUICE_URL")
            .env_remove("SLUICE_TOKEN")
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .unwrap();
        let mut gw = Gateway {
            pg_port,
            ssh_port,
            api_port,
            config,
            dir,
            child,
            log,
        };
        gw.wait_ready();
        gw
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("gateway exited with {status}: {}", self.log_text());
            }
            let api = std::net::TcpStream::connect(("127.0.0.1", self.api_port)).is_ok();
            let pg = std::net::TcpStream::connect(("127.0.0.1", self.pg_port)).is_ok();
            let ssh = std::net::TcpStream::connect(("127.0.0.1", self.ssh_port)).is_ok();
            if api && pg && ssh {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The gateway's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a client command against this gateway.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("SLUICE_URL")
            .env_remove("SLUICE_TOKEN")
            .output()
            .unwrap()
    }

    /// Runs a client command that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "sluice {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Issues a token and returns its value.
    pub fn token(&self, principal: &str, connection: &str, ttl: &str) -> String {
        self.cli_ok(&[
            "token",
            "issue",
            "--principal",
            principal,
            "--connection",
            connection,
            "--ttl",
            ttl,
        ])
        .trim()
        .to_string()
    }

    /// A libpq connection string through the gateway.
    pub fn conninfo(&self, db: &str, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={db} user={user} password={password} sslmode=require",
            self.pg_port
        )
    }

    /// JSON output of a client command.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.cli_ok(&a)).unwrap()
    }

    /// The events of the newest session of a principal.
    pub fn last_session(&self, principal: &str) -> serde_json::Value {
        let list = self.cli_json(&["sessions", "list", "--principal", principal]);
        let id = list[0]["id"].as_str().expect("a session").to_string();
        self.cli_json(&["sessions", "show", &id])
    }

    /// Sends a signal (`HUP`, ...) to the gateway process.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
    }

    /// Sends SIGTERM and waits.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs psql with a connection string and SQL; returns the output.
pub fn psql(conninfo: &str, sql: &str) -> Output {
    Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql])
        .output()
        .unwrap()
}

/// Stdout of a successful psql run.
pub fn psql_ok(conninfo: &str, sql: &str) -> String {
    let out = psql(conninfo, sql);
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `command` texts among a session's events.
pub fn commands(show: &serde_json::Value) -> Vec<String> {
    show["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "command")
        .map(|e| e["data"]["text"].as_str().unwrap().to_string())
        .collect()
}

/// Polls until `f` holds or the timeout passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// Logs in over plaintext with a raw socket (gateway must allow loopback
/// plaintext) and reads up to ReadyForQuery; for tests that misbehave on purpose.
pub fn raw_login(port: u16, user: &str, db: &str, token: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut body = vec![0, 3, 0, 0];
    for (k, v) in [("user", user), ("database", db)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut pkt = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    pkt.extend_from_slice(&body);
    s.write_all(&pkt).unwrap();
    let (tag, _) = read_msg(&mut s);
    assert_eq!(tag, b'R');
    let mut p = vec![b'p'];
    p.extend_from_slice(&((token.len() + 5) as u32).to_be_bytes());
    p.extend_from_slice(token.as_bytes());
    p.push(0);
    s.write_all(&p).unwrap();
    loop {
        let (tag, body) = read_msg(&mut s);
        assert_ne!(
            tag,
            b'E',
            "login failed: {}",
            String::from_utf8_lossy(&body)
        );
        if tag == b'Z' {
            return s;
        }
    }
}

/// Reads one backend message.
pub fn read_msg(s: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
    use std::io::Read;
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).unwrap();
    (head[0], body)
}

/// A simple Query message.
pub fn query_msg(sql: &str) -> Vec<u8> {
    let mut q = vec![b'Q'];
    q.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
    q.extend_from_slice(sql.as_bytes());
    q.push(0);
    q
}

impl Gateway {
    /// Takes over a stopped gateway's directory with a newly started process.
    pub fn adopt(mut old: Gateway, child: Child) -> Gateway {
        let dir = std::mem::replace(&mut old.dir, tempfile::tempdir().unwrap());
        let mut gw = Gateway {
            pg_port: old.pg_port,
            ssh_port: old.ssh_port,
            api_port: old.api_port,
            config: old.config.clone(),
            dir,
            child,
            log: old.log.clone(),
        };
        drop(old);
        gw.wait_ready();
        gw
    }
}

/// The outcome recorded for a session's command: folded into the command
/// event, or a separate `command.result` event.
pub fn outcome_of(show: &serde_json::Value, text: &str) -> serde_json::Value {
    let events = show["events"].as_array().unwrap();
    let cmd = events
        .iter()
        .find(|e| e["kind"] == "command" && e["data"]["text"] == text)
        .unwrap_or_else(|| panic!("no command {text:?} in {show}"));
    if cmd["data"]["outcome"].is_object() {
        return cmd["data"]["outcome"].clone();
    }
    events
        .iter()
        .find(|e| e["kind"] == "command.result" && e["data"]["command"] == cmd["data"]["n"])
        .map(|e| e["data"].clone())
        .unwrap_or_else(|| panic!("no outcome for {text:?} in {show}"))
}

impl Gateway {
    /// Kills the process outright (a crash).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A frontend message with a tag and body.
pub fn frontend_msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Parse (named statement, no parameter types), Bind (no parameters), Execute, Sync.
pub fn parse_msg(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    b.extend_from_slice(sql.as_bytes());
    b.push(0);
    b.extend_from_slice(&0u16.to_be_bytes());
    frontend_msg(b'P', &b)
}

/// Bind a statement to a portal with no parameters and text results.
pub fn bind_msg(portal: &str, stmt: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for s in [portal, stmt] {
        b.extend_from_slice(s.as_bytes());
        b.push(0);
    }
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    frontend_msg(b'B', &b)
}

/// Execute a portal without a row limit.
pub fn execute_msg(portal: &str) -> Vec<u8> {
    let mut b = portal.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(&0u32.to_be_bytes());
    frontend_msg(b'E', &b)
}

/// Sync.
pub fn sync_msg() -> Vec<u8> {
    frontend_msg(b'S', &[])
}

/// The SQLSTATE of an ErrorResponse body.
pub fn error_code(body: &[u8]) -> Option<String> {
    let mut rest = body;
    while let Some((&f, r)) = rest.split_first() {
        if f == 0 {
            break;
        }
        let end = r.iter().position(|&c| c == 0)?;
        if f == b'C' {
            return Some(String::from_utf8_lossy(&r[..end]).to_string());
        }
        rest = &r[end + 1..];
    }
    None
}

/// Reads backend messages up to ReadyForQuery; returns their tags and the SQLSTATEs of errors.
pub fn read_until_ready(s: &mut std::net::TcpStream) -> (Vec<u8>, Vec<String>) {
    let mut tags = vec![];
    let mut codes = vec![];
    loop {
        let (tag, body) = read_msg(s);
        tags.push(tag);
        if tag == b'E' {
            codes.extend(error_code(&body));
        }
        if tag == b'Z' {
            return (tags, codes);
        }
    }
}

/// The data of every `command` event in all of a principal's sessions.
pub fn command_events(gw: &Gateway, principal: &str) -> Vec<serde_json::Value> {
    let sessions = gw.cli_json(&["sessions", "list", "--principal", principal]);
    let mut out = vec![];
    for s in sessions.as_array().unwrap() {
        let show = gw.cli_json(&["sessions", "show", s["id"].as_str().unwrap()]);
        out.extend(
            show["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["kind"] == "command")
                .map(|e| e["data"].clone()),
        );
    }
    out
}

/// A psql running one statement, to spawn (for clients that must outlive a call).
pub fn psql_command(conninfo: &str, sql: &str) -> Command {
    let mut c = Command::new("psql");
    c.args(["-X", "-At", conninfo, "-c", sql]);
    c
}

/// A libpq connection string straight to the target, as the app role.
pub fn direct(target: &PgServer) -> String {
    format!(
        "host=127.0.0.1 port={} dbname=shop user=app password={TARGET_PASSWORD} sslmode=disable",
        target.port
    )
}

/// What a client printed on stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A token for alice's agent `agent:claude` on a connection.
pub fn agent_token(gw: &Gateway, connection: &str) -> String {
    gw.cli_ok(&[
        "token",
        "issue",
        "--principal",
        "alice",
        "--actor",
        "agent:claude",
        "--connection",
        connection,
        "--ttl",
        "10m",
    ])
    .trim()
    .to_string()
}

/// A client command run with someone's own credential.
pub fn cli_as(gw: &Gateway, credential: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(&gw.config)
        .args(args)
        .env_remove("SLUICE_URL")
        .env("SLUICE_TOKEN", credential)
        .output()
        .unwrap()
}

/// The JSON output of a client command that must succeed, run with someone's own credential.
pub fn cli_as_json(gw: &Gateway, credential: &str, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = cli_as(gw, credential, &a);
    assert!(out.status.success(), "sluice {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A tokio-postgres client on the prod connection as alice's agent.
pub async fn agent_client(gw: &Gateway, token: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} dbname=prod user=alice password={token}",
            gw.pg_port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
}
