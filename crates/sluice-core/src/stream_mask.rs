//! Masking a byte stream (terminal output, a command's stdout and stderr)
//! that arrives in arbitrary chunks, so that a value split across chunks is
//! still found. Protocol-neutral: adapters push what the target sends and
//! forward what comes back.
//!
//! How it works: whole lines are released (up to the last `\n` or `\r`;
//! `\r` counts because progress bars redraw with it and no detector's value
//! contains one), the unfinished tail is held until its line ends, the
//! caller flushes (a pause: a prompt must not wait for a newline) or it
//! grows past a cap. A private key block is held from its `BEGIN` line to
//! its `END` line so the detector sees it whole.
//!
//! Residual risks, by design:
//! - A value cut by a `flush` (or by the long-line cap) whose first part
//!   alone is not recognisable has that first part released. The rest of
//!   the line is then masked with the released part as context, so the
//!   remainder of such a value is still hidden; only the head leaks. The cap
//!   cut is placed after whitespace that no built-in value contains (not
//!   after a digit, capital letter or `)`, which cards, phones and IBANs
//!   are spaced with) to make this unlikely.
//! - Values that span lines (a `password:` key with its value on the next
//!   line) are not found: lines are masked one at a time. Private key blocks
//!   are the exception handled here.
//! - Terminal escape sequences between the characters of a value (colours,
//!   cursor moves) hide it from the detectors; they are out of scope.
//! - Non-UTF-8 bytes pass unchanged; a value is found only inside a valid
//!   UTF-8 run.

use std::sync::Arc;

use crate::detect::Kind;
use crate::mask::Style;
use crate::masking::{MaskCounts, Masking};

/// A line without an end is released (masked) once this much is held.
const LINE_CAP: usize = 16 * 1024;
/// An unterminated private key block is given up on (masked from its
/// `BEGIN` to the end of what is held) past this size; real keys are a few
/// KiB.
const PEM_CAP: usize = 64 * 1024;
/// How much of an unfinished, already released line is kept as context for
/// what follows it.
const CONTEXT_CAP: usize = 4 * 1024;

/// How much of a dropped unfinished key line is kept to recognise an `END`
/// marker split by a flush.
const PARTIAL_KEEP: usize = 128;

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";

/// Where a private key block forced out early (by a flush or a cap) stands:
/// its marker has been sent, the rest of it is dropped as it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pem {
    /// Not inside a block.
    Outside,
    /// Dropping the rest of the `BEGIN` line.
    Header,
    /// Dropping body lines until `END` or a line that is not key material.
    Body,
}

/// Masks a byte stream chunk by chunk, holding back what may be the start
/// of a value that the next chunk completes.
pub struct StreamMasker {
    masking: Arc<Masking>,
    held: Vec<u8>,
    /// The released part of the current unfinished line, as received.
    ctx_raw: Vec<u8>,
    /// `ctx_raw` masked, as if it had been released in one piece.
    ctx_out: Vec<u8>,
    /// The kinds found in `ctx_raw`, already counted.
    ctx_kinds: Vec<Kind>,
    pem: Pem,
    /// The unfinished body line dropped by a flush, to judge it whole.
    pem_partial: Vec<u8>,
    /// The line ending of the key block being dropped.
    eol: &'static [u8],
    counts: MaskCounts,
}

impl StreamMasker {
    /// A stream masker using the gateway's masking.
    pub fn new(masking: Arc<Masking>) -> StreamMasker {
        StreamMasker {
            masking,
            held: Vec::new(),
            ctx_raw: Vec::new(),
            ctx_out: Vec::new(),
            ctx_kinds: Vec::new(),
            pem: Pem::Outside,
            pem_partial: Vec::new(),
            eol: b"\n",
            counts: MaskCounts::default(),
        }
    }

    /// Masks what can be released now and holds back the unfinished tail.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.pem == Pem::Outside
            && self.held.len() + chunk.len() <= LINE_CAP
            && !chunk.iter().any(|&b| b == b'\n' || b == b'\r')
        {
            // Nothing can be released before a line ends, and a BEGIN marker
            // in the tail is looked for when it is.
            self.held.extend_from_slice(chunk);
            return Vec::new();
        }
        self.held.extend_from_slice(chunk);
        self.drain(false)
    }

    /// Releases everything held back (end of stream, or the stream paused:
    /// a terminal prompt must not wait for a newline).
    pub fn flush(&mut self) -> Vec<u8> {
        self.drain(true)
    }

    /// Releases what is held after a pause, except a trailing run of
    /// characters that could be the first part of a value (a word without
    /// spaces, up to `keep` bytes): a prompt ending in a space or a colon
    /// shows at once, half a token printed before a pause does not.
    /// [`StreamMasker::flush`] releases the rest after a longer pause.
    pub fn flush_settled(&mut self, keep: usize) -> Vec<u8> {
        if self.pem != Pem::Outside {
            return self.flush();
        }
        let run = self
            .held
            .iter()
            .rev()
            .take_while(|&&b| b.is_ascii_alphanumeric() || b >= 0x80 || b"_-+/=.@:%~".contains(&b))
            .count();
        if run == 0 || run > keep {
            return self.flush();
        }
        if run == self.held.len() {
            return Vec::new();
        }
        let tail = self.held.split_off(self.held.len() - run);
        let out = self.drain(true);
        self.held = tail;
        out
    }

    /// Whether something is held back (the caller arms a short timer then
    /// calls flush).
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Values masked so far, by kind (never the values).
    pub fn counts(&self) -> &MaskCounts {
        &self.counts
    }

    fn drain(&mut self, at_flush: bool) -> Vec<u8> {
        let mut held = std::mem::take(&mut self.held);
        let mut out = Vec::with_capacity(held.len());
        let mut pos = 0;
        while pos < held.len() {
            let rest = &held[pos..];
            match self.pem {
                Pem::Header => {
                    let len = line_len(rest);
                    if let Some(end) = find_end(rest, len) {
                        pos += end;
                        self.pem = Pem::Outside;
                    } else {
                        pos += len;
                        if rest[..len].ends_with(b"\n") {
                            self.eol = eol_of(&rest[..len]);
                            self.pem = Pem::Body;
                        }
                    }
                }
                Pem::Body => {
                    let len = line_len(rest);
                    let complete = rest[..len].ends_with(b"\n");
                    // A line cut by an earlier flush is judged whole.
                    let mut line = std::mem::take(&mut self.pem_partial);
                    let before = line.len();
                    line.extend_from_slice(&rest[..len]);
                    if let Some(end) = find_end(&line, line.len()) {
                        pos += end.saturating_sub(before);
                        self.pem = Pem::Outside;
                    } else if key_material(&line, complete) {
                        if complete {
                            self.eol = eol_of(&line);
                            pos += len;
                        } else if at_flush || line.len() > LINE_CAP {
                            let keep = line.len().saturating_sub(PARTIAL_KEEP);
                            self.pem_partial = line[keep..].to_vec();
                            pos += len;
                        } else {
                            self.pem_partial = line[..before].to_vec();
                            break;
                        }
                    } else {
                        // The block ended without its END line; keep the
                        // line structure around the marker.
                        out.extend_from_slice(self.eol);
                        self.pem = Pem::Outside;
                    }
                }
                Pem::Outside => {
                    pos += self.outside(rest, at_flush, &mut out);
                    if self.pem == Pem::Outside {
                        break;
                    }
                }
            }
        }
        held.drain(..pos);
        self.held = held;
        out
    }

    /// Releases what it can of `rest` (outside any forced key block) into
    /// `out`; returns how many bytes it consumed.
    fn outside(&mut self, rest: &[u8], at_flush: bool, out: &mut Vec<u8>) -> usize {
        let in_context = self.begins_in_context(rest);
        let blocks = key_blocks(rest, in_context.is_some());
        if let Some(&(b, None)) = blocks.last() {
            let ls = safe_cut(rest, &blocks, line_start(rest, b));
            let truncated = body_ends_early(rest, b);
            // Part of the marker may have been released already.
            let seen = rest.len() - b + if b == 0 { in_context.unwrap_or(0) } else { 0 };
            if at_flush && seen < BEGIN.len() {
                // Only a prefix of a marker: released, and recognised from
                // the context if the marker goes on (`begins_in_context`).
                self.release(rest, false, out);
                return rest.len();
            }
            if at_flush || rest.len() - ls > PEM_CAP || truncated {
                self.release(&rest[..b], false, out);
                self.force_key_block(out);
                return b;
            }
            self.release(&rest[..ls], true, out);
            return ls;
        }
        let last_end = rest
            .iter()
            .rposition(|&c| c == b'\n' || c == b'\r')
            .map_or(0, |i| i + 1);
        let cut = safe_cut(rest, &blocks, last_end);
        if cut > 0 {
            self.release(&rest[..cut], true, out);
        }
        let tail = &rest[cut..];
        if tail.is_empty() {
            return cut;
        }
        if at_flush {
            self.release(tail, false, out);
            return rest.len();
        }
        if tail.len() > LINE_CAP && blocks.is_empty() {
            let at = cap_cut(tail);
            self.release(&tail[..at], false, out);
            return cut + at;
        }
        cut
    }

    /// How many bytes of a `BEGIN` marker that goes on in `rest` were
    /// released at the end of the unfinished line (a flush fell inside it).
    fn begins_in_context(&self, rest: &[u8]) -> Option<usize> {
        if self.ctx_raw.is_empty() {
            return None;
        }
        let n = (1..BEGIN.len())
            .rev()
            .find(|&n| self.ctx_raw.ends_with(&BEGIN[..n]))?;
        let mut probe = BEGIN[..n].to_vec();
        probe.extend_from_slice(&rest[..rest.len().min(96)]);
        matches!(key_blocks(&probe, false).first(), Some(&(0, _))).then_some(n)
    }

    /// Sends the marker for a key block that cannot be held whole and
    /// starts dropping the rest of it.
    fn force_key_block(&mut self, out: &mut Vec<u8>) {
        // Always the plain marker: a partial rendering would show the end of
        // a truncated block, which is key material.
        let marker = self
            .masking
            .masker
            .render_as(Style::Redact, &Kind::Secret, "");
        out.extend_from_slice(marker.as_bytes());
        self.counts.add(&Kind::Secret);
        self.clear_context();
        self.pem = Pem::Header;
    }

    /// Masks `raw` (with the released part of its line as context) into
    /// `out`; `ends_line` when `raw` finishes the line.
    fn release(&mut self, raw: &[u8], ends_line: bool, out: &mut Vec<u8>) {
        if raw.is_empty() {
            return;
        }
        if self.ctx_raw.is_empty() {
            let kinds = match self.mask_bytes(raw) {
                Some((masked, kinds)) => {
                    out.extend_from_slice(&masked);
                    if !ends_line {
                        self.ctx_out = masked;
                    }
                    kinds
                }
                None => {
                    out.extend_from_slice(raw);
                    if !ends_line {
                        self.ctx_out = raw.to_vec();
                    }
                    Vec::new()
                }
            };
            for k in &kinds {
                self.counts.add(k);
            }
            if !ends_line {
                self.ctx_raw = raw.to_vec();
                self.ctx_kinds = kinds;
                self.trim_context();
            }
            return;
        }
        let mut joined = std::mem::take(&mut self.ctx_raw);
        joined.extend_from_slice(raw);
        let (masked, kinds) = self
            .mask_bytes(&joined)
            .unwrap_or_else(|| (joined.clone(), Vec::new()));
        // What was released of this line stays released; send the masked
        // line from where it starts to differ from that, so the rest of a
        // value cut by the release is hidden too.
        let same = masked
            .iter()
            .zip(&self.ctx_out)
            .take_while(|(a, b)| a == b)
            .count();
        out.extend_from_slice(&masked[same..]);
        let mut before = std::mem::take(&mut self.ctx_kinds);
        for k in &kinds {
            match before.iter().position(|b| b == k) {
                Some(i) => {
                    before.swap_remove(i);
                }
                None => self.counts.add(k),
            }
        }
        if ends_line {
            self.clear_context();
        } else {
            self.ctx_raw = joined;
            self.ctx_out = masked;
            self.ctx_kinds = kinds;
            self.trim_context();
        }
    }

    fn trim_context(&mut self) {
        if self.ctx_raw.len() <= CONTEXT_CAP {
            return;
        }
        let mut at = self.ctx_raw.len() - CONTEXT_CAP;
        while at < self.ctx_raw.len() && self.ctx_raw[at] & 0xC0 == 0x80 {
            at += 1;
        }
        let tail = self.ctx_raw[at..].to_vec();
        let (out, kinds) = self
            .mask_bytes(&tail)
            .unwrap_or_else(|| (tail.clone(), Vec::new()));
        self.ctx_raw = tail;
        self.ctx_out = out;
        self.ctx_kinds = kinds;
    }

    fn clear_context(&mut self) {
        self.ctx_raw.clear();
        self.ctx_out.clear();
        self.ctx_kinds.clear();
    }

    /// Masks each valid UTF-8 run of `raw`; `None` when nothing was found.
    fn mask_bytes(&self, raw: &[u8]) -> Option<(Vec<u8>, Vec<Kind>)> {
        let masker = &self.masking.masker;
        if let Ok(text) = std::str::from_utf8(raw) {
            return masker
                .mask_text(text)
                .map(|(masked, kinds)| (masked.into_bytes(), kinds));
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut kinds = Vec::new();
        for run in raw.utf8_chunks() {
            match masker.mask_text(run.valid()) {
                Some((masked, k)) => {
                    out.extend_from_slice(masked.as_bytes());
                    kinds.extend(k);
                }
                None => out.extend_from_slice(run.valid().as_bytes()),
            }
            out.extend_from_slice(run.invalid());
        }
        (!kinds.is_empty()).then_some((out, kinds))
    }
}

/// Length of the first line of `b`, its `\n` included (all of `b` when it
/// has none).
fn line_len(b: &[u8]) -> usize {
    b.iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |i| i + 1)
}

/// Where the line holding `at` starts (after a `\n` or `\r`).
fn line_start(b: &[u8], at: usize) -> usize {
    b[..at]
        .iter()
        .rposition(|&c| c == b'\n' || c == b'\r')
        .map_or(0, |i| i + 1)
}

/// Whether `label` (between `BEGIN `/`END ` and the closing dashes) names a
/// private key, as the detector's pattern requires.
fn private_key_label(label: &[u8]) -> bool {
    label.windows(11).any(|w| w == b"PRIVATE KEY")
}

fn label_byte(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' '
}

/// A private key marker (`BEGIN` or `END`) at `at`: `Some(Some(end))` when
/// complete (`end` just past its closing dashes), `Some(None)` when `b` ends
/// before it could be told apart, `None` when it is not one.
fn marker_at(b: &[u8], at: usize, kind: &[u8]) -> Option<Option<usize>> {
    let head = &b[at..];
    if head.len() < kind.len() {
        return kind.starts_with(head).then_some(None);
    }
    if !head.starts_with(kind) {
        return None;
    }
    let label_end = kind.len()
        + head[kind.len()..]
            .iter()
            .take_while(|&&c| label_byte(c))
            .count();
    let after = &head[label_end..];
    if after.len() < DASHES.len() {
        return DASHES.starts_with(after).then_some(None);
    }
    (after.starts_with(DASHES) && private_key_label(&head[kind.len()..label_end]))
        .then_some(Some(at + label_end + DASHES.len()))
}

/// The private key blocks in `b`, in order: `(begin, Some(end))` for whole
/// ones, `(begin, None)` last for one whose end has not arrived (or whose
/// `BEGIN` marker is itself cut off at the end of `b`). `at_start` marks a
/// `BEGIN` whose first dashes were already released.
fn key_blocks(b: &[u8], at_start: bool) -> Vec<(usize, Option<usize>)> {
    let mut blocks = Vec::new();
    let mut from = 0;
    if at_start {
        match find_end(b, b.len()) {
            Some(e) => {
                blocks.push((0, Some(e)));
                from = e;
            }
            None => return vec![(0, None)],
        }
    }
    while let Some(i) = find_from(b, from, b"-----") {
        match marker_at(b, i, BEGIN) {
            Some(Some(head_end)) => match find_end(&b[head_end..], b.len() - head_end) {
                Some(e) => {
                    blocks.push((i, Some(head_end + e)));
                    from = head_end + e;
                }
                None => {
                    blocks.push((i, None));
                    break;
                }
            },
            Some(None) => {
                blocks.push((i, None));
                break;
            }
            None => from = i + 1,
        }
    }
    blocks
}

fn find_from(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Just past the first complete `END` marker of a private key in
/// `b[..limit]`.
fn find_end(b: &[u8], limit: usize) -> Option<usize> {
    let b = &b[..limit];
    let mut from = 0;
    while let Some(i) = find_from(b, from, END) {
        if let Some(Some(end)) = marker_at(b, i, END) {
            return Some(end);
        }
        from = i + 1;
    }
    None
}

/// Moves a release point back so it does not fall inside a whole key block.
fn safe_cut(b: &[u8], blocks: &[(usize, Option<usize>)], mut cut: usize) -> usize {
    for &(begin, end) in blocks.iter().rev() {
        if begin < cut && end.is_some_and(|e| cut < e) {
            cut = line_start(b, begin);
        }
    }
    cut
}

/// Whether the block beginning at `begin` is followed by a whole line that
/// is not key material: the output stopped mid-key (`head -3 key.pem`).
fn body_ends_early(b: &[u8], begin: usize) -> bool {
    let Some(nl) = b[begin..].iter().position(|&c| c == b'\n') else {
        return false;
    };
    let mut at = begin + nl + 1;
    while at < b.len() {
        let len = line_len(&b[at..]);
        let line = &b[at..at + len];
        if !line.ends_with(b"\n") {
            return false;
        }
        if !key_material(line, true) {
            return true;
        }
        at += len;
    }
    false
}

/// Whether a line can belong to a key block's body: base64, an armour
/// header, blank, or (unfinished) the start of an `END` marker.
fn key_material(line: &[u8], complete: bool) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
    {
        return true;
    }
    const HEADERS: [&[u8]; 5] = [
        b"Proc-Type:",
        b"DEK-Info:",
        b"Version:",
        b"Comment:",
        b"Hash:",
    ];
    if HEADERS.iter().any(|h| line.starts_with(h)) {
        return true;
    }
    !complete && (END.starts_with(line) || line.starts_with(END))
}

/// Where to cut a line too long to hold: after the last whitespace that no
/// built-in value contains (not after a digit, capital or `)`), else all of
/// it but an unfinished UTF-8 character.
fn cap_cut(b: &[u8]) -> usize {
    let safe = (b.len() / 2..b.len()).rev().find(|&i| {
        b[i].is_ascii_whitespace()
            && !(b[i - 1].is_ascii_digit() || b[i - 1].is_ascii_uppercase() || b[i - 1] == b')')
    });
    if let Some(i) = safe {
        return i + 1;
    }
    // Keep an unfinished UTF-8 character for the next chunk.
    for back in 1..=3.min(b.len()) {
        let c = b[b.len() - back];
        if c >= 0xC0 {
            let need = if c >= 0xF0 {
                4
            } else if c >= 0xE0 {
                3
            } else {
                2
            };
            return if back < need { b.len() - back } else { b.len() };
        }
        if c & 0xC0 != 0x80 {
            break;
        }
    }
    b.len()
}

/// The line ending of `line`: `\r\n` or `\n`.
fn eol_of(line: &[u8]) -> &'static [u8] {
    if line.ends_with(b"\r\n") {
        b"\r\n"
    } else {
        b"\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Detectors;
    use crate::mask::Masker;
    use std::collections::BTreeMap;

    fn masker() -> StreamMasker {
        StreamMasker::new(Arc::new(Masking::new(
            Masker::new(
                Detectors::default(),
                BTreeMap::new(),
                Style::Redact,
                [3; 32],
            ),
            Vec::new(),
        )))
    }

    /// Pushes `chunks`, flushes, and returns everything released.
    fn run(m: &mut StreamMasker, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            out.extend(m.push(c));
        }
        out.extend(m.flush());
        assert!(!m.holding());
        out
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAtopsecretkeymaterial\nQWERTYUIOPASDFGHJKLzxcvbnm0123456789\n-----END RSA PRIVATE KEY-----";

    #[test]
    fn a_value_split_at_every_byte_is_masked() {
        let cases = [
            ("email ", "jane.doe@example.com", Kind::Email),
            ("card ", "4111 1111 1111 1111", Kind::Card),
            ("aws ", "AKIAIOSFODNN7EXAMPLE", Kind::Secret),
            (
                "export API_KEY=",
                "sk_live_abcdef1234567890XYZ",
                Kind::Secret,
            ),
        ];
        for (prefix, value, kind) in cases {
            let line = format!("{prefix}{value} and more\r\nnext line\n");
            let bytes = line.as_bytes();
            for cut in 0..=bytes.len() {
                let mut m = masker();
                let out = run(&mut m, &[&bytes[..cut], &bytes[cut..]]);
                let text = String::from_utf8(out).unwrap();
                assert!(!text.contains(value), "cut {cut}: {text:?}");
                assert!(text.contains("[redacted:"), "cut {cut}: {text:?}");
                assert!(text.ends_with(" and more\r\nnext line\n"), "{text:?}");
                let mut want = MaskCounts::default();
                want.add(&kind);
                assert_eq!(m.counts(), &want, "cut {cut}: {text:?}");
            }
        }
    }

    #[test]
    fn a_key_block_split_into_many_chunks_is_masked_whole() {
        let text = format!("$ cat id_rsa\n{PEM}\n$ ");
        let bytes = text.as_bytes();
        for size in [1, 2, 3, 7, 16, 40, 1000] {
            let mut m = masker();
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            let out = String::from_utf8(run(&mut m, &chunks)).unwrap();
            assert_eq!(out, "$ cat id_rsa\n[redacted:secret]\n$ ", "size {size}");
            assert_eq!(m.counts().0.get("secret"), Some(&1));
        }
    }

    #[test]
    fn a_key_block_cut_by_a_flush_stays_hidden() {
        let text = format!("{PEM}\nafter\n");
        let bytes = text.as_bytes();
        for cut in 1..bytes.len() {
            let mut m = masker();
            let mut out = m.push(&bytes[..cut]);
            out.extend(m.flush());
            out.extend(m.push(&bytes[cut..]));
            out.extend(m.flush());
            for secret in ["MIIEow", "topsecret", "QWERTY", "0123456789"] {
                assert!(
                    !contains(&out, secret),
                    "cut {cut}: {:?}",
                    String::from_utf8_lossy(&out)
                );
            }
            assert!(
                contains(&out, "after\n"),
                "cut {cut}: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    #[test]
    fn a_truncated_key_block_is_hidden_and_the_output_after_it_shown() {
        let mut m = masker();
        let out = run(
            &mut m,
            &[
                b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n",
                b"done, exit 0\n",
            ],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[redacted:secret]\ndone, exit 0\n"
        );

        let mut m = masker();
        let mut out = m.push(b"-----BEGIN PRIVATE KEY-----\n");
        let body = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n".repeat(PEM_CAP / 30);
        out.extend(m.push(&body));
        assert!(!m.holding() || m.held.len() < 64, "given up past the cap");
        out.extend(m.push(b"-----END PRIVATE KEY-----\nok\n"));
        assert_eq!(String::from_utf8(out).unwrap(), "[redacted:secret]\nok\n");
    }

    #[test]
    fn a_settled_flush_keeps_what_may_start_a_value() {
        let mut m = masker();
        let mut out = m.push(b"key id AKIAIOSFOD");
        out.extend(m.flush_settled(256));
        assert_eq!(out, b"key id ");
        assert!(m.holding());
        out.extend(m.push(b"NN7EXAMPLE\n"));
        assert!(
            !contains(&out, "AKIAIOSFOD"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        // A prompt ending in a space shows at once.
        let mut m = masker();
        assert!(m.push(b"Continue? ").is_empty());
        assert_eq!(m.flush_settled(256), b"Continue? ");
        assert!(!m.holding());
    }

    #[test]
    fn flush_releases_the_unfinished_line_masked() {
        let mut m = masker();
        assert!(m.push(b"line one\nuser jane@example.com $ ").len() == 9);
        assert!(m.holding());
        assert_eq!(m.flush(), b"user [redacted:email] $ ");
        assert!(!m.holding());
        assert_eq!(m.flush(), b"");
    }

    #[test]
    fn the_rest_of_a_value_cut_by_a_flush_is_masked() {
        let mut m = masker();
        // The head alone is not recognisable: it is released as is.
        assert_eq!(m.push(b"token ghp_aBcDeF"), b"");
        assert_eq!(m.flush(), b"token ghp_aBcDeF");
        let second = m.push(b"gHiJkLmNoPqRsTuVwXyZ0123456789 done\n");
        assert_eq!(second, b"[redacted:secret] done\n");
        assert_eq!(m.counts().0.get("secret"), Some(&1));
        // A value found in the head already is not counted twice.
        assert_eq!(m.push(b"API_KEY=sk_live_abc"), b"");
        assert_eq!(m.flush(), b"API_KEY=[redacted:secret]");
        assert_eq!(m.push(b"def1234567890\n"), b"\n");
        assert_eq!(m.counts().0.get("secret"), Some(&2));
    }

    #[test]
    fn binary_bytes_pass_unchanged_and_valid_runs_are_masked() {
        let mut m = masker();
        let mut bin: Vec<u8> = (0..=255u8).collect();
        bin.extend_from_slice(b"\n\xff\xfe");
        assert_eq!(run(&mut m, &[&bin[..100], &bin[100..]]), bin);
        assert!(m.counts().is_empty());

        let mut m = masker();
        let out = run(&mut m, &[b"\xff\x00mail jane@example.com\xfe\n"]);
        assert_eq!(out, b"\xff\x00mail [redacted:email]\xfe\n");
    }

    #[test]
    fn a_split_multibyte_character_survives() {
        let text = "caf\u{e9} \u{1F600} jane@example.com \u{4e2d}\n".as_bytes();
        for cut in 0..=text.len() {
            let mut m = masker();
            let out = run(&mut m, &[&text[..cut], &text[cut..]]);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "caf\u{e9} \u{1F600} [redacted:email] \u{4e2d}\n"
            );
        }
        let mut m = masker();
        let mut out = m.push("\u{1F600}".as_bytes().split_at(2).0);
        out.extend(m.flush());
        out.extend(m.push("\u{1F600}\n".as_bytes().split_at(2).1));
        assert_eq!(String::from_utf8(out).unwrap(), "\u{1F600}\n");
    }

    #[test]
    fn a_long_line_is_released_at_the_cap_without_leaking() {
        let mut m = masker();
        let filler = "word ".repeat(LINE_CAP / 5 - 3);
        let line = format!("{filler}token=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 end\n");
        let bytes = line.as_bytes();
        let mut out = Vec::new();
        for c in bytes.chunks(7) {
            out.extend(m.push(c));
            assert!(m.held.len() <= LINE_CAP + 7);
        }
        out.extend(m.flush());
        assert!(!contains(&out, "aBcDeFgHiJ"));
        assert!(!contains(&out, "0123456789"));
        assert!(out.ends_with(b" end\n"));
    }

    #[test]
    fn counts_and_no_secret_in_the_whole_output() {
        let secrets = [
            "jane@example.com",
            "5555-5555-5555-4444",
            "AKIAIOSFODNN7EXAMPLE",
            "hunter2secret",
            "MIIEowIBAAKCAQEAtopsecretkeymaterial",
        ];
        let text = format!(
            "id 1 jane@example.com\npaid 5555-5555-5555-4444\r\nkey AKIAIOSFODNN7EXAMPLE\nDB_PASSWORD=hunter2secret\n{PEM}\n$ "
        );
        let bytes = text.as_bytes();
        for size in [1, 5, 13, 64, 4096] {
            let mut m = masker();
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            let out = run(&mut m, &chunks);
            for s in secrets {
                assert!(!contains(&out, s), "size {size}: {s}");
            }
            let want: BTreeMap<String, u64> = [
                ("email".into(), 1),
                ("card".into(), 1),
                ("secret".into(), 3),
            ]
            .into();
            assert_eq!(m.counts().0, want, "size {size}");
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 5);
        }
    }

    #[test]
    fn clean_output_is_released_line_by_line_unchanged() {
        let mut m = masker();
        assert_eq!(m.push(b"total 0\ndrwx "), b"total 0\n");
        assert_eq!(m.push(b"root\n"), b"drwx root\n");
        assert!(!m.holding());
        assert!(m.counts().is_empty());
    }

    #[test]
    fn random_chunks_and_flushes_never_leak() {
        let text = format!(
            "ok \u{e9}t\u{e9}\r\nuser jane@example.com\r\n\u{7f}\n{PEM}\r\n----\r\nAKIAIOSFODNN7EXAMPLE\n{PEM}\n$ "
        );
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(b"\xfe\x80 tail 5555-5555-5555-4444\n");
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for round in 0..400 {
            let with_flushes = round % 2 == 1;
            let mut m = masker();
            let mut out = Vec::new();
            let mut trace = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let n = 1 + next(24);
                let end = (at + n).min(bytes.len());
                out.extend(m.push(&bytes[at..end]));
                if with_flushes && next(4) == 0 {
                    trace.extend(b"|F|");
                    out.extend(m.flush());
                }
                trace.extend(&bytes[at..end]);
                trace.extend(b"|");
                at = end;
            }
            out.extend(m.flush());
            // Key material never shows, whatever the flushes.
            for s in ["MIIEow", "topsecret", "QWERTY", "zxcvbnm"] {
                assert!(
                    !contains(&out, s),
                    "round {round}: {s} {:?}\n{:?}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&trace)
                );
            }
            if !with_flushes {
                for s in ["jane@", "AKIAIOSF", "5555-5555"] {
                    assert!(!contains(&out, s), "round {round}: {s}");
                }
                let want: BTreeMap<String, u64> = [
                    ("email".into(), 1),
                    ("card".into(), 1),
                    ("secret".into(), 3),
                ]
                .into();
                assert_eq!(m.counts().0, want, "round {round}");
            }
            assert!(contains(&out, "ok \u{e9}t\u{e9}\r\n"));
            assert!(contains(&out, "\r\n----\r\n"), "round {round}");
            assert!(out.ends_with(b"\xfe\x80 tail [redacted:card]\n") || with_flushes);
        }
    }

    /// Not a timed test: run with `--ignored --release` to see the cost of
    /// clean output.
    #[test]
    #[ignore]
    fn clean_throughput() {
        let mut m = masker();
        let chunk =
            "2024-01-01 12:00:00 INFO request served in 12 ms path=/api/v1/items status 200\n"
                .repeat(400);
        let start = std::time::Instant::now();
        let mut n = 0;
        for _ in 0..200 {
            n += m.push(chunk.as_bytes()).len();
        }
        let secs = start.elapsed().as_secs_f64();
        println!("{:.1} MB/s", n as f64 / secs / 1e6);
    }
}
