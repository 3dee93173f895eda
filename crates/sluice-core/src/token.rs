//! Token material: generation and hashing. Tokens are opaque, random and
//! prefixed so secret scanners can recognise them.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// The prefix of every sluice token.
pub const TOKEN_PREFIX: &str = "slc_";

/// A fresh random token (192 bits of entropy) with the sluice prefix.
pub fn generate() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// A short random public identifier with a readable prefix (`tok_`, `ses_`).
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The stored form of a token. A plain SHA-256 suffices (no slow KDF)
/// because tokens carry 192 random bits: there is nothing to brute-force.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a presented string has the shape of a sluice token at all.
pub fn looks_like_token(s: &str) -> bool {
    s.len() == TOKEN_PREFIX.len() + 48
        && s.starts_with(TOKEN_PREFIX)
        && s[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_unique_and_hash_stably() {
        let a = generate();
        let b = generate();
        assert!(looks_like_token(&a));
        assert_ne!(a, b);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert!(!hash(&a).contains(&a[4..]));
        assert!(!looks_like_token("slc_nothex"));
    }
}
