//! The PostgreSQL adapter: accepts PostgreSQL clients (TLS, token as the
//! password), logs in to the target with the gateway's credential, and
//! relays the protocol while recording every command through the core.

pub mod cancel;
pub mod catalog;
pub mod classify;
pub mod mask;
pub mod relay;
pub mod shown;
pub mod target;
pub mod tls;
pub mod tools;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustls::{ClientConfig, ServerConfig};
use sluice_core::{AuthError, Core, OpenError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::cancel::CancelRegistry;
use crate::classify::Classifier;
use crate::wire::{Startup, StartupError};

/// A byte stream, TLS or plain.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
/// A boxed byte stream.
pub type BoxIo = Box<dyn Io>;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const TARGET_TIMEOUT: Duration = Duration::from_secs(15);

/// Listener settings.
pub struct PgOptions {
    /// Certificate for clients.
    pub server_tls: Arc<ServerConfig>,
    /// Accept cleartext (non-TLS) sessions from loopback addresses.
    pub allow_plaintext_loopback: bool,
    /// Classifies every statement for policy.
    pub classifier: Arc<Classifier>,
}

/// The PostgreSQL gateway: one per listener.
pub struct PgGateway {
    core: Arc<Core>,
    acceptor: TlsAcceptor,
    target_tls: HashMap<String, Option<Arc<ClientConfig>>>,
    /// Catalog lookups (for column masking rules), per connection.
    catalogs: HashMap<String, Arc<catalog::Catalog>>,
    cancels: CancelRegistry,
    allow_plaintext_loopback: bool,
    classifier: Arc<Classifier>,
    /// Bounds the connections not yet authenticated, which cost memory and
    /// store lookups without any token having been shown.
    pre_auth: Arc<Semaphore>,
}

/// How many connections may be in the startup phase at once.
const MAX_PRE_AUTH: usize = 512;

impl PgGateway {
    /// Prepares the listener and the TLS configuration of every postgres connection.
    pub fn new(core: Arc<Core>, opts: PgOptions) -> Result<Arc<Self>, tls::TlsError> {
        let mut target_tls = HashMap::new();
        let mut catalogs = HashMap::new();
        for c in core.connections().filter(|c| c.kind == "postgres") {
            let tls = tls::target_config(c)?;
            catalogs.insert(
                c.name.clone(),
                Arc::new(catalog::Catalog::new(c.clone(), tls.clone())),
            );
            target_tls.insert(c.name.clone(), tls);
        }
        Ok(Arc::new(PgGateway {
            core,
            acceptor: TlsAcceptor::from(opts.server_tls),
            target_tls,
            catalogs,
            cancels: CancelRegistry::default(),
            allow_plaintext_loopback: opts.allow_plaintext_loopback,
            classifier: opts.classifier,
            pre_auth: Arc::new(Semaphore::new(MAX_PRE_AUTH)),
        }))
    }

    /// The masking tools over this gateway's connections.
    pub fn mask_tools(&self) -> tools::MaskTools {
        tools::MaskTools::new(
            self.classifier.clone(),
            self.catalogs.clone(),
            self.core.masking(),
        )
    }

    /// Accepts clients until the listener fails; each runs in its own task.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((mut tcp, peer)) => {
                    let gw = self.clone();
                    match self.pre_auth.clone().try_acquire_owned() {
                        Ok(permit) => {
                            tokio::spawn(async move { gw.handle(tcp, peer, permit).await });
                        }
                        Err(_) => {
                            tokio::spawn(async move {
                                refuse(
                                    &mut tcp,
                                    "53300",
                                    "sluice: too many connections are waiting to authenticate; try again shortly",
                                    None,
                                )
                                .await
                            });
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn handle(
        self: Arc<Self>,
        mut tcp: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let _ = tcp.set_nodelay(true);
        // One deadline for the whole pre-authentication phase, however many
        // requests the client makes.
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        loop {
            let first = match tokio::time::timeout_at(deadline, wire::read_startup(&mut tcp)).await
            {
                Ok(r) => r,
                Err(_) => return,
            };
            match first {
                Ok(Startup::GssEnc) => {
                    // Refused as the server does when it has no GSSAPI: with 'N'.
                    if tcp.write_all(b"N").await.is_err() {
                        return;
                    }
                }
                Ok(Startup::Ssl) => {
                    if tcp.write_all(b"S").await.is_err() {
                        return;
                    }
                    let mut tls = match tokio::time::timeout(
                        STARTUP_TIMEOUT,
                        self.acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let second =
                        tokio::time::timeout_at(deadline, wire::read_startup(&mut tls)).await;
                    match second {
                        Ok(Ok(Startup::Start { minor, params })) => {
                            return self
                                .session(Box::new(tls), peer, minor, params, permit)
                                .await;
                        }
                        Ok(Ok(Startup::Cancel { pid, key })) => {
                            self.cancels.cancel(pid, key).await;
                            return;
                        }
                        Ok(Ok(_)) => {
                            return refuse(
                                &mut tls,
                                "08P01",
                                "sluice: unexpected request inside TLS",
                                None,
                            )
                            .await
                        }
                        Ok(Err(e)) => return refuse_startup(&mut tls, e).await,
                        Err(_) => return,
                    }
                }
                Ok(Startup::Cancel { pid, key }) => {
                    self.cancels.cancel(pid, key).await;
                    return;
                }
                Ok(Startup::Start { minor, params }) => {
                    if !(self.allow_plaintext_loopback && peer.ip().is_loopback()) {
                        return refuse(
                            &mut tcp,
                            "28000",
                            "sluice: this gateway requires TLS, since the password is a token",
                            Some("connect with sslmode=require"),
                        )
                        .await;
                    }
                    return self
                        .session(Box::new(tcp), peer, minor, params, permit)
                        .await;
                }
                Err(e) => return refuse_startup(&mut tcp, e).await,
            }
        }
    }

    async fn session(
        &self,
        mut io: BoxIo,
        peer: SocketAddr,
        minor: u16,
        params: Vec<(String, String)>,
        permit: OwnedSemaphorePermit,
    ) {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let Some(user) = get("user").filter(|u| !u.is_empty()) else {
            return refuse(
                &mut io,
                "28000",
                "sluice: no user name given",
                Some("set user= to your principal"),
            )
            .await;
        };
        let user = user.to_string();
        let database = get("database")
            .filter(|d| !d.is_empty())
            .unwrap_or(&user)
            .to_string();
        if get("replication").is_some_and(|r| !matches!(r, "false" | "off" | "no" | "0")) {
            return refuse(
                &mut io,
                "0A000",
                "sluice: replication connections are not supported through the gateway",
                None,
            )
            .await;
        }
        let mut out = BytesMut::new();
        let unsupported: Vec<String> = params
            .iter()
            .filter(|(n, _)| n.starts_with("_pq_."))
            .map(|(n, _)| n.clone())
            .collect();
        if minor > 0 || !unsupported.is_empty() {
            wire::negotiate_protocol_version(&mut out, 0, &unsupported);
        }
        wire::authentication(&mut out, 3);
        if io.write_all(&out).await.is_err() {
            return;
        }
        let password = match tokio::time::timeout(STARTUP_TIMEOUT, read_password(&mut io)).await {
            Ok(Ok(p)) => p,
            Ok(Err(msg)) => return refuse(&mut io, "08P01", &msg, None).await,
            Err(_) => return,
        };
        let client_addr = peer.to_string();
        let grant = match self
            .core
            .authenticate(
                sluice_core::Credential::Secret(&password),
                Some(&user),
                &database,
                "postgres",
                &client_addr,
            )
            .await
        {
            Ok(g) => g,
            Err(e) => {
                let code = match e {
                    AuthError::WrongConnection(_) | AuthError::WrongUser(_) => "28000",
                    AuthError::Store(_) => "58000",
                    _ => "28P01",
                };
                return refuse(&mut io, code, &format!("sluice: {e}"), None).await;
            }
        };
        drop(password);
        let session = match self
            .core
            .open_session(&grant, "postgres", &client_addr)
            .await
        {
            Ok(s) => s,
            Err(OpenError::Refused(d)) => {
                return refuse(
                    &mut io,
                    "42501",
                    &format!(
                        "sluice: policy does not allow connecting to \"{}\": {}",
                        grant.connection.name,
                        d.explain()
                    ),
                    None,
                )
                .await;
            }
            Err(OpenError::Store(e)) => {
                tracing::error!(error = %e, "cannot record session start; refusing");
                return refuse(
                    &mut io,
                    "58000",
                    "sluice: the audit store is unavailable; try again later",
                    None,
                )
                .await;
            }
        };
        let conn = grant.connection.clone();
        let tls_cfg = self.target_tls.get(&conn.name).cloned().flatten();
        let target = match target::connect(&conn, tls_cfg.as_ref(), &params, TARGET_TIMEOUT).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(connection = %conn.name, error = %e, "target session failed");
                let (code, msg) = match &e {
                    target::TargetError::Auth { code, .. } => (
                        "08006",
                        format!("sluice: the target of connection \"{}\" refused the gateway's login (SQLSTATE {code}); an administrator must check the connection's credentials", conn.name),
                    ),
                    _ => ("08006", format!("sluice: cannot open connection \"{}\": the target is unavailable", conn.name)),
                };
                refuse(&mut io, code, &msg, None).await;
                session
                    .close(0, 0, &format!("target unavailable: {e}"))
                    .await;
                return;
            }
        };
        drop(permit);
        let (cancel_id, held) = self.cancels.register(&conn.address, target.pid, target.key);
        out.clear();
        wire::authentication(&mut out, 0);
        let tail = &target.startup_tail;
        let (params_part, ready) = tail.split_at(tail.len().saturating_sub(6));
        out.extend_from_slice(params_part);
        wire::backend_key_data(&mut out, cancel_id.0, cancel_id.1);
        out.extend_from_slice(ready);
        if io.write_all(&out).await.is_err() {
            self.cancels.remove(cancel_id);
            session.close(0, 0, "client disconnected").await;
            return;
        }
        tracing::info!(session = %session.id, principal = %session.principal, connection = %conn.name, "session opened");
        let watch = session.token_watch();
        let unsafe_encoding = relay::startup_encoding_unsafe(&target.startup_tail);
        let end = relay::relay(
            io,
            target.io,
            &session,
            &self.classifier,
            self.catalogs.get(&conn.name).map(|c| &**c),
            unsafe_encoding,
            relay::Signals {
                token: watch,
                cancel: held,
            },
        )
        .await;
        self.cancels.remove(cancel_id);
        if end.in_flight {
            // Nobody will read the result: stop the work on the target
            // rather than let it run to completion.
            cancel::cancel_backend(&conn.address, target.pid, target.key).await;
        }
        tracing::info!(session = %session.id, outcome = %end.outcome, "session closed");
        session
            .close(end.bytes_in, end.bytes_out + out.len() as u64, &end.outcome)
            .await;
    }
}

async fn read_password(io: &mut BoxIo) -> Result<String, String> {
    let tag = io.read_u8().await.map_err(|e| e.to_string())?;
    let len = io.read_i32().await.map_err(|e| e.to_string())?;
    if tag != b'p' {
        return Err("sluice: expected a password message".into());
    }
    if !(5..=4096).contains(&len) {
        return Err("sluice: invalid password message length".into());
    }
    let mut body = vec![0u8; len as usize - 4];
    io.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    match wire::cstr(&body) {
        Some((p, _)) => Ok(p.to_string()),
        None => Err("sluice: malformed password message".into()),
    }
}

async fn refuse_startup<S: AsyncWrite + Unpin>(s: &mut S, e: StartupError) {
    match e {
        StartupError::Io(_) => {}
        StartupError::Version(..) => refuse(s, "0A000", &format!("sluice: {e}"), None).await,
        StartupError::Malformed(_) => refuse(s, "08P01", &format!("sluice: {e}"), None).await,
    }
}

/// Sends a FATAL error and closes.
async fn refuse<S: AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    code: &str,
    message: &str,
    hint: Option<&str>,
) {
    let mut b = BytesMut::new();
    wire::error_response(&mut b, "FATAL", code, message, hint);
    let _ = s.write_all(&b).await;
    let _ = s.flush().await;
    let _ = s.shutdown().await;
}
