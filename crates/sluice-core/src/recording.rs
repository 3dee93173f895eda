//! Session recordings as asciicast v2 files
//! (<https://docs.asciinema.org/manual/asciicast/v2/>), so they play in the
//! stock `asciinema play` and asciinema-player: a JSON header line, then one
//! `[seconds, code, data]` line per event.
//!
//! The writer hashes everything it writes, so the audit record can name
//! the file's SHA-256 without reading it back.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// What a recording's header line says about the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CastHeader {
    /// Terminal columns.
    pub width: u32,
    /// Terminal rows.
    pub height: u32,
    /// Start of the recording, Unix seconds.
    pub timestamp: i64,
    /// A title for players.
    pub title: Option<String>,
    /// The client's `TERM`.
    pub term: Option<String>,
}

/// The header line as asciicast v2 spells it.
#[derive(Serialize, Deserialize)]
struct HeaderLine {
    version: u32,
    width: u32,
    height: u32,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    env: Option<HeaderEnv>,
}

#[derive(Serialize, Deserialize)]
struct HeaderEnv {
    #[serde(rename = "TERM", default, skip_serializing_if = "Option::is_none")]
    term: Option<String>,
}

/// What a finished recording is, for the audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingSummary {
    /// The file.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    /// The file's size.
    pub bytes: u64,
    /// Time from creation to finish.
    pub duration_ms: u64,
    /// Whether events were dropped because the size limit was reached.
    pub truncated: bool,
}

/// Writes one session's recording: buffered, hashed as it goes, bounded in
/// size.
pub struct CastWriter {
    file: BufWriter<File>,
    hasher: Sha256,
    path: PathBuf,
    bytes: u64,
    max_bytes: u64,
    started: Instant,
    truncated: bool,
    /// An unfinished UTF-8 character at the end of the last output event.
    pending_output: Vec<u8>,
    /// The same for input.
    pending_input: Vec<u8>,
}

impl CastWriter {
    /// Creates `dir/<name>.cast` (dir created if missing, file mode 0600,
    /// never overwrite an existing file).
    pub fn create(
        dir: &Path,
        name: &str,
        header: &CastHeader,
        max_bytes: u64,
    ) -> io::Result<CastWriter> {
        // The name comes from a session id, but a path in it must never
        // place the file elsewhere.
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("recording name {name:?} is not a plain file name"),
            ));
        }
        create_dir(dir)?;
        let path = dir.join(format!("{name}.cast"));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path)?;
        let mut writer = CastWriter {
            file: BufWriter::new(file),
            hasher: Sha256::new(),
            path,
            bytes: 0,
            max_bytes,
            started: Instant::now(),
            truncated: false,
            pending_output: Vec::new(),
            pending_input: Vec::new(),
        };
        let line = HeaderLine {
            version: 2,
            width: header.width,
            height: header.height,
            timestamp: Some(header.timestamp),
            title: header.title.clone(),
            env: header
                .term
                .clone()
                .map(|term| HeaderEnv { term: Some(term) }),
        };
        let mut text = serde_json::to_string(&line).map_err(io::Error::other)?;
        text.push('\n');
        writer.write_raw(text.as_bytes())?;
        Ok(writer)
    }

    /// Records terminal output (`o`).
    pub fn output(&mut self, data: &[u8]) -> io::Result<()> {
        let text = take_utf8(&mut self.pending_output, data);
        self.event('o', &text)
    }

    /// Records terminal input (`i`).
    pub fn input(&mut self, data: &[u8]) -> io::Result<()> {
        let text = take_utf8(&mut self.pending_input, data);
        self.event('i', &text)
    }

    /// Records a terminal resize (`r`).
    pub fn resize(&mut self, cols: u32, rows: u32) -> io::Result<()> {
        self.event('r', &format!("{cols}x{rows}"))
    }

    /// Records a marker (`m`), a point players can jump to.
    pub fn marker(&mut self, label: &str) -> io::Result<()> {
        self.event('m', label)
    }

    /// Flushes and closes; returns path, sha256 (hex) of the file bytes,
    /// size, duration.
    pub fn finish(mut self) -> io::Result<RecordingSummary> {
        // A character cut off at the very end cannot be completed any more.
        for (kind, pending) in [
            ('o', std::mem::take(&mut self.pending_output)),
            ('i', std::mem::take(&mut self.pending_input)),
        ] {
            if !pending.is_empty() {
                self.event(kind, &String::from_utf8_lossy(&pending))?;
            }
        }
        let duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        Ok(RecordingSummary {
            path: self.path,
            sha256: hex::encode(self.hasher.finalize()),
            bytes: self.bytes,
            duration_ms,
            truncated: self.truncated,
        })
    }

    fn event(&mut self, kind: char, data: &str) -> io::Result<()> {
        if self.truncated || data.is_empty() {
            return Ok(());
        }
        let time = self.started.elapsed().as_secs_f64();
        let line = event_line(time, kind, data)?;
        if self.bytes + line.len() as u64 > self.max_bytes {
            // Never fail the session for the limit: say where the
            // recording stops and drop the rest.
            self.truncated = true;
            tracing::warn!(path = %self.path.display(), "recording size limit reached; further events dropped");
            let note = event_line(time, 'm', "recording truncated: size limit reached")?;
            return self.write_raw(note.as_bytes());
        }
        self.write_raw(line.as_bytes())
    }

    fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        // Each event reaches the file as it happens (not only when the
        // buffer fills): a gateway that dies keeps what was recorded.
        self.file.flush()
    }
}

fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// One event line: `[seconds, "code", "data"]` and a newline.
fn event_line(time: f64, kind: char, data: &str) -> io::Result<String> {
    let code = serde_json::to_string(&kind.to_string()).map_err(io::Error::other)?;
    let data = serde_json::to_string(data).map_err(io::Error::other)?;
    Ok(format!("[{time:.6}, {code}, {data}]\n"))
}

/// Decodes `pending` + `data` as UTF-8: invalid bytes become U+FFFD, and an
/// unfinished character at the end stays in `pending` for the next event.
fn take_utf8(pending: &mut Vec<u8>, data: &[u8]) -> String {
    let joined;
    let bytes = if pending.is_empty() {
        data
    } else {
        pending.extend_from_slice(data);
        joined = std::mem::take(pending);
        &joined[..]
    };
    let mut text = String::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match std::str::from_utf8(&bytes[at..]) {
            Ok(s) => {
                text.push_str(s);
                break;
            }
            Err(e) => {
                let valid = at + e.valid_up_to();
                text.push_str(std::str::from_utf8(&bytes[at..valid]).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        text.push('\u{FFFD}');
                        at = valid + n;
                    }
                    None => {
                        *pending = bytes[valid..].to_vec();
                        break;
                    }
                }
            }
        }
    }
    text
}

/// A recording read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Cast {
    /// The header line.
    pub header: CastHeader,
    /// The events, in file order.
    pub events: Vec<CastEvent>,
}

/// One event of a recording.
#[derive(Debug, Clone, PartialEq)]
pub struct CastEvent {
    /// Seconds since the start.
    pub time: f64,
    /// `o` output, `i` input, `r` resize, `m` marker.
    pub kind: char,
    /// The output or input text, `COLSxROWS`, or the marker's label.
    pub data: String,
}

/// Parses an asciicast v2 recording; errors name the line.
pub fn read_cast(text: &str) -> Result<Cast, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty());
    let (n, first) = lines.next().ok_or("empty recording: no header line")?;
    let head: HeaderLine =
        serde_json::from_str(first).map_err(|e| format!("line {n}: bad header: {e}"))?;
    if head.version != 2 {
        return Err(format!(
            "line {n}: asciicast version {} (only version 2 is read)",
            head.version
        ));
    }
    let header = CastHeader {
        width: head.width,
        height: head.height,
        timestamp: head.timestamp.unwrap_or(0),
        title: head.title,
        term: head.env.and_then(|e| e.term),
    };
    let mut events = Vec::new();
    for (n, line) in lines {
        let (time, code, data): (f64, String, String) = serde_json::from_str(line)
            .map_err(|e| format!("line {n}: bad event (want [seconds, code, data]): {e}"))?;
        let mut chars = code.chars();
        let kind = match (chars.next(), chars.next()) {
            (Some(c), None) => c,
            _ => return Err(format!("line {n}: event code {code:?} is not one letter")),
        };
        if !time.is_finite() || time < 0.0 {
            return Err(format!("line {n}: bad event time {time}"));
        }
        events.push(CastEvent { time, kind, data });
    }
    Ok(Cast { header, events })
}

/// Plays output events to `out` with their timing divided by `speed`, idle
/// gaps capped at `max_idle` (after speed); resizes, input and markers are
/// not shown (a resize cannot be applied to a terminal portably).
pub async fn replay<W: AsyncWrite + Unpin>(
    cast: &Cast,
    speed: f64,
    max_idle: Duration,
    out: &mut W,
) -> io::Result<()> {
    if !speed.is_finite() || speed <= 0.0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("replay speed {speed} must be a positive number"),
        ));
    }
    let mut last = 0.0f64;
    for event in cast.events.iter().filter(|e| e.kind == 'o') {
        let gap = ((event.time - last) / speed).max(0.0);
        last = last.max(event.time);
        let wait = Duration::try_from_secs_f64(gap)
            .unwrap_or(max_idle)
            .min(max_idle);
        if !wait.is_zero() {
            out.flush().await?;
            tokio::time::sleep(wait).await;
        }
        out.write_all(event.data.as_bytes()).await?;
    }
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system's temporary one.
    fn temp_dir() -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-recording-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn header() -> CastHeader {
        CastHeader {
            width: 120,
            height: 40,
            timestamp: 1_764_000_000,
            title: Some("alice@db-1".into()),
            term: Some("xterm-256color".into()),
        }
    }

    #[test]
    fn round_trip_with_hash_and_escapes() {
        let dir = temp_dir().join("nested");
        let mut w = CastWriter::create(&dir, "s1", &header(), 1 << 20).unwrap();
        let euro = "\u{20ac}".as_bytes();
        w.output(b"$ echo \"hi\"\r\n\x1b[1mbold\x1b[0m\t\\")
            .unwrap();
        w.output(&[b'a', euro[0]]).unwrap();
        w.output(&[euro[1], euro[2], b'b', 0xff]).unwrap();
        w.input(b"ls\r").unwrap();
        w.resize(80, 24).unwrap();
        w.marker("command 1").unwrap();
        let s = w.finish().unwrap();

        let bytes = std::fs::read(&s.path).unwrap();
        assert_eq!(s.path, dir.join("s1.cast"));
        assert_eq!(s.bytes, bytes.len() as u64);
        assert_eq!(s.sha256, hex::encode(Sha256::digest(&bytes)));
        assert!(!s.truncated);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&s.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("{\"version\":2,"), "{text}");
        assert!(
            text.contains("\\u001b[1mbold"),
            "control bytes escaped: {text}"
        );
        let cast = read_cast(&text).unwrap();
        assert_eq!(cast.header, header());
        let events: Vec<(char, &str)> = cast
            .events
            .iter()
            .map(|e| (e.kind, e.data.as_str()))
            .collect();
        assert_eq!(
            events,
            vec![
                ('o', "$ echo \"hi\"\r\n\x1b[1mbold\x1b[0m\t\\"),
                ('o', "a"),
                ('o', "\u{20ac}b\u{FFFD}"),
                ('i', "ls\r"),
                ('r', "80x24"),
                ('m', "command 1"),
            ]
        );
        assert!(cast.events.windows(2).all(|w| w[0].time <= w[1].time));
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn refuses_to_overwrite_or_escape_the_directory() {
        let dir = temp_dir();
        CastWriter::create(&dir, "s", &header(), 1000)
            .unwrap()
            .finish()
            .unwrap();
        let err = CastWriter::create(&dir, "s", &header(), 1000)
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        for bad in ["../s", "a/b", "..", ""] {
            let err = CastWriter::create(&dir, bad, &header(), 1000)
                .err()
                .unwrap();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncates_at_the_size_limit_with_one_marker() {
        let dir = temp_dir();
        let mut w = CastWriter::create(&dir, "big", &header(), 600).unwrap();
        for _ in 0..100 {
            w.output(b"0123456789012345678901234567890123456789\r\n")
                .unwrap();
        }
        w.marker("late").unwrap();
        let s = w.finish().unwrap();
        assert!(s.truncated);
        let text = std::fs::read_to_string(&s.path).unwrap();
        assert_eq!(s.sha256, hex::encode(Sha256::digest(text.as_bytes())));
        let cast = read_cast(&text).unwrap();
        let last = cast.events.last().unwrap();
        assert_eq!(
            (last.kind, last.data.as_str()),
            ('m', "recording truncated: size limit reached")
        );
        assert_eq!(cast.events.iter().filter(|e| e.kind == 'm').count(), 1);
        assert!(cast.events.len() > 3);
        assert!(s.bytes <= 600 + 80, "{}", s.bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_errors_name_the_line() {
        let head = r#"{"version": 2, "width": 80, "height": 24}"#;
        assert!(read_cast("").unwrap_err().contains("header"));
        assert!(read_cast("nope").unwrap_err().starts_with("line 1:"));
        let v1 = r#"{"version": 1, "width": 80, "height": 24}"#;
        assert!(read_cast(v1).unwrap_err().contains("version 1"));
        let bad = format!("{head}\n[0.5, \"o\", \"a\"]\n\n[1.0, \"o\"]\n");
        assert!(read_cast(&bad).unwrap_err().starts_with("line 4:"), "{bad}");
        let bad = format!("{head}\n[0.5, \"oo\", \"a\"]\n");
        assert!(read_cast(&bad).unwrap_err().starts_with("line 2:"));
        let bad = format!("{head}\n[-1, \"o\", \"a\"]\n");
        assert!(read_cast(&bad).unwrap_err().starts_with("line 2:"));
        let ok = read_cast(&format!("{head}\n[0.25, \"o\", \"x\"]")).unwrap();
        assert_eq!(ok.header.timestamp, 0);
        assert_eq!(ok.header.term, None);
        assert_eq!(ok.events[0].time, 0.25);
    }

    #[tokio::test]
    async fn replay_writes_the_output_in_order() {
        let cast = Cast {
            header: header(),
            events: vec![
                CastEvent {
                    time: 0.1,
                    kind: 'o',
                    data: "one ".into(),
                },
                CastEvent {
                    time: 0.5,
                    kind: 'i',
                    data: "typed".into(),
                },
                CastEvent {
                    time: 0.9,
                    kind: 'r',
                    data: "80x24".into(),
                },
                CastEvent {
                    time: 1.2,
                    kind: 'o',
                    data: "two \u{20ac} ".into(),
                },
                CastEvent {
                    time: 900.0,
                    kind: 'm',
                    data: "mark".into(),
                },
                CastEvent {
                    time: 1000.0,
                    kind: 'o',
                    data: "three".into(),
                },
            ],
        };
        let mut out = Vec::new();
        let started = Instant::now();
        replay(&cast, 1000.0, Duration::from_millis(50), &mut out)
            .await
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "one two \u{20ac} three");
        assert!(started.elapsed() < Duration::from_secs(5), "idle capped");

        let mut sink = Vec::new();
        assert!(replay(&cast, 0.0, Duration::ZERO, &mut sink).await.is_err());
    }
}
