//! A real OpenSSH server on a free loopback port, with its own host key
//! and configuration, trusting the gateway's certificate authority; and the
//! real `ssh` client pointed at the gateway.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, Gateway};

/// An OpenSSH server for tests.
pub struct Sshd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// Its host key, as a pinned `host_keys` entry.
    pub host_pub: String,
    /// The login on the target (the user running the tests).
    pub user: String,
    child: Option<Child>,
}

fn keygen(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (openssh-client) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    // The key without its comment.
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Sshd {
    /// Makes the host key and picks a port; [`Sshd::run`] starts it.
    pub fn prepare() -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("sluice-sshd-")
            .tempdir()
            .unwrap();
        let host_pub = keygen(&dir.path().join("host_ed25519"));
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        Sshd {
            port: free_port(),
            dir,
            host_pub,
            user,
            child: None,
        }
    }

    /// A key the gateway may log in with (listed in `authorized_keys`).
    pub fn gateway_key(&self) -> PathBuf {
        let path = self.dir.path().join("gateway_key");
        let public = keygen(&path);
        std::fs::write(
            self.dir.path().join("authorized_keys"),
            format!("{public}\n"),
        )
        .unwrap();
        path
    }

    /// Starts sshd trusting the gateway's CA (`ca_pub`).
    pub fn run(&mut self, ca_pub: &Path) {
        // sshd run as root needs its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let d = self.dir.path();
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nTrustedUserCAKeys {ca}\nPubkeyAuthentication yes\n\
                 PasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nAllowTcpForwarding yes\nSubsystem sftp internal-sftp\n\
                 LogLevel VERBOSE\nMaxStartups 100\n",
                port = self.port,
                d = d.display(),
                ca = ca_pub.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("sshd (openssh-server) is installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// sshd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// A `[[connections]]` entry for this server.
    pub fn connection(&self, name: &str, extra: &str) -> String {
        format!(
            "[[connections]]\nname = \"{name}\"\nkind = \"ssh\"\naddress = \"127.0.0.1:{}\"\nuser = \"{}\"\nhost_keys = [\"{}\"]\n{extra}\n",
            self.port, self.user, self.host_pub
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A local account for password logins (`sluicetest`, with the harness's
/// target password), made when the tests run as root; `None` otherwise.
pub fn password_user() -> Option<&'static str> {
    if !super::is_root() {
        return None;
    }
    const USER: &str = "sluicetest";
    let exists = Command::new("id")
        .arg(USER)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        let _ = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", USER])
            .status();
    }
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .ok()?;
    std::io::Write::write_all(
        chpasswd.stdin.as_mut()?,
        format!("{USER}:{}\n", super::TARGET_PASSWORD).as_bytes(),
    )
    .ok()?;
    drop(chpasswd.stdin.take());
    chpasswd.wait().ok()?.success().then_some(USER)
}

/// The gateway's certificate authority (public key file), created at start.
pub fn gateway_ca(gw: &Gateway) -> PathBuf {
    gw.dir.path().join("data").join("ssh_ca_key.pub")
}

/// A known_hosts file pinning the gateway's host key.
pub fn gateway_known_hosts(gw: &Gateway) -> PathBuf {
    let public =
        std::fs::read_to_string(gw.dir.path().join("data").join("ssh_host_ed25519_key.pub"))
            .unwrap();
    let path = gw.dir.path().join("known_hosts");
    std::fs::write(&path, format!("[127.0.0.1]:{} {}", gw.ssh_port, public)).unwrap();
    path
}

/// `ssh`, `scp` or `sftp` pointed at the gateway, typing `token` at the
/// prompt (via SSH_ASKPASS, as a person would); the caller adds the rest.
pub fn client_cmd(gw: &Gateway, program: &str, token: &str) -> Command {
    let askpass = gw.dir.path().join("askpass.sh");
    if !askpass.exists() {
        std::fs::write(
            &askpass,
            "#!/bin/sh\nprintf '%s\\n' \"$SLUICE_TEST_TOKEN\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let known = gateway_known_hosts(gw);
    let port_flag = if program == "ssh" { "-p" } else { "-P" };
    let mut c = Command::new(program);
    c.args(["-F", "/dev/null", port_flag, &gw.ssh_port.to_string()])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=keyboard-interactive,password",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
        ])
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .env("SLUICE_TEST_TOKEN", token)
        .stdin(Stdio::null());
    c
}

/// `ssh` to the gateway as `connection`; `args` follow the destination.
pub fn ssh_cmd(gw: &Gateway, connection: &str, token: &str, args: &[&str]) -> Command {
    let mut c = client_cmd(gw, "ssh", token);
    c.arg(format!("{connection}@127.0.0.1")).args(args);
    c
}

/// Runs a command, killing it if it takes longer than `limit`.
pub fn output_within(mut c: Command, limit: Duration) -> Output {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Runs `ssh` to the gateway; returns its output.
pub fn ssh(gw: &Gateway, connection: &str, token: &str, args: &[&str]) -> Output {
    ssh_cmd(gw, connection, token, args).output().unwrap()
}
