//! The client side: authenticates SSH clients with sluice tokens (as the
//! password, or typed at a keyboard-interactive prompt) or with short-lived
//! certificates signed by the gateway's authority, opens the recorded
//! session, and hands each channel to [`crate::channel`].

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use russh::keys::Certificate;
use russh::server::{Auth, ChannelOpenHandle, Handler, Msg, Response, Session};
use russh::{Channel, ChannelOpenFailure};
use serde_json::json;
use sluice_core::audit::EventDraft;
use sluice_core::{Credential, Effect, OpenError, SessionHandle};

use crate::target::{self, TargetHandle};
use crate::SshGateway;

/// What a connection's handler and its channel tasks share.
pub struct Shared {
    pub(crate) gw: Arc<SshGateway>,
    pub(crate) peer: SocketAddr,
    session: OnceLock<Arc<SessionHandle>>,
    target: tokio::sync::OnceCell<Result<Arc<TargetHandle>, String>>,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    channels: AtomicU32,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    end_reason: Mutex<Option<String>>,
}

impl Shared {
    /// The recorded session, once authenticated.
    pub fn session(&self) -> Option<&Arc<SessionHandle>> {
        self.session.get()
    }

    /// The target connection, made on first use and shared by every
    /// channel of the session; the error is readable by the client.
    pub(crate) async fn target(&self) -> Result<Arc<TargetHandle>, String> {
        let Some(session) = self.session() else {
            return Err("not authenticated".into());
        };
        self.target
            .get_or_init(|| async {
                let conn = session.connection_config().clone();
                let Some(t) = self.gw.targets.get(&conn.name) else {
                    return Err(format!(
                        "connection \"{}\" is not an SSH connection",
                        conn.name
                    ));
                };
                let label = format!("sluice {} {}", session.id, session.principal);
                match target::connect(&conn, t, &self.gw.ca, self.gw.client_config.clone(), &label)
                    .await
                {
                    Ok(h) => Ok(Arc::new(h)),
                    Err(e) => {
                        let _ = session
                            .record_event("target.failed", json!({"reason": e.to_string()}))
                            .await;
                        Err(e.to_string())
                    }
                }
            })
            .await
            .clone()
    }

    /// Whether the connection has as many channels open as it may.
    fn channels_full(&self) -> bool {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.len() >= MAX_CHANNELS
    }

    /// A number for the session's next channel (names its recording).
    pub(crate) fn next_channel(&self) -> u32 {
        self.channels.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ends the session record once the connection is gone.
    pub(crate) async fn end(&self, outcome: &str) {
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        // Channel tasks end when their channels do; they finish their
        // records (recordings, outcomes) first, within one deadline.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for t in tasks {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
        if let Some(Ok(t)) = self.target.get() {
            let _ = t
                .disconnect(russh::Disconnect::ByApplication, "session ended", "en")
                .await;
        }
        if let Some(s) = self.session() {
            let reason = self
                .end_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            s.close(
                self.bytes_in.load(Ordering::Relaxed),
                self.bytes_out.load(Ordering::Relaxed),
                reason.as_deref().unwrap_or(outcome),
            )
            .await;
        }
    }
}

/// One client connection's SSH handler.
pub struct ClientConn {
    shared: Arc<Shared>,
    /// Held until the client authenticates.
    permit: Option<crate::preauth::PreAuth>,
    /// Keyboard-interactive answers that failed, to stop asking.
    prompts: u32,
    /// Channels that started a program (exec, shell, subsystem): later
    /// requests on them are refused, not silently ignored.
    started: std::collections::HashSet<russh::ChannelId>,
}

const PROMPT: &str = "sluice token: ";
/// Channels (sessions and tunnels) open at once on one connection (as
/// sshd's MaxSessions).
const MAX_CHANNELS: usize = 10;

fn too_many_channels() -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code: 4,
        reason: format!("sluice: at most {MAX_CHANNELS} channels per connection"),
    }
}
const MAX_PROMPTS: u32 = 3;

impl ClientConn {
    /// A handler for a new connection.
    pub fn new(
        gw: Arc<SshGateway>,
        peer: SocketAddr,
        permit: crate::preauth::PreAuth,
    ) -> ClientConn {
        ClientConn {
            shared: Arc::new(Shared {
                gw,
                peer,
                session: OnceLock::new(),
                target: tokio::sync::OnceCell::new(),
                bytes_in: AtomicU64::new(0),
                bytes_out: AtomicU64::new(0),
                channels: AtomicU32::new(0),
                tasks: Mutex::new(Vec::new()),
                end_reason: Mutex::new(None),
            }),
            permit: Some(permit),
            prompts: 0,
            started: Default::default(),
        }
    }

    /// What this connection's tasks share.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Checks a credential for the connection the SSH user name selects
    /// and opens the session; the error says why, for the client.
    async fn login(&mut self, user: &str, credential: Credential<'_>) -> Result<(), String> {
        if self.shared.session().is_some() {
            return Ok(());
        }
        let gw = &self.shared.gw;
        let peer = self.shared.peer.to_string();
        let grant = gw
            .core
            .authenticate(credential, None, user, "ssh", &peer)
            .await
            .map_err(|e| e.to_string())?;
        if !gw.targets.contains_key(&grant.connection.name) {
            let why = format!("connection \"{user}\" is not an SSH connection");
            let mut ev = EventDraft::new(
                "auth.failed",
                json!({"protocol": "ssh", "client_addr": peer, "reason": why}),
            );
            ev.connection = Some(grant.connection.name.clone());
            ev.principal = Some(grant.principal.clone());
            let _ = gw.core.record(ev).await;
            return Err(why);
        }
        match gw.core.open_session(&grant, "ssh", &peer).await {
            Ok(h) => {
                let _ = self.shared.session.set(Arc::new(h));
                Ok(())
            }
            Err(OpenError::Refused(d)) => Err(d.explain()),
            Err(OpenError::Store(e)) => {
                tracing::error!(error = %e, "could not record an SSH session start");
                Err("the gateway cannot record the session; try again later".into())
            }
        }
    }

    fn accepted(&mut self) -> Auth {
        self.permit = None;
        Auth::Accept
    }
}

fn ask_token(instructions: String) -> Auth {
    Auth::Partial {
        name: Cow::Borrowed("sluice"),
        instructions: Cow::Owned(instructions),
        prompts: Cow::Owned(vec![(Cow::Borrowed(PROMPT), false)]),
    }
}

impl Handler for ClientConn {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(
            match self.login(user, Credential::Secret(password.trim())).await {
                Ok(()) => self.accepted(),
                Err(_) => Auth::reject(),
            },
        )
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let Some(mut answers) = response else {
            return Ok(ask_token(format!(
                "Connection \"{user}\": enter a sluice token (from `sluice token issue` or `sluice connect`)."
            )));
        };
        let answer = answers
            .next()
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        match self.login(user, Credential::Secret(&answer)).await {
            Ok(()) => Ok(self.accepted()),
            Err(why) => {
                self.prompts += 1;
                if self.prompts >= MAX_PROMPTS {
                    return Ok(Auth::reject());
                }
                // The one place an SSH client shows a server's words
                // before login: say why, and ask again.
                Ok(ask_token(format!("sluice: {why}")))
            }
        }
    }

    // Offers are accepted so certificates (which arrive as offers too) can
    // be checked; plain keys then fail in the default `auth_publickey`:
    // a long-lived key would defeat short-lived access.

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let key_id = match self.shared.gw.client_ca.verify_user(certificate, user) {
            Ok(id) => id.to_string(),
            Err(why) => {
                let mut ev = EventDraft::new(
                    "auth.failed",
                    json!({"protocol": "ssh", "client_addr": self.shared.peer.to_string(),
                           "reason": format!("certificate refused: {why}")}),
                );
                ev.connection = Some(user[..user.floor_char_boundary(256)].to_string());
                let _ = self.shared.gw.core.record(ev).await;
                return Ok(Auth::reject());
            }
        };
        Ok(match self.login(user, Credential::Vouched(&key_id)).await {
            Ok(()) => self.accepted(),
            Err(_) => Auth::reject(),
        })
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        let Some(s) = self.shared.session().cloned() else {
            return Ok(());
        };
        // The session ends when its token does (expiry, revocation,
        // sign-out of the delegator).
        let handle = session.handle();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let reason = s.token_watch().wait().await;
            *shared.end_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    format!("sluice: {reason}; the session is closed"),
                    "en".into(),
                )
                .await;
        });
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.shared.session().is_none() {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        if self.shared.channels_full() {
            reply.reject(too_many_channels()).await;
            return Ok(());
        }
        reply.accept().await;
        let task = tokio::spawn(crate::channel::run(
            self.shared.clone(),
            channel,
            session.handle(),
        ));
        self.shared
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let destination = format!("{host_to_connect}:{port_to_connect}");
        if self.shared.channels_full() {
            reply.reject(too_many_channels()).await;
            return Ok(());
        }
        if let Some(why) = self.refuse_tunnel("local", Some(&destination)).await {
            reply
                .reject(ChannelOpenFailure::Other {
                    code: 1,
                    reason: why,
                })
                .await;
            return Ok(());
        }
        let target = match self.shared.target().await {
            Ok(t) => t,
            Err(why) => {
                reply
                    .reject(ChannelOpenFailure::Other {
                        code: 2,
                        reason: format!("sluice: {why}"),
                    })
                    .await;
                return Ok(());
            }
        };
        let opened = target
            .channel_open_direct_tcpip(host_to_connect, port_to_connect, "127.0.0.1", 0)
            .await;
        match opened {
            Ok(t) => {
                reply.accept().await;
                let shared = self.shared.clone();
                let task =
                    tokio::spawn(async move { crate::channel::tunnel(shared, channel, t).await });
                self.shared
                    .tasks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(task);
            }
            Err(e) => {
                reply
                    .reject(ChannelOpenFailure::Other {
                        code: 2,
                        reason: format!("sluice: the target could not open {destination}: {e}"),
                    })
                    .await
            }
        }
        Ok(())
    }

    // Channel requests are answered here, in the order they arrive (the
    // protocol requires it); the channel task carries them out, and
    // reports a refusal on stderr with an exit status.
    async fn pty_request(
        &mut self,
        channel: russh::ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: russh::ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if crate::channel::passes_env(variable_name) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn exec_request(
        &mut self,
        channel: russh::ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, true, session)
    }

    async fn shell_request(
        &mut self,
        channel: russh::ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, true, session)
    }

    async fn subsystem_request(
        &mut self,
        channel: russh::ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, name == "sftp", session)
    }

    async fn channel_close(
        &mut self,
        channel: russh::ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.started.remove(&channel);
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: russh::ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let listen = format!("{address}:{port}");
        self.refuse_unsupported("remote", Some(&listen)).await;
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_unsupported("remote", Some(socket_path)).await;
        Ok(false)
    }

    async fn agent_request(
        &mut self,
        _channel: russh::ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_unsupported("agent", None).await;
        Ok(false)
    }
}

impl ClientConn {
    /// Answers a request that starts a program on a channel: once per
    /// channel (the channel task carries out only the first).
    fn start(
        &mut self,
        channel: russh::ChannelId,
        supported: bool,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        if supported && self.started.insert(channel) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    /// Decides a tunnel; `Some(reason)` when it is refused (and recorded).
    async fn refuse_tunnel(&self, kind: &str, destination: Option<&str>) -> Option<String> {
        let session = self.shared.session()?;
        let d = session.decide_tunnel(kind, destination);
        let refused = d.effect != Effect::Allow;
        let _ = session
            .record_event(
                if refused {
                    "tunnel.refused"
                } else {
                    "tunnel.open"
                },
                json!({"tunnel": kind, "destination": destination, "decision": d}),
            )
            .await;
        refused.then(|| format!("sluice: {kind} forwarding refused: {}", d.explain()))
    }

    /// Refuses a tunnel kind the gateway does not relay, recording what
    /// policy would have said.
    async fn refuse_unsupported(&self, kind: &str, destination: Option<&str>) {
        let Some(session) = self.shared.session() else {
            return;
        };
        let d = session.decide_tunnel(kind, destination);
        let _ = session
            .record_event(
                "tunnel.refused",
                json!({"tunnel": kind, "destination": destination, "decision": d,
                       "reason": format!("the gateway does not relay {kind} forwarding")}),
            )
            .await;
    }
}
