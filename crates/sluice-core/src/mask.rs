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
}
