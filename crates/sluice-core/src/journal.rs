//! The audit journal: the store's write-ahead log for events.
//!
//! Recording a command must finish before the command is forwarded, and must
//! cost microseconds, not a database commit. So each event is first appended
//! to a local journal file (one `write`, in the operating system once it
//! returns: a gateway crash loses nothing; `audit_sync = "fsync"` also
//! survives power loss), and an ingester moves journaled events into the
//! store's hash chain in batches. The store keeps how far each journal was
//! ingested in the same transaction as the events, so a restart resumes
//! exactly where it stopped: no event is lost or ingested twice.
//!
//! Segment files are `audit-<n>.journal`; each record is a little-endian
//! u32 length followed by the event as JSON.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::audit::EventDraft;
use crate::store::{Store, StoreError};

const SEGMENT_LIMIT: u64 = 64 * 1024 * 1024;
/// JSON escaping can grow a statement sixfold; the relay caps statements
/// well below this / 6.
const MAX_RECORD: usize = 512 * 1024 * 1024;
/// How long the ingester lets events gather before a batch, when nobody waits.
const GATHER: Duration = Duration::from_millis(50);
const BATCH_BYTES: usize = 4 * 1024 * 1024;
const FLUSH_LIMIT: Duration = Duration::from_secs(30);

/// A position in the journal: segment number and byte offset.
pub type Position = (u64, u64);

struct Writer {
    file: File,
    segment: u64,
    len: u64,
}

/// The journal of one gateway.
pub struct Journal {
    dir: PathBuf,
    writer: Mutex<Writer>,
    /// Events that need not precede anything (command outcomes): written with
    /// the next append or by the ingester within a few milliseconds.
    deferred: Mutex<Vec<EventDraft>>,
    fsync: bool,
    wake: Notify,
    ingested: watch::Sender<Position>,
    failed: watch::Sender<Option<String>>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("audit-{n:08}.journal"))
}

fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().to_string();
        if let Some(n) = name
            .strip_prefix("audit-")
            .and_then(|r| r.strip_suffix(".journal"))
        {
            if let Ok(n) = n.parse() {
                out.push(n);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The length of the record whose prefix starts at `pos`, if the prefix is there.
fn record_len(data: &[u8], pos: usize) -> Option<usize> {
    let b = data.get(pos..pos + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Cuts a record torn by a crash off the end of a segment. Such a record's
/// write never returned, so the command it held was never forwarded.
fn trim_torn_tail(path: &Path) -> std::io::Result<()> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut pos = 0usize;
    while let Some(len) = record_len(&data, pos) {
        if len > MAX_RECORD || data.len() - pos - 4 < len {
            break;
        }
        pos += 4 + len;
    }
    if pos < data.len() {
        tracing::warn!(path = %path.display(), at = pos, "trimming a torn journal record left by a crash");
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(pos as u64)?;
    }
    Ok(())
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Journal {
    /// Opens the journal in `dir`, ingests whatever an earlier run left
    /// un-ingested, and starts the ingester.
    pub async fn open(
        dir: &Path,
        gateway_id: &str,
        store: Store,
        fsync: bool,
    ) -> Result<Arc<Journal>, StoreError> {
        let io =
            |e: std::io::Error| StoreError::Other(format!("audit journal {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let start = store.journal_position(gateway_id).await?.unwrap_or((0, 0));
        let mut existing = segments(dir).map_err(io)?;
        existing.retain(|&n| {
            if n < start.0 {
                let _ = std::fs::remove_file(segment_path(dir, n));
                false
            } else {
                true
            }
        });
        let mut last = existing.last().copied().unwrap_or(start.0).max(start.0);
        let current_len = std::fs::metadata(segment_path(dir, last))
            .map(|m| m.len())
            .unwrap_or(0);
        if last == start.0 && current_len < start.1 {
            // The store is ahead of the file (a power loss ate its tail):
            // continue in a fresh segment rather than at a stale offset.
            last += 1;
        }
        let path = segment_path(dir, last);
        trim_torn_tail(&path).map_err(io)?;
        let file = open_append(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let (ingested, _) = watch::channel(start);
        let (failed, _) = watch::channel(None);
        let journal = Arc::new(Journal {
            dir: dir.to_path_buf(),
            deferred: Mutex::new(Vec::new()),
            writer: Mutex::new(Writer {
                file,
                segment: last,
                len,
            }),
            fsync,
            wake: Notify::new(),
            ingested,
            failed,
        });
        let mut ingester = Ingester {
            journal: journal.clone(),
            store,
            gateway_id: gateway_id.to_string(),
            at: start,
        };
        // Catch up before serving, so the store is complete from the start.
        ingester.drain().await?;
        tokio::spawn(ingester.run());
        Ok(journal)
    }

    /// Appends events; when this returns, they survive a gateway crash.
    /// Store outages do not fail appends (the journal holds the events until
    /// the store is back); only a failed journal write does.
    pub fn append(&self, drafts: &[EventDraft]) -> Result<(), StoreError> {
        // An fsync takes milliseconds: tell the runtime this thread blocks,
        // so other sessions move to another worker meanwhile.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if self.fsync && multi_thread {
            tokio::task::block_in_place(|| self.write(drafts))
        } else {
            self.write(drafts)
        }
    }

    fn write(&self, drafts: &[EventDraft]) -> Result<(), StoreError> {
        let deferred =
            std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|p| p.into_inner()));
        if drafts.is_empty() && deferred.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(256 * (drafts.len() + deferred.len()));
        for d in deferred.iter().chain(drafts) {
            let at = buf.len();
            buf.extend_from_slice(&[0; 4]);
            serde_json::to_writer(&mut buf, d).map_err(|e| StoreError::Other(e.to_string()))?;
            let len = buf.len() - at - 4;
            if len > MAX_RECORD {
                return Err(StoreError::Other(format!(
                    "event of {len} bytes exceeds the journal's record limit"
                )));
            }
            buf[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
        }
        let io = |e: std::io::Error| StoreError::Other(format!("audit journal write failed: {e}"));
        {
            let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            if w.len >= SEGMENT_LIMIT {
                let next = w.segment + 1;
                w.file = open_append(&segment_path(&self.dir, next)).map_err(io)?;
                w.segment = next;
                w.len = 0;
            }
            if let Err(e) = w.file.write_all(&buf) {
                // Cut a partial record off, so later records stay readable.
                let _ = w.file.set_len(w.len);
                return Err(io(e));
            }
            if self.fsync {
                w.file.sync_data().map_err(io)?;
            }
            w.len += buf.len() as u64;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Queues an event that must not delay the caller; it is journaled with
    /// the next append, or by the ingester within milliseconds. Only a crash
    /// in that window can lose it, so use it for outcomes, never commands.
    pub fn append_deferred(&self, draft: EventDraft) {
        self.deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(draft);
        self.wake.notify_one();
    }

    fn end(&self) -> Position {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        (w.segment, w.len)
    }

    /// Waits (at most 30 s) until everything appended so far is in the store.
    pub async fn flush(&self) -> Result<(), StoreError> {
        tokio::time::timeout(FLUSH_LIMIT, self.flush_inner())
            .await
            .map_err(|_| StoreError::Other("audit ingestion is behind; try again shortly".into()))?
    }

    async fn flush_inner(&self) -> Result<(), StoreError> {
        self.append(&[])?;
        let target = self.end();
        let mut rx = self.ingested.subscribe();
        let mut failed = self.failed.subscribe();
        loop {
            if *rx.borrow_and_update() >= target {
                return Ok(());
            }
            if let Some(reason) = failed.borrow_and_update().clone() {
                return Err(StoreError::Other(format!(
                    "audit ingestion is failing: {reason}"
                )));
            }
            self.wake.notify_one();
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Err(StoreError::Closed) },
                _ = failed.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

struct Ingester {
    journal: Arc<Journal>,
    store: Store,
    gateway_id: String,
    at: Position,
}

impl Ingester {
    async fn run(mut self) {
        loop {
            self.journal.wake.notified().await;
            // Let a batch gather unless someone is waiting for a flush.
            if self.journal.ingested.receiver_count() == 0 {
                tokio::time::sleep(GATHER).await;
            }
            let mut backoff = Duration::from_millis(100);
            loop {
                match self.drain().await {
                    Ok(()) => {
                        self.journal.failed.send_replace(None);
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "audit ingestion failed; retrying");
                        self.journal.failed.send_replace(Some(e.to_string()));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }

    /// Ingests everything journaled so far.
    async fn drain(&mut self) -> Result<(), StoreError> {
        self.journal.append(&[])?;
        loop {
            let (segment, len) = self.journal.end();
            if self.at.0 < segment {
                // The writer moved on: finish the older segment, then delete it.
                while self.ingest_chunk().await? {}
                let old = self.at.0;
                self.at = (old + 1, 0);
                self.store.ingest(&self.gateway_id, vec![], self.at).await?;
                let _ = std::fs::remove_file(segment_path(&self.journal.dir, old));
                self.journal.ingested.send_replace(self.at);
                continue;
            }
            if self.at.1 >= len {
                self.journal.ingested.send_replace(self.at);
                return Ok(());
            }
            if !self.ingest_chunk().await? {
                // Only a record still being written: its writer wakes us.
                return Ok(());
            }
        }
    }

    /// Ingests the complete records of one chunk from the current position;
    /// returns whether it advanced.
    async fn ingest_chunk(&mut self) -> Result<bool, StoreError> {
        let path = segment_path(&self.journal.dir, self.at.0);
        let io = |e: std::io::Error| StoreError::Other(format!("reading {}: {e}", path.display()));
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(e)),
        };
        let start = self.at.1;
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut data = Vec::new();
        (&mut f)
            .take(BATCH_BYTES as u64)
            .read_to_end(&mut data)
            .map_err(io)?;
        if let Some(len) = record_len(&data, 0) {
            // A record larger than a chunk is read whole.
            let need = (4 + len).saturating_sub(data.len());
            if need > 0 && len <= MAX_RECORD {
                (&mut f)
                    .take(need as u64)
                    .read_to_end(&mut data)
                    .map_err(io)?;
            }
        }
        let mut pos = 0usize;
        let mut batch = Vec::new();
        while let Some(len) = record_len(&data, pos) {
            if len > MAX_RECORD {
                return Err(StoreError::Other(format!(
                    "{}: corrupt record at {}",
                    path.display(),
                    start + pos as u64
                )));
            }
            if data.len() - pos - 4 < len {
                break; // still being written
            }
            let draft: EventDraft =
                serde_json::from_slice(&data[pos + 4..pos + 4 + len]).map_err(|e| {
                    StoreError::Other(format!(
                        "{}: corrupt record at {}: {e}",
                        path.display(),
                        start + pos as u64
                    ))
                })?;
            batch.push(draft);
            pos += 4 + len;
        }
        if batch.is_empty() {
            return Ok(false);
        }
        self.commit(batch, (self.at.0, start + pos as u64)).await?;
        Ok(true)
    }

    async fn commit(&mut self, batch: Vec<EventDraft>, to: Position) -> Result<(), StoreError> {
        self.store
            .ingest(&self.gateway_id, merge_outcomes(batch), to)
            .await?;
        self.at = to;
        self.journal.ingested.send_replace(to);
        Ok(())
    }
}

/// Folds each `command.result` into its `command` event (as `outcome`) when
/// both are in one batch, so the chain holds one event per statement; an
/// outcome whose command was ingested earlier stays an event of its own.
fn merge_outcomes(batch: Vec<EventDraft>) -> Vec<EventDraft> {
    let key =
        |d: &EventDraft, field: &str| Some((d.session_id.clone()?, d.data.get(field)?.as_u64()?));
    let mut commands: HashMap<(String, u64), usize> = HashMap::new();
    let mut out: Vec<EventDraft> = Vec::with_capacity(batch.len());
    for mut d in batch {
        match d.kind.as_str() {
            "command" => {
                if let Some(k) = key(&d, "n") {
                    commands.insert(k, out.len());
                }
            }
            "command.result" => {
                if let Some(&i) = key(&d, "command").and_then(|k| commands.get(&k)) {
                    if let Some(obj) = d.data.as_object_mut() {
                        obj.remove("command");
                    }
                    out[i].data["outcome"] = d.data;
                    continue;
                }
            }
            _ => {}
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(kind: &str, session: &str, data: serde_json::Value) -> EventDraft {
        let mut d = EventDraft::new(kind, data);
        d.session_id = Some(session.into());
        d
    }

    #[test]
    fn outcomes_fold_into_their_command_only_within_a_batch() {
        let batch = vec![
            ev(
                "command.result",
                "s1",
                json!({"command": 1, "status": "ok"}),
            ),
            ev("command", "s1", json!({"n": 2, "text": "SELECT 2"})),
            ev("command", "s2", json!({"n": 2, "text": "SELECT 'other'"})),
            ev(
                "command.result",
                "s1",
                json!({"command": 2, "status": "error", "error_code": "22012"}),
            ),
        ];
        let merged = merge_outcomes(batch);
        assert_eq!(merged.len(), 3);
        assert_eq!(
            merged[0].kind, "command.result",
            "its command was in an earlier batch"
        );
        assert_eq!(
            merged[1].data["outcome"],
            json!({"status": "error", "error_code": "22012"})
        );
        assert!(
            merged[2].data.get("outcome").is_none(),
            "another session's command is untouched"
        );
    }
}
