//! Value detectors: find sensitive values (emails, payment cards, national
//! ids, phone numbers, IBANs, IP addresses, secrets) inside any text a
//! protocol carries back to a client. Protocol-neutral: adapters hand the
//! masker decoded values; this finds what to mask in them.
//!
//! Checksums keep false positives down (order numbers are not cards unless
//! they pass Luhn; an IBAN must pass mod-97), because masking harmless data
//! costs trust as much as missing sensitive data does.

use std::net::Ipv6Addr;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// What a detector recognises.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An email address.
    Email,
    /// A payment card number (Luhn-checked).
    Card,
    /// A US social security number (invalid ranges excluded).
    Ssn,
    /// A phone number (E.164 or common national formats).
    Phone,
    /// An IBAN (mod-97 checked).
    Iban,
    /// An IPv4 or IPv6 address.
    Ip,
    /// A secret or credential: private keys, JWTs, cloud keys, API tokens,
    /// passwords in connection strings and `password=` pairs.
    Secret,
    /// A detector from the configuration, by name.
    Custom(String),
}

/// A checksum a custom detector's matches must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checksum {
    /// Luhn (mod 10) over the match's digits.
    Luhn,
    /// ISO 7064 mod 97-10, as IBANs use.
    Mod97,
}

/// A detector defined in configuration.
#[derive(Debug, Clone)]
pub struct CustomDetector {
    /// Its name (the kind findings report).
    pub name: String,
    /// What it matches.
    pub pattern: Regex,
    /// A checksum matches must pass, if any.
    pub checksum: Option<Checksum>,
}

impl CustomDetector {
    /// A detector from configuration; the error names it.
    pub fn new(name: &str, pattern: &str, checksum: Option<Checksum>) -> Result<Self, String> {
        if name.is_empty() {
            return Err("a detector needs a name".into());
        }
        let pattern = Regex::new(pattern).map_err(|e| format!("detector {name:?}: {e}"))?;
        Ok(CustomDetector {
            name: name.to_string(),
            pattern,
            checksum,
        })
    }
}

impl Kind {
    /// The kind a name in configuration means: a built-in detector's
    /// (`email`, `card`, ...), else a label of the user's own.
    pub fn named(name: &str) -> Kind {
        match name {
            "email" => Kind::Email,
            "card" => Kind::Card,
            "ssn" => Kind::Ssn,
            "phone" => Kind::Phone,
            "iban" => Kind::Iban,
            "ip" => Kind::Ip,
            "secret" => Kind::Secret,
            other => Kind::Custom(other.to_string()),
        }
    }
}

/// One sensitive value found in a text: the byte range to mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was found.
    pub kind: Kind,
    /// Byte offset of its start.
    pub start: usize,
    /// Byte offset just past its end.
    pub end: usize,
}

/// The built-in detectors plus any custom ones.
#[derive(Debug, Clone, Default)]
pub struct Detectors {
    custom: Vec<CustomDetector>,
}

struct Patterns {
    email: Regex,
    card: Regex,
    ssn: Regex,
    phone: Regex,
    iban: Regex,
    ipv4: Regex,
    ipv6: Regex,
    /// Secrets whose whole match is the secret.
    secret: Regex,
    /// `key=value` pairs and URL passwords: only group 1 is the secret.
    secret_value: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let re = |s: &str| Regex::new(s).expect("built-in detector patterns are valid");
        Patterns {
            email: re(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
            // 13-19 digits, single spaces or dashes between them.
            card: re(r"\b\d(?:[ -]?\d){12,18}\b"),
            ssn: re(r"\b(\d{3})-(\d{2})-(\d{4})\b"),
            phone: re(concat!(
                r"(?:\+[1-9]\d{0,2}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4})",
                r"|(?:\(\d{3}\)[ ]?\d{3}[-.]\d{4})",
                r"|(?:\b\d{3}[-.]\d{3}[-.]\d{4}\b)"
            )),
            iban: re(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
            ipv4: re(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"),
            ipv6: re(r"[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*"),
            secret: re(concat!(
                r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----",
                r"|\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
                r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
                r"|\bAIza[0-9A-Za-z_-]{35}\b",
                r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b",
                r"|\bgithub_pat_[A-Za-z0-9_]{22,}\b",
                r"|\bglpat-[A-Za-z0-9_-]{20,}\b",
                r"|\bxox[abposr]-[A-Za-z0-9-]{10,}\b",
                r"|\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b",
                r"|\bsk-[A-Za-z0-9_-]{20,}\b",
                r"|\bslc_[0-9a-f]{48}\b"
            )),
            secret_value: re(concat!(
                // A key ending in one of these words (DB_PASSWORD, client_secret).
                r"(?i)(?:^|[^A-Za-z0-9_])[A-Za-z0-9_]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)",
                // The key may be quoted, as in JSON or YAML, and the quotes
                // escaped, as inside an array or record literal or CSV.
                r#"(?:\\?["']){0,2}\s*[=:]\s*(?:\\?["']){0,2}([^\s"'&;,\\]+)"#,
                r"|://[^:/@\s]+:([^@/\s]+)@"
            )),
        }
    })
}

/// Whether a field or key name says its value is a secret
/// (`password`, `db_pwd`, `client_secret`, `api_key`, `refresh_token`, ...).
pub fn names_a_secret(name: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?i)password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential")
            .expect("valid pattern")
    })
    .is_match(name)
}

impl Detectors {
    /// The built-in detectors and `custom` ones.
    pub fn new(custom: Vec<CustomDetector>) -> Detectors {
        Detectors { custom }
    }

    /// Every sensitive value in `text`, in order, without overlaps (where
    /// two detectors overlap, the wider match wins).
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        let p = patterns();
        let bytes = text.as_bytes();
        let has = |c: u8| bytes.contains(&c);
        let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();

        if has(b'@') {
            push_all(&mut found, &p.email, text, Kind::Email);
        }
        if text.contains("-----BEGIN")
            || text.contains("eyJ")
            || has(b'_')
            || has(b'-')
            || bytes.len() >= 20
        {
            push_all(&mut found, &p.secret, text, Kind::Secret);
        }
        if has(b'=') || has(b':') {
            for c in p.secret_value.captures_iter(text) {
                if let Some(m) = c.get(1).or_else(|| c.get(2)) {
                    found.push(Finding {
                        kind: Kind::Secret,
                        start: m.start(),
                        end: m.end(),
                    });
                }
            }
        }
        if digits >= 13 {
            for m in p.card.find_iter(text) {
                if card_like(m.as_str()) {
                    found.push(finding(Kind::Card, &m));
                }
            }
        }
        if digits >= 9 && has(b'-') {
            for c in p.ssn.captures_iter(text) {
                let n = |i: usize| c[i].parse::<u32>().unwrap_or(0);
                let (area, group, serial) = (n(1), n(2), n(3));
                if area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 {
                    found.push(finding(Kind::Ssn, &c.get(0).expect("whole match")));
                }
            }
        }
        if digits >= 10 {
            push_all(&mut found, &p.phone, text, Kind::Phone);
        }
        if digits >= 2 && bytes.len() >= 15 {
            for m in p.iban.find_iter(text) {
                if mod97(m.as_str()) {
                    found.push(finding(Kind::Iban, &m));
                }
            }
        }
        if has(b'.') && digits >= 4 {
            for m in p.ipv4.find_iter(text) {
                // Not one run of a longer dotted number (an OID such as
                // 1.3.6.1.4.1.2021, a version such as 10.4.1.2.7).
                let before = &text.as_bytes()[..m.start()];
                let after = &text.as_bytes()[m.end()..];
                let dotted = |b: &[u8]| b.len() >= 2 && b[0] == b'.' && b[1].is_ascii_digit();
                let rev: Vec<u8> = before.iter().rev().take(2).copied().collect();
                if !dotted(after) && !dotted(&rev) {
                    found.push(finding(Kind::Ip, &m));
                }
            }
        }
        if bytes.iter().filter(|&&b| b == b':').count() >= 2 {
            for m in p.ipv6.find_iter(text) {
                let s = m.as_str().trim_end_matches('.');
                // Not part of a word: `x::bigint` and `std::io` are code.
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                let inside_word = word(text[..m.start()].chars().next_back())
                    || word(text[m.start() + s.len()..].chars().next());
                if s.len() >= 3 && !inside_word && s.parse::<Ipv6Addr>().is_ok() {
                    found.push(Finding {
                        kind: Kind::Ip,
                        start: m.start(),
                        end: m.start() + s.len(),
                    });
                }
            }
        }
        for d in &self.custom {
            for m in d.pattern.find_iter(text) {
                let ok = match d.checksum {
                    None => true,
                    Some(Checksum::Luhn) => luhn(m.as_str()),
                    Some(Checksum::Mod97) => mod97(m.as_str()),
                };
                if ok && !m.is_empty() {
                    found.push(finding(Kind::Custom(d.name.clone()), &m));
                }
            }
        }
        resolve_overlaps(found)
    }
}

fn finding(kind: Kind, m: &regex::Match<'_>) -> Finding {
    Finding {
        kind,
        start: m.start(),
        end: m.end(),
    }
}

fn push_all(found: &mut Vec<Finding>, re: &Regex, text: &str, kind: Kind) {
    for m in re.find_iter(text) {
        found.push(finding(kind.clone(), &m));
    }
}

/// Sorted by start, overlaps merged into the widest match. A secret wins
/// over what overlaps it (the password in `user:pw@host` is not the start
/// of an email address).
fn resolve_overlaps(mut found: Vec<Finding>) -> Vec<Finding> {
    let secrets: Vec<(usize, usize)> = found
        .iter()
        .filter(|f| f.kind == Kind::Secret)
        .map(|f| (f.start, f.end))
        .collect();
    found.retain(|f| {
        f.kind == Kind::Secret || !secrets.iter().any(|&(s, e)| f.start < e && s < f.end)
    });
    found.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out: Vec<Finding> = Vec::with_capacity(found.len());
    for f in found {
        match out.last_mut() {
            Some(last) if f.start < last.end => {
                if f.end > last.end {
                    // Overlapping detectors: mask the union, keep the first kind.
                    last.end = f.end;
                }
            }
            _ => out.push(f),
        }
    }
    out
}

/// A card number: 13-19 digits, a known network's first digit, Luhn-valid,
/// and not one repeated digit.
fn card_like(s: &str) -> bool {
    let digits: Vec<u8> = s
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    (13..=19).contains(&digits.len())
        && (2..=6).contains(&digits[0])
        && digits.iter().any(|&d| d != digits[0])
        && luhn(s)
}

/// Luhn checksum over the digits of `s`.
pub fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() < 2 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// ISO 7064 mod 97-10 over an IBAN-like string (spaces ignored).
pub fn mod97(s: &str) -> bool {
    let compact: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) || !compact.iter().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    let rotated = compact[4..].iter().chain(compact[..4].iter());
    let mut rem: u32 = 0;
    for c in rotated {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        // Letters count as two digits (A = 10 ... Z = 35).
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, String)> {
        Detectors::default()
            .find(text)
            .into_iter()
            .map(|f| (f.kind, text[f.start..f.end].to_string()))
            .collect()
    }

    fn one(text: &str) -> (Kind, String) {
        let k = kinds(text);
        assert_eq!(k.len(), 1, "{text:?}: {k:?}");
        k[0].clone()
    }

    #[test]
    fn code_is_not_mistaken_for_ipv6() {
        let d = Detectors::default();
        for text in ["SELECT x::bigint", "std::io::Error", "a::b::c", "Foo::Bar"] {
            assert!(d.find(text).is_empty(), "{text}: {:?}", d.find(text));
        }
        assert_eq!(d.find("from fe80::1 and 2001:db8::ff00:42:8329").len(), 2);
    }

    #[test]
    fn finds_personal_data() {
        assert_eq!(
            one("mail jane.doe+x@example.co.uk now"),
            (Kind::Email, "jane.doe+x@example.co.uk".into())
        );
        assert_eq!(
            one("card 4111 1111 1111 1111."),
            (Kind::Card, "4111 1111 1111 1111".into())
        );
        assert_eq!(
            one("5555-5555-5555-4444"),
            (Kind::Card, "5555-5555-5555-4444".into())
        );
        assert_eq!(
            one("378282246310005"),
            (Kind::Card, "378282246310005".into())
        );
        assert_eq!(one("ssn 123-45-6789"), (Kind::Ssn, "123-45-6789".into()));
        assert_eq!(
            one("call +14155552671"),
            (Kind::Phone, "+14155552671".into())
        );
        assert_eq!(
            one("call (415) 555-2671"),
            (Kind::Phone, "(415) 555-2671".into())
        );
        assert_eq!(
            one("call 415-555-2671"),
            (Kind::Phone, "415-555-2671".into())
        );
        assert_eq!(
            one("+44 20 7946 0958"),
            (Kind::Phone, "+44 20 7946 0958".into())
        );
        assert_eq!(
            one("GB82 WEST 1234 5698 7654 32"),
            (Kind::Iban, "GB82 WEST 1234 5698 7654 32".into())
        );
        assert_eq!(
            one("DE89370400440532013000"),
            (Kind::Iban, "DE89370400440532013000".into())
        );
        assert_eq!(
            one("from 192.168.10.254"),
            (Kind::Ip, "192.168.10.254".into())
        );
        assert_eq!(
            one("from 2001:db8::8a2e:370:7334"),
            (Kind::Ip, "2001:db8::8a2e:370:7334".into())
        );
    }

    #[test]
    fn finds_secrets() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";
        assert_eq!(one(pem).0, Kind::Secret);
        assert_eq!(one(&format!("key: {pem} done")).1, pem);
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(one(jwt), (Kind::Secret, jwt.into()));
        assert_eq!(one("AKIAIOSFODNN7EXAMPLE").0, Kind::Secret);
        assert_eq!(
            one("ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789").0,
            Kind::Secret
        );
        assert_eq!(one("xoxb-123456789012-abcdefghij").0, Kind::Secret);
        assert_eq!(one(&format!("slc_{}", "ab".repeat(24))).0, Kind::Secret);
        assert_eq!(
            one("DB_PASSWORD=hunter2 "),
            (Kind::Secret, "hunter2".into())
        );
        assert_eq!(
            one("api_key: 'abc123def'"),
            (Kind::Secret, "abc123def".into())
        );
        assert_eq!(
            one("aws_secret_access_key = wJalrXUtnFEMI"),
            (Kind::Secret, "wJalrXUtnFEMI".into())
        );
        assert_eq!(kinds("tokens: 5"), vec![]);
        assert_eq!(
            one("postgres://app:s3cr3t@db.internal:5432/shop"),
            (Kind::Secret, "s3cr3t".into())
        );
    }

    #[test]
    fn leaves_ordinary_values_alone() {
        for text in [
            "order 1234567890123",           // 13 digits, not Luhn-valid
            "4111111111111112",              // Luhn fails
            "0000000000000000",              // one repeated digit
            "2026-11-26 16:21:01.123456+00", // a timestamp
            "12:30:45",                      // a time of day
            "version 1.2.3",                 // a version string
            "v15.20",
            "000-12-3456", // invalid SSN area
            "666-12-3456",
            "123-00-4567",
            "GB82 WEST 1234 5698 7654 33", // IBAN checksum fails
            "amount 12345.67 EUR",
            "SELECT id FROM orders",
            "id=42",
            "uuid 123e4567-e89b-12d3-a456-426614174000",
        ] {
            assert_eq!(kinds(text), vec![], "{text}");
        }
    }

    #[test]
    fn custom_detectors_with_checksums() {
        let d = Detectors::new(vec![
            CustomDetector {
                name: "employee_id".into(),
                pattern: Regex::new(r"\bEMP-\d{6}\b").unwrap(),
                checksum: None,
            },
            CustomDetector {
                name: "loyalty".into(),
                pattern: Regex::new(r"\bL\d{8}\b").unwrap(),
                checksum: Some(Checksum::Luhn),
            },
        ]);
        let f = d.find("EMP-123456 L79927398 L79927399");
        let kinds: Vec<_> = f.iter().map(|f| f.kind.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                Kind::Custom("employee_id".into()),
                Kind::Custom("loyalty".into())
            ]
        );
    }

    #[test]
    fn overlapping_findings_merge() {
        let f = Detectors::default().find("password=jane@example.com");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].start, f[0].end), (9, 25));
    }
}
