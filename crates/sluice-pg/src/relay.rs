//! The relay between an authenticated client and its target session.
//!
//! Bytes are forwarded in the chunks they arrive in; only message headers
//! are followed, and only the messages that carry commands (Query, Parse,
//! Bind, Execute, ...) or outcomes (CommandComplete, ErrorResponse,
//! ReadyForQuery) are decoded. Every command is recorded durably before the
//! chunk that carries it is forwarded. Buffers are bounded: a slow peer
//! slows its own session down and nobody else's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use sluice_core::{Command, CommandOutcome, SessionHandle, TokenWatch};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::wire::{command_rows, cstr, error_fields, error_response};

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
    CopyEnd,
}

struct Pending {
    kind: Kind,
    seq: u64,
    started: Instant,
    rows: Option<u64>,
    error: Option<String>,
}

type Queue = Arc<Mutex<VecDeque<Pending>>>;

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
    mut watch: TokenWatch,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Send,
    S: AsyncRead + AsyncWrite + Send,
{
    let (client_r, client_w) = tokio::io::split(client);
    let (server_r, server_w) = tokio::io::split(server);
    let queue: Queue = Arc::default();
    let (fatal_tx, fatal_rx) = mpsc::channel(1);
    let mut bytes_in = 0u64;
    let mut bytes_out = 0u64;
    let c2s = client_to_server(
        client_r,
        server_w,
        session,
        queue.clone(),
        fatal_tx,
        &mut bytes_in,
    );
    let s2c = server_to_client(
        server_r,
        client_w,
        session,
        queue.clone(),
        fatal_rx,
        &mut watch,
        &mut bytes_out,
    );
    let outcome = tokio::select! {
        o = c2s => o,
        o = s2c => o,
    };
    let in_flight = queue
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|p| matches!(p.kind, Kind::Simple | Kind::Extended));
    RelayEnd {
        outcome,
        bytes_in,
        bytes_out,
        in_flight,
    }
}

struct ClientState {
    statements: HashMap<String, Arc<str>>,
    portals: HashMap<String, Arc<str>>,
}

/// How many prepared statements, and portals, a session may hold at once.
const MAX_TRACKED: usize = 10_000;

enum Op {
    /// A command that gets a response to pair its outcome with.
    Command(Command, Kind),
    /// A record with no outcome of its own (a named prepare).
    Record(Command),
    Sync,
    CopyEnd,
}

fn decode_client_message(
    tag: u8,
    body: &[u8],
    st: &mut ClientState,
    ops: &mut Vec<Op>,
) -> Result<(), String> {
    let bad = |what: &str| format!("malformed {what} message");
    match tag {
        b'Q' => {
            let (text, _) = cstr(body).ok_or_else(|| bad("Query"))?;
            ops.push(Op::Command(
                command("simple", text.to_string()),
                Kind::Simple,
            ));
        }
        b'P' => {
            let (name, rest) = cstr(body).ok_or_else(|| bad("Parse"))?;
            let (text, _) = cstr(rest).ok_or_else(|| bad("Parse"))?;
            if name.is_empty() {
                st.statements.insert(String::new(), Arc::from(text));
            } else {
                // A named statement is recorded when prepared, so its text is
                // in the log whatever later happens to the name.
                ops.push(Op::Record(command(
                    "prepare",
                    format!("-- prepare {name:?}\n{text}"),
                )));
                // The server refuses to redefine a live name (42P05): keep the
                // text it will actually run.
                if !st.statements.contains_key(name) {
                    if st.statements.len() >= MAX_TRACKED {
                        return Err(format!(
                            "more than {MAX_TRACKED} prepared statements in one session"
                        ));
                    }
                    st.statements.insert(name.to_string(), Arc::from(text));
                }
            }
        }
        b'B' => {
            let (portal, rest) = cstr(body).ok_or_else(|| bad("Bind"))?;
            let (stmt, _) = cstr(rest).ok_or_else(|| bad("Bind"))?;
            let text = st.statements.get(stmt).cloned().unwrap_or_else(|| {
                Arc::from(format!("-- sluice: unknown prepared statement {stmt:?}"))
            });
            if st.portals.len() >= MAX_TRACKED && !st.portals.contains_key(portal) {
                return Err(format!(
                    "more than {MAX_TRACKED} open portals in one session"
                ));
            }
            st.portals.insert(portal.to_string(), text);
        }
        b'E' => {
            let (portal, _) = cstr(body).ok_or_else(|| bad("Execute"))?;
            let text = st
                .portals
                .get(portal)
                .map(|t| t.to_string())
                .unwrap_or_else(|| format!("-- sluice: unknown portal {portal:?}"));
            ops.push(Op::Command(command("extended", text), Kind::Extended));
        }
        b'C' => {
            let (&what, rest) = body.split_first().ok_or_else(|| bad("Close"))?;
            let (name, _) = cstr(rest).ok_or_else(|| bad("Close"))?;
            match what {
                b'S' => st.statements.remove(name),
                _ => st.portals.remove(name),
            };
        }
        b'S' => ops.push(Op::Sync),
        b'c' | b'f' => ops.push(Op::CopyEnd),
        b'F' => {
            let oid = body
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(0);
            // The arguments are part of what runs: keep them (bounded, in hex).
            let args = &body[body.len().min(4)..];
            let shown = &args[..args.len().min(4096)];
            ops.push(Op::Command(
                command(
                    "function-call",
                    format!(
                        "-- function call, oid {oid}, {} argument bytes: {}",
                        args.len(),
                        hex::encode(shown)
                    ),
                ),
                Kind::Simple,
            ));
        }
        _ => {}
    }
    Ok(())
}

fn command(path: &str, text: String) -> Command {
    Command {
        protocol: "postgres".into(),
        path: path.into(),
        text,
        classification: None,
        decision: None,
    }
}

/// Client messages decoded whole; everything else streams through.
fn client_inspects(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P' | b'B' | b'E' | b'C' | b'S' | b'F' | b'X' | b'c' | b'f'
    )
}

async fn client_to_server<R, W>(
    mut client: R,
    mut server: W,
    session: &SessionHandle,
    queue: Queue,
    fatal: mpsc::Sender<Fatal>,
    bytes_in: &mut u64,
) -> String
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut passthrough = 0usize;
    let mut st = ClientState {
        statements: HashMap::new(),
        portals: HashMap::new(),
    };
    let mut ops = Vec::new();
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
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        let n = match client.read_buf(&mut buf).await {
            Ok(0) => return "client disconnected".into(),
            Ok(n) => n,
            Err(e) => return format!("client read error: {e}"),
        };
        *bytes_in += n as u64;
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
                if let Err(e) =
                    decode_client_message(tag, &buf[pos + 5..pos + total], &mut st, &mut ops)
                {
                    return fail(
                        "08P01",
                        format!("sluice: {e}"),
                        "protocol error from client".into(),
                    )
                    .await;
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
                    Op::Command(c, kind) => {
                        commands.push(c);
                        kinds.push(Some(kind));
                    }
                    Op::Record(c) => {
                        commands.push(c);
                        kinds.push(None);
                    }
                    Op::Sync => kinds.push(Some(Kind::Sync)),
                    Op::CopyEnd => kinds.push(Some(Kind::CopyEnd)),
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
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            for kind in kinds {
                let (kind, seq) = match kind {
                    Some(Kind::Sync) => (Kind::Sync, 0),
                    Some(Kind::CopyEnd) => (Kind::CopyEnd, 0),
                    Some(kind) => (kind, seqs.next().unwrap_or(0)),
                    None => {
                        seqs.next();
                        continue;
                    }
                };
                q.push_back(Pending {
                    kind,
                    seq,
                    started: now,
                    rows: None,
                    error: None,
                });
            }
        }
        if pos > 0 {
            if let Err(e) = server.write_all(&buf[..pos]).await {
                return format!("target write error: {e}");
            }
            buf.advance(pos);
        }
        if terminate {
            let _ = server.flush().await;
            return "client terminated".into();
        }
    }
}

/// Server messages decoded whole; everything else (rows, copy data) streams through.
fn server_inspects(tag: u8) -> bool {
    matches!(tag, b'C' | b'E' | b'I' | b's' | b'Z' | b'G')
}

fn complete(session: &SessionHandle, p: Pending, status: &str) {
    if p.seq == 0 {
        return;
    }
    let outcome = CommandOutcome {
        rows: p.rows,
        status: if p.error.is_some() {
            "error".into()
        } else {
            status.into()
        },
        error_code: p.error,
        duration_us: p.started.elapsed().as_micros() as u64,
    };
    session.record_outcome(p.seq, &outcome);
}

fn on_server_message(
    tag: u8,
    body: &[u8],
    queue: &Queue,
    session: &SessionHandle,
    copy_in: &mut bool,
) {
    let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
    if *copy_in && matches!(tag, b'C' | b'E' | b'Z') {
        // The copy is over: drop the Syncs the server ignored during it.
        if let Some(end) = q.iter().position(|p| matches!(p.kind, Kind::CopyEnd)) {
            let mut i = 0;
            q.retain(|p| {
                let keep = i > end || !matches!(p.kind, Kind::Sync | Kind::CopyEnd);
                i += 1;
                keep
            });
            *copy_in = false;
        } else if tag == b'Z' {
            *copy_in = false;
        }
    }
    // A CopyEnd left over from a copy the server already ended carries no response.
    while matches!(q.front().map(|p| &p.kind), Some(Kind::CopyEnd)) {
        q.pop_front();
    }
    match tag {
        b'G' => *copy_in = true,
        b'C' | b'I' | b's' => {
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
                Some(p) if matches!(p.kind, Kind::Simple) => {
                    if let Some(r) = rows {
                        p.rows = Some(p.rows.unwrap_or(0) + r);
                    }
                }
                _ => {}
            }
        }
        b'E' => {
            let code = error_fields(body).0.unwrap_or_else(|| "XX000".into());
            match q.front_mut() {
                Some(p) if matches!(p.kind, Kind::Extended) => {
                    let mut p = q.pop_front().expect("front exists");
                    p.error = Some(code);
                    complete(session, p, "error");
                }
                Some(p) if matches!(p.kind, Kind::Simple) => p.error = Some(code),
                _ => {}
            }
        }
        b'Z' => {
            while let Some(p) = q.pop_front() {
                match p.kind {
                    // An Execute still waiting at Sync was skipped after an error.
                    Kind::Extended => complete(session, p, "skipped"),
                    Kind::Simple => {
                        complete(session, p, "ok");
                        break;
                    }
                    Kind::Sync => break,
                    Kind::CopyEnd => {}
                }
            }
        }
        _ => {}
    }
}

async fn server_to_client<R, W>(
    mut server: R,
    mut client: W,
    session: &SessionHandle,
    queue: Queue,
    mut fatal: mpsc::Receiver<Fatal>,
    watch: &mut TokenWatch,
    bytes_out: &mut u64,
) -> String
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut passthrough = 0usize;
    let mut copy_in = false;
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
            r = server.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) => return "target closed the connection".into(),
            Ok(_) => {}
            Err(e) => return format!("target read error: {e}"),
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
            if server_inspects(tag) && total <= MAX_INSPECTED {
                if buf.len() - pos < total {
                    // Grow as bytes arrive, not by what a header claims.
                    buf.reserve((total - (buf.len() - pos)).min(16 * READ_CHUNK));
                    break;
                }
                on_server_message(
                    tag,
                    &buf[pos + 5..pos + total],
                    &queue,
                    session,
                    &mut copy_in,
                );
                pos += total;
            } else if buf.len() - pos >= total {
                pos += total;
            } else {
                passthrough = total - (buf.len() - pos);
                pos = buf.len();
            }
        }
        if pos > 0 {
            if let Err(e) = client.write_all(&buf[..pos]).await {
                return format!("client write error: {e}");
            }
            *bytes_out += pos as u64;
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
