//! PostgreSQL wire-format helpers: the startup packet, the few messages the
//! gateway writes itself, and field access in the ones it reads.

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Protocol 3.0.
pub const PROTOCOL_3_0: i32 = 196_608;
/// SSLRequest code.
pub const SSL_REQUEST: i32 = 80_877_103;
/// GSSENCRequest code.
pub const GSSENC_REQUEST: i32 = 80_877_104;
/// CancelRequest code.
pub const CANCEL_REQUEST: i32 = 80_877_102;
/// The largest startup packet accepted, as the server itself does.
const MAX_STARTUP_LEN: usize = 10_000;

/// What a client's first packet asks for.
#[derive(Debug)]
pub enum Startup {
    /// Upgrade to TLS.
    Ssl,
    /// Upgrade to GSSAPI encryption (refused).
    GssEnc,
    /// Cancel the query running on a backend.
    Cancel { pid: i32, key: i32 },
    /// Start a session with these parameters.
    Start {
        minor: u16,
        params: Vec<(String, String)>,
    },
}

/// Why a startup packet was rejected.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The socket failed or closed.
    #[error("connection closed during startup: {0}")]
    Io(#[from] std::io::Error),
    /// The packet is not a valid startup packet.
    #[error("invalid startup packet: {0}")]
    Malformed(String),
    /// A protocol major version other than 3.
    #[error("unsupported frontend protocol {0}.{1}: sluice speaks 3.0")]
    Version(u16, u16),
}

/// Reads and decodes one startup-phase packet.
pub async fn read_startup<S: AsyncRead + Unpin>(s: &mut S) -> Result<Startup, StartupError> {
    let len = s.read_i32().await? as i64;
    if !(8..=MAX_STARTUP_LEN as i64).contains(&len) {
        return Err(StartupError::Malformed(format!("length {len}")));
    }
    let mut body = vec![0u8; len as usize - 4];
    s.read_exact(&mut body).await?;
    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let rest = &body[4..];
    match code {
        SSL_REQUEST if rest.is_empty() => Ok(Startup::Ssl),
        GSSENC_REQUEST if rest.is_empty() => Ok(Startup::GssEnc),
        CANCEL_REQUEST if rest.len() == 8 => Ok(Startup::Cancel {
            pid: i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
            key: i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
        }),
        c if (c >> 16) == 3 => Ok(Startup::Start {
            minor: (c & 0xffff) as u16,
            params: parse_params(rest)?,
        }),
        c if (c >> 16) > 0 && (c >> 16) < 100 => {
            Err(StartupError::Version((c >> 16) as u16, (c & 0xffff) as u16))
        }
        c => Err(StartupError::Malformed(format!("unknown request code {c}"))),
    }
}

fn parse_params(mut b: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut out = Vec::new();
    loop {
        let (name, rest) =
            cstr(b).ok_or_else(|| StartupError::Malformed("unterminated parameter".into()))?;
        if name.is_empty() {
            if !rest.is_empty() {
                return Err(StartupError::Malformed(
                    "data after the parameter list".into(),
                ));
            }
            return Ok(out);
        }
        let (value, rest) =
            cstr(rest).ok_or_else(|| StartupError::Malformed("unterminated value".into()))?;
        out.push((name.to_string(), value.to_string()));
        b = rest;
    }
}

/// Splits a NUL-terminated UTF-8 string off the front of `b`.
pub fn cstr(b: &[u8]) -> Option<(&str, &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    let s = std::str::from_utf8(&b[..end]).ok()?;
    Some((s, &b[end + 1..]))
}

/// Starts a message with its tag and a length placeholder; returns the length's offset.
/// Starts a message: its tag and a length filled in by [`finish`].
pub(crate) fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    at
}

/// Fills in the length of the message [`begin`] started.
pub(crate) fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// An ErrorResponse (or NoticeResponse with tag `N`) with severity, code and message.
pub fn error_response(
    buf: &mut BytesMut,
    severity: &str,
    code: &str,
    message: &str,
    hint: Option<&str>,
) {
    error_response_with_detail(buf, severity, code, message, None, hint)
}

/// An ErrorResponse with a DETAIL field as well.
pub fn error_response_with_detail(
    buf: &mut BytesMut,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    let at = begin(buf, b'E');
    for (field, value) in [
        (b'S', Some(severity)),
        (b'V', Some(severity)),
        (b'C', Some(code)),
        (b'M', Some(message)),
        (b'D', detail),
        (b'H', hint),
    ] {
        if let Some(value) = value {
            buf.put_u8(field);
            // Field values are C strings: a NUL would end them early.
            buf.put_slice(value.replace('\0', " ").as_bytes());
            buf.put_u8(0);
        }
    }
    buf.put_u8(0);
    finish(buf, at);
}

/// A NoticeResponse: a message the client shows without failing anything.
pub fn notice_response(buf: &mut BytesMut, code: &str, message: &str, hint: Option<&str>) {
    let start = buf.len();
    error_response_with_detail(buf, "NOTICE", code, message, None, hint);
    // Same fields as an error; only the tag differs.
    buf[start] = b'N';
}

/// Parse, Bind and Execute of one unnamed statement without parameters, and Sync.
pub fn parse_bind_execute_sync(buf: &mut BytesMut, sql: &str) {
    parse_unnamed(buf, sql);
    bind(buf, "", "");
    execute(buf, "");
    sync(buf);
}

/// Parse of an unnamed statement, without parameter types.
fn parse_unnamed(buf: &mut BytesMut, sql: &str) {
    let at = begin(buf, b'P');
    buf.put_u8(0);
    buf.put_slice(sql.as_bytes());
    buf.put_u8(0);
    buf.put_i16(0);
    finish(buf, at);
}

/// A Sync message.
fn sync(buf: &mut BytesMut) {
    let at = begin(buf, b'S');
    finish(buf, at);
}

/// A simple Query message.
pub fn query(buf: &mut BytesMut, text: &str) {
    let at = begin(buf, b'Q');
    buf.put_slice(text.as_bytes());
    buf.put_u8(0);
    finish(buf, at);
}

/// An Execute message for a portal, with no row limit.
pub fn execute(buf: &mut BytesMut, portal: &str) {
    let at = begin(buf, b'E');
    buf.put_slice(portal.as_bytes());
    buf.put_u8(0);
    buf.put_i32(0);
    finish(buf, at);
}

/// Parse (unnamed, no parameter types), Describe of it, and Sync.
pub fn parse_describe_sync(buf: &mut BytesMut, sql: &str) {
    parse_unnamed(buf, sql);
    let at = begin(buf, b'D');
    buf.put_u8(b'S');
    buf.put_u8(0);
    finish(buf, at);
    sync(buf);
}

/// A CopyFail message.
pub fn copy_fail(buf: &mut BytesMut, reason: &str) {
    let at = begin(buf, b'f');
    buf.put_slice(reason.as_bytes());
    buf.put_u8(0);
    finish(buf, at);
}

/// The same ErrorResponse or NoticeResponse (`tag`) with `from` removed
/// from its text fields.
pub fn without_text(tag: u8, body: &[u8], from: &str) -> BytesMut {
    let mut buf = BytesMut::new();
    let at = begin(&mut buf, tag);
    let mut b = body;
    while let Some((&f, rest)) = b.split_first() {
        if f == 0 {
            break;
        }
        let Some(end) = rest.iter().position(|&c| c == 0) else {
            break;
        };
        let v = String::from_utf8_lossy(&rest[..end]).replace(from, "");
        buf.put_u8(f);
        buf.put_slice(v.as_bytes());
        buf.put_u8(0);
        b = &rest[end + 1..];
    }
    buf.put_u8(0);
    finish(&mut buf, at);
    buf
}

/// A message with a tag and a body.
pub fn message(tag: u8, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(body.len() + 5);
    let at = begin(&mut buf, tag);
    buf.put_slice(body);
    finish(&mut buf, at);
    buf
}

/// A Terminate message.
pub fn terminate(buf: &mut BytesMut) {
    let at = begin(buf, b'X');
    finish(buf, at);
}

/// A Bind message without parameters or result formats.
pub fn bind(buf: &mut BytesMut, portal: &str, statement: &str) {
    let at = begin(buf, b'B');
    for name in [portal, statement] {
        buf.put_slice(name.as_bytes());
        buf.put_u8(0);
    }
    buf.put_i16(0);
    buf.put_i16(0);
    buf.put_i16(0);
    finish(buf, at);
}

/// A FunctionCall message for a function oid, without arguments.
pub fn function_call(buf: &mut BytesMut, oid: u32) {
    let at = begin(buf, b'F');
    buf.put_u32(oid);
    buf.put_i16(0);
    buf.put_i16(0);
    buf.put_i16(0);
    finish(buf, at);
}

/// An Authentication message with the given code and no payload.
pub fn authentication(buf: &mut BytesMut, code: i32) {
    let at = begin(buf, b'R');
    buf.put_i32(code);
    finish(buf, at);
}

/// BackendKeyData.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, key: i32) {
    let at = begin(buf, b'K');
    buf.put_i32(pid);
    buf.put_i32(key);
    finish(buf, at);
}

/// NegotiateProtocolVersion: the newest minor supported and the options not understood.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: i32, unsupported: &[String]) {
    let at = begin(buf, b'v');
    buf.put_i32(minor);
    buf.put_i32(unsupported.len() as i32);
    for o in unsupported {
        buf.put_slice(o.as_bytes());
        buf.put_u8(0);
    }
    finish(buf, at);
}

/// The SQLSTATE (`C` field) and message (`M`) of an ErrorResponse body.
pub fn error_fields(body: &[u8]) -> (Option<String>, Option<String>) {
    let mut code = None;
    let mut message = None;
    let mut b = body;
    while let Some((&field, rest)) = b.split_first() {
        if field == 0 {
            break;
        }
        let Some((value, rest)) = cstr(rest) else {
            break;
        };
        match field {
            b'C' => code = Some(value.to_string()),
            b'M' => message = Some(value.to_string()),
            _ => {}
        }
        b = rest;
    }
    (code, message)
}

/// Rows reported by a CommandComplete tag (`SELECT 5`, `INSERT 0 3`).
pub fn command_rows(tag_body: &[u8]) -> Option<u64> {
    let (tag, _) = cstr(tag_body)?;
    tag.rsplit(' ').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn decodes_startup_and_rejects_garbage() {
        let mut pkt = vec![];
        let body = b"\0\x03\0\0user\0bob\0database\0shop\0\0";
        pkt.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        pkt.extend_from_slice(body);
        match read_startup(&mut &pkt[..]).await.unwrap() {
            Startup::Start { minor: 0, params } => {
                assert_eq!(
                    params,
                    vec![
                        ("user".into(), "bob".into()),
                        ("database".into(), "shop".into())
                    ]
                )
            }
            other => panic!("{other:?}"),
        }
        let huge = 1_000_000i32.to_be_bytes();
        assert!(matches!(
            read_startup(&mut &huge[..]).await,
            Err(StartupError::Malformed(_))
        ));
        let mut unterminated = vec![0, 0, 0, 12, 0, 3, 0, 0];
        unterminated.extend_from_slice(b"user");
        assert!(matches!(
            read_startup(&mut &unterminated[..]).await,
            Err(StartupError::Malformed(_))
        ));
    }

    #[test]
    fn reads_error_fields_and_row_counts() {
        let mut b = BytesMut::new();
        error_response(&mut b, "ERROR", "42P01", "no such table", None);
        assert_eq!(
            error_fields(&b[5..]),
            (Some("42P01".into()), Some("no such table".into()))
        );
        assert_eq!(command_rows(b"INSERT 0 3\0"), Some(3));
        assert_eq!(command_rows(b"SELECT 12\0"), Some(12));
        assert_eq!(command_rows(b"BEGIN\0"), None);
    }
}
