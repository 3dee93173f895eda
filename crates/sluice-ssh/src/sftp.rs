//! SFTP version 3 observer for the relayed `sftp` subsystem channel.
//!
//! The gateway does not terminate SFTP: it forwards the client's and the
//! server's bytes unchanged and only looks at them. That is why this module
//! has no client or server logic, only framing ([`Framer`]), decoding of the
//! few fields policy and records need ([`decode_request`],
//! [`decode_response`]), the policy reading of a request ([`describe`]),
//! a refusal the gateway can answer with itself ([`status_packet`]), and
//! transfer accounting ([`Transfers`]).
//!
//! The protocol is draft-ietf-secsh-filexfer-02 as OpenSSH's `sftp-server`
//! speaks it, including its extensions; `scp` in OpenSSH 9 uses it too.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use bytes::{Buf, Bytes, BytesMut};
use sluice_core::Class;

/// Status code: success.
pub const FX_OK: u32 = 0;
/// Status code: end of file or of a directory listing.
pub const FX_EOF: u32 = 1;
/// Status code: the file does not exist.
pub const FX_NO_SUCH_FILE: u32 = 2;
/// Status code: permission denied (what the gateway answers on a refusal).
pub const FX_PERMISSION_DENIED: u32 = 3;
/// Status code: generic failure.
pub const FX_FAILURE: u32 = 4;
/// Status code: the packet was malformed.
pub const FX_BAD_MESSAGE: u32 = 5;
/// Status code: no connection to the server.
pub const FX_NO_CONNECTION: u32 = 6;
/// Status code: the connection to the server was lost.
pub const FX_CONNECTION_LOST: u32 = 7;
/// Status code: the server does not support the operation.
pub const FX_OP_UNSUPPORTED: u32 = 8;

const FXP_INIT: u8 = 1;
const FXP_VERSION: u8 = 2;
const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_LSTAT: u8 = 7;
const FXP_FSTAT: u8 = 8;
const FXP_SETSTAT: u8 = 9;
const FXP_FSETSTAT: u8 = 10;
const FXP_OPENDIR: u8 = 11;
const FXP_READDIR: u8 = 12;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_REALPATH: u8 = 16;
const FXP_STAT: u8 = 17;
const FXP_RENAME: u8 = 18;
const FXP_READLINK: u8 = 19;
const FXP_SYMLINK: u8 = 20;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;
const FXP_NAME: u8 = 104;
const FXP_ATTRS: u8 = 105;
const FXP_EXTENDED: u8 = 200;
const FXP_EXTENDED_REPLY: u8 = 201;

const ATTR_SIZE: u32 = 0x01;
const ATTR_UIDGID: u32 = 0x02;
const ATTR_PERMISSIONS: u32 = 0x04;
const ATTR_ACMODTIME: u32 = 0x08;
const ATTR_EXTENDED: u32 = 0x8000_0000;

const FXF_READ: u32 = 0x01;
const FXF_WRITE: u32 = 0x02;
const FXF_APPEND: u32 = 0x04;
const FXF_CREAT: u32 = 0x08;
const FXF_TRUNC: u32 = 0x10;
const FXF_EXCL: u32 = 0x20;

/// Why an SFTP byte stream or packet could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SftpError {
    /// A length prefix of zero: not even a type byte follows.
    #[error("SFTP packet with zero length")]
    EmptyPacket,
    /// A length prefix above the limit; the stream cannot be trusted after it.
    #[error("SFTP packet of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// The announced length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The packet body ended before a field it must contain.
    #[error("malformed SFTP packet: truncated {field}")]
    Truncated {
        /// The field that did not fit.
        field: &'static str,
    },
}

/// Splits one direction's byte stream into whole SFTP packets (4-byte big-endian length + body).
///
/// Bytes are copied once, into an internal buffer; whole packets are then
/// split off it without another copy, so they can be forwarded as they are.
/// After an error the stream has lost its framing and the channel should be
/// closed: the same error is returned again on every later call.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    max_packet: usize,
}

impl Framer {
    /// A framer refusing packets whose length field exceeds `max_packet` bytes.
    pub fn new(max_packet: usize) -> Framer {
        Framer {
            buf: BytesMut::new(),
            max_packet,
        }
    }

    /// Appends bytes read from the channel.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet returned as a packet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes whatever is buffered, whole packets or not (to pass a stream
    /// on as it is once it no longer frames).
    pub fn take_buffered(&mut self) -> bytes::Bytes {
        self.buf.split().freeze()
    }

    /// Next whole packet INCLUDING its 4-byte length prefix (so it can be forwarded as is), or None until more data arrives.
    pub fn next_packet(&mut self) -> Result<Option<Bytes>, SftpError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len == 0 {
            return Err(SftpError::EmptyPacket);
        }
        if len > self.max_packet {
            return Err(SftpError::TooLong {
                len,
                max: self.max_packet,
            });
        }
        let total = len + 4;
        if self.buf.len() < total {
            // Growing once to the whole packet avoids repeated reallocation
            // (and re-copying) while a large WRITE or DATA trickles in.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(total).freeze()))
    }
}

/// Bounds-checked reader over a packet body.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, SftpError> {
        if self.buf.is_empty() {
            return Err(SftpError::Truncated { field });
        }
        Ok(self.buf.get_u8())
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, SftpError> {
        if self.buf.len() < 4 {
            return Err(SftpError::Truncated { field });
        }
        Ok(self.buf.get_u32())
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, SftpError> {
        if self.buf.len() < 8 {
            return Err(SftpError::Truncated { field });
        }
        Ok(self.buf.get_u64())
    }

    /// An SFTP string borrowed from the packet, so payloads are never copied.
    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], SftpError> {
        let len = self.u32(field)? as usize;
        if self.buf.len() < len {
            return Err(SftpError::Truncated { field });
        }
        let (s, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(s)
    }

    /// Paths that are not UTF-8 come out with U+FFFD in place of the bad
    /// bytes; that replacement character is the mark, and policy matches on
    /// this lossy form.
    fn text(&mut self, field: &'static str) -> Result<String, SftpError> {
        Ok(String::from_utf8_lossy(self.bytes(field)?).into_owned())
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Checks and skips an ATTRS block: nothing in it matters to policy,
    /// but sftp-server refuses a request whose attributes do not parse, so
    /// neither should the gateway pass one as well-formed.
    fn skip_attrs(&mut self) -> Result<(), SftpError> {
        let flags = self.u32("attribute flags")?;
        if flags & ATTR_SIZE != 0 {
            self.u64("attribute size")?;
        }
        if flags & ATTR_UIDGID != 0 {
            self.u32("attribute uid")?;
            self.u32("attribute gid")?;
        }
        if flags & ATTR_PERMISSIONS != 0 {
            self.u32("attribute permissions")?;
        }
        if flags & ATTR_ACMODTIME != 0 {
            self.u32("attribute atime")?;
            self.u32("attribute mtime")?;
        }
        if flags & ATTR_EXTENDED != 0 {
            let count = self.u32("extended attribute count")?;
            // Each pair takes at least 8 bytes, so a lying count runs out
            // of packet quickly.
            for _ in 0..count {
                self.bytes("extended attribute name")?;
                self.bytes("extended attribute value")?;
            }
        }
        Ok(())
    }
}

/// A client request, decoded (body after the length prefix).
///
/// Paths are exactly as sent, decoded lossily when not UTF-8 (U+FFFD marks
/// the bytes that were not), and never normalised: `..` and symbolic links
/// are resolved on the target, so a gateway cannot know where a path lands.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// SSH_FXP_INIT: the client's protocol version.
    Init {
        /// Version the client speaks (3 for OpenSSH).
        version: u32,
    },
    /// SSH_FXP_OPEN with its open flags spelled out.
    Open {
        /// Request id.
        id: u32,
        /// File to open.
        path: String,
        /// SSH_FXF_READ.
        read: bool,
        /// SSH_FXF_WRITE.
        write: bool,
        /// SSH_FXF_APPEND.
        append: bool,
        /// SSH_FXF_CREAT.
        create: bool,
        /// SSH_FXF_TRUNC.
        truncate: bool,
        /// SSH_FXF_EXCL.
        exclusive: bool,
    },
    /// SSH_FXP_CLOSE of a file or directory handle.
    Close {
        /// Request id.
        id: u32,
        /// Handle being closed.
        handle: Vec<u8>,
    },
    /// SSH_FXP_READ from an open file.
    Read {
        /// Request id.
        id: u32,
        /// File handle.
        handle: Vec<u8>,
        /// Offset in the file.
        offset: u64,
        /// Bytes asked for.
        len: u32,
    },
    /// SSH_FXP_WRITE to an open file; the data itself is not kept.
    Write {
        /// Request id.
        id: u32,
        /// File handle.
        handle: Vec<u8>,
        /// Offset in the file.
        offset: u64,
        /// Length of the data carried.
        len: u32,
    },
    /// SSH_FXP_OPENDIR.
    Opendir {
        /// Request id.
        id: u32,
        /// Directory to list.
        path: String,
    },
    /// SSH_FXP_READDIR.
    Readdir {
        /// Request id.
        id: u32,
        /// Directory handle.
        handle: Vec<u8>,
    },
    /// SSH_FXP_REMOVE of a file.
    Remove {
        /// Request id.
        id: u32,
        /// File to remove.
        path: String,
    },
    /// SSH_FXP_MKDIR.
    Mkdir {
        /// Request id.
        id: u32,
        /// Directory to create.
        path: String,
    },
    /// SSH_FXP_RMDIR.
    Rmdir {
        /// Request id.
        id: u32,
        /// Directory to remove.
        path: String,
    },
    /// SSH_FXP_REALPATH: canonicalisation, done by the server.
    Realpath {
        /// Request id.
        id: u32,
        /// Path to resolve.
        path: String,
    },
    /// SSH_FXP_STAT (follows symbolic links).
    Stat {
        /// Request id.
        id: u32,
        /// Path to stat.
        path: String,
    },
    /// SSH_FXP_LSTAT (does not follow symbolic links).
    Lstat {
        /// Request id.
        id: u32,
        /// Path to stat.
        path: String,
    },
    /// SSH_FXP_FSTAT of an open handle.
    Fstat {
        /// Request id.
        id: u32,
        /// Handle to stat.
        handle: Vec<u8>,
    },
    /// SSH_FXP_SETSTAT: mode, owner, times or size of a path.
    Setstat {
        /// Request id.
        id: u32,
        /// Path changed.
        path: String,
    },
    /// SSH_FXP_FSETSTAT: attributes of an open handle.
    Fsetstat {
        /// Request id.
        id: u32,
        /// Handle changed.
        handle: Vec<u8>,
    },
    /// SSH_FXP_RENAME (OpenSSH refuses to replace an existing file).
    Rename {
        /// Request id.
        id: u32,
        /// Old name.
        from: String,
        /// New name.
        to: String,
    },
    /// SSH_FXP_READLINK.
    Readlink {
        /// Request id.
        id: u32,
        /// Link to read.
        path: String,
    },
    /// SSH_FXP_SYMLINK, decoded in OpenSSH's argument order.
    Symlink {
        /// Request id.
        id: u32,
        /// The symbolic link created.
        link: String,
        /// What the link points to.
        target: String,
    },
    /// SSH_FXP_EXTENDED with the paths the known extensions name.
    Extended {
        /// Request id.
        id: u32,
        /// Extension name, e.g. `posix-rename@openssh.com`.
        name: String,
        /// Paths in the order sent: posix-rename and hardlink give (old, new),
        /// statvfs, lsetstat and expand-path one path; handle-based and
        /// unknown extensions none.
        paths: Vec<String>,
    },
    /// Any other packet type a client sent.
    Other {
        /// Packet type byte.
        kind: u8,
        /// The id, when the packet is long enough to carry one.
        id: Option<u32>,
    },
}

impl Request {
    /// The request id, absent for INIT and for unknown packets too short to carry one.
    pub fn id(&self) -> Option<u32> {
        match self {
            Request::Init { .. } => None,
            Request::Other { id, .. } => *id,
            Request::Open { id, .. }
            | Request::Close { id, .. }
            | Request::Read { id, .. }
            | Request::Write { id, .. }
            | Request::Opendir { id, .. }
            | Request::Readdir { id, .. }
            | Request::Remove { id, .. }
            | Request::Mkdir { id, .. }
            | Request::Rmdir { id, .. }
            | Request::Realpath { id, .. }
            | Request::Stat { id, .. }
            | Request::Lstat { id, .. }
            | Request::Fstat { id, .. }
            | Request::Setstat { id, .. }
            | Request::Fsetstat { id, .. }
            | Request::Rename { id, .. }
            | Request::Readlink { id, .. }
            | Request::Symlink { id, .. }
            | Request::Extended { id, .. } => Some(*id),
        }
    }
}

/// Decodes a client request from a packet body (the packet without its length prefix).
///
/// Only the fields policy and accounting need are read; attributes and
/// trailing data are skipped, and WRITE data is measured, not copied.
pub fn decode_request(body: &[u8]) -> Result<Request, SftpError> {
    let mut r = Reader::new(body);
    let kind = r.u8("packet type")?;
    if kind == FXP_INIT {
        return Ok(Request::Init {
            version: r.u32("version")?,
        });
    }
    let known = matches!(kind, FXP_OPEN..=FXP_SYMLINK | FXP_EXTENDED);
    if !known {
        let id = r.u32("id").ok();
        return Ok(Request::Other { kind, id });
    }
    let id = r.u32("request id")?;
    let req = match kind {
        FXP_OPEN => {
            let path = r.text("path")?;
            let flags = r.u32("open flags")?;
            r.skip_attrs()?;
            Request::Open {
                id,
                path,
                read: flags & FXF_READ != 0,
                write: flags & FXF_WRITE != 0,
                append: flags & FXF_APPEND != 0,
                create: flags & FXF_CREAT != 0,
                truncate: flags & FXF_TRUNC != 0,
                exclusive: flags & FXF_EXCL != 0,
            }
        }
        FXP_CLOSE => Request::Close {
            id,
            handle: r.bytes("handle")?.to_vec(),
        },
        FXP_READ => Request::Read {
            id,
            handle: r.bytes("handle")?.to_vec(),
            offset: r.u64("offset")?,
            len: r.u32("length")?,
        },
        FXP_WRITE => {
            let handle = r.bytes("handle")?.to_vec();
            let offset = r.u64("offset")?;
            let len = r.bytes("data")?.len() as u32;
            Request::Write {
                id,
                handle,
                offset,
                len,
            }
        }
        FXP_LSTAT => Request::Lstat {
            id,
            path: r.text("path")?,
        },
        FXP_FSTAT => Request::Fstat {
            id,
            handle: r.bytes("handle")?.to_vec(),
        },
        FXP_SETSTAT => {
            let path = r.text("path")?;
            r.skip_attrs()?;
            Request::Setstat { id, path }
        }
        FXP_FSETSTAT => {
            let handle = r.bytes("handle")?.to_vec();
            r.skip_attrs()?;
            Request::Fsetstat { id, handle }
        }
        FXP_OPENDIR => Request::Opendir {
            id,
            path: r.text("path")?,
        },
        FXP_READDIR => Request::Readdir {
            id,
            handle: r.bytes("handle")?.to_vec(),
        },
        FXP_REMOVE => Request::Remove {
            id,
            path: r.text("path")?,
        },
        FXP_MKDIR => {
            let path = r.text("path")?;
            r.skip_attrs()?;
            Request::Mkdir { id, path }
        }
        FXP_RMDIR => Request::Rmdir {
            id,
            path: r.text("path")?,
        },
        FXP_REALPATH => Request::Realpath {
            id,
            path: r.text("path")?,
        },
        FXP_STAT => Request::Stat {
            id,
            path: r.text("path")?,
        },
        FXP_RENAME => Request::Rename {
            id,
            from: r.text("old path")?,
            to: r.text("new path")?,
        },
        FXP_READLINK => Request::Readlink {
            id,
            path: r.text("path")?,
        },
        FXP_SYMLINK => {
            // OpenSSH sends the arguments in the reverse of the draft's order
            // (target first, then the link; see OpenSSH's PROTOCOL file), and
            // every deployed client and server kept it for compatibility.
            let target = r.text("symlink target")?;
            let link = r.text("symlink path")?;
            Request::Symlink { id, link, target }
        }
        _ => {
            let name = r.text("extension name")?;
            let paths = match name.as_str() {
                "posix-rename@openssh.com" | "hardlink@openssh.com" => {
                    vec![r.text("old path")?, r.text("new path")?]
                }
                "statvfs@openssh.com" | "expand-path@openssh.com" => vec![r.text("path")?],
                "lsetstat@openssh.com" => {
                    let path = r.text("path")?;
                    r.skip_attrs()?;
                    vec![path]
                }
                _ => Vec::new(),
            };
            Request::Extended { id, name, paths }
        }
    };
    Ok(req)
}

/// A server response, decoded (body after the length prefix).
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// SSH_FXP_VERSION: the version the server speaks.
    Version {
        /// Server version (3 for OpenSSH).
        version: u32,
    },
    /// SSH_FXP_STATUS: outcome of a request.
    Status {
        /// Request id answered.
        id: u32,
        /// Status code, e.g. [`FX_OK`].
        code: u32,
        /// Server's message, empty when it sent none.
        message: String,
    },
    /// SSH_FXP_HANDLE: a file or directory was opened.
    Handle {
        /// Request id answered.
        id: u32,
        /// The opaque handle.
        handle: Vec<u8>,
    },
    /// SSH_FXP_DATA: the answer to a READ; only its length is kept.
    Data {
        /// Request id answered.
        id: u32,
        /// Bytes of data carried.
        len: u32,
    },
    /// SSH_FXP_NAME: names from READDIR, REALPATH, READLINK.
    Name {
        /// Request id answered.
        id: u32,
        /// Number of names.
        count: u32,
    },
    /// SSH_FXP_ATTRS: attributes from a STAT family request.
    Attrs {
        /// Request id answered.
        id: u32,
    },
    /// SSH_FXP_EXTENDED_REPLY.
    ExtendedReply {
        /// Request id answered.
        id: u32,
    },
    /// Any other packet type a server sent.
    Other {
        /// Packet type byte.
        kind: u8,
    },
}

impl Response {
    /// The request id answered, absent for VERSION and unknown packets.
    pub fn id(&self) -> Option<u32> {
        match self {
            Response::Version { .. } | Response::Other { .. } => None,
            Response::Status { id, .. }
            | Response::Handle { id, .. }
            | Response::Data { id, .. }
            | Response::Name { id, .. }
            | Response::Attrs { id }
            | Response::ExtendedReply { id } => Some(*id),
        }
    }
}

/// Decodes a server response from a packet body (the packet without its length prefix).
pub fn decode_response(body: &[u8]) -> Result<Response, SftpError> {
    let mut r = Reader::new(body);
    let kind = r.u8("packet type")?;
    let resp = match kind {
        FXP_VERSION => Response::Version {
            version: r.u32("version")?,
        },
        FXP_STATUS => {
            let id = r.u32("request id")?;
            let code = r.u32("status code")?;
            // Some old servers end the packet after the code; the message
            // (and language tag) are then simply absent.
            let message = if r.is_empty() {
                String::new()
            } else {
                r.text("status message")?
            };
            Response::Status { id, code, message }
        }
        FXP_HANDLE => Response::Handle {
            id: r.u32("request id")?,
            handle: r.bytes("handle")?.to_vec(),
        },
        FXP_DATA => Response::Data {
            id: r.u32("request id")?,
            len: r.bytes("data")?.len() as u32,
        },
        FXP_NAME => Response::Name {
            id: r.u32("request id")?,
            count: r.u32("name count")?,
        },
        FXP_ATTRS => Response::Attrs {
            id: r.u32("request id")?,
        },
        FXP_EXTENDED_REPLY => Response::ExtendedReply {
            id: r.u32("request id")?,
        },
        _ => Response::Other { kind },
    };
    Ok(resp)
}

/// A whole SSH_FXP_STATUS packet (with length prefix) the gateway sends the client itself, e.g. to refuse a request.
pub fn status_packet(id: u32, code: u32, message: &str) -> Vec<u8> {
    const LANG: &[u8] = b"en";
    let body_len = 1 + 4 + 4 + 4 + message.len() + 4 + LANG.len();
    let mut out = Vec::with_capacity(4 + body_len);
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.push(FXP_STATUS);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(&(LANG.len() as u32).to_be_bytes());
    out.extend_from_slice(LANG);
    out
}

/// Lowercase name of a status code, matching OpenSSH's messages.
pub fn status_name(code: u32) -> &'static str {
    match code {
        FX_OK => "ok",
        FX_EOF => "end of file",
        FX_NO_SUCH_FILE => "no such file",
        FX_PERMISSION_DENIED => "permission denied",
        FX_FAILURE => "failure",
        FX_BAD_MESSAGE => "bad message",
        FX_NO_CONNECTION => "no connection",
        FX_CONNECTION_LOST => "connection lost",
        FX_OP_UNSUPPORTED => "operation unsupported",
        _ => "unknown status",
    }
}

/// How a request reads to policy: the class (sluice_core::Class::Read / Write / Destructive / Unknown), the paths, and a one-line text for records like `open /var/log/app.log (read)`, `remove /tmp/x`, `rename /a -> /b`.
///
/// None for requests that name no path and need no decision (INIT, READ,
/// WRITE, CLOSE, READDIR, FSTAT): their handle came from an OPEN or OPENDIR
/// that was already decided.
///
/// Paths are as the client sent them. `..` and symbolic links are resolved
/// on the target, so `/srv/app/../../etc/shadow` or a link inside an allowed
/// directory can reach elsewhere; a policy may take a REALPATH answer as
/// advice, but only the target knows where a path really lands.
///
/// REMOVE and RMDIR are Destructive rather than Write: they destroy data in
/// one request with nothing passing through the gateway to record, and a
/// policy that lets an agent upload should still be able to hold deletions
/// for review. OPEN with truncate stays Write because every upload (sftp
/// `put`, scp) opens with create and truncate.
pub fn describe(req: &Request) -> Option<(Class, Vec<String>, String)> {
    let one = |class: Class, verb: &str, path: &String| {
        Some((class, vec![path.clone()], format!("{verb} {path}")))
    };
    match req {
        Request::Init { .. }
        | Request::Read { .. }
        | Request::Write { .. }
        | Request::Close { .. }
        | Request::Readdir { .. }
        | Request::Fstat { .. } => None,
        Request::Open {
            path,
            read,
            write,
            append,
            create,
            truncate,
            exclusive,
            ..
        } => {
            let modifies = *write || *append || *create || *truncate;
            let mut mode: Vec<&str> = Vec::new();
            // OpenSSH opens read-only when neither read nor write is set.
            if *read || !(*write || *append) {
                mode.push("read");
            }
            for (set, word) in [
                (*write, "write"),
                (*append, "append"),
                (*create, "create"),
                (*truncate, "truncate"),
                (*exclusive, "exclusive"),
            ] {
                if set {
                    mode.push(word);
                }
            }
            let class = if modifies { Class::Write } else { Class::Read };
            Some((
                class,
                vec![path.clone()],
                format!("open {path} ({})", mode.join(", ")),
            ))
        }
        Request::Opendir { path, .. } => one(Class::Read, "opendir", path),
        Request::Stat { path, .. } => one(Class::Read, "stat", path),
        Request::Lstat { path, .. } => one(Class::Read, "lstat", path),
        Request::Realpath { path, .. } => one(Class::Read, "realpath", path),
        Request::Readlink { path, .. } => one(Class::Read, "readlink", path),
        Request::Remove { path, .. } => one(Class::Destructive, "remove", path),
        Request::Rmdir { path, .. } => one(Class::Destructive, "rmdir", path),
        Request::Mkdir { path, .. } => one(Class::Write, "mkdir", path),
        Request::Setstat { path, .. } => one(Class::Write, "setstat", path),
        // Changes attributes (mode, owner, size) of a file opened earlier;
        // the open decided on the path, not on chmod or truncation.
        Request::Fsetstat { .. } => Some((Class::Write, Vec::new(), "fsetstat (handle)".into())),
        Request::Rename { from, to, .. } => Some((
            Class::Write,
            vec![from.clone(), to.clone()],
            format!("rename {from} -> {to}"),
        )),
        // Both paths go to policy: the target is not touched now, but a link
        // in an allowed directory lets later requests reach it.
        Request::Symlink { link, target, .. } => Some((
            Class::Write,
            vec![link.clone(), target.clone()],
            format!("symlink {link} -> {target}"),
        )),
        Request::Extended { name, paths, .. } => Some(describe_extended(name, paths)),
        Request::Other { kind, .. } => Some((
            Class::Unknown,
            Vec::new(),
            format!("sftp request type {kind}"),
        )),
    }
}

fn describe_extended(name: &str, paths: &[String]) -> (Class, Vec<String>, String) {
    let class = match name {
        // copy-data writes into a handle; the open of its destination was
        // decided, but the copy itself changes data on the target.
        // posix-rename replaces an existing target (plain RENAME in OpenSSH
        // refuses to); it stays Write like any rename, the record says which.
        "posix-rename@openssh.com"
        | "hardlink@openssh.com"
        | "lsetstat@openssh.com"
        | "copy-data" => Class::Write,
        "statvfs@openssh.com"
        | "fstatvfs@openssh.com"
        | "fsync@openssh.com"
        | "limits@openssh.com"
        | "expand-path@openssh.com"
        | "home-directory"
        | "users-groups-by-id@openssh.com" => Class::Read,
        _ => Class::Unknown,
    };
    let text = match (name, paths) {
        ("posix-rename@openssh.com", [from, to]) => format!("rename {from} -> {to} (posix)"),
        // Written like a listing: the new name, then what it refers to.
        ("hardlink@openssh.com", [old, new]) => format!("hardlink {new} -> {old}"),
        (_, [path]) => format!("{} {path}", short_name(name)),
        _ if class == Class::Unknown => format!("extension {name}"),
        _ => short_name(name).to_string(),
    };
    (class, paths.to_vec(), text)
}

/// `statvfs@openssh.com` reads as `statvfs` in records.
fn short_name(name: &str) -> &str {
    name.strip_suffix("@openssh.com").unwrap_or(name)
}

/// One file opened, read or written, and closed (or not), for the records.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FileOp {
    /// Path as the client sent it in the OPEN.
    pub path: String,
    /// Which way data could flow, from the open flags.
    pub direction: Direction,
    /// Bytes moved: DATA received plus WRITEs the server confirmed.
    pub bytes: u64,
    /// `ok`, `interrupted`, or the server's error.
    pub status: String,
}

/// Which way a file's data went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Server to client.
    Download,
    /// Client to server.
    Upload,
    /// Opened for reading and writing.
    Both,
}

/// Most requests awaiting a response that are tracked at once.
pub const MAX_PENDING: usize = 65536;
/// Most open file handles tracked at once.
pub const MAX_HANDLES: usize = 4096;
/// Memory each of the two maps may hold in paths and handles. Without it,
/// 65536 unanswered OPENs of long paths would cost hundreds of MiB.
const MAX_TRACKED_BYTES: usize = 16 * 1024 * 1024;
/// Bookkeeping per entry beyond its strings, roughly.
const ENTRY_OVERHEAD: usize = 64;
/// Handles are at most 256 bytes by the draft; longer ones are not tracked,
/// so a hostile server cannot make the maps large through their keys.
const MAX_HANDLE_LEN: usize = 256;
/// Paths kept for records are cut here (Linux PATH_MAX), bounding memory.
const MAX_KEPT_PATH: usize = 4096;
/// Server messages kept in a status are cut here.
const MAX_KEPT_MESSAGE: usize = 200;

/// A map bounded in entries and in bytes that forgets the oldest first.
///
/// Insertion order lives in a queue of (sequence, key); entries removed or
/// replaced leave stale queue items behind, recognised by their sequence
/// number and compacted away once they outnumber the live ones.
#[derive(Debug)]
struct Bounded<K, V> {
    map: HashMap<K, Entry<V>>,
    order: VecDeque<(u64, K)>,
    seq: u64,
    max: usize,
    max_bytes: usize,
    bytes: usize,
    evicted: u64,
}

#[derive(Debug)]
struct Entry<V> {
    seq: u64,
    bytes: usize,
    value: V,
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    fn new(max: usize, max_bytes: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            max,
            max_bytes,
            bytes: 0,
            evicted: 0,
        }
    }

    /// Inserts `value` under `key`; `bytes` is its approximate heap size.
    fn insert(&mut self, key: K, value: V, bytes: usize) {
        self.seq += 1;
        self.order.push_back((self.seq, key.clone()));
        let entry = Entry {
            seq: self.seq,
            bytes,
            value,
        };
        self.bytes += bytes;
        if let Some(old) = self.map.insert(key, entry) {
            self.bytes -= old.bytes;
        }
        while self.map.len() > self.max || self.bytes > self.max_bytes {
            let Some((seq, key)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&key).is_some_and(|e| e.seq == seq) {
                self.remove(&key);
                self.evicted += 1;
            }
        }
        // Compacting only once stale items outnumber live ones keeps the
        // cost amortised constant and the queue within twice the map.
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(seq, key)| map.get(key).is_some_and(|e| e.seq == *seq));
        }
    }

    fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map(|e| &e.value)
    }

    fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get_mut(key).map(|e| &mut e.value)
    }

    fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.contains_key(key)
    }

    fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = self.map.remove(key)?;
        self.bytes -= entry.bytes;
        Some(entry.value)
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    /// Live entries, oldest first.
    fn into_values(self) -> Vec<V> {
        let mut all: Vec<Entry<V>> = self.map.into_values().collect();
        all.sort_by_key(|e| e.seq);
        all.into_iter().map(|e| e.value).collect()
    }
}

/// What a request id is waiting for.
#[derive(Debug)]
enum Pending {
    Open { path: String, direction: Direction },
    Read { handle: Vec<u8> },
    Write { handle: Vec<u8>, len: u32 },
    Close { handle: Vec<u8> },
}

/// A tracked open file.
#[derive(Debug)]
struct OpenFile {
    path: String,
    direction: Direction,
    bytes: u64,
    /// First failure of a READ or WRITE on the handle; a transfer that lost
    /// data is not `ok` even when its CLOSE succeeds.
    error: Option<String>,
}

/// Follows handles to report whole file transfers.
///
/// Accounting only: policy is decided per request by [`describe`] and does
/// not depend on this. Memory is bounded ([`MAX_PENDING`], [`MAX_HANDLES`]);
/// beyond the bounds the oldest entries are forgotten (see
/// [`Transfers::forgotten`]) so a client flooding requests cannot grow the
/// gateway, at the price of incomplete records for that client. Server-side
/// copies (`copy-data`) move bytes the gateway never sees and are not counted.
#[derive(Debug)]
pub struct Transfers {
    pending: Bounded<u32, Pending>,
    handles: Bounded<Vec<u8>, OpenFile>,
}

impl Default for Transfers {
    fn default() -> Self {
        Transfers::new()
    }
}

impl Transfers {
    /// An empty tracker for one SFTP channel.
    pub fn new() -> Transfers {
        Transfers {
            pending: Bounded::new(MAX_PENDING, MAX_TRACKED_BYTES),
            handles: Bounded::new(MAX_HANDLES, MAX_TRACKED_BYTES),
        }
    }

    /// Records a client request the gateway forwarded; call for every one.
    pub fn request(&mut self, req: &Request) {
        match req {
            Request::Open {
                id,
                path,
                read,
                write,
                append,
                ..
            } => {
                let writes = *write || *append;
                let direction = match (*read, writes) {
                    (true, true) => Direction::Both,
                    (_, true) => Direction::Upload,
                    // OpenSSH opens read-only when neither flag is set.
                    (_, false) => Direction::Download,
                };
                let path = truncate_str(path, MAX_KEPT_PATH).to_string();
                let bytes = ENTRY_OVERHEAD + path.len();
                self.pending
                    .insert(*id, Pending::Open { path, direction }, bytes);
            }
            // Handles not opened by a tracked OPEN (directories, forgotten
            // ones) are ignored so they cost no memory.
            Request::Read { id, handle, .. } if self.handles.contains(handle.as_slice()) => {
                self.pending.insert(
                    *id,
                    Pending::Read {
                        handle: handle.clone(),
                    },
                    ENTRY_OVERHEAD + handle.len(),
                );
            }
            Request::Write {
                id, handle, len, ..
            } if self.handles.contains(handle.as_slice()) => {
                self.pending.insert(
                    *id,
                    Pending::Write {
                        handle: handle.clone(),
                        len: *len,
                    },
                    ENTRY_OVERHEAD + handle.len(),
                );
            }
            Request::Close { id, handle } if self.handles.contains(handle.as_slice()) => {
                self.pending.insert(
                    *id,
                    Pending::Close {
                        handle: handle.clone(),
                    },
                    ENTRY_OVERHEAD + handle.len(),
                );
            }
            // A reused id no longer waits for what it waited for before.
            other => {
                if let Some(id) = other.id() {
                    self.pending.remove(&id);
                }
            }
        }
    }

    /// Records a server response; returns the transfer a CLOSE's status completed.
    ///
    /// A failed OPEN is returned too, as a transfer of 0 bytes with the
    /// server's error: an attempt to fetch a file the target refused is
    /// worth a record.
    pub fn response(&mut self, resp: &Response) -> Option<FileOp> {
        let id = resp.id()?;
        let pending = self.pending.remove(&id)?;
        match (pending, resp) {
            (Pending::Open { path, direction }, Response::Handle { handle, .. }) => {
                if handle.len() <= MAX_HANDLE_LEN {
                    // The key is held twice (map and order queue), and an
                    // error message may be added later.
                    let bytes = ENTRY_OVERHEAD + path.len() + 2 * handle.len() + MAX_KEPT_MESSAGE;
                    self.handles.insert(
                        handle.clone(),
                        OpenFile {
                            path,
                            direction,
                            bytes: 0,
                            error: None,
                        },
                        bytes,
                    );
                }
                None
            }
            (Pending::Open { path, direction }, Response::Status { code, message, .. }) => {
                Some(FileOp {
                    path,
                    direction,
                    bytes: 0,
                    status: status_text(*code, message),
                })
            }
            (Pending::Read { handle }, Response::Data { len, .. }) => {
                if let Some(file) = self.handles.get_mut(handle.as_slice()) {
                    file.bytes += u64::from(*len);
                }
                None
            }
            (Pending::Write { handle, len }, Response::Status { code, message, .. }) => {
                if let Some(file) = self.handles.get_mut(handle.as_slice()) {
                    if *code == FX_OK {
                        file.bytes += u64::from(len);
                    } else if file.error.is_none() {
                        file.error = Some(status_text(*code, message));
                    }
                }
                None
            }
            (Pending::Read { handle }, Response::Status { code, message, .. }) => {
                // EOF is how every download ends, not a failure.
                if *code != FX_EOF && *code != FX_OK {
                    if let Some(file) = self.handles.get_mut(handle.as_slice()) {
                        if file.error.is_none() {
                            file.error = Some(status_text(*code, message));
                        }
                    }
                }
                None
            }
            (Pending::Close { handle }, Response::Status { code, message, .. }) => {
                // The server forgets the handle whatever the status, so the
                // transfer ends here either way.
                let file = self.handles.remove(handle.as_slice())?;
                let status = match (file.error, *code) {
                    (Some(err), _) => err,
                    (None, FX_OK) => "ok".to_string(),
                    (None, code) => status_text(code, message),
                };
                Some(FileOp {
                    path: file.path,
                    direction: file.direction,
                    bytes: file.bytes,
                    status,
                })
            }
            _ => None,
        }
    }

    /// Path a tracked file handle was opened with, e.g. to describe an FSETSTAT.
    pub fn path_of(&self, handle: &[u8]) -> Option<&str> {
        self.handles.get(handle).map(|f| f.path.as_str())
    }

    /// Number of files currently open and tracked.
    pub fn open_files(&self) -> usize {
        self.handles.len()
    }

    /// Entries dropped because a bound was reached; nonzero means the records are incomplete.
    pub fn forgotten(&self) -> u64 {
        self.pending.evicted + self.handles.evicted
    }

    /// Transfers still open when the channel ends (the client vanished), reported as status "interrupted".
    ///
    /// OPENs never answered are left out: no file was opened for them.
    pub fn finish(self) -> Vec<FileOp> {
        self.handles
            .into_values()
            .into_iter()
            .map(|file| FileOp {
                path: file.path,
                direction: file.direction,
                bytes: file.bytes,
                status: "interrupted".to_string(),
            })
            .collect()
    }
}

/// `permission denied`, or `failure: disk full` when the server said more
/// than the code's name.
fn status_text(code: u32, message: &str) -> String {
    let name = status_name(code);
    let message = truncate_str(message.trim(), MAX_KEPT_MESSAGE);
    if message.is_empty() || message.eq_ignore_ascii_case(name) {
        name.to_string()
    } else {
        format!("{name}: {message}")
    }
}

fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand encoder for test packets: type, then fields in order.
    struct Enc(Vec<u8>);

    impl Enc {
        fn new(kind: u8) -> Self {
            Enc(vec![kind])
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn bytes(mut self, s: &[u8]) -> Self {
            self = self.u32(s.len() as u32);
            self.0.extend_from_slice(s);
            self
        }
        fn str(self, s: &str) -> Self {
            self.bytes(s.as_bytes())
        }
        /// Empty attributes: flags 0.
        fn attrs(self) -> Self {
            self.u32(0)
        }
        fn body(self) -> Vec<u8> {
            self.0
        }
        fn packet(self) -> Vec<u8> {
            let mut out = (self.0.len() as u32).to_be_bytes().to_vec();
            out.extend_from_slice(&self.0);
            out
        }
    }

    /// Small deterministic generator so failures reproduce.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn sample_packets() -> Vec<Vec<u8>> {
        vec![
            Enc::new(FXP_INIT).u32(3).packet(),
            Enc::new(FXP_OPEN)
                .u32(1)
                .str("/etc/hosts")
                .u32(FXF_READ)
                .attrs()
                .packet(),
            Enc::new(FXP_WRITE)
                .u32(2)
                .bytes(b"h1")
                .u64(0)
                .bytes(&vec![0xab; 70_000])
                .packet(),
            Enc::new(FXP_CLOSE).u32(3).bytes(b"h1").packet(),
        ]
    }

    #[test]
    fn framing_byte_by_byte() {
        let packets = sample_packets();
        let stream: Vec<u8> = packets.concat();
        let mut f = Framer::new(256 * 1024 + 1024);
        let mut got = Vec::new();
        for b in &stream {
            f.push(std::slice::from_ref(b));
            while let Some(p) = f.next_packet().unwrap() {
                got.push(p.to_vec());
            }
        }
        assert_eq!(got, packets);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn framing_random_chunks() {
        let packets = sample_packets();
        let stream: Vec<u8> = packets.concat();
        let mut rng = Lcg(7);
        for _ in 0..50 {
            let mut f = Framer::new(256 * 1024);
            let mut got = Vec::new();
            let mut pos = 0;
            while pos < stream.len() {
                let n = 1 + rng.below(40_000).min(stream.len() - pos - 1);
                f.push(&stream[pos..pos + n]);
                pos += n;
                while let Some(p) = f.next_packet().unwrap() {
                    got.push(p.to_vec());
                }
            }
            assert_eq!(got, packets);
        }
    }

    #[test]
    fn framing_errors() {
        let mut f = Framer::new(1024);
        f.push(&[0, 0, 0, 0, 1]);
        assert_eq!(f.next_packet(), Err(SftpError::EmptyPacket));

        let mut f = Framer::new(1024);
        f.push(&1025u32.to_be_bytes());
        let err = f.next_packet().unwrap_err();
        assert_eq!(
            err,
            SftpError::TooLong {
                len: 1025,
                max: 1024
            }
        );
        assert!(err.to_string().contains("1025"));
        // Still an error later: the stream has no framing left to trust.
        assert!(f.next_packet().is_err());

        let mut f = Framer::new(1024);
        f.push(&1024u32.to_be_bytes());
        assert_eq!(f.next_packet(), Ok(None));
        f.push(&[0; 1023]);
        assert_eq!(f.next_packet(), Ok(None));
        f.push(&[0]);
        assert_eq!(f.next_packet().unwrap().unwrap().len(), 1028);

        let mut f = Framer::new(1024);
        f.push(&[0, 0, 0]);
        assert_eq!(f.next_packet(), Ok(None));
    }

    #[test]
    fn decodes_every_request_kind() {
        let h = b"\x00\x00\x00\x07".to_vec();
        let cases: Vec<(Vec<u8>, Request)> = vec![
            (
                Enc::new(FXP_INIT).u32(3).body(),
                Request::Init { version: 3 },
            ),
            (
                Enc::new(FXP_OPEN)
                    .u32(1)
                    .str("/var/log/app.log")
                    .u32(FXF_READ)
                    .attrs()
                    .body(),
                Request::Open {
                    id: 1,
                    path: "/var/log/app.log".into(),
                    read: true,
                    write: false,
                    append: false,
                    create: false,
                    truncate: false,
                    exclusive: false,
                },
            ),
            (
                Enc::new(FXP_OPEN)
                    .u32(2)
                    .str("/tmp/up")
                    .u32(FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC | FXF_EXCL)
                    .attrs()
                    .body(),
                Request::Open {
                    id: 2,
                    path: "/tmp/up".into(),
                    read: false,
                    write: true,
                    append: true,
                    create: true,
                    truncate: true,
                    exclusive: true,
                },
            ),
            (
                Enc::new(FXP_CLOSE).u32(3).bytes(&h).body(),
                Request::Close {
                    id: 3,
                    handle: h.clone(),
                },
            ),
            (
                Enc::new(FXP_READ)
                    .u32(4)
                    .bytes(&h)
                    .u64(1 << 40)
                    .u32(32768)
                    .body(),
                Request::Read {
                    id: 4,
                    handle: h.clone(),
                    offset: 1 << 40,
                    len: 32768,
                },
            ),
            (
                Enc::new(FXP_WRITE)
                    .u32(5)
                    .bytes(&h)
                    .u64(65536)
                    .bytes(&[7; 1000])
                    .body(),
                Request::Write {
                    id: 5,
                    handle: h.clone(),
                    offset: 65536,
                    len: 1000,
                },
            ),
            (
                Enc::new(FXP_LSTAT).u32(6).str("/l").body(),
                Request::Lstat {
                    id: 6,
                    path: "/l".into(),
                },
            ),
            (
                Enc::new(FXP_FSTAT).u32(7).bytes(&h).body(),
                Request::Fstat {
                    id: 7,
                    handle: h.clone(),
                },
            ),
            (
                Enc::new(FXP_SETSTAT).u32(8).str("/s").attrs().body(),
                Request::Setstat {
                    id: 8,
                    path: "/s".into(),
                },
            ),
            (
                Enc::new(FXP_FSETSTAT).u32(9).bytes(&h).attrs().body(),
                Request::Fsetstat {
                    id: 9,
                    handle: h.clone(),
                },
            ),
            (
                Enc::new(FXP_OPENDIR).u32(10).str("/d").body(),
                Request::Opendir {
                    id: 10,
                    path: "/d".into(),
                },
            ),
            (
                Enc::new(FXP_READDIR).u32(11).bytes(&h).body(),
                Request::Readdir {
                    id: 11,
                    handle: h.clone(),
                },
            ),
            (
                Enc::new(FXP_REMOVE).u32(12).str("/tmp/x").body(),
                Request::Remove {
                    id: 12,
                    path: "/tmp/x".into(),
                },
            ),
            (
                Enc::new(FXP_MKDIR).u32(13).str("/m").attrs().body(),
                Request::Mkdir {
                    id: 13,
                    path: "/m".into(),
                },
            ),
            (
                Enc::new(FXP_RMDIR).u32(14).str("/r").body(),
                Request::Rmdir {
                    id: 14,
                    path: "/r".into(),
                },
            ),
            (
                Enc::new(FXP_REALPATH).u32(15).str(".").body(),
                Request::Realpath {
                    id: 15,
                    path: ".".into(),
                },
            ),
            (
                Enc::new(FXP_STAT).u32(16).str("/st").body(),
                Request::Stat {
                    id: 16,
                    path: "/st".into(),
                },
            ),
            (
                Enc::new(FXP_RENAME).u32(17).str("/a").str("/b").body(),
                Request::Rename {
                    id: 17,
                    from: "/a".into(),
                    to: "/b".into(),
                },
            ),
            (
                Enc::new(FXP_READLINK).u32(18).str("/ln").body(),
                Request::Readlink {
                    id: 18,
                    path: "/ln".into(),
                },
            ),
            (
                // OpenSSH order: target, then link.
                Enc::new(FXP_SYMLINK)
                    .u32(19)
                    .str("/target")
                    .str("/link")
                    .body(),
                Request::Symlink {
                    id: 19,
                    link: "/link".into(),
                    target: "/target".into(),
                },
            ),
            (
                Enc::new(FXP_EXTENDED)
                    .u32(20)
                    .str("posix-rename@openssh.com")
                    .str("/old")
                    .str("/new")
                    .body(),
                Request::Extended {
                    id: 20,
                    name: "posix-rename@openssh.com".into(),
                    paths: vec!["/old".into(), "/new".into()],
                },
            ),
            (
                Enc::new(FXP_EXTENDED)
                    .u32(21)
                    .str("hardlink@openssh.com")
                    .str("/old")
                    .str("/new")
                    .body(),
                Request::Extended {
                    id: 21,
                    name: "hardlink@openssh.com".into(),
                    paths: vec!["/old".into(), "/new".into()],
                },
            ),
            (
                Enc::new(FXP_EXTENDED)
                    .u32(22)
                    .str("statvfs@openssh.com")
                    .str("/")
                    .body(),
                Request::Extended {
                    id: 22,
                    name: "statvfs@openssh.com".into(),
                    paths: vec!["/".into()],
                },
            ),
            (
                Enc::new(FXP_EXTENDED)
                    .u32(23)
                    .str("lsetstat@openssh.com")
                    .str("/ls")
                    .attrs()
                    .body(),
                Request::Extended {
                    id: 23,
                    name: "lsetstat@openssh.com".into(),
                    paths: vec!["/ls".into()],
                },
            ),
            (
                Enc::new(FXP_EXTENDED)
                    .u32(24)
                    .str("expand-path@openssh.com")
                    .str("~/x")
                    .body(),
                Request::Extended {
                    id: 24,
                    name: "expand-path@openssh.com".into(),
                    paths: vec!["~/x".into()],
                },
            ),
            (
                Enc::new(FXP_EXTENDED)
                    .u32(25)
                    .str("fsync@openssh.com")
                    .bytes(&h)
                    .body(),
                Request::Extended {
                    id: 25,
                    name: "fsync@openssh.com".into(),
                    paths: vec![],
                },
            ),
            (
                Enc::new(FXP_EXTENDED)
                    .u32(26)
                    .str("limits@openssh.com")
                    .body(),
                Request::Extended {
                    id: 26,
                    name: "limits@openssh.com".into(),
                    paths: vec![],
                },
            ),
            (
                Enc::new(FXP_EXTENDED)
                    .u32(27)
                    .str("copy-data")
                    .bytes(b"r")
                    .u64(0)
                    .u64(0)
                    .bytes(b"w")
                    .u64(0)
                    .body(),
                Request::Extended {
                    id: 27,
                    name: "copy-data".into(),
                    paths: vec![],
                },
            ),
            (
                Enc::new(FXP_EXTENDED)
                    .u32(28)
                    .str("home-directory")
                    .str("alice")
                    .body(),
                Request::Extended {
                    id: 28,
                    name: "home-directory".into(),
                    paths: vec![],
                },
            ),
            (
                Enc::new(FXP_EXTENDED)
                    .u32(29)
                    .str("users-groups-by-id@openssh.com")
                    .bytes(&0u32.to_be_bytes())
                    .bytes(&[])
                    .body(),
                Request::Extended {
                    id: 29,
                    name: "users-groups-by-id@openssh.com".into(),
                    paths: vec![],
                },
            ),
            (
                Enc::new(FXP_EXTENDED)
                    .u32(30)
                    .str("fstatvfs@openssh.com")
                    .bytes(&h)
                    .body(),
                Request::Extended {
                    id: 30,
                    name: "fstatvfs@openssh.com".into(),
                    paths: vec![],
                },
            ),
            (
                Enc::new(99).u32(31).body(),
                Request::Other {
                    kind: 99,
                    id: Some(31),
                },
            ),
            (
                Enc::new(150).body(),
                Request::Other {
                    kind: 150,
                    id: None,
                },
            ),
        ];
        for (body, want) in cases {
            let got = decode_request(&body).unwrap();
            assert_eq!(got, want);
            if let Request::Init { .. } = want {
                assert_eq!(got.id(), None);
            }
        }
        assert_eq!(
            decode_request(&Enc::new(FXP_STAT).u32(77).str("/").body())
                .unwrap()
                .id(),
            Some(77)
        );
    }

    #[test]
    fn attributes_are_checked() {
        let full = Enc::new(FXP_SETSTAT)
            .u32(1)
            .str("/f")
            .u32(ATTR_SIZE | ATTR_UIDGID | ATTR_PERMISSIONS | ATTR_ACMODTIME | ATTR_EXTENDED)
            .u64(10)
            .u32(0)
            .u32(0)
            .u32(0o644)
            .u32(1)
            .u32(2)
            .u32(1)
            .str("name")
            .str("value");
        assert_eq!(
            decode_request(&full.body()).unwrap(),
            Request::Setstat {
                id: 1,
                path: "/f".into()
            }
        );
        let lying = Enc::new(FXP_MKDIR)
            .u32(1)
            .str("/m")
            .u32(ATTR_EXTENDED)
            .u32(u32::MAX)
            .body();
        assert!(decode_request(&lying).is_err());
        let missing = Enc::new(FXP_SETSTAT).u32(1).str("/f").u32(ATTR_SIZE).body();
        let err = decode_request(&missing).unwrap_err();
        assert!(err.to_string().contains("size"), "{err}");
    }

    #[test]
    fn non_utf8_paths_are_marked() {
        let body = Enc::new(FXP_REMOVE).u32(1).bytes(b"/tmp/\xffx").body();
        let Request::Remove { path, .. } = decode_request(&body).unwrap() else {
            panic!("not a remove");
        };
        assert_eq!(path, "/tmp/\u{FFFD}x");
    }

    #[test]
    fn status_packet_round_trip() {
        let p = status_packet(42, FX_PERMISSION_DENIED, "refused by policy");
        let mut f = Framer::new(1024);
        f.push(&p);
        let whole = f.next_packet().unwrap().unwrap();
        assert_eq!(whole.len(), p.len());
        assert_eq!(
            decode_response(&whole[4..]).unwrap(),
            Response::Status {
                id: 42,
                code: 3,
                message: "refused by policy".into()
            }
        );
        assert!(p.ends_with(b"\x00\x00\x00\x02en"));
        assert_eq!(FX_OK, 0);
        assert_eq!(FX_FAILURE, 4);
    }

    #[test]
    fn decodes_responses() {
        let cases = vec![
            (
                Enc::new(FXP_VERSION)
                    .u32(3)
                    .str("posix-rename@openssh.com")
                    .str("1")
                    .body(),
                Response::Version { version: 3 },
            ),
            (
                // Old servers omit message and language.
                Enc::new(FXP_STATUS).u32(1).u32(FX_EOF).body(),
                Response::Status {
                    id: 1,
                    code: 1,
                    message: String::new(),
                },
            ),
            (
                Enc::new(FXP_HANDLE).u32(2).bytes(b"hh").body(),
                Response::Handle {
                    id: 2,
                    handle: b"hh".to_vec(),
                },
            ),
            (
                Enc::new(FXP_DATA).u32(3).bytes(&[1; 32768]).body(),
                Response::Data { id: 3, len: 32768 },
            ),
            (
                Enc::new(FXP_NAME)
                    .u32(4)
                    .u32(1)
                    .str("a")
                    .str("a")
                    .attrs()
                    .body(),
                Response::Name { id: 4, count: 1 },
            ),
            (
                Enc::new(FXP_ATTRS).u32(5).attrs().body(),
                Response::Attrs { id: 5 },
            ),
            (
                Enc::new(FXP_EXTENDED_REPLY).u32(6).body(),
                Response::ExtendedReply { id: 6 },
            ),
            (Enc::new(77).body(), Response::Other { kind: 77 }),
        ];
        for (body, want) in cases {
            assert_eq!(decode_response(&body).unwrap(), want);
        }
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert!(decode_request(&[]).is_err());
        assert!(decode_response(&[]).is_err());
        assert!(decode_request(&[FXP_INIT, 0, 0]).is_err());
        // A string length beyond the packet.
        let lying = Enc::new(FXP_OPEN).u32(1).u32(1000).body();
        let err = decode_request(&lying).unwrap_err();
        assert!(err.to_string().contains("path"), "{err}");
        let lying = Enc::new(FXP_WRITE)
            .u32(1)
            .bytes(b"h")
            .u64(0)
            .u32(u32::MAX)
            .body();
        assert!(decode_request(&lying).is_err());
        let lying = Enc::new(FXP_DATA).u32(1).u32(10).body();
        assert!(decode_response(&lying).is_err());
        let short = Enc::new(FXP_EXTENDED)
            .u32(1)
            .str("posix-rename@openssh.com")
            .str("/only-one")
            .body();
        assert!(decode_request(&short).is_err());

        // Every prefix of a valid packet decodes or errs, never panics, and
        // prefixes cut inside required fields err.
        for (i, p) in sample_packets().iter().enumerate() {
            let body = &p[4..];
            for cut in 0..body.len().min(64) {
                let r = decode_request(&body[..cut]);
                if i > 0 {
                    assert!(r.is_err(), "packet {i} cut at {cut}: {r:?}");
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Lcg(12345);
        let mut transfers = Transfers::new();
        for _ in 0..20_000 {
            let len = rng.below(64);
            let mut body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Steer some toward real types so the decoders go deep.
            if !body.is_empty() && rng.below(2) == 0 {
                body[0] = [1, 2, 3, 4, 5, 6, 18, 20, 101, 102, 103, 104, 200][rng.below(13)];
            }
            if let Ok(req) = decode_request(&body) {
                let _ = describe(&req);
                transfers.request(&req);
            }
            if let Ok(resp) = decode_response(&body) {
                let _ = transfers.response(&resp);
            }
        }
        let mut f = Framer::new(4096);
        for _ in 0..1000 {
            let chunk: Vec<u8> = (0..rng.below(100)).map(|_| rng.next() as u8).collect();
            f.push(&chunk);
            if f.next_packet().is_err() {
                f = Framer::new(4096);
            }
        }
        let _ = transfers.finish();
    }

    fn open(id: u32, path: &str, flags: u32) -> Request {
        decode_request(
            &Enc::new(FXP_OPEN)
                .u32(id)
                .str(path)
                .u32(flags)
                .attrs()
                .body(),
        )
        .unwrap()
    }

    fn status(id: u32, code: u32) -> Response {
        Response::Status {
            id,
            code,
            message: status_name(code).to_string(),
        }
    }

    #[test]
    fn download_is_reported_on_close() {
        let mut t = Transfers::new();
        let h = b"1".to_vec();
        t.request(&open(1, "/var/log/app.log", FXF_READ));
        assert_eq!(
            t.response(&Response::Handle {
                id: 1,
                handle: h.clone()
            }),
            None
        );
        assert_eq!(t.path_of(&h), Some("/var/log/app.log"));
        for (i, id) in [2u32, 3, 4].into_iter().enumerate() {
            t.request(&Request::Read {
                id,
                handle: h.clone(),
                offset: i as u64 * 32768,
                len: 32768,
            });
        }
        assert_eq!(t.response(&Response::Data { id: 2, len: 32768 }), None);
        assert_eq!(t.response(&Response::Data { id: 3, len: 32768 }), None);
        assert_eq!(t.response(&Response::Data { id: 4, len: 100 }), None);
        t.request(&Request::Read {
            id: 5,
            handle: h.clone(),
            offset: 65636,
            len: 32768,
        });
        assert_eq!(t.response(&status(5, FX_EOF)), None);
        t.request(&Request::Close {
            id: 6,
            handle: h.clone(),
        });
        let op = t.response(&status(6, FX_OK)).unwrap();
        assert_eq!(
            op,
            FileOp {
                path: "/var/log/app.log".into(),
                direction: Direction::Download,
                bytes: 65636,
                status: "ok".into()
            }
        );
        assert_eq!(t.open_files(), 0);
        assert!(t.finish().is_empty());
        let json = serde_json::to_string(&op).unwrap();
        assert!(json.contains(r#""direction":"download""#), "{json}");
    }

    #[test]
    fn upload_counts_confirmed_writes() {
        let mut t = Transfers::new();
        let h = b"up".to_vec();
        t.request(&open(1, "/tmp/up", FXF_WRITE | FXF_CREAT | FXF_TRUNC));
        t.response(&Response::Handle {
            id: 1,
            handle: h.clone(),
        });
        for id in 2..6 {
            t.request(&Request::Write {
                id,
                handle: h.clone(),
                offset: 0,
                len: 1000,
            });
        }
        for id in 2..6 {
            assert_eq!(t.response(&status(id, FX_OK)), None);
        }
        t.request(&Request::Close {
            id: 9,
            handle: h.clone(),
        });
        let op = t.response(&status(9, FX_OK)).unwrap();
        assert_eq!(op.direction, Direction::Upload);
        assert_eq!(op.bytes, 4000);
        assert_eq!(op.status, "ok");
    }

    #[test]
    fn failed_write_marks_the_transfer() {
        let mut t = Transfers::new();
        let h = b"w".to_vec();
        t.request(&open(1, "/full/disk", FXF_READ | FXF_WRITE));
        t.response(&Response::Handle {
            id: 1,
            handle: h.clone(),
        });
        t.request(&Request::Write {
            id: 2,
            handle: h.clone(),
            offset: 0,
            len: 10,
        });
        t.request(&Request::Write {
            id: 3,
            handle: h.clone(),
            offset: 10,
            len: 10,
        });
        t.response(&status(2, FX_OK));
        t.response(&Response::Status {
            id: 3,
            code: FX_FAILURE,
            message: "No space left on device".into(),
        });
        t.request(&Request::Close { id: 4, handle: h });
        let op = t.response(&status(4, FX_OK)).unwrap();
        assert_eq!(op.direction, Direction::Both);
        assert_eq!(op.bytes, 10);
        assert_eq!(op.status, "failure: No space left on device");
    }

    #[test]
    fn failed_open_is_reported_without_transfer() {
        let mut t = Transfers::new();
        t.request(&open(1, "/etc/shadow", FXF_READ));
        let op = t
            .response(&Response::Status {
                id: 1,
                code: FX_PERMISSION_DENIED,
                message: "Permission denied".into(),
            })
            .unwrap();
        assert_eq!(op.path, "/etc/shadow");
        assert_eq!(op.bytes, 0);
        assert_eq!(op.status, "permission denied");
        assert_eq!(t.open_files(), 0);
        assert!(t.finish().is_empty());
    }

    #[test]
    fn unfinished_transfers_are_interrupted() {
        let mut t = Transfers::new();
        t.request(&open(1, "/a", FXF_READ));
        t.request(&open(2, "/b", FXF_WRITE | FXF_CREAT));
        t.request(&open(3, "/never-answered", FXF_READ));
        t.response(&Response::Handle {
            id: 1,
            handle: b"a".to_vec(),
        });
        t.response(&Response::Handle {
            id: 2,
            handle: b"b".to_vec(),
        });
        t.request(&Request::Read {
            id: 4,
            handle: b"a".to_vec(),
            offset: 0,
            len: 10,
        });
        t.response(&Response::Data { id: 4, len: 10 });
        let ops = t.finish();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].path, "/a");
        assert_eq!(ops[0].bytes, 10);
        assert_eq!(ops[0].status, "interrupted");
        assert_eq!(ops[1].path, "/b");
        assert_eq!(ops[1].direction, Direction::Upload);
    }

    #[test]
    fn directory_handles_and_strays_are_ignored() {
        let mut t = Transfers::new();
        t.request(&Request::Opendir {
            id: 1,
            path: "/".into(),
        });
        assert_eq!(
            t.response(&Response::Handle {
                id: 1,
                handle: b"d".to_vec()
            }),
            None
        );
        t.request(&Request::Close {
            id: 2,
            handle: b"d".to_vec(),
        });
        assert_eq!(t.response(&status(2, FX_OK)), None);
        assert_eq!(t.response(&Response::Data { id: 99, len: 5 }), None);
        assert_eq!(t.response(&Response::Version { version: 3 }), None);
        assert_eq!(t.open_files(), 0);
    }

    #[test]
    fn hostile_client_stays_bounded() {
        let mut t = Transfers::new();
        for id in 0..100_000u32 {
            t.request(&open(id, "/x", FXF_READ));
        }
        assert!(t.pending.len() <= MAX_PENDING);
        assert!(t.pending.order.len() <= 2 * MAX_PENDING + 64);
        assert_eq!(t.forgotten(), 100_000 - MAX_PENDING as u64);
        // The newest are still tracked.
        t.response(&Response::Handle {
            id: 99_999,
            handle: b"last".to_vec(),
        });
        assert_eq!(t.path_of(b"last"), Some("/x"));

        // Many handles answered and never closed.
        let mut t = Transfers::new();
        for id in 0..10_000u32 {
            t.request(&open(id, "/y", FXF_READ));
            t.response(&Response::Handle {
                id,
                handle: id.to_be_bytes().to_vec(),
            });
        }
        assert_eq!(t.open_files(), MAX_HANDLES);
        assert!(t.handles.order.len() <= 2 * MAX_HANDLES + 64);
        assert_eq!(t.finish().len(), MAX_HANDLES);

        // Oversized handles and paths are not kept whole.
        let mut t = Transfers::new();
        t.request(&open(1, &"p".repeat(100_000), FXF_READ));
        t.response(&Response::Handle {
            id: 1,
            handle: vec![0; 10_000],
        });
        assert_eq!(t.open_files(), 0);
        t.request(&open(2, &"é".repeat(50_000), FXF_READ));
        t.response(&Response::Handle {
            id: 2,
            handle: b"h".to_vec(),
        });
        assert_eq!(t.path_of(b"h").unwrap().len(), MAX_KEPT_PATH);

        // Unanswered OPENs of long paths hit the byte budget first.
        let mut t = Transfers::new();
        let long = "q".repeat(MAX_KEPT_PATH);
        for id in 0..20_000u32 {
            t.request(&open(id, &long, FXF_READ));
        }
        assert!(t.pending.bytes <= MAX_TRACKED_BYTES);
        assert!(t.pending.len() < 20_000 && t.pending.len() > 1000);
        assert!(t.forgotten() > 0);

        // Reused ids with answers keep the order queue compact.
        let mut t = Transfers::new();
        t.request(&open(1, "/z", FXF_READ));
        t.response(&Response::Handle {
            id: 1,
            handle: b"z".to_vec(),
        });
        for i in 0..500_000u32 {
            t.request(&Request::Read {
                id: i % 8,
                handle: b"z".to_vec(),
                offset: 0,
                len: 1,
            });
            t.response(&Response::Data { id: i % 8, len: 1 });
        }
        assert!(t.pending.order.len() <= 2 * 8 + 65);
        assert_eq!(t.forgotten(), 0);
    }

    #[test]
    fn describe_classes_and_text() {
        let d = |r: Request| describe(&r);
        let (c, p, t) = d(open(1, "/var/log/app.log", FXF_READ)).unwrap();
        assert_eq!(c, Class::Read);
        assert_eq!(p, vec!["/var/log/app.log".to_string()]);
        assert_eq!(t, "open /var/log/app.log (read)");
        let (c, _, t) = d(open(1, "/tmp/u", FXF_WRITE | FXF_CREAT | FXF_TRUNC)).unwrap();
        assert_eq!(c, Class::Write);
        assert_eq!(t, "open /tmp/u (write, create, truncate)");
        // Truncation without the write flag still destroys contents.
        assert_eq!(
            d(open(1, "/t", FXF_READ | FXF_TRUNC)).unwrap().0,
            Class::Write
        );
        assert_eq!(d(open(1, "/t", FXF_APPEND)).unwrap().0, Class::Write);
        assert_eq!(d(open(1, "/t", 0)).unwrap().2, "open /t (read)");

        let path = |p: &str| p.to_string();
        let (c, _, t) = d(Request::Remove {
            id: 1,
            path: path("/tmp/x"),
        })
        .unwrap();
        assert_eq!((c, t.as_str()), (Class::Destructive, "remove /tmp/x"));
        assert_eq!(
            d(Request::Rmdir {
                id: 1,
                path: path("/d")
            })
            .unwrap()
            .0,
            Class::Destructive
        );
        let (c, p, t) = d(Request::Rename {
            id: 1,
            from: path("/a"),
            to: path("/b"),
        })
        .unwrap();
        assert_eq!(
            (c, p, t.as_str()),
            (
                Class::Write,
                vec![path("/a"), path("/b")],
                "rename /a -> /b"
            )
        );
        let (c, p, t) = d(Request::Symlink {
            id: 1,
            link: path("/l"),
            target: path("/etc/shadow"),
        })
        .unwrap();
        assert_eq!(c, Class::Write);
        assert_eq!(p, vec![path("/l"), path("/etc/shadow")]);
        assert_eq!(t, "symlink /l -> /etc/shadow");
        for r in [
            Request::Opendir {
                id: 1,
                path: path("/"),
            },
            Request::Stat {
                id: 1,
                path: path("/"),
            },
            Request::Lstat {
                id: 1,
                path: path("/"),
            },
            Request::Realpath {
                id: 1,
                path: path("."),
            },
            Request::Readlink {
                id: 1,
                path: path("/l"),
            },
        ] {
            assert_eq!(d(r).unwrap().0, Class::Read);
        }
        for r in [
            Request::Mkdir {
                id: 1,
                path: path("/m"),
            },
            Request::Setstat {
                id: 1,
                path: path("/s"),
            },
            Request::Fsetstat {
                id: 1,
                handle: vec![1],
            },
        ] {
            assert_eq!(d(r).unwrap().0, Class::Write);
        }
        for r in [
            Request::Init { version: 3 },
            Request::Read {
                id: 1,
                handle: vec![],
                offset: 0,
                len: 1,
            },
            Request::Write {
                id: 1,
                handle: vec![],
                offset: 0,
                len: 1,
            },
            Request::Close {
                id: 1,
                handle: vec![],
            },
            Request::Readdir {
                id: 1,
                handle: vec![],
            },
            Request::Fstat {
                id: 1,
                handle: vec![],
            },
        ] {
            assert_eq!(d(r), None);
        }
        assert_eq!(
            d(Request::Other {
                kind: 99,
                id: Some(1)
            })
            .unwrap()
            .0,
            Class::Unknown
        );

        let ext = |name: &str, paths: &[&str]| Request::Extended {
            id: 1,
            name: name.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
        };
        let (c, p, t) = d(ext("posix-rename@openssh.com", &["/a", "/b"])).unwrap();
        assert_eq!((c, t.as_str()), (Class::Write, "rename /a -> /b (posix)"));
        assert_eq!(p.len(), 2);
        let (c, _, t) = d(ext("hardlink@openssh.com", &["/old", "/new"])).unwrap();
        assert_eq!((c, t.as_str()), (Class::Write, "hardlink /new -> /old"));
        let (c, _, t) = d(ext("statvfs@openssh.com", &["/"])).unwrap();
        assert_eq!((c, t.as_str()), (Class::Read, "statvfs /"));
        let (c, _, t) = d(ext("lsetstat@openssh.com", &["/x"])).unwrap();
        assert_eq!((c, t.as_str()), (Class::Write, "lsetstat /x"));
        assert_eq!(d(ext("copy-data", &[])).unwrap().0, Class::Write);
        for name in [
            "fsync@openssh.com",
            "limits@openssh.com",
            "home-directory",
            "users-groups-by-id@openssh.com",
            "fstatvfs@openssh.com",
        ] {
            assert_eq!(d(ext(name, &[])).unwrap().0, Class::Read, "{name}");
        }
        let (c, _, t) = d(ext("expand-path@openssh.com", &["~"])).unwrap();
        assert_eq!((c, t.as_str()), (Class::Read, "expand-path ~"));
        let (c, p, t) = d(ext("evil@example.com", &[])).unwrap();
        assert_eq!(
            (c, p.len(), t.as_str()),
            (Class::Unknown, 0, "extension evil@example.com")
        );
    }

    #[test]
    fn large_transfer_through_framer() {
        // 64 MiB in 256 KiB WRITEs, split into odd chunks: accounting and
        // framing stay exact at the sizes the relay sees.
        let data = vec![0x5a; 256 * 1024 - 64];
        let h = b"big".to_vec();
        let mut stream = Enc::new(FXP_OPEN)
            .u32(1)
            .str("/big")
            .u32(FXF_WRITE | FXF_CREAT)
            .attrs()
            .packet();
        for id in 2..258u32 {
            stream.extend(
                Enc::new(FXP_WRITE)
                    .u32(id)
                    .bytes(&h)
                    .u64(0)
                    .bytes(&data)
                    .packet(),
            );
        }
        let mut t = Transfers::new();
        let mut f = Framer::new(256 * 1024 + 1024);
        let mut n = 0;
        for chunk in stream.chunks(32 * 1024 + 7) {
            f.push(chunk);
            while let Some(p) = f.next_packet().unwrap() {
                let req = decode_request(&p[4..]).unwrap();
                t.request(&req);
                if let Request::Open { id, .. } = req {
                    t.response(&Response::Handle {
                        id,
                        handle: h.clone(),
                    });
                } else if let Some(id) = req.id() {
                    t.response(&status(id, FX_OK));
                }
                n += 1;
            }
        }
        assert_eq!(n, 257);
        let ops = t.finish();
        assert_eq!(ops[0].bytes, 256 * data.len() as u64);
    }
}
