//! Masking styles: what a sensitive value becomes before it reaches a
//! client. Protocol-neutral: adapters decode values, the masker returns the
//! text to put in their place, and adapters re-encode it.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::detect::{Detectors, Kind};

/// How a sensitive value is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "style")]
pub enum Style {
    /// A fixed marker naming the kind: `[redacted:email]`.
    Redact,
    /// The shape, with only the last `keep` letters or digits:
    /// `****-****-****-4444`, `j****@*******.com`.
    Partial {
        /// Letters or digits left visible at the end.
        keep: usize,
    },
    /// A keyed, deterministic digest: equal values mask equally, so masked
    /// columns still join and group.
    Hash,
    /// The value becomes NULL (where the protocol has one).
    Null,
}

/// The masked form of one value: replacement text, or NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Masked {
    /// Text to put in place of the value.
    Text(String),
    /// The value becomes NULL.
    Null,
}

/// Masks values by detected kind; holds the key that makes hashes
/// deterministic for one gateway (and unguessable without it).
pub struct Masker {
    detectors: Detectors,
    styles: BTreeMap<Kind, Style>,
    default_style: Style,
    key: [u8; 32],
}

impl Masker {
    /// A masker with `detectors`, a style per kind (others get
    /// `default_style`), and the hashing key.
    pub fn new(
        detectors: Detectors,
        styles: BTreeMap<Kind, Style>,
        default_style: Style,
        key: [u8; 32],
    ) -> Masker {
        Masker {
            detectors,
            styles,
            default_style,
            key,
        }
    }

    /// The style for a kind.
    pub fn style(&self, kind: &Kind) -> Style {
        self.styles.get(kind).copied().unwrap_or(self.default_style)
    }

    /// Masks one whole value known to be of `kind` (a column rule).
    pub fn mask_value(&self, kind: &Kind, value: &str) -> Masked {
        match self.style(kind) {
            Style::Null => Masked::Null,
            style => Masked::Text(self.render(style, kind, value)),
        }
    }

    /// Masks every detected value inside `text`; `None` when nothing was
    /// found (the text passes unchanged, without a copy). Values inside
    /// text cannot become NULL: `Null` renders as the redaction marker.
    pub fn mask_text(&self, text: &str) -> Option<(String, Vec<Kind>)> {
        let found = self.detectors.find(text);
        if found.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut kinds = Vec::with_capacity(found.len());
        let mut at = 0;
        for f in found {
            out.push_str(&text[at..f.start]);
            let style = match self.style(&f.kind) {
                Style::Null => Style::Redact,
                s => s,
            };
            out.push_str(&self.render(style, &f.kind, &text[f.start..f.end]));
            at = f.end;
            kinds.push(f.kind);
        }
        out.push_str(&text[at..]);
        Some((out, kinds))
    }

    /// Masks a JSON document in place of its text: only string literals
    /// (decoded first, so escapes cannot hide a value) and numbers change;
    /// every string under a key that names a secret (`password`,
    /// `api_key`, ...) is masked whole. The rest stays byte for byte, key
    /// order and spacing included. `None` when nothing was found or the
    /// text is not JSON.
    pub fn mask_json(&self, text: &str) -> Option<(String, Vec<Kind>)> {
        serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
        let b = text.as_bytes();
        let mut out = String::new();
        let mut kinds = Vec::new();
        let mut at = 0;
        let mut i = 0;
        let mut depth = 0usize;
        // The container depth at which a secret key's value began.
        let mut secret_from: Option<usize> = None;
        let mut after_secret_key = false;
        while i < b.len() {
            let (end, replacement) = match b[i] {
                b'"' => {
                    let end = json_string_end(b, i)?;
                    let decoded: String = serde_json::from_str(&text[i..end]).ok()?;
                    let is_key = b[end..]
                        .iter()
                        .find(|c| !c.is_ascii_whitespace())
                        .is_some_and(|&c| c == b':');
                    let masked = if !is_key && (after_secret_key || secret_from.is_some()) {
                        let style = match self.style(&Kind::Secret) {
                            Style::Null => Style::Redact,
                            s => s,
                        };
                        kinds.push(Kind::Secret);
                        Some(self.render(style, &Kind::Secret, &decoded))
                    } else {
                        self.mask_text(&decoded).map(|(m, k)| {
                            kinds.extend(k);
                            m
                        })
                    };
                    after_secret_key = is_key && crate::detect::names_a_secret(&decoded);
                    (
                        end,
                        masked.map(|m| serde_json::Value::String(m).to_string()),
                    )
                }
                b'-' | b'0'..=b'9' => {
                    let end = i + b[i..]
                        .iter()
                        .position(|c| !matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                        .unwrap_or(b.len() - i);
                    // A number under a secret key, or that is a card (say),
                    // becomes a string marker.
                    let masked = if after_secret_key || secret_from.is_some() {
                        kinds.push(Kind::Secret);
                        Some(
                            serde_json::Value::String(self.render(
                                Style::Redact,
                                &Kind::Secret,
                                &text[i..end],
                            ))
                            .to_string(),
                        )
                    } else {
                        self.mask_text(&text[i..end]).map(|(m, k)| {
                            kinds.extend(k);
                            serde_json::Value::String(m).to_string()
                        })
                    };
                    after_secret_key = false;
                    (end, masked)
                }
                b'{' | b'[' => {
                    depth += 1;
                    if after_secret_key && secret_from.is_none() {
                        secret_from = Some(depth);
                    }
                    after_secret_key = false;
                    (i + 1, None)
                }
                b'}' | b']' => {
                    if secret_from == Some(depth) {
                        secret_from = None;
                    }
                    depth = depth.saturating_sub(1);
                    (i + 1, None)
                }
                b't' | b'f' | b'n' => {
                    after_secret_key = false;
                    let end = i + b[i..]
                        .iter()
                        .position(|c| !c.is_ascii_alphabetic())
                        .unwrap_or(b.len() - i);
                    (end, None)
                }
                _ => (i + 1, None),
            };
            if let Some(r) = replacement {
                out.push_str(&text[at..i]);
                out.push_str(&r);
                at = end;
            }
            i = end;
        }
        if kinds.is_empty() {
            return None;
        }
        out.push_str(&text[at..]);
        Some((out, kinds))
    }

    /// Renders a value of `kind` in `style` (`Null` renders as the marker,
    /// for places a value cannot become NULL).
    pub fn render_as(&self, style: Style, kind: &Kind, value: &str) -> String {
        self.render(style, kind, value)
    }

    fn render(&self, style: Style, kind: &Kind, value: &str) -> String {
        match style {
            Style::Redact | Style::Null => format!("[redacted:{}]", kind_name(kind)),
            Style::Partial { keep } if *kind == Kind::Email => partial_email(value, keep),
            Style::Partial { keep } => partial(value, keep),
            Style::Hash => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
                mac.update(kind_name(kind).as_bytes());
                mac.update(b"\0");
                mac.update(value.as_bytes());
                let digest = mac.finalize().into_bytes();
                format!("{}_{}", kind_name(kind), hex::encode(&digest[..8]))
            }
        }
    }
}

/// Where the JSON string literal starting at `start` (a quote) ends: the
/// index just past its closing quote.
fn json_string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The kind's name in markers and records.
pub fn kind_name(kind: &Kind) -> &str {
    match kind {
        Kind::Email => "email",
        Kind::Card => "card",
        Kind::Ssn => "ssn",
        Kind::Phone => "phone",
        Kind::Iban => "iban",
        Kind::Ip => "ip",
        Kind::Secret => "secret",
        Kind::Custom(name) => name,
    }
}

/// Letters and digits become `*` except the last `keep`; everything else
/// (separators, spaces) stays, so the shape is recognisable.
fn partial(value: &str, keep: usize) -> String {
    let total = value.chars().filter(|c| c.is_alphanumeric()).count();
    // Never reveal more than half of a short value.
    let keep = keep.min(total / 2);
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                seen += 1;
                if seen > total - keep {
                    c
                } else {
                    '*'
                }
            } else {
                c
            }
        })
        .collect()
}

/// `jane.doe@mail.example.com` becomes `j*******@****.*******.com`: the
/// first letter and the top-level domain stay.
fn partial_email(value: &str, _keep: usize) -> String {
    let Some((local, domain)) = value.rsplit_once('@') else {
        return partial(value, 0);
    };
    let mut out = String::with_capacity(value.len());
    let mut chars = local.chars();
    if let Some(first) = chars.next() {
        out.push(first);
        out.extend(chars.map(|_| '*'));
    }
    out.push('@');
    let labels: Vec<&str> = domain.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if i + 1 == labels.len() {
            out.push_str(label);
        } else {
            out.extend(label.chars().map(|_| '*'));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(style: Style) -> Masker {
        Masker::new(Detectors::default(), BTreeMap::new(), style, [7; 32])
    }

    #[test]
    fn styles_keep_the_shape_or_redact() {
        let p = masker(Style::Partial { keep: 4 });
        assert_eq!(
            p.mask_value(&Kind::Card, "5555-5555-5555-4444"),
            Masked::Text("****-****-****-4444".into())
        );
        assert_eq!(
            p.mask_value(&Kind::Email, "jane@example.com"),
            Masked::Text("j***@*******.com".into())
        );
        assert_eq!(
            p.mask_value(&Kind::Ssn, "12"),
            Masked::Text("*2".into()),
            "never more than half of a short value"
        );
        let r = masker(Style::Redact);
        assert_eq!(
            r.mask_value(&Kind::Phone, "+14155552671"),
            Masked::Text("[redacted:phone]".into())
        );
        assert_eq!(
            masker(Style::Null).mask_value(&Kind::Ip, "10.0.0.1"),
            Masked::Null
        );
    }

    #[test]
    fn hashes_are_deterministic_keyed_and_by_kind() {
        let h = masker(Style::Hash);
        let a = h.mask_value(&Kind::Email, "jane@example.com");
        assert_eq!(a, h.mask_value(&Kind::Email, "jane@example.com"));
        assert_ne!(a, h.mask_value(&Kind::Email, "john@example.com"));
        let other_key = Masker::new(Detectors::default(), BTreeMap::new(), Style::Hash, [8; 32]);
        assert_ne!(a, other_key.mask_value(&Kind::Email, "jane@example.com"));
        let Masked::Text(t) = a else { panic!() };
        assert!(
            t.starts_with("email_") && t.len() == "email_".len() + 16,
            "{t}"
        );
    }

    #[test]
    fn text_masking_replaces_only_what_was_found() {
        let m = Masker::new(
            Detectors::default(),
            BTreeMap::from([(Kind::Card, Style::Partial { keep: 4 })]),
            Style::Redact,
            [1; 32],
        );
        let (text, kinds) = m
            .mask_text("paid with 4111 1111 1111 1111 by jane@example.com, order 1234567")
            .unwrap();
        assert_eq!(
            text,
            "paid with **** **** **** 1111 by [redacted:email], order 1234567"
        );
        assert_eq!(kinds, vec![Kind::Card, Kind::Email]);
        assert_eq!(m.mask_text("order 1234567 shipped"), None);
    }

    #[test]
    fn json_is_masked_inside_strings_and_under_secret_keys_and_otherwise_kept() {
        let m = masker(Style::Redact);
        let doc = r#"{"b": 1, "a": {"email": "jane@example.com", "n": [1.5e3, true, null]},
  "db_password": "hunter2", "auth": {"api_key": ["x", "y"], "ok": "fine"},
  "card": 4111111111111111, "esc": "jane\u0040example.com"}"#;
        let (out, kinds) = m.mask_json(doc).unwrap();
        assert_eq!(
            out,
            r#"{"b": 1, "a": {"email": "[redacted:email]", "n": [1.5e3, true, null]},
  "db_password": "[redacted:secret]", "auth": {"api_key": ["[redacted:secret]", "[redacted:secret]"], "ok": "fine"},
  "card": "[redacted:card]", "esc": "[redacted:email]"}"#
        );
        assert_eq!(kinds.len(), 6, "{kinds:?}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
        assert_eq!(m.mask_json(r#"{"order": 1234567, "note": "fine"}"#), None);
        assert_eq!(m.mask_json("not json jane@example.com"), None);
    }
}
