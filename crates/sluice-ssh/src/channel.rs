//! One client session channel: what it asks for (exec, shell, the sftp
//! subsystem), what policy decides, and the relay to the target channel,
//! with output masked and everything recorded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Pty};
use serde_json::json;
use sluice_core::recording::{CastHeader, CastWriter};
use sluice_core::review::{ReviewMode, ReviewState};
use sluice_core::reviews::{CommandAsk, Submitted};
use sluice_core::stream_mask::StreamMasker;
use sluice_core::{
    Class, Classification, Command, CommandOutcome, Decision, Effect, SessionHandle,
};

use crate::server::Shared;
use crate::sftp;
use crate::typed::{asks_for_secret, LineTracker};

/// The exit status a refused command ends with (as a shell's "cannot execute").
pub const REFUSED_STATUS: u32 = 126;
/// The exit status when the target cannot be reached (as ssh's own).
pub const TARGET_STATUS: u32 = 255;

/// A terminal the client asked for.
#[derive(Clone)]
struct PtyRequest {
    term: String,
    cols: u32,
    rows: u32,
    pix_width: u32,
    pix_height: u32,
    modes: Vec<(Pty, u32)>,
}

/// What the client asked the channel to run.
enum Run {
    Exec(Vec<u8>),
    Shell,
    Sftp,
}

/// Environment variables passed on: locale only, as sshd's default
/// `AcceptEnv`. Others (`LD_PRELOAD`, `BASH_ENV`) could change what runs.
pub(crate) fn passes_env(name: &str) -> bool {
    name == "LANG" || name.starts_with("LC_")
}

/// Drives one session channel from its first request to its close.
pub(crate) async fn run(shared: Arc<Shared>, mut ch: Channel<Msg>, client: Handle) {
    let Some(session) = shared.session().cloned() else {
        return;
    };
    let mut pty = None;
    let mut env = Vec::new();
    // Requests were answered by the handler as they arrived; here they
    // are carried out.
    let run = loop {
        let Some(msg) = ch.wait().await else { return };
        match msg {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            } => {
                pty = Some(PtyRequest {
                    term,
                    cols: col_width,
                    rows: row_height,
                    pix_width,
                    pix_height,
                    modes: terminal_modes,
                })
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } if passes_env(&variable_name) && env.len() < 16 => {
                env.push((variable_name, variable_value));
            }
            ChannelMsg::Exec { command, .. } => break Run::Exec(command),
            ChannelMsg::RequestShell { .. } => break Run::Shell,
            ChannelMsg::RequestSubsystem { name, .. } if name == "sftp" => break Run::Sftp,
            ChannelMsg::RequestX11 { .. } => {
                let d = session.decide_tunnel("x11", None);
                let _ = session
                    .record_event(
                        "tunnel.refused",
                        json!({"tunnel": "x11", "decision": d,
                               "reason": "the gateway does not relay x11 forwarding"}),
                    )
                    .await;
            }
            ChannelMsg::Eof | ChannelMsg::Close => return,
            _ => {}
        }
    };
    let n = shared.next_channel();
    let ctx = Ctx {
        shared,
        session,
        client,
        id: ch.id(),
        n,
    };
    match run {
        Run::Exec(command) => ctx.exec(ch, command, pty, env).await,
        Run::Shell => ctx.shell(ch, pty, env).await,
        Run::Sftp => ctx.sftp(ch).await,
    }
}

struct Ctx {
    shared: Arc<Shared>,
    session: Arc<SessionHandle>,
    client: Handle,
    id: ChannelId,
    /// The channel's number within the session.
    n: u32,
}

/// What became of a review.
enum Verdict {
    Run(String),
    Refuse(String),
}

impl Ctx {
    /// Tells the client why nothing ran, and ends the channel.
    async fn refuse(&self, message: &str, status: u32) {
        let line = format!("{message}\r\n");
        let _ = self
            .client
            .extended_data(self.id, 1, Bytes::from(line.into_bytes()))
            .await;
        let _ = self.client.exit_status_request(self.id, status).await;
        let _ = self.client.eof(self.id).await;
        let _ = self.client.close(self.id).await;
    }

    /// Masks values in text kept for the record or shown to approvers.
    fn masked_text(&self, text: &str) -> String {
        let masking = self.shared.gw.core.masking();
        match masking.masker.mask_text(text) {
            Some((masked, _)) => masked,
            None => text.to_string(),
        }
    }

    fn recorder(&self, kind: &str, pty: Option<&PtyRequest>, title: &str) -> Option<CastWriter> {
        let header = CastHeader {
            width: pty.map(|p| p.cols).filter(|c| *c > 0).unwrap_or(80),
            height: pty.map(|p| p.rows).filter(|r| *r > 0).unwrap_or(24),
            timestamp: sluice_core::time::now_ms() / 1000,
            title: Some(title.chars().take(200).collect()),
            term: pty.map(|p| p.term.clone()),
        };
        let name = format!("{}-{}-{kind}", self.session.id, self.n);
        match CastWriter::create(
            &self.shared.gw.recordings,
            &name,
            &header,
            self.shared.gw.max_recording,
        ) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(session = %self.session.id, error = %e, "cannot create a recording");
                None
            }
        }
    }

    async fn finish_recording(&self, kind: &str, cast: Cast) {
        let Some(w) = cast.take() else {
            return;
        };
        match w.finish() {
            Ok(summary) => {
                let file = summary
                    .path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let _ = self
                    .session
                    .record_event(
                        "recording",
                        json!({"channel": self.n, "kind": kind, "file": file,
                               "sha256": summary.sha256, "bytes": summary.bytes,
                               "duration_ms": summary.duration_ms, "truncated": summary.truncated}),
                    )
                    .await;
            }
            Err(e) => {
                tracing::error!(session = %self.session.id, error = %e, "cannot finish a recording")
            }
        }
    }

    /// Opens the target channel with the client's terminal and locale.
    async fn open_target(
        &self,
        pty: Option<&PtyRequest>,
        env: &[(String, String)],
    ) -> Result<Channel<russh::client::Msg>, String> {
        let target = self.shared.target().await?;
        let tch = target
            .channel_open_session()
            .await
            .map_err(|e| format!("the target refused a session channel: {e}"))?;
        if let Some(p) = pty {
            tch.request_pty(
                false,
                &p.term,
                p.cols,
                p.rows,
                p.pix_width,
                p.pix_height,
                &p.modes,
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        for (k, v) in env {
            tch.set_env(false, k.as_str(), v.as_str())
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(tch)
    }

    async fn exec(
        self,
        mut ch: Channel<Msg>,
        command: Vec<u8>,
        pty: Option<PtyRequest>,
        env: Vec<(String, String)>,
    ) {
        let started = Instant::now();
        let mut early = Vec::new();
        let classification = Arc::new(match std::str::from_utf8(&command) {
            Ok(line) => classify_line(&self.shared.gw.programs, line).await,
            Err(_) => Classification::unknown("the command line is not valid UTF-8"),
        });
        let mut decision = self.session.decide(&classification);
        // With a terminal, a command can be interactive (a pager's shell
        // escape, an editor); and a line the gateway cannot read may run
        // what the client sends (a shell, an interpreter, `awk` with
        // `system`, `sed e`). Either needs what a shell needs too.
        let why = if pty.is_some() {
            Some("a command with a terminal (ssh -t) is as interactive as a shell")
        } else if classification.class() == Class::Unknown {
            Some("a line the gateway cannot read may run what the client sends, as a shell would")
        } else {
            None
        };
        if let Some(why) = why {
            let shell = self.session.decide_shell();
            if shell.effect > decision.effect {
                decision = Arc::new(Decision {
                    reason: format!("{why}: {}", shell.reason),
                    ..shell
                });
            }
        }
        let shown = self.masked_text(&String::from_utf8_lossy(&command));
        let mut record = Command {
            protocol: "ssh".into(),
            path: "exec".into(),
            text: shown.clone(),
            classification: Some(classification.clone()),
            decision: Some(decision.clone()),
            review: None,
        };
        let refusal = match decision.effect {
            Effect::Allow => None,
            Effect::Block => Some(format!(
                "sluice: blocked: {} (class: {})",
                decision.explain(),
                classification.class()
            )),
            Effect::Review => {
                match self
                    .review(
                        &mut ch,
                        &mut early,
                        &command,
                        &shown,
                        &classification,
                        &decision,
                    )
                    .await
                {
                    Verdict::Run(id) => {
                        record.review = Some(id);
                        None
                    }
                    Verdict::Refuse(m) => Some(m),
                }
            }
        };
        let numbers = match self.session.record_commands(&[record]).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(session = %self.session.id, error = %e, "cannot record a command");
                self.refuse(
                    "sluice: the gateway cannot record this command, so it was not run; try again later",
                    REFUSED_STATUS,
                )
                .await;
                return;
            }
        };
        let n = numbers.first().copied().unwrap_or(0);
        if let Some(message) = refusal {
            let status = if decision.effect == Effect::Block {
                "blocked"
            } else {
                "skipped"
            };
            self.session.record_outcome(
                n,
                &CommandOutcome {
                    status: status.into(),
                    ..Default::default()
                },
            );
            self.refuse(&message, REFUSED_STATUS).await;
            return;
        }
        let tch = match self.open_target(pty.as_ref(), &env).await {
            Ok(t) => t,
            Err(why) => {
                self.session.record_outcome(
                    n,
                    &CommandOutcome {
                        status: "skipped".into(),
                        error_code: Some("target".into()),
                        ..Default::default()
                    },
                );
                self.refuse(&format!("sluice: {why}"), TARGET_STATUS).await;
                return;
            }
        };
        if let Err(e) = tch.exec(true, command).await {
            self.refuse(&format!("sluice: the target failed: {e}"), TARGET_STATUS)
                .await;
            return;
        }
        let cast: Cast = self.recorder("exec", pty.as_ref(), &shown).into();
        let interactive = pty.is_some();
        let ended = self
            .relay(
                ch,
                early,
                tch,
                cast.clone(),
                Upstream::Plain(StreamMasker::new(self.session.core().masking())),
                interactive,
            )
            .await;
        let mut outcome = CommandOutcome {
            status: match ended.exit {
                Some(0) => "ok".into(),
                _ => "error".into(),
            },
            error_code: match (ended.exit, &ended.signal) {
                (Some(0), _) => None,
                (Some(code), _) => Some(code.to_string()),
                (None, Some(sig)) => Some(format!("signal {sig}")),
                (None, None) => Some("no exit status".into()),
            },
            duration_us: started.elapsed().as_micros() as u64,
            ..Default::default()
        };
        outcome.masked = ended.masked;
        self.session.record_outcome(n, &outcome);
        self.finish_recording("exec", cast).await;
    }

    async fn shell(self, ch: Channel<Msg>, pty: Option<PtyRequest>, env: Vec<(String, String)>) {
        let decision = self.session.decide_shell();
        let _ = self
            .session
            .record_event(
                "shell.request",
                json!({"channel": self.n, "pty": pty.is_some(), "decision": decision}),
            )
            .await;
        if decision.effect != Effect::Allow {
            let message = format!(
                "sluice: interactive shells are refused here: {}; run commands with `ssh HOST 'command'` instead",
                decision.explain()
            );
            self.refuse(&message, REFUSED_STATUS).await;
            return;
        }
        let tch = match self.open_target(pty.as_ref(), &env).await {
            Ok(t) => t,
            Err(why) => {
                self.refuse(&format!("sluice: {why}"), TARGET_STATUS).await;
                return;
            }
        };
        if let Err(e) = tch.request_shell(true).await {
            self.refuse(&format!("sluice: the target failed: {e}"), TARGET_STATUS)
                .await;
            return;
        }
        let title = format!(
            "{}: shell on {}",
            self.session.principal, self.session.connection
        );
        let cast: Cast = self.recorder("shell", pty.as_ref(), &title).into();
        let typed = Upstream::Typed {
            lines: LineTracker::default(),
            session: self.session.clone(),
            programs: self.shared.gw.programs.clone(),
        };
        self.relay(ch, Vec::new(), tch, cast.clone(), typed, true)
            .await;
        self.finish_recording("shell", cast).await;
    }

    async fn sftp(self, ch: Channel<Msg>) {
        let _ = self
            .session
            .record_event("sftp.start", json!({"channel": self.n}))
            .await;
        let tch = match self.open_target(None, &[]).await {
            Ok(t) => t,
            Err(why) => {
                tracing::info!(session = %self.session.id, %why, "sftp: target unavailable");
                let _ = self.client.close(self.id).await;
                return;
            }
        };
        if let Err(e) = tch.request_subsystem(true, "sftp").await {
            tracing::info!(session = %self.session.id, error = %e, "sftp: target refused");
            let _ = self.client.close(self.id).await;
            return;
        }
        let transfers = Arc::new(Mutex::new(sftp::Transfers::new()));
        let (refusals, refused) = tokio::sync::mpsc::channel(64);
        let up = Upstream::Sftp {
            framer: sftp::Framer::new(MAX_SFTP_PACKET),
            transfers: transfers.clone(),
            session: self.session.clone(),
            refusals,
        };
        let ended = self
            .relay_sftp(ch, tch, up, refused, transfers.clone())
            .await;
        let left =
            std::mem::take(&mut *transfers.lock().unwrap_or_else(|p| p.into_inner())).finish();
        for op in left {
            record_file(&self.session, &op).await;
        }
        let _ = self
            .session
            .record_event("sftp.end", json!({"channel": self.n, "error": ended}))
            .await;
    }

    /// Reviews an exec command: deferred ones refuse at once with the
    /// review id; held ones wait, and a client that leaves cancels.
    async fn review(
        &self,
        ch: &mut Channel<Msg>,
        early: &mut Vec<ChannelMsg>,
        command: &[u8],
        shown: &str,
        classification: &Arc<Classification>,
        decision: &Arc<Decision>,
    ) -> Verdict {
        let session = &self.session;
        let why = decision.explain();
        let mut exact = b"ssh\0exec\0".to_vec();
        exact.extend_from_slice(command);
        let mut earlier = session.existing_review(&exact).await;
        if let Ok(None) = earlier {
            if let Err(e) = session.may_open_review().await {
                earlier = Err(e);
            }
        }
        let submitted = match earlier {
            Ok(None) => {
                session
                    .submit_review(CommandAsk {
                        display: shown.to_string(),
                        exact,
                        classification: classification.clone(),
                        decision: decision.clone(),
                        impact: None,
                    })
                    .await
            }
            Ok(Some(found)) => Ok(found),
            Err(e) => Err(e),
        };
        let r = match submitted {
            Ok(Submitted::Run(r)) => return Verdict::Run(r.id),
            Ok(Submitted::Pending(r)) => r,
            Err(e) => {
                return Verdict::Refuse(format!(
                    "sluice: this command needs a human review ({why}), and no review was created: {e}; it was not run"
                ))
            }
        };
        if r.mode == Some(ReviewMode::Defer) {
            let ttl = session.core().review_settings().approval_ttl.as_secs();
            return Verdict::Refuse(format!(
                "sluice: this command needs a human review ({why}); it was not run. Review {id} is pending: wait for it with `sluice reviews wait {id}`, then run exactly the same command again; once approved it runs once, within {ttl} s of the approval",
                id = r.id
            ));
        }
        let notice = format!(
            "sluice: this command waits for review {id} ({why}); an approver runs `sluice reviews approve {id}`\r\n",
            id = r.id
        );
        let _ = self
            .client
            .extended_data(self.id, 1, Bytes::from(notice.into_bytes()))
            .await;
        let wait = session.await_review(&r.id);
        tokio::pin!(wait);
        // The client leaving (Ctrl-C kills `ssh`) cancels the review;
        // input sent meanwhile is kept for the command (up to a bound).
        let gone = async {
            let mut kept = 0usize;
            loop {
                if kept > MAX_EARLY_INPUT {
                    return std::future::pending::<()>().await;
                }
                match ch.wait().await {
                    None | Some(ChannelMsg::Close) => return,
                    Some(m @ ChannelMsg::Data { .. }) => {
                        if let ChannelMsg::Data { data } = &m {
                            kept += data.len();
                        }
                        early.push(m);
                    }
                    Some(m @ (ChannelMsg::Eof | ChannelMsg::WindowChange { .. })) => early.push(m),
                    Some(_) => {}
                }
            }
        };
        tokio::pin!(gone);
        let decided = tokio::select! {
            d = &mut wait => d,
            _ = &mut gone => {
                let core = session.core();
                match core
                    .cancel_review(&r.id, "gateway", Some("the client disconnected while its command was held".into()))
                    .await
                {
                    Ok(r) => Ok(r),
                    Err(_) => core.review(&r.id).await,
                }
            }
        };
        match decided {
            Ok(r)
                if r.state == ReviewState::Executed
                    && r.session_id.as_deref() == Some(session.id.as_str()) =>
            {
                Verdict::Run(r.id)
            }
            Ok(r) => Verdict::Refuse(r.not_run("command")),
            Err(e) => Verdict::Refuse(format!(
                "sluice: review {} could not be followed ({e}); the command was not run",
                r.id
            )),
        }
    }
}

/// Classifications running at once (each on its own thread).
static CLASSIFYING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// Classifies a command line on a thread of its own with a large stack:
/// parsing recurses with the line's nesting, which must not exhaust a
/// runtime worker's stack; a panic in the parser makes the line unknown.
async fn classify_line(programs: &Arc<crate::classify::Programs>, line: &str) -> Classification {
    let Ok(_permit) = CLASSIFYING.acquire().await else {
        return Classification::unknown("the classifier is unavailable");
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (programs, line) = (programs.clone(), line.to_string());
    let spawned = std::thread::Builder::new()
        .name("sluice-classify".into())
        .stack_size(256 * 1024 * 1024)
        .spawn(move || {
            let c = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::classify::classify(&line, &programs)
            }))
            .unwrap_or_else(|_| Classification::unknown("the command line could not be parsed"));
            let _ = tx.send(c);
        });
    if spawned.is_err() {
        return Classification::unknown("the classifier could not start a thread");
    }
    rx.await
        .unwrap_or_else(|_| Classification::unknown("the command line could not be parsed"))
}

const MAX_SFTP_PACKET: usize = 256 * 1024 + 1024;
/// Input kept while a command waits for review.
const MAX_EARLY_INPUT: usize = 1024 * 1024;

/// How a relay's client-to-target direction treats the bytes.
enum Upstream {
    /// Passed on as they are (exec); recorded masked.
    Plain(StreamMasker),
    /// Passed on; finished lines recorded as typed commands (shell).
    Typed {
        lines: LineTracker,
        session: Arc<SessionHandle>,
        programs: Arc<crate::classify::Programs>,
    },
    /// Each SFTP request decided before it is passed on.
    Sftp {
        framer: sftp::Framer,
        transfers: Arc<Mutex<sftp::Transfers>>,
        session: Arc<SessionHandle>,
        /// Refusals, which the target-to-client side sends between whole
        /// packets.
        refusals: tokio::sync::mpsc::Sender<Vec<u8>>,
    },
}

/// How the target's side of a relay ended.
#[derive(Default)]
struct Ended {
    exit: Option<u32>,
    signal: Option<String>,
    masked: std::collections::BTreeMap<String, u64>,
}

/// How long a terminal's partial line may wait for its end before it is
/// released (masked as it is): prompts have no newline.
const PARTIAL_LINE_WAIT: Duration = Duration::from_millis(15);

/// A channel's recording, shared by its two directions; nothing when none
/// could be made, or once it is finished.
#[derive(Clone, Default)]
struct Cast(Option<Arc<Mutex<Option<CastWriter>>>>);

impl From<Option<CastWriter>> for Cast {
    fn from(w: Option<CastWriter>) -> Cast {
        Cast(w.map(|w| Arc::new(Mutex::new(Some(w)))))
    }
}

impl Cast {
    /// Writes to the recording, if there is one; a failed write is the
    /// writer's to report (it marks the recording), never the session's.
    fn with(&self, f: impl FnOnce(&mut CastWriter) -> std::io::Result<()>) {
        if let Some(c) = &self.0 {
            if let Some(w) = c.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                let _ = f(w);
            }
        }
    }

    /// Records what the client sent.
    fn input(&self, data: &[u8]) {
        if !data.is_empty() {
            self.with(|w| w.input(data));
        }
    }

    /// The writer, to finish it; later writes are dropped.
    fn take(&self) -> Option<CastWriter> {
        self.0
            .as_ref()?
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Longest trailing word held back after a short pause.
const MAX_HELD_WORD: usize = 256;

/// Whether output looks like a binary protocol rather than text: control
/// bytes other than those terminals and text use.
fn looks_binary(data: &[u8]) -> bool {
    data.iter()
        .any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x1b | 0x07 | 0x08))
}

/// Output recently shown in a terminal, to recognise password prompts.
type Recent = Arc<Mutex<String>>;

impl Ctx {
    async fn relay(
        &self,
        ch: Channel<Msg>,
        early: Vec<ChannelMsg>,
        tch: Channel<russh::client::Msg>,
        cast: Cast,
        up: Upstream,
        interactive: bool,
    ) -> Ended {
        let (client_read, _client_write) = ch.split();
        let (target_read, target_write) = tch.split();
        let recent: Recent = Arc::default();
        let mut upstream = tokio::spawn(upstream(
            client_read,
            early,
            target_write,
            up,
            cast.clone(),
            recent.clone(),
            self.shared.clone(),
        ));
        let down = self.downstream(target_read, cast, recent, interactive);
        tokio::pin!(down);
        let ended = tokio::select! {
            ended = &mut down => ended,
            _ = &mut upstream => {
                // The client left (its side closed first): the target's
                // side gets a moment to finish, not the command's lifetime.
                match tokio::time::timeout(Duration::from_secs(2), &mut down).await {
                    Ok(ended) => ended,
                    Err(_) => Ended {
                        signal: Some("the client disconnected".into()),
                        ..Ended::default()
                    },
                }
            }
        };
        upstream.abort();
        ended
    }

    /// Target to client: output masked (stdout and stderr each in its own
    /// stream), recorded, and the exit status passed on.
    async fn downstream(
        &self,
        mut target: ChannelReadHalf,
        cast: Cast,
        recent: Recent,
        interactive: bool,
    ) -> Ended {
        let masking = self.session.masking.clone();
        let mut out = masking.clone().map(StreamMasker::new);
        let mut err = masking.clone().map(StreamMasker::new);
        // A principal who sees clear values still gets a masked recording:
        // nothing unmasked is written down.
        let for_record = Mutex::new(
            masking
                .is_none()
                .then(|| StreamMasker::new(self.session.core().masking())),
        );
        let mut ended = Ended::default();
        let record = |data: &[u8]| {
            let masked;
            let data = match for_record
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
            {
                Some(m) => {
                    masked = m.push(data);
                    &masked[..]
                }
                None => data,
            };
            cast.with(|w| w.output(data));
            if interactive {
                let mut r = recent.lock().unwrap_or_else(|p| p.into_inner());
                r.push_str(&String::from_utf8_lossy(data));
                if r.len() > 512 {
                    let cut = r.len() - 256;
                    let cut = r.ceil_char_boundary(cut);
                    r.drain(..cut);
                }
            }
        };
        // After a pause, what is held is released in two steps: all but a
        // trailing word that may be the start of a value, then, after a
        // longer pause, the rest (masked as it is). A terminal's prompt
        // shows at once; a command's output can wait longer.
        let (first, second) = if interactive {
            (PARTIAL_LINE_WAIT, Duration::from_millis(500))
        } else {
            (Duration::from_millis(250), Duration::from_secs(2))
        };
        let mut settled = false;
        // Per stream: whether its last chunk looked binary.
        let mut binary = [false, false];
        loop {
            let holding = out.as_ref().is_some_and(|m| m.holding())
                || err.as_ref().is_some_and(|m| m.holding());
            let msg = if holding {
                let wait = if settled { second } else { first };
                match tokio::time::timeout(wait, target.wait()).await {
                    Ok(m) => {
                        settled = false;
                        m
                    }
                    Err(_) => {
                        for (i, (m, ext)) in [(&mut out, None), (&mut err, Some(1))]
                            .into_iter()
                            .enumerate()
                        {
                            if let Some(m) = m.as_mut() {
                                let b = if settled || binary[i] {
                                    m.flush()
                                } else {
                                    m.flush_settled(MAX_HELD_WORD)
                                };
                                if !b.is_empty() {
                                    record(&b);
                                    if self.send(ext, b).await.is_err() {
                                        return ended;
                                    }
                                }
                            }
                        }
                        settled = !settled;
                        continue;
                    }
                }
            } else {
                target.wait().await
            };
            let Some(msg) = msg else { break };
            match msg {
                ChannelMsg::Data { data } => {
                    // Binary protocols over exec (rsync, legacy scp, git)
                    // wait for each message: they are not held for a newline.
                    binary[0] = !interactive && looks_binary(&data);
                    let b = match out.as_mut() {
                        Some(m) => {
                            let mut b = m.push(&data);
                            if binary[0] {
                                // All but a trailing word that may be the
                                // start of a value (the rest follows after
                                // a short pause, or with the next chunk).
                                b.extend(m.flush_settled(MAX_HELD_WORD));
                            }
                            Bytes::from(b)
                        }
                        None => data,
                    };
                    if !b.is_empty() {
                        record(&b);
                        if self.send(None, b).await.is_err() {
                            break;
                        }
                    }
                }
                ChannelMsg::ExtendedData { data, ext } => {
                    binary[1] = !interactive && looks_binary(&data);
                    let b = match err.as_mut() {
                        Some(m) => {
                            let mut b = m.push(&data);
                            if binary[1] {
                                b.extend(m.flush_settled(MAX_HELD_WORD));
                            }
                            Bytes::from(b)
                        }
                        None => data,
                    };
                    if !b.is_empty() {
                        record(&b);
                        if self.send(Some(ext), b).await.is_err() {
                            break;
                        }
                    }
                }
                ChannelMsg::Eof => {
                    self.release(&mut out, &mut err, &record).await;
                    let _ = self.client.eof(self.id).await;
                }
                ChannelMsg::ExitStatus { exit_status } => {
                    self.release(&mut out, &mut err, &record).await;
                    ended.exit = Some(exit_status);
                    let _ = self.client.exit_status_request(self.id, exit_status).await;
                }
                ChannelMsg::ExitSignal {
                    signal_name,
                    core_dumped,
                    error_message,
                    lang_tag,
                } => {
                    self.release(&mut out, &mut err, &record).await;
                    ended.signal = Some(format!("{signal_name:?}"));
                    let _ = self
                        .client
                        .exit_signal_request(
                            self.id,
                            signal_name,
                            core_dumped,
                            error_message,
                            lang_tag,
                        )
                        .await;
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        self.release(&mut out, &mut err, &record).await;
        let rest = for_record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .map(|m| m.flush());
        if let Some(rest) = rest {
            cast.with(|w| w.output(&rest));
        }
        for m in [&out, &err].into_iter().flatten() {
            for (k, v) in &m.counts().0 {
                *ended.masked.entry(k.clone()).or_default() += v;
            }
        }
        let _ = self.client.close(self.id).await;
        ended
    }

    async fn release(
        &self,
        out: &mut Option<StreamMasker>,
        err: &mut Option<StreamMasker>,
        record: &impl Fn(&[u8]),
    ) {
        for (m, ext) in [(out, None), (err, Some(1))] {
            if let Some(m) = m.as_mut() {
                let b = m.flush();
                if !b.is_empty() {
                    record(&b);
                    let _ = self.send(ext, Bytes::from(b)).await;
                }
            }
        }
    }

    async fn send(&self, ext: Option<u32>, data: impl Into<Bytes>) -> Result<(), Bytes> {
        let data = data.into();
        self.shared
            .bytes_out
            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        match ext {
            None => self.client.data(self.id, data).await,
            Some(e) => self.client.extended_data(self.id, e, data).await,
        }
    }

    /// The SFTP relay: requests decided on the way up, responses observed
    /// (not masked: they are file contents, passed on byte for byte) on the
    /// way down. Returns the protocol error that ended it, if any.
    async fn relay_sftp(
        &self,
        ch: Channel<Msg>,
        tch: Channel<russh::client::Msg>,
        up: Upstream,
        mut refused: tokio::sync::mpsc::Receiver<Vec<u8>>,
        transfers: Arc<Mutex<sftp::Transfers>>,
    ) -> Option<String> {
        let (client_read, _client_write) = ch.split();
        let (mut target_read, target_write) = tch.split();
        let upstream = tokio::spawn(upstream(
            client_read,
            Vec::new(),
            target_write,
            up,
            Cast::default(),
            Recent::default(),
            self.shared.clone(),
        ));
        let mut framer = sftp::Framer::new(MAX_SFTP_PACKET);
        let mut error = None;
        loop {
            // The client gets whole packets only, so a refusal can go in
            // between any two.
            let msg = tokio::select! {
                m = target_read.wait() => m,
                Some(refusal) = refused.recv(), if error.is_none() => {
                    if self.send(None, refusal).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            match msg {
                ChannelMsg::Data { data } => {
                    if error.is_some() {
                        if self.send(None, data).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    framer.push(&data);
                    let mut gone = false;
                    loop {
                        match framer.next_packet() {
                            Ok(Some(p)) => {
                                let done = match sftp::decode_response(&p[4..]) {
                                    Ok(resp) => transfers
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .response(&resp),
                                    Err(_) => None,
                                };
                                if let Some(op) = done {
                                    record_file(&self.session, &op).await;
                                }
                                if self.send(None, p).await.is_err() {
                                    gone = true;
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                // Not SFTP as the gateway reads it: the
                                // stream is passed on as it is, and no
                                // refusal is put into it any more.
                                error = Some(format!("target: {e}"));
                                let rest = framer.take_buffered();
                                if self.send(None, rest).await.is_err() {
                                    gone = true;
                                }
                                break;
                            }
                        }
                    }
                    if gone {
                        break;
                    }
                }
                ChannelMsg::ExtendedData { data, ext } => {
                    let _ = self.send(Some(ext), data).await;
                }
                ChannelMsg::Eof => {
                    let _ = self.client.eof(self.id).await;
                }
                ChannelMsg::ExitStatus { exit_status } => {
                    let _ = self.client.exit_status_request(self.id, exit_status).await;
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        let _ = self.client.close(self.id).await;
        match upstream.await {
            Ok(Some(e)) => Some(e),
            _ => error,
        }
    }
}

async fn record_file(session: &SessionHandle, op: &sftp::FileOp) {
    let _ = session
        .record_event("file", serde_json::to_value(op).unwrap_or_default())
        .await;
}

/// Client to target. Returns the protocol error that ended it, if any.
async fn upstream(
    mut client: ChannelReadHalf,
    early: Vec<ChannelMsg>,
    target: ChannelWriteHalf<russh::client::Msg>,
    mut up: Upstream,
    cast: Cast,
    recent: Recent,
    shared: Arc<Shared>,
) -> Option<String> {
    let mut error = None;
    let mut early = early.into_iter();
    loop {
        let msg = match early.next() {
            Some(m) => m,
            None => match client.wait().await {
                Some(m) => m,
                None => break,
            },
        };
        match msg {
            ChannelMsg::Data { data } => {
                shared
                    .bytes_in
                    .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                let forward = match &mut up {
                    Upstream::Plain(masker) => {
                        let masked = masker.push(&data);
                        if !masked.is_empty() {
                            cast.input(&masked);
                        }
                        data
                    }
                    Upstream::Typed {
                        lines,
                        session,
                        programs,
                    } => {
                        let secret = {
                            let r = recent.lock().unwrap_or_else(|p| p.into_inner());
                            asks_for_secret(&r)
                        };
                        let done = lines.feed(&data);
                        for line in done {
                            let text = if secret {
                                "[typed at a password prompt; not recorded]".to_string()
                            } else {
                                let masking = session.core().masking();
                                masking
                                    .masker
                                    .mask_text(&line)
                                    .map(|(m, _)| m)
                                    .unwrap_or(line.clone())
                            };
                            cast.input(format!("{text}\n").as_bytes());
                            let classification = if secret {
                                None
                            } else {
                                Some(Arc::new(classify_line(programs, &line).await))
                            };
                            let _ = session
                                .record_commands(&[Command {
                                    protocol: "ssh".into(),
                                    path: "shell".into(),
                                    text,
                                    classification,
                                    decision: None,
                                    review: None,
                                }])
                                .await;
                        }
                        data
                    }
                    Upstream::Sftp {
                        framer,
                        transfers,
                        session,
                        refusals,
                    } => {
                        if error.is_some() {
                            continue;
                        }
                        framer.push(&data);
                        // Allowed packets go on as they were framed (no copy).
                        let mut gone = false;
                        loop {
                            match framer.next_packet() {
                                Ok(Some(p)) => match decide_sftp(session, &p[4..]).await {
                                    SftpStep::Forward(req) => {
                                        if let Some(req) = req {
                                            transfers
                                                .lock()
                                                .unwrap_or_else(|p| p.into_inner())
                                                .request(&req);
                                        }
                                        if target.data_bytes(p).await.is_err() {
                                            gone = true;
                                            break;
                                        }
                                    }
                                    SftpStep::Refuse(reply) => {
                                        let _ = refusals.send(reply).await;
                                    }
                                },
                                Ok(None) => break,
                                Err(e) => {
                                    // Unframeable input is not passed on:
                                    // what the gateway cannot read, the
                                    // target must not act on.
                                    error = Some(format!("client: {e}"));
                                    let _ = target.eof().await;
                                    break;
                                }
                            }
                        }
                        if gone {
                            break;
                        }
                        continue;
                    }
                };
                if target.data_bytes(forward).await.is_err() {
                    break;
                }
            }
            ChannelMsg::Eof => {
                let _ = target.eof().await;
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                cast.with(|w| w.resize(col_width, row_height));
                let _ = target
                    .window_change(col_width, row_height, pix_width, pix_height)
                    .await;
            }
            ChannelMsg::Signal { signal } => {
                let _ = target.signal(signal).await;
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    if let Upstream::Plain(masker) = &mut up {
        cast.input(&masker.flush());
    }
    let _ = target.close().await;
    error
}

enum SftpStep {
    Forward(Option<sftp::Request>),
    Refuse(Vec<u8>),
}

/// Decides one SFTP request: path-bearing requests go through policy;
/// opens, changes and unknown requests are recorded before they run.
async fn decide_sftp(session: &SessionHandle, body: &[u8]) -> SftpStep {
    let req = match sftp::decode_request(body) {
        Ok(r) => r,
        Err(e) => {
            // An id, if one can be read, for a readable refusal.
            let id = body
                .get(1..5)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(0);
            return SftpStep::Refuse(sftp::status_packet(
                id,
                sftp::FX_FAILURE,
                &format!("sluice: unreadable request refused: {e}"),
            ));
        }
    };
    let Some((class, paths, text)) = sftp::describe(&req) else {
        return SftpStep::Forward(Some(req));
    };
    let mut c = Classification::of(class);
    c.paths.extend(paths);
    if class == Class::Unknown {
        c.unknown_reason = Some(format!("unknown SFTP request: {text}"));
    }
    let c = Arc::new(c);
    let d = session.decide(&c);
    let worth_recording = class != Class::Read || matches!(req, sftp::Request::Open { .. });
    if worth_recording || d.effect != Effect::Allow {
        let _ = session
            .record_commands(&[Command {
                protocol: "ssh".into(),
                path: "sftp".into(),
                text: text.clone(),
                classification: Some(c.clone()),
                decision: Some(d.clone()),
                review: None,
            }])
            .await;
    }
    if d.effect == Effect::Allow {
        return SftpStep::Forward(Some(req));
    }
    let how = if d.effect == Effect::Review {
        "needs a review, which file transfers cannot wait for"
    } else {
        "is blocked"
    };
    SftpStep::Refuse(sftp::status_packet(
        req.id().unwrap_or(0),
        sftp::FX_PERMISSION_DENIED,
        &format!("sluice: {text} {how}: {}", d.explain()),
    ))
}

/// A local port forwarding that policy allowed: bytes both ways, counted.
pub(crate) async fn tunnel(
    shared: Arc<Shared>,
    ch: Channel<Msg>,
    tch: Channel<russh::client::Msg>,
) {
    let (client_read, client_write) = ch.split();
    let (target_read, target_write) = tch.split();
    let up_shared = shared.clone();
    let up =
        tokio::spawn(async move { pump(client_read, target_write, &up_shared.bytes_in).await });
    pump(target_read, client_write, &shared.bytes_out).await;
    up.abort();
}

/// Passes one direction of a tunnel on as it is, counting the bytes.
async fn pump<S>(
    mut from: ChannelReadHalf,
    to: ChannelWriteHalf<S>,
    counter: &std::sync::atomic::AtomicU64,
) where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    while let Some(msg) = from.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                counter.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if to.data_bytes(data).await.is_err() {
                    break;
                }
            }
            ChannelMsg::Eof => {
                let _ = to.eof().await;
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    let _ = to.close().await;
}
