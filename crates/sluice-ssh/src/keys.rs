//! The gateway's own SSH keys: its host key (generated on first start and
//! kept, so clients can pin it) and its certificate authority, which signs
//! short-lived user certificates for clients (`sluice connect`) and for the
//! gateway's own logins to targets that trust it.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::HashAlg;
pub use russh::keys::ssh_key::LineEnding;
pub use russh::keys::{Certificate, PrivateKey, PublicKey};

/// A key or certificate problem, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A certificate could not be made.
    #[error("cannot sign the certificate: {0}")]
    Sign(String),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// A new Ed25519 key from the operating system's random source.
pub fn new_key() -> PrivateKey {
    let seed: [u8; 32] = rand::random();
    PrivateKey::from(Ed25519Keypair::from_seed(&seed))
}

/// Reads an OpenSSH private key, or creates an Ed25519 one (mode 0600)
/// when the file does not exist yet.
pub fn load_or_create(path: &Path) -> Result<PrivateKey, KeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes()).map_err(|e| file_err(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = new_key();
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| file_err(path, e))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
            }
            write_new_private(path, text.as_bytes())?;
            // The public half beside it, for known_hosts and TrustedUserCAKeys.
            let public = key
                .public_key()
                .to_openssh()
                .map_err(|e| file_err(path, e))?;
            let pub_path = path.with_extension("pub");
            std::fs::write(&pub_path, format!("{public}\n")).map_err(|e| file_err(&pub_path, e))?;
            Ok(key)
        }
        Err(e) => Err(file_err(path, e)),
    }
}

/// Reads an OpenSSH private key file (a target credential).
pub fn load(path: &Path) -> Result<PrivateKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    PrivateKey::from_openssh(text.as_bytes()).map_err(|e| file_err(path, e))
}

fn write_new_private(path: &Path, data: &[u8]) -> Result<(), KeyError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    // Never replace a key another process just created.
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path).map_err(|e| file_err(path, e))?;
    f.write_all(data).map_err(|e| file_err(path, e))
}

/// Parses a pinned public key as written in `known_hosts` or
/// `authorized_keys` (`ssh-ed25519 AAAA... comment`), without host names.
pub fn parse_public(line: &str) -> Result<PublicKey, String> {
    PublicKey::from_openssh(line.trim()).map_err(|e| format!("not an OpenSSH public key: {e}"))
}

/// SHA-256 fingerprint as OpenSSH prints it (`SHA256:...`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The gateway's certificate authority.
pub struct Authority {
    key: PrivateKey,
}

/// What a user certificate says.
pub struct UserCert<'a> {
    /// Who it is for: the key id, which the gateway reads back on login
    /// (for client certificates, the token id).
    pub key_id: &'a str,
    /// Login names it is valid for.
    pub principals: &'a [String],
    /// How long it is valid from now.
    pub valid_for: Duration,
    /// Extensions such as `permit-pty`.
    pub extensions: &'a [&'a str],
}

impl Authority {
    /// An authority over a signing key.
    pub fn new(key: PrivateKey) -> Authority {
        Authority { key }
    }

    /// The public key targets list in `TrustedUserCAKeys`.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// Signs a user certificate for a public key. It is valid from a minute
    /// ago (clocks differ) for `valid_for`.
    pub fn sign_user(
        &self,
        subject: &PublicKey,
        cert: &UserCert<'_>,
    ) -> Result<Certificate, KeyError> {
        let now = unix_now();
        let sign = |e: russh::keys::ssh_key::Error| KeyError::Sign(e.to_string());
        let nonce: [u8; 32] = rand::random();
        let mut b = Builder::new(
            nonce.to_vec(),
            subject.key_data().clone(),
            now.saturating_sub(60),
            now + cert.valid_for.as_secs().max(1),
        )
        .map_err(sign)?;
        b.serial(rand::random()).map_err(sign)?;
        b.cert_type(CertType::User).map_err(sign)?;
        b.key_id(cert.key_id).map_err(sign)?;
        for p in cert.principals {
            b.valid_principal(p.clone()).map_err(sign)?;
        }
        for ext in cert.extensions {
            b.extension(*ext, "").map_err(sign)?;
        }
        b.sign(&self.key).map_err(sign)
    }

    /// Checks a certificate a client presented: signed by this authority,
    /// a user certificate, valid now, for `login`, with no critical option
    /// the gateway does not enforce. Returns its key id.
    pub fn verify_user<'c>(&self, cert: &'c Certificate, login: &str) -> Result<&'c str, String> {
        let ca = self.key.public_key().fingerprint(HashAlg::Sha256);
        cert.validate_at(unix_now(), [&ca]).map_err(|_| {
            "the certificate is not signed by this gateway, or has expired".to_string()
        })?;
        if cert.cert_type() != CertType::User {
            return Err("not a user certificate".into());
        }
        if !cert.valid_principals().iter().any(|p| p == login) {
            return Err(format!("the certificate is not valid for \"{login}\""));
        }
        // OpenSSH refuses certificates with critical options it does not
        // understand; the gateway enforces none, so it refuses them all.
        if let Some((name, _)) = cert.critical_options().iter().next() {
            return Err(format!("unsupported critical option \"{name}\""));
        }
        Ok(cert.key_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_and_certificates_verify() {
        let dir = tempfile_dir();
        let path = dir.join("host_key");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let ca = Authority::new(new_key());
        let user = new_key();
        let principals = vec!["web-1".to_string()];
        let cert = ca
            .sign_user(
                user.public_key(),
                &UserCert {
                    key_id: "tok_123",
                    principals: &principals,
                    valid_for: Duration::from_secs(300),
                    extensions: &["permit-pty"],
                },
            )
            .unwrap();
        assert_eq!(ca.verify_user(&cert, "web-1").unwrap(), "tok_123");
        assert!(ca.verify_user(&cert, "web-2").is_err());
        let other = Authority::new(new_key());
        assert!(other.verify_user(&cert, "web-1").is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sluice-keys-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
