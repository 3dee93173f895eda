//! sluice SSH adapter: an SSH server for clients (`ssh`, `scp`, `sftp`),
//! an SSH client toward targets, and between them inspection of every
//! exec command line, SFTP file operation and terminal session.

pub mod channel;
pub mod classify;
pub mod keys;
pub mod preauth;
pub mod server;
pub mod sftp;
pub mod target;
mod typed;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::{cipher, server as ssh_server, MethodKind, MethodSet, Preferred};
use sluice_core::Core;
use tokio::net::TcpListener;

use crate::classify::Programs;
use crate::keys::Authority;
use crate::preauth::{PreAuth, PreAuthSlots};
use crate::target::SshTarget;

/// Listener settings.
pub struct SshOptions {
    /// The gateway's host key, which clients pin.
    pub host_key: PrivateKey,
    /// The authority for the gateway's own certificates to targets.
    pub ca: Arc<Authority>,
    /// The authority for client certificates (`sluice connect`). Never the
    /// same key as `ca`: targets trust that one, and a client certificate
    /// must not log in to a target.
    pub client_ca: Arc<Authority>,
    /// Target settings per SSH connection name.
    pub targets: HashMap<String, SshTarget>,
    /// The program table exec command lines are classified with.
    pub programs: Arc<Programs>,
    /// Where terminal and exec recordings are written.
    pub recordings: PathBuf,
    /// Largest recording per channel, in bytes.
    pub max_recording: u64,
}

/// The SSH gateway: one per listener.
pub struct SshGateway {
    pub(crate) core: Arc<Core>,
    pub(crate) ca: Arc<Authority>,
    pub(crate) client_ca: Arc<Authority>,
    pub(crate) targets: HashMap<String, SshTarget>,
    pub(crate) programs: Arc<Programs>,
    pub(crate) recordings: PathBuf,
    pub(crate) max_recording: u64,
    config: Arc<ssh_server::Config>,
    pub(crate) client_config: Arc<russh::client::Config>,
    pre_auth: Arc<PreAuthSlots>,
}

/// How many connections one address may have unauthenticated at once.
const MAX_PRE_AUTH_PER_IP: usize = 32;

/// How many connections may be unauthenticated at once.
const MAX_PRE_AUTH: usize = 256;
/// How long a connection may take to authenticate.
const AUTH_DEADLINE: Duration = Duration::from_secs(30);
/// How long a connection may take to send its version.
const VERSION_DEADLINE: Duration = Duration::from_secs(10);

/// Ciphers offered to clients and asked of targets. OpenSSH clients pick
/// the first of their own list that the server offers; theirs starts with
/// ChaCha20 and the CTR modes, so these are left out of what clients are
/// offered: with AES instructions AES-GCM is the fastest, and the gateway
/// decrypts and encrypts every byte twice.
pub(crate) const CIPHERS: &[cipher::Name] = &[
    cipher::AES_128_GCM,
    cipher::AES_256_GCM,
    cipher::CHACHA20_POLY1305,
];

impl SshGateway {
    /// Prepares the listener.
    pub fn new(core: Arc<Core>, opts: SshOptions) -> Arc<SshGateway> {
        let mut methods = MethodSet::empty();
        methods.push(MethodKind::PublicKey);
        methods.push(MethodKind::KeyboardInteractive);
        methods.push(MethodKind::Password);
        let preferred = Preferred {
            cipher: std::borrow::Cow::Borrowed(CIPHERS),
            ..Preferred::default()
        };
        let config = ssh_server::Config {
            server_id: russh::SshId::Standard("SSH-2.0-sluice".into()),
            methods,
            auth_rejection_time: Duration::from_millis(500),
            auth_rejection_time_initial: Some(Duration::from_millis(0)),
            keys: vec![opts.host_key],
            max_auth_attempts: 6,
            inactivity_timeout: Some(Duration::from_secs(3600)),
            keepalive_interval: Some(Duration::from_secs(30)),
            window_size: 8 * 1024 * 1024,
            maximum_packet_size: 65535,
            nodelay: true,
            preferred,
            ..Default::default()
        };
        Arc::new(SshGateway {
            core,
            ca: opts.ca,
            client_ca: opts.client_ca,
            targets: opts.targets,
            programs: opts.programs,
            recordings: opts.recordings,
            max_recording: opts.max_recording,
            config: Arc::new(config),
            client_config: target::client_config(),
            pre_auth: PreAuthSlots::new(MAX_PRE_AUTH, MAX_PRE_AUTH_PER_IP),
        })
    }

    /// Accepts clients until the listener fails; each runs in its own task.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    let Some(permit) = self.pre_auth.acquire(peer.ip()) else {
                        // Dropped unanswered: under a flood, a refusal costs
                        // as much as the flood.
                        tracing::warn!(%peer, "too many unauthenticated SSH connections from one address; dropping one");
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let gw = self.clone();
                    tokio::spawn(async move { gw.run(tcp, peer, permit).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn run(self: Arc<Self>, tcp: tokio::net::TcpStream, peer: SocketAddr, permit: PreAuth) {
        let evicted = permit.evicted.clone();
        let handler = server::ClientConn::new(self.clone(), peer, permit);
        let shared = handler.shared();
        // The version exchange waits for the client: bounded, and given up
        // when a newer connection needs the place.
        let started = tokio::select! {
            r = tokio::time::timeout(
                VERSION_DEADLINE,
                ssh_server::run_stream(self.config.clone(), tcp, handler),
            ) => r.unwrap_or_else(|_| Err(russh::Error::ConnectionTimeout)),
            _ = evicted.notified() => Err(russh::Error::ConnectionTimeout),
        };
        let outcome = match started {
            Ok(running) => {
                // A connection that never authenticates would hold its
                // pre-authentication slot until the inactivity timeout.
                let handle = running.handle();
                let waiting = shared.clone();
                let deadline = tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep(AUTH_DEADLINE) => {}
                        _ = evicted.notified() => {}
                    }
                    if waiting.session().is_none() {
                        let _ = handle
                            .disconnect(
                                russh::Disconnect::ByApplication,
                                "sluice: authentication timed out".into(),
                                "en".into(),
                            )
                            .await;
                    }
                });
                let ended = running.await;
                deadline.abort();
                match ended {
                    Ok(()) => "closed".to_string(),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "ssh session ended with an error");
                        format!("error: {e}")
                    }
                }
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "ssh handshake failed");
                format!("error: {e}")
            }
        };
        shared.end(&outcome).await;
    }
}
