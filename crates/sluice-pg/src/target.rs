//! The target side: connect to the real server, negotiate TLS per the
//! connection's mode, and log in with the credential only the gateway holds.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use rustls::ClientConfig;
use sluice_core::{Connection, TargetTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire::{cstr, error_fields};
use crate::BoxIo;

/// Why the gateway could not open a session on the target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// TCP connect failed or timed out.
    #[error("cannot reach target {address}: {message}")]
    Connect { address: String, message: String },
    /// TLS negotiation failed.
    #[error("TLS to target failed: {0}")]
    Tls(String),
    /// The target refused the gateway's login.
    #[error("target refused the login: {code} {message}")]
    Auth { code: String, message: String },
    /// The target spoke something unexpected.
    #[error("target protocol error: {0}")]
    Protocol(String),
}

/// A logged-in target session, ready to relay.
pub struct TargetSession {
    /// The stream, TLS or plain.
    pub io: BoxIo,
    /// The backend's process id, for cancellation.
    pub pid: i32,
    /// The backend's cancel key.
    pub key: i32,
    /// ParameterStatus, notices and the final ReadyForQuery, to pass on as they are.
    pub startup_tail: BytesMut,
}

/// Startup parameters a client may pass through to the target. Others
/// (notably `options`, which can set any GUC) are dropped.
pub const FORWARDED_PARAMS: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "extra_float_digits",
    "search_path",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
];

/// Connects and logs in; the whole handshake is bounded by `limit`.
pub async fn connect(
    conn: &Connection,
    tls: Option<&Arc<ClientConfig>>,
    client_params: &[(String, String)],
    limit: Duration,
) -> Result<TargetSession, TargetError> {
    tokio::time::timeout(limit, connect_inner(conn, tls, client_params))
        .await
        .map_err(|_| TargetError::Connect {
            address: conn.address.clone(),
            message: "timed out".into(),
        })?
}

async fn connect_inner(
    conn: &Connection,
    tls: Option<&Arc<ClientConfig>>,
    client_params: &[(String, String)],
) -> Result<TargetSession, TargetError> {
    let mut tcp = TcpStream::connect(&conn.address)
        .await
        .map_err(|e| TargetError::Connect {
            address: conn.address.clone(),
            message: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let mut io: BoxIo = match tls {
        None => Box::new(tcp),
        Some(cfg) => {
            let mut buf = BytesMut::new();
            frontend::ssl_request(&mut buf);
            tcp.write_all(&buf).await.map_err(proto)?;
            match tcp.read_u8().await.map_err(proto)? {
                b'S' => {
                    let name = match conn.tls {
                        TargetTls::VerifyFull => {
                            crate::tls::server_name(conn).map_err(TargetError::Tls)?
                        }
                        // Not verified in these modes; any valid name will do.
                        _ => crate::tls::server_name(conn).unwrap_or_else(|_| {
                            rustls::pki_types::ServerName::try_from("localhost")
                                .expect("static name")
                        }),
                    };
                    let stream = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| TargetError::Tls(e.to_string()))?;
                    Box::new(stream)
                }
                b'N' if conn.tls == TargetTls::Prefer => Box::new(tcp),
                b'N' => {
                    return Err(TargetError::Tls(
                        "the target does not accept TLS, and the connection requires it".into(),
                    ))
                }
                other => {
                    return Err(TargetError::Protocol(format!(
                        "unexpected SSLRequest answer {other:#x}"
                    )))
                }
            }
        }
    };

    let mut params: Vec<(&str, &str)> = vec![("user", &conn.user), ("database", &conn.database)];
    for (k, v) in client_params {
        if FORWARDED_PARAMS.contains(&k.as_str()) {
            params.push((k, v));
        }
    }
    let mut out = BytesMut::new();
    frontend::startup_message(params.iter().copied(), &mut out).map_err(proto)?;
    io.write_all(&out).await.map_err(proto)?;

    let password = || {
        conn.password
            .as_ref()
            .map(|p| p.expose().as_bytes())
            .ok_or_else(|| {
                TargetError::Protocol(
                    "the target asks for a password and the connection has none configured".into(),
                )
            })
    };
    let mut inbuf = BytesMut::with_capacity(8192);
    let mut scram: Option<ScramSha256> = None;
    let mut scram_done = false;
    let mut tail = BytesMut::new();
    let mut key = None;
    loop {
        let (tag, body) = read_message(&mut io, &mut inbuf).await?;
        out.clear();
        match tag {
            b'R' => {
                if body.len() < 4 {
                    return Err(TargetError::Protocol("short authentication message".into()));
                }
                let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let data = &body[4..];
                match code {
                    // A server that skips the SCRAM exchange's final proof
                    // has not shown it knows the password.
                    0 if scram.is_some() && !scram_done => {
                        return Err(TargetError::Protocol("target ended SCRAM authentication without proving its identity".into()))
                    }
                    0 => continue,
                    3 if conn.tls != TargetTls::VerifyFull && !conn.allow_cleartext_password => {
                        return Err(TargetError::Protocol(
                            "the target asked for the password in cleartext; allowed only with tls = \"verify-full\" or allow_cleartext_password = true".into(),
                        ))
                    }
                    3 => frontend::password_message(password()?, &mut out).map_err(proto)?,
                    5 if data.len() == 4 => {
                        let salt = [data[0], data[1], data[2], data[3]];
                        let hashed = md5_hash(conn.user.as_bytes(), password()?, salt);
                        frontend::password_message(hashed.as_bytes(), &mut out).map_err(proto)?
                    }
                    10 => {
                        let mut mechs = data;
                        let mut offered = false;
                        while let Some((m, rest)) = cstr(mechs) {
                            if m.is_empty() {
                                break;
                            }
                            offered |= m == SCRAM_SHA_256;
                            mechs = rest;
                        }
                        if !offered {
                            return Err(TargetError::Protocol(
                                "target offers no SASL mechanism sluice supports".into(),
                            ));
                        }
                        let s = ScramSha256::new(password()?, ChannelBinding::unsupported());
                        frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)
                            .map_err(proto)?;
                        scram = Some(s);
                    }
                    11 => {
                        let s = scram.as_mut().ok_or_else(|| {
                            TargetError::Protocol("SASL continue before start".into())
                        })?;
                        s.update(data).map_err(scram_failed)?;
                        frontend::sasl_response(s.message(), &mut out).map_err(proto)?;
                    }
                    12 => {
                        let s = scram.as_mut().ok_or_else(|| {
                            TargetError::Protocol("SASL final before start".into())
                        })?;
                        // Verifies the server's signature: a target that does not
                        // know the password cannot impersonate the real one.
                        s.finish(data).map_err(scram_failed)?;
                        scram_done = true;
                        continue;
                    }
                    other => {
                        return Err(TargetError::Protocol(format!(
                            "unsupported authentication method {other} requested by target"
                        )))
                    }
                }
                io.write_all(&out).await.map_err(proto)?;
            }
            b'E' => {
                let (code, message) = error_fields(&body);
                return Err(TargetError::Auth {
                    code: code.unwrap_or_else(|| "XX000".into()),
                    message: message.unwrap_or_default(),
                });
            }
            b'K' if body.len() >= 8 => {
                key = Some((
                    i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                    i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
                ));
            }
            b'S' | b'N' | b'Z' => {
                tail.extend_from_slice(&[tag]);
                tail.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
                tail.extend_from_slice(&body);
                if tag == b'Z' {
                    let (pid, key) = key.unwrap_or((0, 0));
                    if !inbuf.is_empty() {
                        return Err(TargetError::Protocol(
                            "unexpected data after ReadyForQuery".into(),
                        ));
                    }
                    return Ok(TargetSession {
                        io,
                        pid,
                        key,
                        startup_tail: tail,
                    });
                }
            }
            b'v' => {} // NegotiateProtocolVersion: we asked for 3.0, nothing to adjust.
            other => {
                return Err(TargetError::Protocol(format!(
                    "unexpected message {:?} during startup",
                    other as char
                )))
            }
        }
    }
}

/// The target's SCRAM messages did not verify: treated as a failed login.
fn scram_failed(e: std::io::Error) -> TargetError {
    TargetError::Auth {
        code: "28P01".into(),
        message: e.to_string(),
    }
}

fn proto(e: std::io::Error) -> TargetError {
    TargetError::Protocol(e.to_string())
}

async fn read_message(io: &mut BoxIo, buf: &mut BytesMut) -> Result<(u8, BytesMut), TargetError> {
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if !(4..=1 << 20).contains(&len) {
                return Err(TargetError::Protocol(format!(
                    "bad startup message length {len}"
                )));
            }
            if buf.len() > len {
                let tag = buf[0];
                buf.advance(5);
                return Ok((tag, buf.split_to(len - 4)));
            }
        }
        if io.read_buf(buf).await.map_err(proto)? == 0 {
            return Err(TargetError::Protocol(
                "target closed the connection during startup".into(),
            ));
        }
    }
}
