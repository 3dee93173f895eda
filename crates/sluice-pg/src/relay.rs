//! The relay between an authenticated client and its target session.
//!
//! Bytes are forwarded in the chunks they arrive in; only message headers
//! are followed, and only the messages that carry commands (Query, Parse,
//! Bind, Execute, ...) or outcomes (CommandComplete, ErrorResponse,
//! ReadyForQuery) are decoded. Every command is recorded durably before the
//! chunk that carries it is forwarded. Buffers are bounded: a slow peer
//! slows its own session down and nobody else's.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use sluice_core::mask::Masker;
use sluice_core::masking::{MaskCounts, Masking};
use sluice_core::review::{statement_hash, Impact, ReviewMode, ReviewRecord, ReviewState};
use sluice_core::reviews::{CommandAsk, Submitted};
use sluice_core::{
    Class, Classification, Command, CommandOutcome, Effect, SessionHandle, TokenWatch,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::catalog::{Catalog, Relation};
use crate::classify::{Classified, Classifier};
use crate::mask::{Column, Plan};
use crate::wire::{command_rows, cstr, error_fields, error_response, error_response_with_detail};

const READ_CHUNK: usize = 64 * 1024;
/// Largest command-carrying message decoded whole; bigger ones are refused
/// rather than buffered without bound or forwarded uninspected.
pub const MAX_INSPECTED: usize = 16 * 1024 * 1024;

/// How a relay ended.
#[derive(Debug)]
pub struct RelayEnd {
    /// Why it ended, for the session record.
    pub outcome: String,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// Whether commands were still running on the target when it ended.
    pub in_flight: bool,
}

#[derive(Debug)]
enum Kind {
    /// A simple Query: completes at ReadyForQuery.
    Simple,
    /// An Execute: completes at its CommandComplete, error or suspension.
    Extended,
    /// A Sync: the end of an extended batch.
    Sync,
    /// CopyDone or CopyFail: the end of the client's COPY data. Syncs the
    /// client sent before it, during copy-in, are ignored by the server.
    /// A CopyFail carries a marker the gateway put in its message, which
    /// the server's error then quotes.
    CopyEnd(Option<Arc<str>>),
    /// A Parse, Bind or Close: changes the session's statements or portals
    /// when the server confirms it with the completion message whose tag
    /// it holds ('1' ParseComplete, '2' BindComplete, '3' CloseComplete).
    Change(u64, u8),
    /// A Describe: answered by RowDescription or NoData (after a
    /// ParameterDescription for a statement), or by an error.
    Describe,
}

struct Pending {
    kind: Kind,
    seq: u64,
    started: Instant,
    rows: Option<u64>,
    error: Option<String>,
    /// Set when policy refused it and a failing stand-in was sent instead.
    refusal: Option<Refusal>,
    /// Values masked in its results.
    masked: MaskCounts,
    /// An Execute's or Describe's result columns.
    result: Option<ResultRows>,
}

/// What both halves of a relay share.
#[derive(Default)]
struct SharedState {
    /// Commands sent to the target and not yet answered.
    queue: VecDeque<Pending>,
    /// Statements cannot be read reliably in the session's encoding (or
    /// may not be, while a command that can change it is in flight).
    unsafe_encoding: bool,
    /// The encoding the target last reported is unsafe.
    reported_unsafe: bool,
    /// Parse, Bind and Close messages sent and not answered yet.
    unanswered_changes: usize,
    /// Of those, the ones the server did not apply (failed, or skipped
    /// after an error): the client half undoes them.
    failed_changes: Vec<u64>,
    /// An extended-protocol error: the server skips messages until Sync.
    skipping: bool,
}

#[derive(Clone, Default)]
struct Shared(Arc<(Mutex<SharedState>, tokio::sync::Notify)>);

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        self.0 .0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What decoding the results of the command being answered needs.
    fn answered_result(&self) -> Option<ResultRows> {
        self.lock().queue.front()?.result.clone()
    }

    /// Wakes the client half waiting for answers to its changes.
    fn answered(&self) {
        self.0 .1.notify_one();
    }

    /// Waits until every Parse, Bind and Close sent so far is answered;
    /// returns the ids of those the server did not apply.
    async fn settle_changes(&self) -> Vec<u64> {
        loop {
            {
                let mut sh = self.lock();
                if sh.unanswered_changes == 0 {
                    return std::mem::take(&mut sh.failed_changes);
                }
            }
            self.0 .1.notified().await;
        }
    }
}

/// Client encodings in which a multibyte character's second byte can be
/// an ASCII quote or backslash, so the bytes read differently than as UTF-8.
fn unsafe_client_encoding(name: &str) -> bool {
    matches!(
        name.to_ascii_uppercase().as_str(),
        "SJIS" | "SHIFT_JIS_2004" | "BIG5" | "GBK" | "UHC" | "GB18030" | "JOHAB"
    )
}

/// Whether the target's startup parameters (ParameterStatus messages)
/// report a client encoding the classifier cannot read reliably.
pub fn startup_encoding_unsafe(startup_tail: &[u8]) -> bool {
    let mut b = startup_tail;
    while b.len() >= 5 {
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        if len < 4 || b.len() < len + 1 {
            break;
        }
        if b[0] == b'S' {
            if let Some((name, rest)) = cstr(&b[5..len + 1]) {
                if name == "client_encoding" {
                    return cstr(rest).is_none_or(|(v, _)| unsafe_client_encoding(v));
                }
            }
        }
        b = &b[len + 1..];
    }
    false
}

/// A fatal error the client-reading half asks the other half to deliver.
struct Fatal {
    code: &'static str,
    message: String,
    outcome: String,
}

/// Relays until either side closes, the token stops being valid, or a
/// command cannot be recorded.
pub async fn relay<C, S>(
    client: C,
    server: S,
    session: &SessionHandle,
    classifier: &Classifier,
    catalog: Option<&Catalog>,
    unsafe_encoding: bool,
    signals: Signals,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Send,
    S: AsyncRead + AsyncWrite + Send,
{
    let Signals {
        token: mut watch,
        cancel,
    } = signals;
    let (client_r, client_w) = tokio::io::split(client);
    let (server_r, server_w) = tokio::io::split(server);
    let shared = Shared::default();
    {
        let mut sh = shared.lock();
        sh.unsafe_encoding = unsafe_encoding;
        sh.reported_unsafe = unsafe_encoding;
    }
    let (fatal_tx, fatal_rx) = mpsc::channel(1);
    let (notice_tx, notice_rx) = mpsc::channel(4);
    let mut bytes_in = 0u64;
    let mut bytes_out = 0u64;
    let c2s = client_to_server(
        client_r,
        server_w,
        Guard {
            classifier,
            session,
            catalog,
            verdict: Mutex::new(None),
            cancel: &cancel,
            plans_differ: Default::default(),
        },
        shared.clone(),
        Senders {
            fatal: fatal_tx,
            notices: notice_tx,
        },
        &mut bytes_in,
    );
    let s2c = server_to_client(
        server_r,
        client_w,
        session,
        shared.clone(),
        Ends {
            fatal: fatal_rx,
            watch: &mut watch,
            notices: notice_rx,
        },
        catalog,
        &mut bytes_out,
    );
    let outcome = tokio::select! {
        o = c2s => o,
        o = s2c => o,
    };
    let in_flight = shared
        .lock()
        .queue
        .iter()
        .any(|p| matches!(p.kind, Kind::Simple | Kind::Extended));
    RelayEnd {
        outcome,
        bytes_in,
        bytes_out,
        in_flight,
    }
}

/// A statement the session prepared (by Parse, or by SQL `PREPARE`; they
/// share one namespace on the server), or a portal bound to one.
struct Prepared {
    text: Arc<str>,
    classification: Arc<Classification>,
    /// What running it does to session state (see [`ClientState::follow`]).
    classified: Arc<Classified>,
    /// Its result columns, once a Describe's answer told them (shared by
    /// the statement and the portals bound to it).
    shape: Shape,
    /// For a portal: the result formats its Bind asked for.
    formats: Option<Arc<[i16]>>,
    /// For a portal: the review that approved its Bind, and the hash of
    /// what it approved (the statement with the definitions it runs by
    /// name), which must still hold when the portal is executed.
    approved: Option<(String, String)>,
}

/// Result columns of a statement, learned from RowDescription.
type Shape = Arc<Mutex<Option<Arc<[Column]>>>>;

/// What decoding an Execute's rows needs: the columns and their formats.
#[derive(Clone)]
struct ResultRows {
    shape: Shape,
    formats: Option<Arc<[i16]>>,
    /// What the statement's output columns may derive from.
    classified: Option<Arc<Classified>>,
    /// The statement's text (a binary COPY's columns are described from it).
    text: Option<Arc<str>>,
}

impl Prepared {
    /// A statement that is one of two definitions, the server's choice
    /// unknown here: it carries the effects of both.
    fn either(first: &Prepared, second: &Prepared) -> Prepared {
        let text = if first.text == second.text {
            first.text.to_string()
        } else if first.text.len() + second.text.len() > MAX_EITHER_TEXT {
            // Effects are always kept in full; texts only within a bound.
            format!(
                "{}\n-- sluice: or other definitions, whose texts are not kept",
                capped(&first.text)
            )
        } else {
            format!(
                "{}\n-- sluice: or, if the definition above is not the one the server holds:\n{}",
                first.text, second.text
            )
        };
        let mut classification = (*first.classification).clone();
        classification.merge(&second.classification);
        let mut classified = (*first.classified).clone();
        classified.merge(&second.classified);
        Prepared {
            text: Arc::from(text),
            classification: Arc::new(classification),
            classified: Arc::new(classified),
            // Which definition's columns the rows have is unknown.
            shape: Shape::default(),
            formats: None,
            approved: None,
        }
    }

    fn unknown(what: String) -> Arc<Prepared> {
        let classified = Arc::new(Classified::from(Classification::unknown(what.clone())));
        Arc::new(Prepared {
            text: Arc::from(format!("-- sluice: {what}")),
            classification: classified.classification.clone(),
            classified,
            shape: Shape::default(),
            formats: None,
            approved: None,
        })
    }

    fn rows(&self) -> ResultRows {
        ResultRows {
            shape: self.shape.clone(),
            formats: self.formats.clone(),
            classified: Some(self.classified.clone()),
            text: Some(self.text.clone()),
        }
    }
}

struct ClientState {
    prepared: HashMap<String, Arc<Prepared>>,
    portals: HashMap<String, Arc<Prepared>>,
    /// A portal name no client can know: executing it fails on the server,
    /// which is how a refused Execute gets the server's own error handling.
    /// The client encoding may let multibyte characters hide quotes.
    unsafe_encoding: bool,
    /// Parse, Bind and Close changes applied here before the server
    /// confirmed them, with what each replaced; undone if the server did
    /// not apply them. Holds at most one batch: a new batch waits for the
    /// previous one's answers (see `client_to_server`).
    undo: Vec<(u64, Undo)>,
    /// Memory held by `undo`.
    undo_bytes: usize,
    next_change: u64,
    /// Extended-protocol messages sent since the last Sync.
    batch_open: bool,
    /// Bytes of statement text held in `prepared` and `portals`.
    tracked_bytes: usize,
    /// Portals were forgotten to keep the map bounded: a name not known
    /// now may still be open on the server.
    forgot_portals: bool,
}

/// What a Parse, Bind or Close replaced.
enum Undo {
    Statement(String, Option<Arc<Prepared>>),
    Portal(String, Option<Arc<Prepared>>),
}

impl Undo {
    /// Memory it holds (roughly, with its own size), for the bound on an
    /// unsynced batch.
    fn bytes(&self) -> usize {
        let (Undo::Statement(name, before) | Undo::Portal(name, before)) = self;
        64 + name.len() + before.as_ref().map_or(0, |p| p.text.len())
    }
}

/// Prefix of the portal names stand-ins execute; each refusal draws a new
/// random one, so a name seen once is of no use again.
const REFUSED_PORTAL_PREFIX: &str = "sluice_refused_";

/// Longest text kept for a name whose definition is one of several.
const MAX_EITHER_TEXT: usize = 64 * 1024;

/// Text kept for a statement known by another message's record.
fn capped(text: &str) -> String {
    const KEEP: usize = 4096;
    if text.len() <= KEEP {
        return text.to_string();
    }
    let mut end = KEEP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n-- sluice: (text cut at {KEEP} bytes)", &text[..end])
}

/// How deep names that run names (`EXECUTE p` where p runs `EXECUTE q`)
/// are followed.
const MAX_NAME_DEPTH: usize = 8;

/// Most distinct names one statement's review follows, and most bytes of
/// definitions its subject holds.
const MAX_SUBJECT_NAMES: usize = 64;
const MAX_SUBJECT_BYTES: usize = 1024 * 1024;

/// Most statement text one session may keep prepared.
const MAX_TRACKED_BYTES: usize = 64 * 1024 * 1024;

/// How many prepared statements, and portals, a session may hold at once.
const MAX_TRACKED: usize = 10_000;

/// A refused command: what the client is told instead.
#[derive(Debug, Clone)]
struct Refusal {
    status: &'static str,
    message: String,
    detail: String,
}

enum Op {
    /// A command that gets a response to pair its outcome with; refused
    /// commands are replaced on the wire by one that fails harmlessly. An
    /// Execute carries what decoding its rows needs.
    Command(Command, Kind, Option<Refusal>, Option<ResultRows>),
    /// A record with no outcome of its own (a named prepare).
    Record(Command),
    /// A Parse, Bind or Close, answered by its own completion message.
    Change(u64, u8),
    /// A Describe, with the columns it will tell (for masking later rows).
    Describe(Option<Shape>),
    Sync,
    CopyEnd(Option<Arc<str>>),
}

/// What deciding needs: the classifier and the session (and the catalog
/// cache, which a schema change through the session makes stale).
struct Guard<'a> {
    classifier: &'a Classifier,
    session: &'a SessionHandle,
    catalog: Option<&'a Catalog>,
    /// How the review of the message being decoded again ended.
    verdict: Mutex<Option<Verdict>>,
    /// Woken by the client's CancelRequest.
    cancel: &'a tokio::sync::Notify,
    /// The session may resolve names differently from the gateway's own
    /// (another search_path, temporary tables, another role): the planner
    /// estimate from the gateway's session would be about other tables.
    plans_differ: std::sync::atomic::AtomicBool,
}

/// What ends or interrupts a session from outside its byte streams.
pub struct Signals {
    /// Expiry or revocation of the session's token.
    pub token: TokenWatch,
    /// The client's CancelRequest, which cancels a statement held for review.
    pub cancel: Arc<tokio::sync::Notify>,
}

/// What a review decided for one exact statement.
enum Verdict {
    /// Approved (or approved before): it runs, citing the review.
    Run { hash: String, review: String },
    /// Denied, expired, deferred or not recordable: the client is told why.
    Refuse { hash: String, refusal: Refusal },
}

/// What a review would be about: the bytes its approval is bound to, and
/// what approvers are shown (`None` when it cannot be shown faithfully).
struct Subject {
    bytes: Vec<u8>,
    display: Option<String>,
}

/// What the bytes a review is about are, for its hash.
enum Exact<'a> {
    /// Computed only when policy asks for a review: most commands need none.
    Subject(&'a dyn Fn() -> Subject),
    /// A portal whose Bind a review approved: it runs.
    Approved(&'a str),
}

/// Why decoding stopped before a message.
enum Stop {
    /// The client broke the protocol; the session ends.
    Protocol(String),
    /// Policy wants a review of this message's command; the message stays
    /// in the buffer and is decoded again once the review has a verdict.
    Review(Box<ReviewAsk>),
}

impl From<String> for Stop {
    fn from(s: String) -> Stop {
        Stop::Protocol(s)
    }
}

/// A command waiting to be submitted for review.
struct ReviewAsk {
    exact: Vec<u8>,
    /// What approvers are shown; `None` when it cannot be shown faithfully.
    display: Option<String>,
    classification: Arc<Classification>,
    decision: Arc<sluice_core::Decision>,
    /// The text to estimate the impact of (none with parameters).
    plannable: Option<String>,
}

/// Statements longer than this are classified off the async worker, so a
/// megabyte of SQL does not stall the other sessions on that worker.
const CLASSIFY_IN_PLACE: usize = 256 * 1024;

impl Guard<'_> {
    /// Notes a statement that may make this session resolve names unlike
    /// the gateway's own session (so impact estimates stop).
    fn note_session_state(&self, cmd: &Command) {
        // Reads change no session state; once noted, it stays noted.
        let reads_only = cmd
            .classification
            .as_ref()
            .is_some_and(|c| c.effects.iter().all(|e| *e == Class::Read));
        if reads_only || self.plans_differ.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let lower = cmd.text.to_ascii_lowercase();
        if [
            "search_path",
            "temp",
            "discard",
            "set_config",
            "role",
            "authorization",
        ]
        .iter()
        .any(|w| lower.contains(w))
        {
            self.plans_differ
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn classify(&self, text: &str, unsafe_encoding: bool) -> Arc<Classified> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let classified = if text.len() > CLASSIFY_IN_PLACE && multi_thread {
            tokio::task::block_in_place(|| self.classifier.classify(text, unsafe_encoding))
        } else {
            self.classifier.classify(text, unsafe_encoding)
        };
        // SQL names are cut to 63 bytes by the server after conversion from
        // the client's encoding, where a non-ASCII name can grow: which name
        // the server means is then unknown here.
        let names = classified
            .prepares
            .iter()
            .map(|(n, _)| n)
            .chain(classified.declares.iter().map(|(n, _)| n))
            .chain(&classified.executes)
            .chain(&classified.fetches);
        if let Some(name) = names.into_iter().find(|n| server_name(n).is_err()) {
            let mut c = (*classified).clone();
            c.merge(&Classified::from(Classification::unknown(format!(
                "the name {name:?} has non-ASCII characters and is long enough that the server may shorten it to another name"
            ))));
            return Arc::new(c);
        }
        classified
    }

    /// Classifies a command and asks policy about it; returns the refusal
    /// when policy does not allow it.
    fn decide(
        &self,
        cmd: &mut Command,
        classification: Arc<Classification>,
        exact: Exact<'_>,
    ) -> Result<Option<Refusal>, Stop> {
        let decision = self.session.decide(&classification);
        if matches!(decision.effect, Effect::Allow | Effect::Review)
            && classification.effects.iter().any(|e| {
                matches!(
                    e,
                    Class::Ddl | Class::Destructive | Class::Admin | Class::Unknown
                )
            })
        {
            // A new view, a renamed column: what masking looked up may
            // change (a reviewed statement may run once approved).
            if let Some(c) = self.catalog {
                c.invalidate();
            }
        }
        if decision.effect == Effect::Review {
            match exact {
                Exact::Approved(review) => {
                    cmd.review = Some(review.to_string());
                    cmd.classification = Some(classification);
                    cmd.decision = Some(decision);
                    return Ok(None);
                }
                Exact::Subject(subject) => {
                    let subject = subject();
                    // Keyed by how it arrives: the same bytes as a Query
                    // and as a Bind are different things to approve.
                    let keyed = [cmd.path.as_bytes(), b"\0", &subject.bytes].concat();
                    let hash = statement_hash(&keyed);
                    let verdict = self
                        .verdict
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take();
                    match verdict {
                        Some(Verdict::Run { hash: h, review }) if h == hash => {
                            cmd.review = Some(review);
                            cmd.classification = Some(classification);
                            cmd.decision = Some(decision);
                            return Ok(None);
                        }
                        Some(Verdict::Refuse { hash: h, refusal }) if h == hash => {
                            cmd.classification = Some(classification);
                            cmd.decision = Some(decision);
                            return Ok(Some(refusal));
                        }
                        _ => {
                            // A backslash reads differently with
                            // standard_conforming_strings off, and the
                            // gateway's own session would plan the other reading.
                            let plannable = (classification
                                .effects
                                .iter()
                                .all(|e| !matches!(e, Class::Unknown | Class::Admin))
                                && !cmd.text.contains('\\')
                                && !self.plans_differ.load(std::sync::atomic::Ordering::Relaxed))
                            .then(|| cmd.text.clone());
                            return Err(Stop::Review(Box::new(ReviewAsk {
                                exact: keyed,
                                display: subject.display,
                                classification,
                                decision,
                                plannable,
                            })));
                        }
                    }
                }
            }
        }
        let refusal = match decision.effect {
            Effect::Allow => None,
            effect => {
                let (status, message) = match effect {
                    Effect::Review => (
                        "review",
                        format!("sluice: this statement needs a human review: {}; approvals are not available yet, so it was not run", decision.explain()),
                    ),
                    _ => ("blocked", format!("sluice blocked this statement: {}", decision.explain())),
                };
                let mut detail = format!("class: {}", classification.class());
                if let Some(why) = &classification.unknown_reason {
                    detail.push_str(&format!("; unknown because {why}"));
                }
                Some(Refusal {
                    status,
                    message,
                    detail,
                })
            }
        };
        cmd.classification = Some(classification);
        cmd.decision = Some(decision);
        Ok(refusal)
    }
}

/// Decodes one client message into ops; returns the bytes to send in its
/// place when the command it carries is refused.
fn decode_client_message(
    tag: u8,
    body: &[u8],
    st: &mut ClientState,
    guard: &Guard<'_>,
    ops: &mut Vec<Op>,
) -> Result<Option<BytesMut>, Stop> {
    let bad = |what: &str| format!("malformed {what} message");
    match tag {
        b'Q' => {
            let (text, _) = cstr(body).ok_or_else(|| bad("Query"))?;
            let classified = guard.classify(text, st.unsafe_encoding);
            let classification = st.resolve_now(&classified, 0);
            let mut cmd = command("simple", text.to_string());
            let masking = guard.session.core().masking();
            let subject = || st.review_subject(&masking.masker, text, &classified);
            let refusal = guard.decide(&mut cmd, classification, Exact::Subject(&subject))?;
            if refusal.is_none() {
                st.follow(&classified, text)?;
                guard.note_session_state(&cmd);
            }
            let replacement = refusal.as_ref().map(|_| {
                // Fails in the parser, whatever the transaction state, and
                // the server's own error handling sets that state right.
                let mut b = BytesMut::new();
                crate::wire::query(&mut b, "SLUICE_REFUSED_THIS_STATEMENT");
                b
            });
            let rows = ResultRows {
                shape: Shape::default(),
                formats: None,
                classified: Some(classified.clone()),
                text: Some(Arc::from(text)),
            };
            ops.push(Op::Command(cmd, Kind::Simple, refusal, Some(rows)));
            return Ok(replacement);
        }
        b'P' => {
            let (name, rest) = cstr(body).ok_or_else(|| bad("Parse"))?;
            let name = server_name(name)?;
            let (text, _) = cstr(rest).ok_or_else(|| bad("Parse"))?;
            let classified = guard.classify(text, st.unsafe_encoding);
            let classification =
                classified.resolve(|n| st.prepared.get(n).map(|p| &*p.classification));
            if !name.is_empty() {
                // A named statement is recorded when prepared, so its text is
                // in the log whatever later happens to the name.
                ops.push(Op::Record(command(
                    "prepare",
                    format!("-- prepare {name:?}\n{text}"),
                )));
            }
            let entry = Arc::new(Prepared {
                text: Arc::from(text),
                classification,
                classified,
                shape: Shape::default(),
                formats: None,
                approved: None,
            });
            st.track(name.len() + text.len())?;
            let previous = st.prepared.insert(name.to_string(), entry);
            if st.prepared.len() > MAX_TRACKED {
                return Err(
                    format!("more than {MAX_TRACKED} prepared statements in one session").into(),
                );
            }
            ops.push(st.change(Undo::Statement(name.to_string(), previous), b'1')?);
        }
        b'B' => {
            let (portal, rest) = cstr(body).ok_or_else(|| bad("Bind"))?;
            let portal = server_name(portal)?;
            let (stmt, rest) = cstr(rest).ok_or_else(|| bad("Bind"))?;
            let stmt = server_name(stmt)?;
            let statement = st.prepared.get(stmt).cloned().unwrap_or_else(|| {
                Prepared::unknown(format!("unknown prepared statement {stmt:?}"))
            });
            // Binding plans the statement (which can run functions), and SQL
            // FETCH or MOVE can run a bound portal as well as Execute can:
            // the statement is judged here too.
            let mut cmd = command("bind", statement.text.to_string());
            let classification = st.resolved(&statement);
            // The parameters are part of what runs: an approval covers
            // these values only. Approvers see them (masked) after the text.
            let masking = guard.session.core().masking();
            let subject = || {
                let of = st.review_subject(&masking.masker, &statement.text, &statement.classified);
                Subject {
                    bytes: [&of.bytes[..], b"\0", rest].concat(),
                    display: of.display.map(|d| bind_display(&masking.masker, &d, rest)),
                }
            };
            let refusal = match guard.decide(&mut cmd, classification, Exact::Subject(&subject)) {
                Err(Stop::Review(mut ask)) => {
                    if bind_has_parameters(rest) {
                        ask.plannable = None;
                    }
                    return Err(Stop::Review(ask));
                }
                other => other?,
            };
            if let Some(refusal) = refusal {
                let before = st.portals.get(portal).cloned();
                let Op::Change(id, answer) =
                    st.change(Undo::Portal(portal.to_string(), before), b'2')?
                else {
                    unreachable!("a change is a change");
                };
                ops.push(Op::Command(
                    cmd,
                    Kind::Change(id, answer),
                    Some(refusal),
                    None,
                ));
                // Binds a statement no client can have prepared: it fails on
                // the server, which then skips the batch as after any error.
                let mut b = BytesMut::new();
                crate::wire::bind(&mut b, portal, &stand_in_name());
                return Ok(Some(b));
            }
            let prepared = Arc::new(Prepared {
                text: statement.text.clone(),
                classification: statement.classification.clone(),
                classified: statement.classified.clone(),
                shape: statement.shape.clone(),
                formats: result_formats(rest).map(Arc::from),
                approved: cmd.review.clone().map(|review| {
                    let of =
                        st.review_subject(&masking.masker, &statement.text, &statement.classified);
                    (review, statement_hash(&of.bytes))
                }),
            });
            st.make_room_for_portal(portal);
            st.track(portal.len())?;
            let previous = st.portals.insert(portal.to_string(), prepared);
            ops.push(st.change(Undo::Portal(portal.to_string(), previous), b'2')?);
        }
        b'E' => {
            let (portal, _) = cstr(body).ok_or_else(|| bad("Execute"))?;
            let portal = server_name(portal)?;
            let prepared = st
                .portals
                .get(portal)
                .cloned()
                .unwrap_or_else(|| Prepared::unknown(format!("unknown portal {portal:?}")));
            let mut cmd = command("extended", prepared.text.to_string());
            let classification = st.resolved(&prepared);
            let masking = guard.session.core().masking();
            let subject =
                || st.review_subject(&masking.masker, &prepared.text, &prepared.classified);
            // A name the statement runs (`EXECUTE p`) may have been
            // redefined since the Bind: the approval holds only if what
            // runs now is what was approved.
            let exact = match &prepared.approved {
                Some((review, hash)) if *hash == statement_hash(&subject().bytes) => {
                    Exact::Approved(review)
                }
                _ => Exact::Subject(&subject),
            };
            let refusal = guard.decide(&mut cmd, classification, exact)?;
            if refusal.is_none() {
                st.follow(&prepared.classified, &prepared.text)?;
                guard.note_session_state(&cmd);
            }
            let replacement = refusal.as_ref().map(|_| {
                let mut b = BytesMut::new();
                crate::wire::execute(&mut b, &stand_in_name());
                b
            });
            ops.push(Op::Command(
                cmd,
                Kind::Extended,
                refusal,
                Some(prepared.rows()),
            ));
            return Ok(replacement);
        }
        b'C' => {
            let (&what, rest) = body.split_first().ok_or_else(|| bad("Close"))?;
            let (name, _) = cstr(rest).ok_or_else(|| bad("Close"))?;
            let name = server_name(name)?;
            let undo = match what {
                b'S' => Undo::Statement(name.to_string(), st.prepared.remove(name)),
                _ => Undo::Portal(name.to_string(), st.portals.remove(name)),
            };
            ops.push(st.change(undo, b'3')?);
        }
        b'S' => ops.push(Op::Sync),
        b'D' => {
            let (&what, rest) = body.split_first().ok_or_else(|| bad("Describe"))?;
            let (name, _) = cstr(rest).ok_or_else(|| bad("Describe"))?;
            let name = server_name(name)?;
            let described = match what {
                b'S' => st.prepared.get(name),
                _ => st.portals.get(name),
            };
            ops.push(Op::Describe(described.map(|p| p.shape.clone())));
        }
        b'c' => ops.push(Op::CopyEnd(None)),
        b'f' => {
            // Marks the CopyFail, so that an error quoting the marker is
            // known to come from it: the server then read everything up to
            // it in copy mode (see `end_copy`).
            let (reason, _) = cstr(body).ok_or_else(|| bad("CopyFail"))?;
            let marker: Arc<str> = Arc::from(format!(
                "[sluice-copyfail-{}]",
                hex::encode(rand::random::<[u8; 8]>())
            ));
            let mut b = BytesMut::new();
            crate::wire::copy_fail(&mut b, &format!("{marker} {reason}"));
            ops.push(Op::CopyEnd(Some(marker)));
            return Ok(Some(b));
        }
        b'F' => {
            let oid = body
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(0);
            // The arguments are part of what runs: keep them (bounded, in hex).
            let args = &body[body.len().min(4)..];
            let shown = &args[..args.len().min(4096)];
            let mut cmd = command(
                "function-call",
                format!(
                    "-- function call, oid {oid}, {} argument bytes: {}",
                    args.len(),
                    hex::encode(shown)
                ),
            );
            let refusal = guard.decide(
                &mut cmd,
                Arc::new(Classification::unknown(
                    "a fast-path function call names its function only by oid",
                )),
                Exact::Subject(&|| Subject {
                    bytes: body.to_vec(),
                    display: None,
                }),
            )?;
            if refusal.is_none() {
                // Any function, set_config('client_encoding', ...) included.
                st.unsafe_encoding = true;
            }
            let replacement = refusal.as_ref().map(|_| {
                // No function has oid 0: the call fails on the server.
                let mut b = BytesMut::new();
                crate::wire::function_call(&mut b, 0);
                b
            });
            ops.push(Op::Command(cmd, Kind::Simple, refusal, None));
            return Ok(replacement);
        }
        _ => {}
    }
    Ok(None)
}

/// One Bind parameter: binary format or not, and its value (`None` for NULL).
type BindValue<'a> = (bool, Option<&'a [u8]>);

/// The parameter values of a Bind (its body after the two names): each
/// value (`None` for NULL) and whether it is in binary format.
fn bind_parameters(rest: &[u8]) -> Option<Vec<BindValue<'_>>> {
    let i16_at = |b: &[u8], at: usize| -> Option<i16> {
        Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
    };
    let nformats = i16_at(rest, 0)?.max(0) as usize;
    let formats: Vec<i16> = (0..nformats)
        .map(|i| i16_at(rest, 2 + 2 * i))
        .collect::<Option<_>>()?;
    let mut at = 2 + 2 * nformats;
    let nparams = i16_at(rest, at)?.max(0) as usize;
    at += 2;
    let mut out = Vec::with_capacity(nparams);
    for i in 0..nparams {
        let len = i32::from_be_bytes(rest.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        let value = if len < 0 {
            None
        } else {
            let v = rest.get(at..at + len as usize)?;
            at += len as usize;
            Some(v)
        };
        let binary = match formats.len() {
            0 => false,
            1 => formats[0] == 1,
            _ => formats.get(i).copied() == Some(1),
        };
        out.push((binary, value));
    }
    Some(out)
}

fn bind_has_parameters(rest: &[u8]) -> bool {
    bind_parameters(rest).is_none_or(|p| !p.is_empty())
}

/// A bound statement as approvers read it: the text, then each parameter
/// (text values quoted, binary ones in hex; long ones cut).
fn bind_display(masker: &Masker, text: &str, rest: &[u8]) -> String {
    let Some(params) = bind_parameters(rest) else {
        return format!(
            "{text}
-- parameters: (unreadable)"
        );
    };
    if params.is_empty() {
        return text.to_string();
    }
    let shown: Vec<String> = params
        .iter()
        .enumerate()
        .map(|(i, (binary, v))| {
            format!(
                "${} = {}",
                i + 1,
                crate::shown::parameter(masker, *binary, *v)
            )
        })
        .collect();
    format!(
        "{text}
-- parameters: {}",
        shown.join(", ")
    )
}

/// NAMEDATALEN - 1: how many bytes of a statement or portal name the
/// server keeps.
const MAX_NAME_BYTES: usize = 63;

/// The name the server knows a protocol-level statement or portal by: it
/// keeps only the first 63 bytes (of the name converted to its encoding),
/// so two names that differ after that are one name there. An ASCII name
/// is cut as the server cuts it; a non-ASCII one long enough to reach the
/// limit once converted is refused, since the gateway could not tell which
/// name the server means.
fn server_name(name: &str) -> Result<&str, String> {
    if name.is_ascii() {
        Ok(&name[..name.len().min(MAX_NAME_BYTES)])
    } else if name.len() * 4 <= MAX_NAME_BYTES {
        Ok(name)
    } else {
        Err(format!(
            "a statement or portal name of {} bytes with non-ASCII characters: the server may shorten it, so the gateway cannot follow it; use an ASCII name or one of at most 15 bytes",
            name.len()
        ))
    }
}

/// A new stand-in name for a refused command: a portal or statement name
/// no client can know, so using it fails on the server.
fn stand_in_name() -> String {
    format!(
        "{REFUSED_PORTAL_PREFIX}{}",
        hex::encode(rand::random::<[u8; 16]>())
    )
}

impl ClientState {
    /// What a review of running `text` is about: the bytes its approval is
    /// bound to and what approvers read. Both include the current
    /// definitions of the statements and portals it runs by name (`EXECUTE
    /// p`, `FETCH c`), so an approval never covers a name redefined later.
    fn review_subject(&self, masker: &Masker, text: &str, classified: &Classified) -> Subject {
        let mut subject = Subject {
            bytes: text.as_bytes().to_vec(),
            display: crate::shown::statement(masker, text, &classified.classification),
        };
        let mut seen = HashSet::new();
        self.add_definitions(masker, classified, 0, &mut seen, &mut subject);
        subject
    }

    /// Appends the definitions of the names `classified` runs, and of the
    /// names those run, each name once; past the bounds nothing more is
    /// added and the subject cannot be shown (so it is not reviewed).
    fn add_definitions(
        &self,
        masker: &Masker,
        classified: &Classified,
        depth: usize,
        seen: &mut HashSet<(bool, String)>,
        subject: &mut Subject,
    ) {
        for (verb, names, defined) in [
            ("EXECUTE", &classified.executes, &self.prepared),
            ("FETCH", &classified.fetches, &self.portals),
        ] {
            for name in names {
                if !seen.insert((verb == "FETCH", name.clone())) {
                    continue;
                }
                if seen.len() > MAX_SUBJECT_NAMES
                    || subject.bytes.len() > MAX_SUBJECT_BYTES
                    || depth >= MAX_NAME_DEPTH
                {
                    subject.display = None;
                    subject
                        .bytes
                        .extend_from_slice(b"\0(too many names to follow)");
                    return;
                }
                let def = defined.get(name);
                let text = def.map_or("(not known to the gateway)", |p| &*p.text);
                for part in [verb.as_bytes(), name.as_bytes(), text.as_bytes()] {
                    subject.bytes.push(0);
                    subject.bytes.extend_from_slice(part);
                }
                let shown = def.and_then(|p| {
                    crate::shown::statement(masker, &capped(text), &p.classification)
                });
                match (&mut subject.display, shown) {
                    (Some(d), Some(s)) => {
                        d.push_str(&format!("\n-- {verb} {name:?} runs: "));
                        d.push_str(&s);
                    }
                    _ => subject.display = None,
                }
                if let Some(p) = def {
                    self.add_definitions(masker, &p.classified, depth + 1, seen, subject);
                }
            }
        }
    }

    /// What running a prepared statement (or portal) does: its own
    /// classification, plus, for `EXECUTE`/`FETCH` of names defined
    /// elsewhere, what those names hold now.
    fn resolved(&self, p: &Prepared) -> Arc<Classification> {
        if p.classified.executes.is_empty() && p.classified.fetches.is_empty() {
            return p.classification.clone();
        }
        let now = self.resolve_now(&p.classified, 0);
        let mut both = (*p.classification).clone();
        both.merge(&now);
        Arc::new(both)
    }

    /// What running `classified` does, with the names it runs (`EXECUTE
    /// p`, `FETCH c`) resolved against their definitions now, and the names
    /// those run in turn: a statement that executes another keeps nothing
    /// of what that one meant when it was prepared. Too deep (or a cycle)
    /// is unknown.
    fn resolve_now(&self, classified: &Classified, depth: usize) -> Arc<Classification> {
        if classified.executes.is_empty() && classified.fetches.is_empty() {
            return classified.classification.clone();
        }
        let mut c = (*classified.classification).clone();
        let mut seen = HashSet::new();
        self.resolve_into(classified, depth, &mut seen, &mut c);
        Arc::new(c)
    }

    /// Merges into `c` what the names `classified` runs do, each name once.
    fn resolve_into(
        &self,
        classified: &Classified,
        depth: usize,
        seen: &mut HashSet<(bool, String)>,
        c: &mut Classification,
    ) {
        for (names, defined, verb) in [
            (&classified.executes, &self.prepared, "EXECUTE"),
            (&classified.fetches, &self.portals, "FETCH from"),
        ] {
            for name in names {
                if !seen.insert((verb != "EXECUTE", name.clone())) {
                    continue;
                }
                if depth >= MAX_NAME_DEPTH || seen.len() > MAX_SUBJECT_NAMES {
                    c.merge(&Classification::unknown(
                        "names that run names, too many or too deep to follow",
                    ));
                    return;
                }
                match defined.get(name) {
                    Some(p) => {
                        c.merge(&p.classification);
                        self.resolve_into(&p.classified, depth + 1, seen, c);
                    }
                    None => c.merge(&Classification::unknown(format!(
                        "{verb} {name}: nothing of that name is known in this session"
                    ))),
                }
            }
        }
    }

    /// Applies a Parse, Bind or Close here; the op makes the server's
    /// answer to it tracked.
    fn change(&mut self, undo: Undo, answer: u8) -> Result<Op, String> {
        self.next_change += 1;
        self.undo_bytes += undo.bytes();
        self.undo.push((self.next_change, undo));
        if self.undo_bytes > MAX_TRACKED_BYTES {
            return Err(format!(
                "more than {} MiB of Parse, Bind and Close bookkeeping without a Sync",
                MAX_TRACKED_BYTES >> 20
            ));
        }
        Ok(Op::Change(self.next_change, answer))
    }

    /// Takes back the changes the server reported as not applied, latest
    /// first. A name keeps what it held before the change *and* what the
    /// change put there: should the gateway ever pair an error with the
    /// wrong message, policy still sees every statement the name may run
    /// on the server, never only the harmless one.
    fn undo_failed(&mut self, failed: &[u64]) -> Result<(), String> {
        self.undo_bytes = 0;
        let undo = std::mem::take(&mut self.undo);
        for (id, undo) in undo.into_iter().rev() {
            if !failed.contains(&id) {
                continue;
            }
            let (map, name, before) = match undo {
                Undo::Statement(name, before) => (&mut self.prepared, name, before),
                Undo::Portal(name, before) => (&mut self.portals, name, before),
            };
            let Some(before) = before else {
                // Nothing was there as far as the gateway knows, yet the
                // change failed: the server may hold something of that name
                // the gateway never saw (a cursor a function opened).
                map.insert(
                    name.clone(),
                    Prepared::unknown(format!(
                        "{name:?}: the server refused to define it, so what it holds is unknown"
                    )),
                );
                continue;
            };
            let either = match map.remove(&name) {
                Some(after) if !Arc::ptr_eq(&after, &before) => {
                    Arc::new(Prepared::either(&before, &after))
                }
                _ => before,
            };
            map.insert(name, either);
        }
        self.tracked_bytes = self.held_bytes();
        if self.tracked_bytes > MAX_TRACKED_BYTES {
            return Err(format!(
                "more than {} MiB of prepared statement text in one session",
                MAX_TRACKED_BYTES >> 20
            ));
        }
        Ok(())
    }

    /// Bytes of names and statement text the session's statements and
    /// portals hold (a text shared by several counts for each).
    fn held_bytes(&self) -> usize {
        self.prepared
            .iter()
            .chain(self.portals.iter())
            .map(|(name, p)| name.len() + p.text.len())
            .sum()
    }

    /// Keeps the portal map bounded. Drivers that name a cursor per query
    /// (psycopg's named cursors, Django's iterator) open many over a long
    /// session; forgetting them is safe, since a name the gateway does not
    /// know runs as `unknown`.
    fn make_room_for_portal(&mut self, name: &str) {
        if self.portals.len() >= MAX_TRACKED && !self.portals.contains_key(name) {
            self.portals.retain(|n, _| n.is_empty());
            self.forgot_portals = true;
        }
    }

    /// Counts statement text kept for the session, within a bound.
    fn track(&mut self, bytes: usize) -> Result<(), String> {
        self.tracked_bytes += bytes;
        if self.tracked_bytes > MAX_TRACKED_BYTES {
            // Recount what is actually held before refusing.
            self.tracked_bytes = self.held_bytes();
            if self.tracked_bytes + bytes > MAX_TRACKED_BYTES {
                return Err(format!(
                    "more than {} MiB of prepared statement text in one session",
                    MAX_TRACKED_BYTES >> 20
                ));
            }
            self.tracked_bytes += bytes;
        }
        Ok(())
    }

    /// Defines a statement by SQL `PREPARE`. Whether an earlier `PREPARE`
    /// or `DEALLOCATE` of the name worked is not confirmed per statement,
    /// so a redefinition keeps both texts and the effects of both, and
    /// policy sees whichever could run.
    fn define(
        &mut self,
        name: &str,
        text: &str,
        classification: Arc<Classification>,
        classified: Arc<Classified>,
    ) -> Result<(), String> {
        let entry = match self.prepared.get(name) {
            Some(old) => {
                let text = format!(
                    "{}\n-- sluice: redefined; if the definition above failed on the server, this one runs:\n{text}",
                    old.text
                );
                if text.len() > MAX_INSPECTED {
                    return Err(format!("prepared statement {name:?} redefined too often"));
                }
                let mut merged = (*old.classification).clone();
                merged.merge(&classification);
                let mut effects = (*old.classified).clone();
                effects.merge(&classified);
                Prepared {
                    text: Arc::from(text),
                    classification: Arc::new(merged),
                    classified: Arc::new(effects),
                    shape: Shape::default(),
                    formats: None,
                    approved: None,
                }
            }
            None if self.prepared.len() >= MAX_TRACKED => {
                return Err(format!(
                    "more than {MAX_TRACKED} prepared statements in one session"
                ))
            }
            None => Prepared {
                text: Arc::from(text),
                classification,
                classified,
                shape: Shape::default(),
                formats: None,
                approved: None,
            },
        };
        self.track(name.len() + entry.text.len())?;
        self.prepared.insert(name.to_string(), Arc::new(entry));
        Ok(())
    }

    /// Follows what an allowed simple query does to session state the
    /// classifier depends on: SQL prepared statements and the encoding.
    fn follow(&mut self, classified: &Classified, text: &str) -> Result<(), String> {
        for (name, c) in &classified.prepares {
            // What a prepared statement does to session state when executed
            // is not tracked further than this: its encoding change counts now.
            // Its outputs derive from what the PREPARE's message reads.
            let mut inner = Classified::from(c.clone());
            inner.lineage = classified.lineage.clone();
            let inner = Arc::new(inner);
            self.define(name, text, inner.classification.clone(), inner)?;
        }
        // One capped copy of the text for all the cursors it declares; the
        // whole text is in the record of the Query itself.
        let text: Arc<str> = Arc::from(capped(text));
        for (name, c) in &classified.declares {
            // A DECLARE of a name that is taken fails: keep both.
            let mut inner = Classified::from(c.clone());
            inner.lineage = classified.lineage.clone();
            let inner = Arc::new(inner);
            let cursor = Prepared {
                text: text.clone(),
                classification: inner.classification.clone(),
                classified: inner,
                shape: Shape::default(),
                formats: None,
                approved: None,
            };
            let entry = match self.portals.remove(name) {
                Some(old) => Prepared::either(&old, &cursor),
                // A forgotten cursor of this name may still be open (then
                // the DECLARE fails and the old one stays): either runs.
                None if self.forgot_portals => {
                    self.make_room_for_portal(name);
                    let forgotten =
                        Prepared::unknown(format!("cursor {name:?} may be one the gateway forgot"));
                    Prepared::either(&forgotten, &cursor)
                }
                None => {
                    self.make_room_for_portal(name);
                    cursor
                }
            };
            self.track(name.len() + entry.text.len())?;
            self.portals.insert(name.clone(), Arc::new(entry));
        }
        // DEALLOCATE and DISCARD ALL are not followed: they can fail (DISCARD
        // ALL inside a transaction does), and forgetting a statement the
        // server kept would let a later PREPARE of the name hide it. A name
        // prepared again after them carries both definitions' effects.
        if classified.changes_encoding {
            self.unsafe_encoding = true;
        }
        Ok(())
    }
}

/// The result format codes at the end of a Bind body (after the portal and
/// statement names); `None` when the body cannot be read.
fn result_formats(b: &[u8]) -> Option<Vec<i16>> {
    let word = |b: &[u8], at: usize| -> Option<i16> {
        Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
    };
    let nfmt = usize::try_from(word(b, 0)?).ok()?;
    let mut at = 2 + 2 * nfmt;
    let nparams = usize::try_from(word(b, at)?).ok()?;
    at += 2;
    for _ in 0..nparams {
        let len = i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?);
        at += 4 + usize::try_from(len.max(0)).ok()?;
    }
    let nres = usize::try_from(word(b, at)?).ok()?;
    (0..nres).map(|i| word(b, at + 2 + 2 * i)).collect()
}

fn command(path: &str, text: String) -> Command {
    Command {
        protocol: "postgres".into(),
        path: path.into(),
        text,
        classification: None,
        decision: None,
        review: None,
    }
}

/// Client messages decoded whole; everything else streams through.
fn client_inspects(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P' | b'B' | b'E' | b'C' | b'D' | b'S' | b'F' | b'X' | b'c' | b'f'
    )
}

/// Byte ranges of a chunk replaced on the way through.
#[derive(Default)]
struct Edits(Vec<(usize, usize, BytesMut)>);

impl Edits {
    /// Writes `buf[..end]` with the replacements applied.
    async fn write<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        buf: &[u8],
        end: usize,
    ) -> std::io::Result<usize> {
        if self.0.is_empty() {
            w.write_all(&buf[..end]).await?;
            return Ok(end);
        }
        // One write for the whole chunk: a masked result has an edit in
        // many rows, and a write per piece would cost a syscall (and a
        // packet) each.
        let mut out = BytesMut::with_capacity(end + 64 * self.0.len());
        let mut at = 0;
        for (from, to, with) in self.0.drain(..) {
            out.extend_from_slice(&buf[at..from]);
            out.extend_from_slice(&with);
            at = to;
        }
        out.extend_from_slice(&buf[at..end]);
        w.write_all(&out).await?;
        Ok(out.len())
    }
}

async fn client_to_server<R, W>(
    mut client: R,
    mut server: W,
    guard: Guard<'_>,
    shared: Shared,
    senders: Senders,
    bytes_in: &mut u64,
) -> String
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut passthrough = 0usize;
    let mut st = ClientState {
        prepared: HashMap::new(),
        portals: HashMap::new(),
        unsafe_encoding: false,
        undo: Vec::new(),
        undo_bytes: 0,
        next_change: 0,
        batch_open: false,
        tracked_bytes: 0,
        forgot_portals: false,
    };
    let session = guard.session;
    let mut ops = Vec::new();
    let mut edits = Edits::default();
    let Senders { fatal, notices } = senders;
    // A message whose command waits for review: decoding stops before it.
    let mut review: Option<Box<ReviewAsk>> = None;
    // Set while a verdict waits for the next decoded message (so the other
    // messages need not look at it).
    let mut verdict_set = false;
    // Set when that message is to be decoded again, with the verdict.
    let mut resume = false;
    let fail = |code: &'static str, message: String, outcome: String| {
        let fatal = fatal.clone();
        async move {
            let _ = fatal
                .send(Fatal {
                    code,
                    message,
                    outcome,
                })
                .await;
            // The other half delivers the error and ends the relay.
            std::future::pending::<String>().await
        }
    };
    // Set when a message that starts a batch waits for the answers to the
    // previous batch's Parse, Bind and Close: it is still in the buffer.
    let mut settle = false;
    loop {
        if settle {
            let failed = shared.settle_changes().await;
            if let Err(e) = st.undo_failed(&failed) {
                return fail(
                    "54000",
                    format!("sluice: {e}"),
                    "session state too large".into(),
                )
                .await;
            }
            settle = false;
        } else if resume {
            resume = false;
        } else {
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_CHUNK);
            }
            let n = match client.read_buf(&mut buf).await {
                Ok(0) => return "client disconnected".into(),
                Ok(n) => n,
                Err(e) => return format!("client read error: {e}"),
            };
            *bytes_in += n as u64;
        }
        st.unsafe_encoding = shared.lock().unsafe_encoding;
        let mut pos = passthrough.min(buf.len());
        passthrough -= pos;
        let mut terminate = false;
        while buf.len() - pos >= 5 {
            let tag = buf[pos];
            let len = u32::from_be_bytes([buf[pos + 1], buf[pos + 2], buf[pos + 3], buf[pos + 4]])
                as usize;
            if len < 4 {
                return fail(
                    "08P01",
                    "sluice: invalid message length".into(),
                    "protocol error from client".into(),
                )
                .await;
            }
            let total = len + 1;
            if client_inspects(tag) {
                if total > MAX_INSPECTED {
                    return fail(
                        "54000",
                        format!("sluice: message of {total} bytes exceeds the inspection limit of {MAX_INSPECTED} bytes"),
                        "message too large".into(),
                    )
                    .await;
                }
                if buf.len() - pos < total {
                    // Grow as bytes arrive, not by what a header claims.
                    buf.reserve((total - (buf.len() - pos)).min(16 * READ_CHUNK));
                    break;
                }
                // A new batch reads and changes the statements and portals
                // as the server left them: first learn which of the previous
                // batch's changes it applied (it skips everything after an
                // error up to Sync). Clients that wait for answers never wait here.
                if !st.batch_open
                    && !st.undo.is_empty()
                    && matches!(tag, b'P' | b'B' | b'E' | b'C' | b'D' | b'Q' | b'F')
                {
                    settle = true;
                    break;
                }
                match tag {
                    b'P' | b'B' | b'E' | b'C' | b'D' => st.batch_open = true,
                    b'S' => st.batch_open = false,
                    _ => {}
                }
                let decoded = decode_client_message(
                    tag,
                    &buf[pos + 5..pos + total],
                    &mut st,
                    &guard,
                    &mut ops,
                );
                // A verdict is for the one message it was asked for.
                if verdict_set {
                    verdict_set = false;
                    guard
                        .verdict
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take();
                }
                match decoded {
                    Ok(None) => {}
                    Ok(Some(replacement)) => edits.0.push((pos, pos + total, replacement)),
                    Err(Stop::Review(ask)) => {
                        review = Some(ask);
                        break;
                    }
                    Err(Stop::Protocol(e)) => {
                        return fail(
                            "08P01",
                            format!("sluice: {e}"),
                            "protocol error from client".into(),
                        )
                        .await;
                    }
                }
                terminate |= tag == b'X';
                pos += total;
            } else if buf.len() - pos >= total {
                pos += total;
            } else {
                passthrough = total - (buf.len() - pos);
                pos = buf.len();
            }
        }
        if !ops.is_empty() {
            let mut commands = Vec::with_capacity(ops.len());
            let mut kinds = Vec::with_capacity(ops.len());
            for op in ops.drain(..) {
                match op {
                    Op::Command(c, kind, refusal, rows) => {
                        commands.push(c);
                        kinds.push(Some((kind, refusal, rows)));
                    }
                    Op::Record(c) => {
                        commands.push(c);
                        kinds.push(None);
                    }
                    Op::Change(id, tag) => kinds.push(Some((Kind::Change(id, tag), None, None))),
                    Op::Describe(shape) => kinds.push(Some((
                        Kind::Describe,
                        None,
                        shape.map(|shape| ResultRows {
                            shape,
                            formats: None,
                            classified: None,
                            text: None,
                        }),
                    ))),
                    Op::Sync => kinds.push(Some((Kind::Sync, None, None))),
                    Op::CopyEnd(marker) => kinds.push(Some((Kind::CopyEnd(marker), None, None))),
                }
            }
            let seqs = if commands.is_empty() {
                Vec::new()
            } else {
                match session.record_commands(&commands).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(session = %session.id, error = %e, "cannot record a command; closing the session");
                        return fail(
                            "58000",
                            "sluice: the audit store is unavailable, so no command can run; try again later".into(),
                            "audit store unavailable".into(),
                        )
                        .await;
                    }
                }
            };
            let now = Instant::now();
            let mut seqs = seqs.into_iter();
            let mut sh = shared.lock();
            // Published with the commands that may change the encoding, so
            // the server half cannot clear it while they are in flight.
            sh.unsafe_encoding |= st.unsafe_encoding;
            for kind in kinds {
                let (kind, refusal, seq, result) = match kind {
                    Some((k @ Kind::Change(..), refusal, _)) => {
                        sh.unanswered_changes += 1;
                        // A refused Bind is a recorded command.
                        let seq = match refusal {
                            Some(_) => seqs.next().unwrap_or(0),
                            None => 0,
                        };
                        (k, refusal, seq, None)
                    }
                    Some((k @ (Kind::Sync | Kind::CopyEnd(_) | Kind::Describe), _, rows)) => {
                        (k, None, 0, rows)
                    }
                    Some((kind, refusal, rows)) => (kind, refusal, seqs.next().unwrap_or(0), rows),
                    None => {
                        seqs.next();
                        continue;
                    }
                };
                sh.queue.push_back(Pending {
                    kind,
                    seq,
                    started: now,
                    rows: None,
                    error: None,
                    refusal,
                    masked: MaskCounts::default(),
                    result,
                });
            }
        }
        if pos > 0 {
            if let Err(e) = edits.write(&mut server, &buf, pos).await {
                return format!("target write error: {e}");
            }
            buf.advance(pos);
        }
        if terminate {
            let _ = server.flush().await;
            return "client terminated".into();
        }
        if let Some(ask) = review.take() {
            // Everything before the message went out above; it waits here.
            let _ = server.flush().await;
            let verdict =
                match review_verdict(&guard, *ask, &notices, &mut client, &mut buf, bytes_in).await
                {
                    Ok(v) => v,
                    Err(outcome) => return outcome,
                };
            *guard.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(verdict);
            verdict_set = true;
            resume = true;
        }
    }
}

/// What the client half sends the server half.
struct Senders {
    fatal: mpsc::Sender<Fatal>,
    notices: mpsc::Sender<BytesMut>,
}

/// Most client input buffered while a statement is held.
const MAX_HELD_INPUT: usize = 1024 * 1024;

/// Submits a command for review and follows it to a verdict: at once for
/// a deferred one (or one approved before), after the approvers' decision
/// for a held one. A client that leaves while held cancels the review.
async fn review_verdict<R: AsyncRead + Unpin>(
    guard: &Guard<'_>,
    ask: ReviewAsk,
    notices: &mpsc::Sender<BytesMut>,
    client: &mut R,
    buf: &mut BytesMut,
    bytes_in: &mut u64,
) -> Result<Verdict, String> {
    let session = guard.session;
    let hash = statement_hash(&ask.exact);
    let mut earlier = session.existing_review(&ask.exact).await;
    if let Ok(None) = earlier {
        // Refused before the estimate, which costs a session on the target.
        if let Err(e) = session.may_open_review().await {
            earlier = Err(e);
        }
    }
    let impact = match (&ask.plannable, guard.catalog, &earlier) {
        (Some(text), Some(catalog), Ok(None)) => {
            catalog.estimate_rows(text).await.ok().map(|n| Impact {
                estimated_rows: Some(n),
                summary: format!("the planner estimates {n} row(s)"),
            })
        }
        _ => None,
    };
    let detail = format!("class: {}", ask.classification.class());
    let why = ask.decision.explain();
    let refuse = |status: &'static str, message: String| Verdict::Refuse {
        hash: hash.clone(),
        refusal: Refusal {
            status,
            message,
            detail: detail.clone(),
        },
    };
    let Some(display) = ask.display else {
        return Ok(refuse(
            "review",
            format!("sluice: this statement needs a human review ({why}), but its text cannot be scanned to show it to approvers faithfully, so it cannot be reviewed; it was not run"),
        ));
    };
    let submitted = match earlier {
        Ok(None) => {
            session
                .submit_review(CommandAsk {
                    display,
                    exact: ask.exact,
                    classification: ask.classification.clone(),
                    decision: ask.decision.clone(),
                    impact,
                })
                .await
        }
        Ok(Some(found)) => Ok(found),
        Err(e) => Err(e),
    };
    let r = match submitted {
        Ok(Submitted::Run(r)) => {
            return Ok(Verdict::Run {
                hash: hash.clone(),
                review: r.id,
            })
        }
        Ok(Submitted::Pending(r)) => r,
        Err(sluice_core::CoreError::Invalid(why_not)) => {
            return Ok(refuse(
                "review",
                format!("sluice: this statement needs a human review ({why}), and no review was created: {why_not}; it was not run"),
            ));
        }
        Err(e) => {
            tracing::error!(session = %session.id, error = %e, "could not record a review");
            return Ok(refuse(
                "review",
                format!("sluice: this statement needs a human review ({why}), and the review could not be recorded; it was not run"),
            ));
        }
    };
    if r.mode == Some(ReviewMode::Defer) {
        let ttl = session.core().review_settings().approval_ttl.as_secs();
        return Ok(refuse(
            "review",
            format!(
                "sluice: this statement needs a human review ({why}); it was not run. Review {id} is pending: wait for it with `sluice reviews wait {id}`, then run exactly the same statement again; once approved it runs once, within {ttl} s of the approval",
                id = r.id
            ),
        ));
    }
    let mut notice = BytesMut::new();
    crate::wire::notice_response(
        &mut notice,
        "01000",
        &format!("sluice: this statement waits for review {} ({why})", r.id),
        Some(&format!(
            "an approver runs `sluice reviews approve {}`; the statement runs as soon as it is approved, and fails if it is denied or not decided by {}",
            r.id,
            sluice_core::time::format_ms(r.expires_at)
        )),
    );
    // Listening for a cancel before the client can know it waits.
    let cancelled = guard.cancel.notified();
    tokio::pin!(cancelled);
    let _ = notices.send(notice).await;
    // The session may end while it waits (token revoked, target gone):
    // the review must not outlive it as something left to approve.
    let mut left = CancelIfLeft {
        session,
        id: Some(r.id.clone()),
    };
    let wait = session.await_review(&r.id);
    tokio::pin!(wait);
    let decided = loop {
        tokio::select! {
            d = &mut wait => break d,
            _ = &mut cancelled => {
                let core = session.core();
                // An approval that won the race has been used already: then
                // the statement runs, as if the cancel came just too late.
                break match core
                    .cancel_review(&r.id, &session.principal, Some("the client cancelled the statement".into()))
                    .await
                {
                    Ok(r) => Ok(r),
                    Err(_) => core.review(&r.id).await,
                };
            }
            read = client.read_buf(buf), if buf.len() < MAX_HELD_INPUT => match read {
                Ok(0) | Err(_) => {
                    left.id = None;
                    let _ = session
                        .core()
                        .cancel_review(&r.id, "gateway", Some("the client disconnected while its statement was held".into()))
                        .await;
                    return Err("client disconnected while its statement waited for review".into());
                }
                Ok(n) => *bytes_in += n as u64,
            },
        }
    };
    left.id = None;
    Ok(match decided {
        Ok(r)
            if r.state == ReviewState::Executed
                && r.session_id.as_deref() == Some(session.id.as_str()) =>
        {
            Verdict::Run {
                hash: hash.clone(),
                review: r.id,
            }
        }
        Ok(r) => {
            let (status, message) = held_refusal(&r);
            refuse(status, message)
        }
        Err(e) => refuse(
            "review",
            format!(
                "sluice: review {} could not be followed ({e}); the statement was not run",
                r.id
            ),
        ),
    })
}

/// Cancels a held review when its wait is abandoned (the relay ending
/// for another reason drops the wait).
struct CancelIfLeft<'a> {
    session: &'a SessionHandle,
    id: Option<String>,
}

impl Drop for CancelIfLeft<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let core = self.session.core().clone();
            tokio::spawn(async move {
                let _ = core
                    .cancel_review(
                        &id,
                        "gateway",
                        Some("the session ended while its statement was held".into()),
                    )
                    .await;
            });
        }
    }
}

/// What the client of a held statement is told when it will not run.
fn held_refusal(r: &ReviewRecord) -> (&'static str, String) {
    let status = match r.state {
        ReviewState::Denied => "denied",
        ReviewState::Expired => "expired",
        ReviewState::Cancelled => "cancelled",
        _ => "review",
    };
    (status, r.not_run("statement"))
}

/// Server messages decoded whole; everything else (rows, copy data) streams through.
fn server_inspects(tag: u8) -> bool {
    matches!(
        tag,
        b'C' | b'E' | b'I' | b's' | b'Z' | b'G' | b'S' | b'1' | b'2' | b'3'
    )
}

fn complete(session: &SessionHandle, p: Pending, status: &str) {
    if p.seq == 0 {
        return;
    }
    let outcome = CommandOutcome {
        rows: p.rows,
        status: match (&p.refusal, &p.error) {
            (Some(r), Some(_)) => r.status.into(),
            (_, Some(_)) => "error".into(),
            _ => status.into(),
        },
        error_code: p.error,
        duration_us: p.started.elapsed().as_micros() as u64,
        masked: p.masked.0,
    };
    session.record_outcome(p.seq, &outcome);
}

/// The error a refused command's stand-in provoked, rewritten into the
/// refusal the client should see.
fn refusal_error(r: &Refusal) -> BytesMut {
    let mut b = BytesMut::new();
    error_response_with_detail(
        &mut b,
        "ERROR",
        "42501",
        &r.message,
        Some(&r.detail),
        Some("the statement did not reach the database; the session and its transaction continue as after any error"),
    );
    b
}

/// Follows one inspected server message; returns what to send the client
/// instead, when it must be rewritten. An error means the answer does not
/// fit the messages the gateway sent: from there on it could judge one
/// statement while the server runs another, so the session must end.
fn on_server_message(
    tag: u8,
    body: &[u8],
    shared: &Shared,
    session: &SessionHandle,
    copy_in: &mut bool,
) -> Result<Option<BytesMut>, String> {
    let mut sh = shared.lock();
    if tag == b'S' {
        if let Some(("client_encoding", rest)) = cstr(body) {
            sh.reported_unsafe = cstr(rest).is_none_or(|(v, _)| unsafe_client_encoding(v));
            sh.unsafe_encoding |= sh.reported_unsafe;
        }
        return Ok(None);
    }
    let sh = &mut *sh;
    let q = &mut sh.queue;
    // A CopyEnd left over from a copy the server already ended carries no response.
    while matches!(q.front().map(|p| &p.kind), Some(Kind::CopyEnd(_))) {
        q.pop_front();
    }
    let mut replacement = None;
    match tag {
        b'G' => {
            if !matches!(front(q), Some(Kind::Simple | Kind::Extended)) {
                return Err(unexpected(tag, q));
            }
            *copy_in = true;
        }
        b'1' | b'2' | b'3' => match q.front() {
            Some(Pending {
                kind: Kind::Change(_, answer),
                ..
            }) if *answer == tag => {
                q.pop_front();
                sh.unanswered_changes = sh.unanswered_changes.saturating_sub(1);
            }
            _ => return Err(unexpected(tag, q)),
        },
        b'C' | b'I' | b's' => {
            if *copy_in && tag == b'C' {
                end_copy(q, true, None)?;
                *copy_in = false;
            }
            let rows = if tag == b'C' {
                command_rows(body)
            } else {
                None
            };
            match q.front_mut() {
                Some(p) if matches!(p.kind, Kind::Extended) => {
                    let mut p = q.pop_front().expect("front exists");
                    p.rows = rows;
                    complete(session, p, "ok");
                }
                Some(p) if matches!(p.kind, Kind::Simple) && tag != b's' => {
                    if let Some(r) = rows {
                        p.rows = Some(p.rows.unwrap_or(0) + r);
                    }
                }
                _ => return Err(unexpected(tag, q)),
            }
        }
        b'E' => {
            let (code, message) = error_fields(body);
            if *copy_in {
                if let Some(marker) = end_copy(q, false, message.as_deref())? {
                    // The client sees its own CopyFail reason, unmarked.
                    replacement =
                        Some(crate::wire::without_text(b'E', body, &format!("{marker} ")));
                }
                *copy_in = false;
            }
            let code = code.unwrap_or_else(|| "XX000".into());
            if let Some(p) = q.front() {
                if p.error.is_none()
                    && matches!(p.kind, Kind::Simple | Kind::Extended | Kind::Change(..))
                {
                    if let Some(r) = &p.refusal {
                        replacement = Some(refusal_error(r));
                    }
                }
            }
            if replacement.is_none() && message.is_some_and(|m| mentions_stand_in(&m)) {
                // A stand-in's error the pairing did not expect: never let
                // the stand-in reach the client.
                replacement = Some(refusal_error(&Refusal {
                    status: "blocked",
                    message: "sluice blocked this statement".into(),
                    detail: "refused by policy".into(),
                }));
            }
            match q.front_mut() {
                // A Parse, Bind or Close that failed: the server did not apply it.
                Some(Pending {
                    kind: Kind::Change(id, _),
                    ..
                }) => {
                    sh.failed_changes.push(*id);
                    sh.unanswered_changes = sh.unanswered_changes.saturating_sub(1);
                    if let Some(mut p) = q.pop_front() {
                        p.error = Some(code.clone());
                        complete(session, p, "error");
                    }
                    // The statement the batch meant to run failed with it
                    // (an error planning it arrives at Bind).
                    for p in q.iter_mut() {
                        match p.kind {
                            Kind::Sync => break,
                            Kind::Extended => {
                                if p.refusal.is_none() {
                                    p.error.get_or_insert_with(|| code.clone());
                                }
                                break;
                            }
                            _ => {}
                        }
                    }
                    // An error in the extended protocol: the server skips
                    // everything up to the next Sync.
                    sh.skipping = true;
                }
                Some(p) if matches!(p.kind, Kind::Extended) => {
                    let mut p = q.pop_front().expect("front exists");
                    p.error = Some(code);
                    complete(session, p, "error");
                    sh.skipping = true;
                }
                Some(p) if matches!(p.kind, Kind::Describe) => {
                    q.pop_front();
                    sh.skipping = true;
                }
                Some(p) if matches!(p.kind, Kind::Simple) => p.error = Some(code),
                // Committing at Sync failed (a deferred constraint), or the
                // server ends the session unasked: nothing is skipped.
                _ => {}
            }
        }
        b'Z' => {
            if *copy_in {
                return Err(unexpected(tag, q));
            }
            while let Some(p) = q.pop_front() {
                match p.kind {
                    // A Query sent before the Sync that ends an extended
                    // error: the server discards it without an answer.
                    Kind::Simple if sh.skipping && p.error.is_none() => {
                        complete(session, p, "skipped")
                    }
                    Kind::Simple => {
                        complete(session, p, "ok");
                        break;
                    }
                    Kind::Sync => break,
                    Kind::CopyEnd(_) => {}
                    // The server answers each of these unless it skips it
                    // after an error; one still waiting means the pairing broke.
                    Kind::Extended | Kind::Describe | Kind::Change(..) if !sh.skipping => {
                        q.push_front(p);
                        return Err(unexpected(tag, q));
                    }
                    Kind::Extended => complete(session, p, "skipped"),
                    Kind::Describe => {}
                    Kind::Change(id, _) => {
                        sh.failed_changes.push(id);
                        sh.unanswered_changes = sh.unanswered_changes.saturating_sub(1);
                        complete(session, p, "skipped");
                    }
                }
            }
            sh.skipping = false;
            // With nothing in flight and no transaction open (whose end could
            // revert a SET), the target's last report is the truth.
            if q.is_empty() && body.first() == Some(&b'I') {
                sh.unsafe_encoding = sh.reported_unsafe;
            }
        }
        _ => {}
    }
    if matches!(tag, b'1' | b'2' | b'3' | b'E' | b'Z') {
        shared.answered();
    }
    Ok(replacement)
}

/// Follows the answers to Describe, which only their tags tell apart:
/// ParameterDescription, RowDescription and NoData. With the message's body
/// (when results are masked), a RowDescription's columns are kept for the
/// rows that follow: returned for a simple Query's result set, stored with
/// the statement for a Describe's.
fn on_description(
    tag: u8,
    shared: &Shared,
    body: Option<&[u8]>,
) -> Result<Option<Vec<Column>>, String> {
    let columns = match (tag, body) {
        (b'T', Some(b)) => Some(
            crate::mask::row_description(b).ok_or("a RowDescription the gateway cannot read")?,
        ),
        _ => None,
    };
    let mut sh = shared.lock();
    let q = &mut sh.queue;
    while matches!(front(q), Some(Kind::CopyEnd(_))) {
        q.pop_front();
    }
    match (tag, front(q)) {
        // A statement's parameters; its columns follow.
        (b't', Some(Kind::Describe)) => {}
        // A simple Query's result set.
        (b'T', Some(Kind::Simple)) => return Ok(columns),
        (b'T' | b'n', Some(Kind::Describe)) => {
            let p = q.pop_front().expect("front exists");
            if let (Some(rows), Some(cols)) = (p.result, columns) {
                *rows.shape.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::from(cols));
            }
        }
        _ => return Err(unexpected(tag, q)),
    }
    Ok(None)
}

/// What the server half knows about the result being streamed.
#[derive(Default)]
struct ResultState {
    /// How the current result set's columns are masked.
    plans: Option<Arc<[Plan]>>,
    /// A text or CSV `COPY ... TO STDOUT` is streaming.
    copy_out: bool,
    /// A `COPY ... TO STDOUT` that cannot be masked is streaming: its data
    /// is withheld and its completion becomes this error.
    withheld: Option<&'static str>,
    /// The COPY about to stream may return a column under a rule.
    copy_under_rules: bool,
    /// The error or notice about to be passed may echo a rule column.
    withhold_texts: bool,
    /// The column types of the COPY about to stream, when described.
    copy_types: Option<Vec<u32>>,
    /// The COPY streams in binary format.
    copy_binary: bool,
}

const WITHHELD_COPY: &str = "COPY TO STDOUT would return columns under masking rules, and COPY rows do not say which column a value comes from; use SELECT, which is masked column by column";
const WITHHELD_BINARY_COPY: &str = "a binary COPY TO STDOUT cannot be masked (its rows do not say their types); use FORMAT text or csv, or SELECT";

/// Works out how the current result set's columns are masked, at its
/// RowDescription (a simple Query) or its first row (an Execute, whose
/// columns a Describe told earlier, in the formats its Bind asked for).
/// Column rules need the source tables' names: looked up in the catalog.
async fn result_plans(
    tag: u8,
    body: &[u8],
    shared: &Shared,
    m: &Masking,
    catalog: Option<&Catalog>,
) -> Result<Option<Arc<[Plan]>>, String> {
    let (cols, formats, lineage) = if tag == b'T' {
        let Some(cols) = on_description(tag, shared, Some(body))? else {
            return Ok(None);
        };
        (
            Some(cols),
            None,
            shared.answered_result().and_then(|r| r.classified),
        )
    } else {
        let sh = shared.lock();
        match sh.queue.front() {
            Some(p) if matches!(p.kind, Kind::Extended | Kind::Simple) => match &p.result {
                Some(r) => {
                    let cols = r.shape.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    (
                        cols.map(|c| c.to_vec()),
                        r.formats.clone(),
                        r.classified.clone(),
                    )
                }
                None => (None, None, None),
            },
            _ => return Err(unexpected(tag, &sh.queue)),
        }
    };
    let Some(cols) = cols else {
        // Nothing tells the columns: every value is judged by its bytes.
        return Ok(Some(Arc::from(Vec::new())));
    };
    let mut plans = match (tag, &formats) {
        (b'T', _) => crate::mask::plans(&cols, None),
        (_, Some(f)) => crate::mask::plans(&cols, Some(f)),
        (_, None) => cols.iter().map(|_| Plan::unknown()).collect(),
    };
    let oids: Vec<u32> = cols
        .iter()
        .map(|c| c.table_oid)
        .filter(|&o| o != 0)
        .collect();
    let relations = match catalog {
        Some(catalog) if m.has_rules() && !oids.is_empty() => {
            match catalog.relations(&oids).await {
                Ok(r) => Some(r),
                Err(e) => {
                    // Without the names, every plain column is masked whole.
                    tracing::warn!(error = %e, "catalog lookup failed; masking the result's columns whole");
                    None
                }
            }
        }
        _ => None,
    };
    let lineage = lineage.as_deref().map(|c| &c.lineage);
    let views = if cols.iter().any(|c| c.table_oid == 0) {
        views_read(m, catalog, lineage).await
    } else {
        Vec::new()
    };
    crate::mask::apply_rules(m, &mut plans, &cols, relations.as_ref(), lineage, &views);
    Ok(Some(Arc::from(plans)))
}

/// The views a statement reads, for rules on the columns they read. When
/// they cannot be looked up, a stand-in that reads everything is returned:
/// whatever may derive from a view is then masked.
async fn views_read(
    m: &Masking,
    catalog: Option<&Catalog>,
    lineage: Option<&crate::classify::Lineage>,
) -> Vec<Arc<Relation>> {
    let Some(l) = lineage else {
        return Vec::new();
    };
    if !m.has_rules() || l.relations.is_empty() {
        return Vec::new();
    }
    let names: Vec<&str> = l.relations.iter().map(String::as_str).collect();
    let found = match catalog {
        Some(c) => c.views_named(&names).await,
        None => Err("no catalog".into()),
    };
    found.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "view lookup failed; masking derived columns whole");
        vec![Arc::new(Relation {
            kind: 'v',
            reads: vec![("*".into(), "*".into(), "*".into())],
            ..Relation::default()
        })]
    })
}

/// The column types of the `COPY ... TO STDOUT` being answered, from a
/// Describe of its query on the gateway's own session.
async fn copy_types(shared: &Shared, catalog: Option<&Catalog>) -> Option<Vec<u32>> {
    let text = shared.answered_result()?.text?;
    let sql = crate::classify::copy_out_query(&text)?;
    match catalog?.describe(&sql).await {
        Ok(cols) => Some(cols.iter().map(|c| c.type_oid).collect()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot describe a binary COPY; withholding it");
            None
        }
    }
}

/// Whether a `COPY ... TO STDOUT` may return a column under a rule.
async fn copy_under_rules(shared: &Shared, m: &Masking, catalog: Option<&Catalog>) -> bool {
    let lineage = shared.answered_result().and_then(|r| r.classified);
    match lineage {
        Some(c) => derives_from_rules(m, catalog, c.lineage.clone()).await,
        None => m.has_rules(),
    }
}

/// Whether a statement's outputs may derive from a column under a rule,
/// views it reads looked up.
async fn derives_from_rules(
    m: &Masking,
    catalog: Option<&Catalog>,
    lineage: crate::classify::Lineage,
) -> bool {
    if !m.has_rules() {
        return false;
    }
    let views = views_read(m, catalog, Some(&lineage)).await;
    crate::mask::may_derive_from_rules(m, &lineage, &views).is_some()
}

/// Masks one message that can carry data to the client (rows, copy data,
/// notices, notifications, a function's result); `None` when nothing in it
/// changed. What was masked is counted on the command it answers.
fn on_result_message(
    tag: u8,
    body: &[u8],
    shared: &Shared,
    m: &Masking,
    rs: &mut ResultState,
) -> Result<Option<BytesMut>, String> {
    let mut counts = MaskCounts::default();
    let out = match tag {
        b'D' => {
            let plans = rs.plans.clone().unwrap_or_else(|| Arc::from(Vec::new()));
            crate::mask::data_row(m, &plans, body, &mut counts)?
        }
        b'H' => {
            // COPY rows carry no column origins, and binary ones no types
            // (learned, when they can be, by describing the COPY's query):
            // otherwise the data is withheld (SELECT is masked column by column).
            let simple = matches!(front(&shared.lock().queue), Some(Kind::Simple));
            let columns = body
                .get(1..3)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize);
            let binary = body.first() == Some(&1);
            let typed = binary
                && rs
                    .copy_types
                    .as_ref()
                    .is_some_and(|t| Some(t.len()) == columns);
            let why = if binary && !typed {
                Some(WITHHELD_BINARY_COPY)
            } else if rs.copy_under_rules {
                Some(WITHHELD_COPY)
            } else {
                None
            };
            if let Some(why) = why {
                if !simple {
                    return Err(why.into());
                }
                rs.withheld = Some(why);
                return Ok(Some(BytesMut::new()));
            }
            rs.copy_out = true;
            rs.copy_binary = binary;
            return Ok(None);
        }
        b'd' | b'c' if rs.withheld.is_some() => return Ok(Some(BytesMut::new())),
        b'd' if rs.copy_out && rs.copy_binary => {
            let types = rs.copy_types.clone().unwrap_or_default();
            crate::mask::copy_binary(m, &types, body, &mut counts)?
        }
        b'd' if rs.copy_out => crate::mask::copy_text(m, body, &mut counts),
        b'c' => {
            rs.copy_out = false;
            return Ok(None);
        }
        b'A' => crate::mask::notification(m, body, &mut counts),
        b'N' if rs.withhold_texts => Some(crate::mask::withheld_error_or_notice(
            b'N',
            body,
            &mut counts,
        )),
        b'N' => crate::mask::error_or_notice(m, b'N', body, &mut counts),
        b'V' => crate::mask::function_result(m, body, &mut counts),
        _ => None,
    };
    if !counts.is_empty() {
        let mut sh = shared.lock();
        if let Some(p) = sh.queue.front_mut() {
            for (kind, n) in counts.0 {
                *p.masked.0.entry(kind).or_default() += n;
            }
        }
    }
    Ok(out)
}

/// Whether the statement being answered may show values under a rule in
/// its errors and notices (which no detector would recognise). EXPLAIN is
/// not exempt here: EXPLAIN ANALYZE runs the statement, errors and all.
async fn withhold_texts(shared: &Shared, m: &Masking, catalog: Option<&Catalog>) -> bool {
    let Some(c) = shared.answered_result().and_then(|r| r.classified) else {
        return false;
    };
    let mut lineage = c.lineage.clone();
    lineage.explain_only = false;
    derives_from_rules(m, catalog, lineage).await
}

/// Server messages whose values are masked when the session's are.
fn masked_tag(tag: u8) -> bool {
    matches!(tag, b'T' | b'D' | b'd' | b'c' | b'A' | b'N' | b'V' | b'H')
}

fn front(q: &VecDeque<Pending>) -> Option<&Kind> {
    q.front().map(|p| &p.kind)
}

/// Why a session is closed when an answer does not fit what was sent.
fn unexpected(tag: u8, q: &VecDeque<Pending>) -> String {
    format!(
        "the gateway lost track of this session's protocol state (the target answered {:?} where an answer to {} was due), so it cannot vouch for what would run next",
        tag as char,
        match front(q) {
            None => "nothing".to_string(),
            Some(k) => format!("{k:?}"),
        }
    )
}

/// Settles the client's messages sent during a COPY FROM STDIN when the
/// copy ends. The server ignores Syncs it reads in copy mode; after a
/// completed copy that is every Sync sent before CopyDone. After an error
/// it is those read before the error, which the gateway cannot tell from
/// those read after it (and answered), so it refuses to guess.
fn end_copy(
    q: &mut VecDeque<Pending>,
    completed: bool,
    error: Option<&str>,
) -> Result<Option<Arc<str>>, String> {
    if !matches!(front(q), Some(Kind::Simple | Kind::Extended)) {
        return Err(unexpected(if completed { b'C' } else { b'E' }, q));
    }
    let end = q.iter().position(|p| matches!(p.kind, Kind::CopyEnd(_)));
    let region = end.unwrap_or(q.len());
    // An error quoting the client's CopyFail came from it: the server had
    // read everything before it in copy mode, as after a completed copy.
    let failed_by_client = match (end.map(|e| &q[e].kind), error) {
        (Some(Kind::CopyEnd(Some(marker))), Some(message)) => message.contains(&**marker),
        _ => false,
    };
    let marker = match (failed_by_client, end.map(|e| &q[e].kind)) {
        (true, Some(Kind::CopyEnd(Some(m)))) => Some(m.clone()),
        _ => None,
    };
    if completed || failed_by_client {
        if end.is_none() || q.range(1..region).any(|p| !matches!(p.kind, Kind::Sync)) {
            return Err(unexpected(b'C', q));
        }
        // The Syncs and the CopyEnd got no answer of their own.
        q.drain(1..=region);
        return Ok(marker);
    } else if region > 1 {
        return Err(
            "the gateway lost track of this session's protocol state: an error ended a COPY FROM STDIN while the client had already sent a Sync or a command after the COPY, and which of them the server read in copy mode (and ignored) cannot be known"
                .into(),
        );
    }
    Ok(None)
}

/// Whether an error message names a stand-in of a refused command.
fn mentions_stand_in(message: &str) -> bool {
    message.to_ascii_lowercase().contains("sluice_refused")
}

/// What ends a session from outside the server's stream: the client
/// half's fatal errors, and the token's expiry or revocation.
struct Ends<'a> {
    fatal: mpsc::Receiver<Fatal>,
    watch: &'a mut TokenWatch,
    /// Notices for the client (a held statement's), sent between messages.
    notices: mpsc::Receiver<BytesMut>,
}

async fn server_to_client<R, W>(
    mut server: R,
    mut client: W,
    session: &SessionHandle,
    shared: Shared,
    ends: Ends<'_>,
    catalog: Option<&Catalog>,
    bytes_out: &mut u64,
) -> String
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut passthrough = 0usize;
    // Bytes of a withheld message still to drop.
    let mut discard = 0usize;
    let mut copy_in = false;
    let masking = session.masking.clone();
    let mut results = ResultState::default();
    let mut edits = Edits::default();
    let Ends {
        mut fatal,
        watch,
        mut notices,
    } = ends;
    let invalidated = watch.wait();
    tokio::pin!(invalidated);
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            reason = &mut invalidated => {
                let msg = format!("sluice: session closed: {reason}; request a new token to reconnect");
                return close_with_fatal(&mut client, passthrough == 0, "57P01", &msg, reason.to_string(), bytes_out).await;
            }
            Some(f) = fatal.recv() => {
                return close_with_fatal(&mut client, passthrough == 0, f.code, &f.message, f.outcome, bytes_out).await;
            }
            // Only between messages: nothing of a message is out half-sent.
            Some(n) = notices.recv(), if passthrough == 0 => {
                if let Err(e) = client.write_all(&n).await {
                    return format!("client write error: {e}");
                }
                *bytes_out += n.len() as u64;
                continue;
            }
            r = server.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) => return "target closed the connection".into(),
            Ok(_) => {}
            Err(e) => return format!("target read error: {e}"),
        }
        if discard > 0 {
            let d = discard.min(buf.len());
            buf.advance(d);
            discard -= d;
        }
        let mut pos = passthrough.min(buf.len());
        passthrough -= pos;
        while buf.len() - pos >= 5 {
            let tag = buf[pos];
            let len = u32::from_be_bytes([buf[pos + 1], buf[pos + 2], buf[pos + 3], buf[pos + 4]])
                as usize;
            if len < 4 {
                return "protocol error from target".into();
            }
            let total = len + 1;
            let mut followed = Ok(None);
            let mut end = pos + total;
            let whole = server_inspects(tag) || (masking.is_some() && masked_tag(tag));
            if matches!(tag, b'T' | b'n' | b't') && !whole {
                // Only the tag matters: the message streams through.
                followed = on_description(tag, &shared, None).map(|_| None);
            } else if tag == b'E' && total > MAX_INSPECTED {
                // An error echoing a huge value: paired by its SQLSTATE (in
                // the first fields), its text withheld rather than buffered.
                let prefix = 5 + 4096;
                if buf.len() - pos < prefix {
                    buf.reserve(prefix);
                    break;
                }
                let code = crate::wire::error_fields(&buf[pos + 5..pos + prefix])
                    .0
                    .unwrap_or_else(|| "XX000".into());
                let mut withheld = BytesMut::new();
                error_response(
                    &mut withheld,
                    "ERROR",
                    &code,
                    &format!("sluice: the server's error message was {total} bytes, too large to pass through; its text is withheld"),
                    None,
                );
                followed = on_server_message(tag, &withheld[5..], &shared, session, &mut copy_in)
                    .map(|r| Some(r.unwrap_or(withheld)));
                end = buf.len().min(pos + total);
                discard = pos + total - end;
            } else if whole && total > MAX_INSPECTED {
                followed = Err(format!(
                    "the target sent a {total}-byte {:?} message, larger than the gateway inspects or masks",
                    tag as char
                ));
            } else if whole {
                if buf.len() - pos < total {
                    // Grow as bytes arrive, not by what a header claims.
                    buf.reserve((total - (buf.len() - pos)).min(16 * READ_CHUNK));
                    break;
                }
                let body = &buf[pos + 5..pos + total];
                if let Some(m) = &masking {
                    if tag == b'H' {
                        results.copy_under_rules = copy_under_rules(&shared, m, catalog).await;
                        if body.first() == Some(&1) {
                            results.copy_types = copy_types(&shared, catalog).await;
                        }
                    }
                    if tag == b'E' || tag == b'N' {
                        results.withhold_texts = withhold_texts(&shared, m, catalog).await;
                    }
                    if tag == b'T' || (tag == b'D' && results.plans.is_none()) {
                        match result_plans(tag, body, &shared, m, catalog).await {
                            Ok(Some(plans)) => results.plans = Some(plans),
                            Ok(None) => {}
                            Err(e) => followed = Err(e),
                        }
                    }
                }
                followed = match &masking {
                    _ if followed.is_err() => followed,
                    Some(_) if tag == b'T' => Ok(None),
                    Some(_) if tag == b'C' && results.withheld.is_some() => {
                        let why = results.withheld.unwrap_or(WITHHELD_COPY);
                        on_server_message(tag, body, &shared, session, &mut copy_in).map(|_| {
                            let mut e = BytesMut::new();
                            error_response(
                                &mut e,
                                "ERROR",
                                "42501",
                                &format!("sluice: {why}"),
                                None,
                            );
                            Some(e)
                        })
                    }
                    Some(m) if !server_inspects(tag) => {
                        on_result_message(tag, body, &shared, m, &mut results)
                    }
                    // An error echoes values (a failed cast shows what it
                    // could not cast): masked unless it is a refusal's.
                    Some(m) if tag == b'E' => {
                        let withhold = results.withhold_texts;
                        on_server_message(tag, body, &shared, session, &mut copy_in).map(|r| {
                            r.or_else(|| {
                                let mut counts = MaskCounts::default();
                                if withhold {
                                    Some(crate::mask::withheld_error_or_notice(
                                        b'E',
                                        body,
                                        &mut counts,
                                    ))
                                } else {
                                    crate::mask::error_or_notice(m, b'E', body, &mut counts)
                                }
                            })
                        })
                    }
                    Some(m) if tag == b'S' => {
                        on_server_message(tag, body, &shared, session, &mut copy_in).map(|r| {
                            r.or_else(|| {
                                crate::mask::parameter_status(m, body, &mut MaskCounts::default())
                            })
                        })
                    }
                    _ => on_server_message(tag, body, &shared, session, &mut copy_in),
                };
                if matches!(tag, b'C' | b'E' | b's' | b'I' | b'Z') {
                    // The result set (or copy) this described is over.
                    results = ResultState::default();
                }
            }
            match followed {
                Ok(None) => {}
                Ok(Some(replacement)) => edits.0.push((pos, end, replacement)),
                Err(why) => {
                    tracing::error!(session = %session.id, %why, "lost track of the protocol state; closing the session");
                    match edits.write(&mut client, &buf, pos).await {
                        Ok(n) => *bytes_out += n as u64,
                        Err(e) => return format!("client write error: {e}"),
                    }
                    return close_with_fatal(
                        &mut client,
                        true,
                        "08P01",
                        &format!("sluice: {why}; the session is closed"),
                        format!("closed by the gateway: {why}"),
                        bytes_out,
                    )
                    .await;
                }
            }
            if discard > 0 {
                pos = end;
            } else if whole || buf.len() - pos >= total {
                pos += total;
            } else {
                passthrough = total - (buf.len() - pos);
                pos = buf.len();
            }
        }
        if pos > 0 {
            match edits.write(&mut client, &buf, pos).await {
                Ok(n) => *bytes_out += n as u64,
                Err(e) => return format!("client write error: {e}"),
            }
            buf.advance(pos);
        }
    }
}

async fn close_with_fatal<W: AsyncWrite + Unpin>(
    client: &mut W,
    at_boundary: bool,
    code: &str,
    message: &str,
    outcome: String,
    bytes_out: &mut u64,
) -> String {
    // Mid-message, an injected error would corrupt the stream; just close.
    if at_boundary {
        let mut b = BytesMut::new();
        error_response(&mut b, "FATAL", code, message, None);
        if client.write_all(&b).await.is_ok() {
            *bytes_out += b.len() as u64;
        }
        let _ = client.flush().await;
    }
    let _ = client.shutdown().await;
    outcome
}
