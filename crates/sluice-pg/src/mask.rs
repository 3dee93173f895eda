//! Masking inside PostgreSQL's messages: values are decoded by type and
//! format, masked by the core's masker, and re-encoded with correct lengths.
//!
//! A value's type decides how it can be masked and stay readable to the
//! client's driver: text-like values are masked inline (the marker replaces
//! only what was found), JSON inside its document, bytea inside the text it
//! holds; a value of any other type that turns out to hold something
//! sensitive (a card number in a bigint, an IP address in an inet) becomes
//! NULL, the one value every type accepts.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::wire::{begin, finish, message};
use sluice_core::detect::Kind;
use sluice_core::mask::Masked;
use sluice_core::masking::{ColumnRule, MaskCounts, Masking};

use crate::catalog::Relation;
use crate::classify::Lineage;

/// One column of a result, as RowDescription describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The output name.
    pub name: String,
    /// The source table's oid, 0 when the column is not a plain column reference.
    pub table_oid: u32,
    /// The source column's number in that table.
    pub attnum: i16,
    /// The value type's oid.
    pub type_oid: u32,
    /// 0 text, 1 binary.
    pub format: i16,
}

/// Reads a RowDescription body.
pub fn row_description(body: &[u8]) -> Option<Vec<Column>> {
    let n = u16::from_be_bytes(body.get(..2)?.try_into().ok()?) as usize;
    let mut b = &body[2..];
    let mut cols = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let (name, rest) = crate::wire::cstr(b)?;
        let f = rest.get(..18)?;
        cols.push(Column {
            name: name.to_string(),
            table_oid: u32::from_be_bytes(f[0..4].try_into().ok()?),
            attnum: i16::from_be_bytes(f[4..6].try_into().ok()?),
            type_oid: u32::from_be_bytes(f[6..10].try_into().ok()?),
            format: i16::from_be_bytes(f[16..18].try_into().ok()?),
        });
        b = &rest[18..];
    }
    Some(cols)
}

/// How one output column's values are masked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The value type's oid; 0 when unknown.
    pub type_oid: u32,
    /// Binary format; `None` when unknown (a value is then judged by its
    /// bytes read as text, and anything found makes it NULL).
    pub binary: Option<bool>,
    /// A column rule that masks every value whole.
    pub rule: Option<ColumnRule>,
}

impl Plan {
    /// A column nothing is known about.
    pub fn unknown() -> Plan {
        Plan {
            type_oid: 0,
            binary: None,
            rule: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    /// Text in the client encoding: masked inline.
    Text,
    Json,
    Jsonb,
    Bytea,
    /// Numbers that can hold a card number or the like.
    Int8,
    Numeric,
    /// Types that cannot hold what detectors find (booleans, small
    /// numbers, dates and times, uuids).
    Skip,
    /// An array of this element type.
    Array(u32),
    /// Anything else: NULL when its bytes, read as text, hold a finding.
    Other,
}

fn category(oid: u32, binary: bool) -> Category {
    match oid {
        25 | 1043 | 1042 | 19 | 18 | 705 | 142 => Category::Text,
        114 => Category::Json,
        3802 => Category::Jsonb,
        17 => Category::Bytea,
        20 => Category::Int8,
        1700 => Category::Numeric,
        16 | 21 | 23 | 26 | 28 | 27 | 700 | 701 | 1082 | 1083 | 1114 | 1184 | 1186 | 1266
        | 2950 | 1560 | 1562 | 3220 | 5069 | 24 | 2202 | 2203 | 2204 | 2205 | 2206 | 3734
        | 3769 | 4089 | 4096 | 600 | 601 | 602 | 603 | 604 | 628 | 718 | 790 | 829 | 774 => {
            Category::Skip
        }
        1009 => Category::Array(25),
        1015 => Category::Array(1043),
        1014 => Category::Array(1042),
        1003 => Category::Array(19),
        199 => Category::Array(114),
        3807 => Category::Array(3802),
        1001 => Category::Array(17),
        1016 => Category::Array(20),
        1231 => Category::Array(1700),
        // User types (citext, domains over text, enums) read as text in
        // text format; their binary forms are not known here.
        oid if oid >= 16384 && !binary => Category::Text,
        _ => Category::Other,
    }
}

/// What becomes of one value.
enum Outcome {
    Keep,
    Replace(Vec<u8>),
    Null,
}

/// Masks one value of a column; `counts` gets what was masked.
fn mask_value(m: &Masking, plan: &Plan, value: &[u8], counts: &mut MaskCounts) -> Outcome {
    if let Some(rule) = &plan.rule {
        counts.add(&rule.kind);
        return by_rule(m, rule, plan, value);
    }
    let Some(binary) = plan.binary else {
        // Neither the type nor the format is known (an Execute no Describe
        // told about): nothing can be checked, so nothing is shown.
        counts.add_label("undescribed");
        return Outcome::Null;
    };
    mask_typed(m, category(plan.type_oid, binary), binary, value, counts)
}

fn mask_typed(
    m: &Masking,
    cat: Category,
    binary: bool,
    value: &[u8],
    counts: &mut MaskCounts,
) -> Outcome {
    match cat {
        // Binary forms of these (a uuid's 16 bytes, a bit string's) can
        // carry any bytes a statement put there: withheld if they read as
        // something a detector finds.
        Category::Skip if binary => null_if_found(m, value, counts),
        Category::Skip => Outcome::Keep,
        Category::Text => inline(m, value, counts, false),
        Category::Json => inline(m, value, counts, true),
        Category::Jsonb if binary => match value.split_first() {
            Some((&1, doc)) => match inline(m, doc, counts, true) {
                Outcome::Replace(d) => Outcome::Replace([&[1u8][..], &d].concat()),
                other => other,
            },
            _ => null_if_found(m, value, counts),
        },
        Category::Jsonb => inline(m, value, counts, true),
        Category::Bytea => {
            let hex_form = !binary && value.starts_with(b"\\x");
            let raw = if hex_form {
                match hex::decode(&value[2..]) {
                    Ok(r) => r,
                    Err(_) => return null_if_found(m, value, counts),
                }
            } else {
                value.to_vec()
            };
            match std::str::from_utf8(&raw) {
                Ok(text) => match m.masker.mask_text(text) {
                    Some((masked, kinds)) => {
                        kinds.iter().for_each(|k| counts.add(k));
                        Outcome::Replace(if hex_form {
                            format!("\\x{}", hex::encode(masked)).into_bytes()
                        } else {
                            masked.into_bytes()
                        })
                    }
                    None => Outcome::Keep,
                },
                Err(_) => null_if_found(m, &raw, counts),
            }
        }
        Category::Int8 if binary => match <[u8; 8]>::try_from(value) {
            Ok(b) => null_if_found(m, i64::from_be_bytes(b).to_string().as_bytes(), counts),
            Err(_) => Outcome::Null,
        },
        Category::Numeric if binary => match numeric_text(value) {
            Some(t) => null_if_found(m, t.as_bytes(), counts),
            None => Outcome::Null,
        },
        Category::Other if binary => {
            // Arrays of any element type say it in their header.
            if let Some(elem) = binary_array_elem(value) {
                return match mask_binary_array(m, elem, value, counts) {
                    Outcome::Keep if category(elem, true) == Category::Other => {
                        counts.add_label("undecoded");
                        Outcome::Null
                    }
                    other => other,
                };
            }
            // A binary form not decoded here (records, ranges, inet, ...):
            // readable text is checked as text; anything else is withheld.
            match std::str::from_utf8(value) {
                Ok(t) if !t.chars().any(char::is_control) => inline(m, value, counts, false),
                _ => {
                    counts.add_label("undecoded");
                    Outcome::Null
                }
            }
        }
        Category::Numeric => {
            // The integer part (see `numeric_text`).
            let int = value.split(|&b| b == b'.').next().unwrap_or(value);
            null_if_found(m, int, counts)
        }
        Category::Int8 | Category::Other => null_if_found(m, value, counts),
        Category::Array(elem) if binary => mask_binary_array(m, elem, value, counts),
        Category::Array(elem) => match category(elem, false) {
            // Markers hold no quotes, commas or braces: array syntax survives.
            Category::Text | Category::Json | Category::Jsonb => inline(m, value, counts, false),
            _ => null_if_found(m, value, counts),
        },
    }
}

/// Masks what detectors find inside text (or a JSON document), in place.
fn inline(m: &Masking, value: &[u8], counts: &mut MaskCounts, json: bool) -> Outcome {
    let Ok(text) = std::str::from_utf8(value) else {
        // Not UTF-8 (another client encoding): nothing can be replaced in
        // place with confidence, so a finding withholds the whole value.
        return null_if_found(m, value, counts);
    };
    // Text that holds a JSON document (a jsonb cast to text, a json column
    // read as text) is masked as one, so key names count.
    let json = json || (text.starts_with(['{', '[']) && text.ends_with(['}', ']']));
    // bytea shown as hex (`\x6b6579...`, alone or inside a record or array)
    // is looked into.
    let unhexed = mask_hex_runs(m, text, counts);
    let text = unhexed.as_deref().unwrap_or(text);
    let masked = if json {
        m.masker.mask_json(text).or_else(|| {
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .is_err()
                .then(|| m.masker.mask_text(text))
                .flatten()
        })
    } else {
        m.masker.mask_text(text)
    };
    match masked {
        Some((t, kinds)) => {
            kinds.iter().for_each(|k| counts.add(k));
            Outcome::Replace(t.into_bytes())
        }
        None if unhexed.is_some() => Outcome::Replace(text.as_bytes().to_vec()),
        None => Outcome::Keep,
    }
}

/// NULL when the bytes, read as text, hold anything a detector finds.
fn null_if_found(m: &Masking, value: &[u8], counts: &mut MaskCounts) -> Outcome {
    let text = String::from_utf8_lossy(value);
    if mask_hex_runs(m, &text, counts).is_some() {
        return Outcome::Null;
    }
    match m.masker.mask_text(&text) {
        Some((_, kinds)) => {
            kinds.iter().for_each(|k| counts.add(k));
            Outcome::Null
        }
        None => Outcome::Keep,
    }
}

/// A whole value under a column rule, in a form its type can carry.
fn by_rule(m: &Masking, rule: &ColumnRule, plan: &Plan, value: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(value);
    let masked = match m.mask_by_rule(rule, &text) {
        Masked::Null => return Outcome::Null,
        Masked::Text(t) => t,
    };
    let binary = plan.binary.unwrap_or(true);
    match (plan.binary.map(|b| category(plan.type_oid, b)), binary) {
        (Some(Category::Text), _) => Outcome::Replace(masked.into_bytes()),
        (Some(Category::Json), _) => {
            Outcome::Replace(serde_json::Value::String(masked).to_string().into_bytes())
        }
        (Some(Category::Jsonb), true) => Outcome::Replace(
            [
                &[1u8][..],
                serde_json::Value::String(masked).to_string().as_bytes(),
            ]
            .concat(),
        ),
        (Some(Category::Jsonb), false) => {
            Outcome::Replace(serde_json::Value::String(masked).to_string().into_bytes())
        }
        (Some(Category::Bytea), false) => {
            Outcome::Replace(format!("\\x{}", hex::encode(masked)).into_bytes())
        }
        (Some(Category::Bytea), true) => Outcome::Replace(masked.into_bytes()),
        // Numbers, dates, unknown types: NULL is the only masked value they
        // all accept.
        _ => Outcome::Null,
    }
}

/// A binary numeric as decimal text (digits only matter to detectors).
fn numeric_text(v: &[u8]) -> Option<String> {
    let word =
        |i: usize| -> Option<i16> { Some(i16::from_be_bytes(v.get(i..i + 2)?.try_into().ok()?)) };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i32;
    // The integer part only: a card number stored as a number has no
    // fraction, and fraction digits must not read as one.
    if weight < 0 {
        return Some("0".into());
    }
    let mut s = String::new();
    for i in 0..=weight as usize {
        let d = if i < ndigits { word(8 + 2 * i)? } else { 0 };
        if i == 0 {
            s.push_str(&d.to_string());
        } else {
            s.push_str(&format!("{d:04}"));
        }
    }
    Some(s)
}

/// The element type of a binary array value, if it reads as one.
fn binary_array_elem(v: &[u8]) -> Option<u32> {
    let int =
        |i: usize| -> Option<i32> { Some(i32::from_be_bytes(v.get(i..i + 4)?.try_into().ok()?)) };
    let (ndim, flags) = (int(0)?, int(4)?);
    ((0..=6).contains(&ndim) && (flags == 0 || flags == 1) && v.len() >= 12 + 8 * ndim as usize)
        .then(|| int(8).map(|e| e as u32))
        .flatten()
}

/// Masks the elements of a binary array; an element that must become NULL
/// does, and the array says it holds NULLs.
fn mask_binary_array(m: &Masking, elem: u32, v: &[u8], counts: &mut MaskCounts) -> Outcome {
    let int =
        |i: usize| -> Option<i32> { Some(i32::from_be_bytes(v.get(i..i + 4)?.try_into().ok()?)) };
    let parse = || -> Option<(usize, Vec<Option<&[u8]>>)> {
        let ndim = usize::try_from(int(0)?).ok()?;
        let mut at = 12 + 8 * ndim;
        let mut count = 1usize;
        for d in 0..ndim {
            count = count.checked_mul(usize::try_from(int(12 + 8 * d)?).ok()?)?;
        }
        if ndim == 0 {
            count = 0;
        }
        let mut elems = Vec::with_capacity(count.min(v.len() / 4));
        for _ in 0..count {
            let len = int(at)?;
            at += 4;
            if len < 0 {
                elems.push(None);
            } else {
                let len = len as usize;
                elems.push(Some(v.get(at..at + len)?));
                at += len;
            }
        }
        (at == v.len()).then_some((12 + 8 * ndim, elems))
    };
    let Some((header, elems)) = parse() else {
        return null_if_found(m, v, counts);
    };
    let cat = category(elem, true);
    let mut changed = false;
    let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(elems.len());
    for e in elems {
        match e {
            None => out.push(None),
            Some(bytes) => match mask_typed(m, cat, true, bytes, counts) {
                Outcome::Keep => out.push(Some(bytes.to_vec())),
                Outcome::Replace(r) => {
                    changed = true;
                    out.push(Some(r));
                }
                Outcome::Null => {
                    changed = true;
                    out.push(None);
                }
            },
        }
    }
    if !changed {
        return Outcome::Keep;
    }
    let mut b = v[..header].to_vec();
    if out.iter().any(Option::is_none) {
        b[4..8].copy_from_slice(&1i32.to_be_bytes());
    }
    for e in out {
        match e {
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(x) => {
                b.extend_from_slice(&(x.len() as i32).to_be_bytes());
                b.extend_from_slice(&x);
            }
        }
    }
    Outcome::Replace(b)
}

/// Masks one value: `None` when it passes unchanged, `Some(None)` when it
/// becomes NULL.
pub fn mask_one(
    m: &Masking,
    plan: &Plan,
    value: &[u8],
    counts: &mut MaskCounts,
) -> Option<Option<Vec<u8>>> {
    match mask_value(m, plan, value, counts) {
        Outcome::Keep => None,
        Outcome::Null => Some(None),
        Outcome::Replace(r) => Some(Some(r)),
    }
}

/// Masks a DataRow; `None` when nothing in it changed. Columns beyond the
/// plans (which a correct server never sends) are judged by their bytes.
pub fn data_row(
    m: &Masking,
    plans: &[Plan],
    body: &[u8],
    counts: &mut MaskCounts,
) -> Result<Option<BytesMut>, String> {
    let bad = || "a DataRow the gateway cannot read".to_string();
    let n = u16::from_be_bytes(
        body.get(..2)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let mut at = 2;
    let mut values: Vec<(usize, usize, Outcome)> = Vec::new();
    let unknown = Plan::unknown();
    for i in 0..n as usize {
        let len = i32::from_be_bytes(
            body.get(at..at + 4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        at += 4;
        if len < 0 {
            continue;
        }
        let end = at + len as usize;
        let value = body.get(at..end).ok_or_else(bad)?;
        let plan = plans.get(i).unwrap_or(&unknown);
        match mask_value(m, plan, value, counts) {
            Outcome::Keep => {}
            o => values.push((at - 4, end, o)),
        }
        at = end;
    }
    if values.is_empty() {
        return Ok(None);
    }
    let mut out = BytesMut::with_capacity(body.len() + 64);
    let at = begin(&mut out, b'D');
    let mut from = 0;
    for (start, end, o) in values {
        out.extend_from_slice(&body[from..start]);
        match o {
            Outcome::Null => out.put_i32(-1),
            Outcome::Replace(r) => {
                out.put_i32(r.len() as i32);
                out.extend_from_slice(&r);
            }
            Outcome::Keep => unreachable!("kept values are not listed"),
        }
        from = end;
    }
    out.extend_from_slice(&body[from..]);
    finish(&mut out, at);
    Ok(Some(out))
}

/// Masks the text fields of an ErrorResponse or NoticeResponse (a failed
/// cast echoes the value it could not cast); `None` when nothing changed.
pub fn error_or_notice(
    m: &Masking,
    tag: u8,
    body: &[u8],
    counts: &mut MaskCounts,
) -> Option<BytesMut> {
    let mut fields: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut changed = false;
    let mut b = body;
    while let Some((&f, rest)) = b.split_first() {
        if f == 0 {
            break;
        }
        let end = rest.iter().position(|&c| c == 0)?;
        let raw = &rest[..end];
        let mut value = raw.to_vec();
        // Severity, code, source file, line and routine carry no data.
        if !matches!(f, b'S' | b'V' | b'C' | b'F' | b'L' | b'R' | b'P' | b'p') {
            if let Some((masked, kinds)) = m.masker.mask_text(&String::from_utf8_lossy(raw)) {
                kinds.iter().for_each(|k| counts.add(k));
                value = masked.into_bytes();
                changed = true;
            }
        }
        fields.push((f, value));
        b = &rest[end + 1..];
    }
    if !changed {
        return None;
    }
    let mut out = BytesMut::new();
    let at = begin(&mut out, tag);
    for (f, v) in fields {
        out.put_u8(f);
        out.extend_from_slice(&v);
        out.put_u8(0);
    }
    out.put_u8(0);
    finish(&mut out, at);
    Some(out)
}

/// An ErrorResponse or NoticeResponse with only its severity and SQLSTATE:
/// for a statement whose messages may echo values under a rule, which no
/// detector would recognise.
pub fn withheld_error_or_notice(tag: u8, body: &[u8], counts: &mut MaskCounts) -> BytesMut {
    let mut severity = "ERROR".to_string();
    let mut code = "XX000".to_string();
    let mut b = body;
    while let Some((&f, rest)) = b.split_first() {
        let Some(end) = rest.iter().position(|&c| c == 0) else {
            break;
        };
        let v = String::from_utf8_lossy(&rest[..end]).into_owned();
        match f {
            b'S' => severity = v,
            b'C' => code = v,
            _ => {}
        }
        b = &rest[end + 1..];
    }
    counts.add_label("withheld");
    let mut out = BytesMut::new();
    crate::wire::error_response(
        &mut out,
        &severity,
        &code,
        "sluice: this message's text is withheld: it may show values under masking rules",
        None,
    );
    out[0] = tag;
    out
}

/// Masks a ParameterStatus value (a setting the session can set to any
/// text, such as `application_name`, is reported back).
pub fn parameter_status(m: &Masking, body: &[u8], counts: &mut MaskCounts) -> Option<BytesMut> {
    let (name, rest) = crate::wire::cstr(body)?;
    let (value, _) = crate::wire::cstr(rest)?;
    let (masked, kinds) = m.masker.mask_text(value)?;
    kinds.iter().for_each(|k| counts.add(k));
    let mut out = BytesMut::new();
    let at = begin(&mut out, b'S');
    for s in [name, masked.as_str()] {
        out.extend_from_slice(s.as_bytes());
        out.put_u8(0);
    }
    finish(&mut out, at);
    Some(out)
}

/// Masks a NotificationResponse's channel and payload.
pub fn notification(m: &Masking, body: &[u8], counts: &mut MaskCounts) -> Option<BytesMut> {
    let pid = body.get(..4)?;
    let (channel, rest) = crate::wire::cstr(&body[4..])?;
    let (payload, _) = crate::wire::cstr(rest)?;
    let mut changed = false;
    let mut mask = |s: &str| match m.masker.mask_text(s) {
        Some((t, kinds)) => {
            kinds.iter().for_each(|k| counts.add(k));
            changed = true;
            t
        }
        None => s.to_string(),
    };
    let (channel, payload) = (mask(channel), mask(payload));
    if !changed {
        return None;
    }
    let mut out = BytesMut::new();
    let at = begin(&mut out, b'A');
    out.extend_from_slice(pid);
    for s in [channel, payload] {
        out.extend_from_slice(s.as_bytes());
        out.put_u8(0);
    }
    finish(&mut out, at);
    Some(out)
}

/// How each column of a result is masked: formats from the Bind that
/// asked for them (`None`: as RowDescription says).
pub fn plans(cols: &[Column], formats: Option<&[i16]>) -> Vec<Plan> {
    cols.iter()
        .enumerate()
        .map(|(i, c)| {
            let format = match formats {
                None => Some(c.format),
                Some([]) => Some(0),
                Some([f]) => Some(*f),
                Some(fs) => fs.get(i).copied(),
            };
            Plan {
                type_oid: c.type_oid,
                binary: format.map(|f| f == 1),
                rule: None,
            }
        })
        .collect()
}

/// Column rules applied to a result's columns. A plain column (RowDescription
/// names its table and column number) gets the rule for that source column;
/// a view's column is masked whole when the view reads a sensitive column;
/// an expression is masked whole when the statement may derive it from a
/// sensitive column (it names one, uses `*` or a whole row, or calls
/// something whose inputs cannot be seen), and when it extracts a JSON key
/// that names a secret. Where the origin cannot be looked up, the column is
/// masked whole.
pub fn apply_rules(
    m: &Masking,
    plans: &mut [Plan],
    cols: &[Column],
    relations: Option<&HashMap<u32, Arc<Relation>>>,
    lineage: Option<&Lineage>,
    views: &[Arc<Relation>],
) {
    let secret_keys = lineage.is_some_and(Lineage::extracts_secret_keys);
    if !m.has_rules() && !secret_keys {
        return;
    }
    let whole = |kind: Kind| ColumnRule::new("*.*.*", kind, None).expect("a valid pattern");
    let derived = || whole(Kind::Custom("derived".into()));
    for (plan, col) in plans.iter_mut().zip(cols) {
        if col.table_oid != 0 {
            if !m.has_rules() {
                continue;
            }
            let Some(rel) = relations.and_then(|r| r.get(&col.table_oid)) else {
                plan.rule = Some(derived());
                continue;
            };
            let name = rel
                .columns
                .get(&col.attnum)
                .map(String::as_str)
                .unwrap_or("");
            let own_or_inherited = std::iter::once((&rel.schema, &rel.name))
                .chain(rel.ancestors.iter().map(|(s, t)| (s, t)))
                .find_map(|(s, t)| m.column_rule(s, t, name));
            if let Some(rule) = own_or_inherited {
                plan.rule = Some(rule.clone());
            } else if statistics_view(&rel.name) && rel.schema == "pg_catalog" {
                plan.rule = Some(derived());
            } else if !rel.is_table() {
                plan.rule = view_reads_rules(m, rel).map(whole);
            }
            continue;
        }
        if secret_keys {
            plan.rule = Some(whole(Kind::Secret));
            continue;
        }
        plan.rule = match lineage {
            None => Some(derived()),
            Some(l) => may_derive_from_rules(m, l, views).map(whole),
        };
    }
}

/// Whether a statement's expressions may derive from a column under a
/// rule, and as what: it reads a table with rules and names such a column,
/// or uses `*`, a whole row, or something whose inputs cannot be seen.
pub fn may_derive_from_rules(m: &Masking, l: &Lineage, views: &[Arc<Relation>]) -> Option<Kind> {
    if !m.has_rules() || l.explain_only {
        return None;
    }
    // A view that reads a column under a rule: where its values come from
    // is not known column by column, so anything derived from it is masked.
    if let Some(kind) = views.iter().find_map(|v| view_reads_rules(m, v)) {
        return Some(kind);
    }
    let derived = || Some(Kind::Custom("derived".into()));
    // Something whose inputs cannot be seen (a function reading tables
    // itself, EXECUTE, FETCH, dynamic SQL) may read any column.
    if l.opaque || l.relations.iter().any(|r| statistics_view(r)) {
        return derived();
    }
    if !l.relations.iter().any(|t| m.table_has_rules(None, t)) {
        return None;
    }
    let tables = l.relations.iter().map(String::as_str);
    if let Some(rule) = m.rule_for_names(tables, l.columns.iter().map(String::as_str)) {
        return Some(rule.kind.clone());
    }
    if l.star || l.columns.iter().any(|c| l.relations.contains(c)) {
        return derived();
    }
    None
}

/// The kind of the first rule a view's base columns fall under; derived
/// when its definition may derive from a rule column or calls functions of
/// the database's own.
fn view_reads_rules(m: &Masking, v: &Relation) -> Option<Kind> {
    if v.calls_functions && m.has_rules() {
        return Some(Kind::Custom("derived".into()));
    }
    // A table that inherits columns under rules (a partition, a child).
    if v.ancestors
        .iter()
        .any(|(s, t)| m.table_has_rules(Some(s), t))
    {
        return Some(Kind::Custom("derived".into()));
    }
    if let Some(def) = &v.definition {
        let mut def = def.clone();
        def.explain_only = false;
        if def.star || def.opaque || def.columns.iter().any(|c| def.relations.contains(c)) {
            if let Some(kind) = may_derive_from_rules(m, &def, &[]) {
                return Some(kind);
            }
        }
    }
    v.reads.iter().find_map(|(s, t, c)| {
        if c == "*" {
            // The view reads whole rows of the table.
            return m
                .table_has_rules(Some(s), t)
                .then(|| Kind::Custom("derived".into()));
        }
        m.column_rule(s, t, c).map(|r| r.kind.clone())
    })
}

/// Catalog views that show sampled column values (most common values,
/// histogram bounds): masked whole wherever rules exist.
fn statistics_view(name: &str) -> bool {
    matches!(
        name,
        "pg_stats"
            | "pg_stats_ext"
            | "pg_stats_ext_exprs"
            | "pg_statistic"
            | "pg_statistic_ext_data"
    )
}

/// Masks a FunctionCallResponse's value (of a type not known here): NULL
/// when it holds anything a detector finds, and always when column rules
/// exist (a fast-path call has no lineage to judge it by).
pub fn function_result(m: &Masking, body: &[u8], counts: &mut MaskCounts) -> Option<BytesMut> {
    let len = i32::from_be_bytes(body.get(..4)?.try_into().ok()?);
    if len < 0 {
        return None;
    }
    let withheld = if m.has_rules() {
        counts.add_label("withheld");
        true
    } else {
        matches!(null_if_found(m, body.get(4..)?, counts), Outcome::Null)
    };
    withheld.then(|| message(b'V', &(-1i32).to_be_bytes()))
}

/// Masks what detectors find inside hex-encoded bytea (`\x` and an even
/// run of hex digits), re-encoded as hex so the field stays a valid bytea.
fn mask_hex_runs(m: &Masking, text: &str, counts: &mut MaskCounts) -> Option<String> {
    let b = text.as_bytes();
    let mut out = String::new();
    let mut at = 0;
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'\\' && b[i + 1] == b'x' {
            let start = i + 2;
            let mut end = start;
            while end < b.len() && b[end].is_ascii_hexdigit() {
                end += 1;
            }
            let end = start + (end - start) / 2 * 2;
            if end > start {
                if let Ok(raw) = hex::decode(&text[start..end]) {
                    // Binary bytes around the text must not hide it.
                    if let Some((masked, kinds)) =
                        m.masker.mask_text(&String::from_utf8_lossy(&raw))
                    {
                        kinds.iter().for_each(|k| counts.add(k));
                        out.push_str(&text[at..start]);
                        out.push_str(&hex::encode(masked));
                        at = end;
                    }
                }
            }
            i = end.max(i + 2);
        } else {
            i += 1;
        }
    }
    if at == 0 {
        return None;
    }
    out.push_str(&text[at..]);
    Some(out)
}

/// Masks one CopyData row of a text or CSV `COPY ... TO STDOUT`. Markers
/// hold no tabs, commas, quotes or backslashes, so the row's syntax stays.
pub fn copy_text(m: &Masking, body: &[u8], counts: &mut MaskCounts) -> Option<BytesMut> {
    // bytea fields arrive hex-encoded (`\x6b6579...`): inline looks inside.
    let masked = match inline(m, body, counts, false) {
        Outcome::Keep => return None,
        Outcome::Replace(r) => r,
        // Not UTF-8 and something found: withhold the row's text fields.
        Outcome::Null => {
            counts.add(&Kind::Custom("row".into()));
            b"\\N\n".to_vec()
        }
    };
    Some(message(b'd', &masked))
}

/// The signature that starts a binary COPY stream.
const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Masks one CopyData message of a binary `COPY ... TO STDOUT` whose
/// column types were described: the stream's header (first message only),
/// then one tuple or the trailer. Each field is masked as a binary value of
/// its type; a field of a type detectors cannot otherwise see into is
/// still checked as text when it reads as text (the description came from
/// another session, whose search_path may differ).
pub fn copy_binary(
    m: &Masking,
    types: &[u32],
    body: &[u8],
    counts: &mut MaskCounts,
) -> Result<Option<BytesMut>, String> {
    let bad = || "a binary COPY row the gateway cannot read".to_string();
    let int = |at: usize, n: usize| -> Result<i64, String> {
        let b = body.get(at..at + n).ok_or_else(bad)?;
        Ok(match n {
            2 => i16::from_be_bytes([b[0], b[1]]) as i64,
            _ => i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64,
        })
    };
    let mut at = 0;
    if body.starts_with(COPY_SIGNATURE) {
        at = 19 + usize::try_from(int(15, 4)?).map_err(|_| bad())?;
    }
    let fields = int(at, 2)?;
    if fields < 0 {
        return Ok(None);
    }
    if fields as usize != types.len() {
        return Err(bad());
    }
    let mut out: Vec<u8> = body.get(..at + 2).ok_or_else(bad)?.to_vec();
    let mut changed = false;
    at += 2;
    for &oid in types {
        let len = int(at, 4)?;
        at += 4;
        if len < 0 {
            out.extend_from_slice(&(len as i32).to_be_bytes());
            continue;
        }
        let value = body.get(at..at + len as usize).ok_or_else(bad)?;
        at += len as usize;
        let plan = Plan {
            type_oid: oid,
            binary: Some(true),
            rule: None,
        };
        let mut outcome = mask_value(m, &plan, value, counts);
        if matches!(outcome, Outcome::Keep) {
            // The description came from another session, whose search_path
            // may resolve the query to other tables: whatever the type
            // says, a field whose bytes hold a finding is withheld.
            outcome = null_if_found(m, value, counts);
        }
        match outcome {
            Outcome::Keep => {
                out.extend_from_slice(&(len as i32).to_be_bytes());
                out.extend_from_slice(value);
            }
            Outcome::Replace(r) => {
                changed = true;
                out.extend_from_slice(&(r.len() as i32).to_be_bytes());
                out.extend_from_slice(&r);
            }
            Outcome::Null => {
                changed = true;
                out.extend_from_slice(&(-1i32).to_be_bytes());
            }
        }
    }
    if at != body.len() {
        return Err(bad());
    }
    if !changed {
        return Ok(None);
    }
    Ok(Some(message(b'd', &out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::detect::Detectors;
    use sluice_core::mask::{Masker, Style};
    use std::collections::BTreeMap;

    fn masking() -> Masking {
        Masking::new(
            Masker::new(
                Detectors::default(),
                BTreeMap::new(),
                Style::Redact,
                [3; 32],
            ),
            vec![],
        )
    }

    fn row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b
    }

    fn plan(oid: u32, binary: bool) -> Plan {
        Plan {
            type_oid: oid,
            binary: Some(binary),
            rule: None,
        }
    }

    #[test]
    fn data_rows_are_masked_by_type_and_lengths_rewritten() {
        let m = masking();
        let mut counts = MaskCounts::default();
        let card: i64 = 4111111111111111;
        let body = row(&[
            Some(b"42"),
            Some(b"jane@example.com"),
            None,
            Some(&card.to_be_bytes()),
            Some(b"{\"password\": \"hunter2\"}"),
            Some(b"\\x6a616e65406578616d706c652e636f6d"),
        ]);
        let plans = [
            plan(23, false),
            plan(25, false),
            plan(25, false),
            plan(20, true),
            plan(3802, false),
            plan(17, false),
        ];
        let out = data_row(&m, &plans, &body, &mut counts).unwrap().unwrap();
        let expected = row(&[
            Some(b"42"),
            Some(b"[redacted:email]"),
            None,
            None,
            Some(b"{\"password\": \"[redacted:secret]\"}"),
            Some(format!("\\x{}", hex::encode("[redacted:email]")).as_bytes()),
        ]);
        assert_eq!(&out[5..], &expected[..]);
        assert_eq!(
            u32::from_be_bytes(out[1..5].try_into().unwrap()) as usize,
            out.len() - 1
        );
        assert_eq!(counts.0.get("email"), Some(&2));
        assert_eq!(counts.0.get("card"), Some(&1));
        assert_eq!(counts.0.get("secret"), Some(&1));
        // Nothing sensitive: no copy, the row passes as it is.
        let clean = row(&[Some(b"42"), Some(b"order 1234567 shipped")]);
        assert!(data_row(&m, &plans, &clean, &mut counts).unwrap().is_none());
    }

    #[test]
    fn binary_arrays_and_numerics_are_decoded() {
        let m = masking();
        let mut counts = MaskCounts::default();
        // text[] {'ok', 'jane@example.com'} in binary.
        let mut arr = Vec::new();
        for x in [1i32, 0, 25, 2, 1] {
            arr.extend_from_slice(&x.to_be_bytes());
        }
        for e in [&b"ok"[..], b"jane@example.com"] {
            arr.extend_from_slice(&(e.len() as i32).to_be_bytes());
            arr.extend_from_slice(e);
        }
        let Outcome::Replace(r) = mask_value(&m, &plan(1009, true), &arr, &mut counts) else {
            panic!("array not masked")
        };
        assert!(r.ends_with(b"[redacted:email]") && r.len() == arr.len());
        // numeric 4111111111111111 = groups 4111 1111 1111 1111, weight 3.
        let mut num = Vec::new();
        for x in [4i16, 3, 0, 0, 4111, 1111, 1111, 1111] {
            num.extend_from_slice(&x.to_be_bytes());
        }
        assert!(matches!(
            mask_value(&m, &plan(1700, true), &num, &mut counts),
            Outcome::Null
        ));
        assert_eq!(numeric_text(&num).unwrap(), "4111111111111111");
    }

    #[test]
    fn errors_and_notifications_are_masked() {
        let m = masking();
        let mut counts = MaskCounts::default();
        let mut body = Vec::new();
        for (f, v) in [
            (b'S', "ERROR"),
            (b'C', "22P02"),
            (
                b'M',
                "invalid input syntax for type integer: \"jane@example.com\"",
            ),
        ] {
            body.push(f);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let out = error_or_notice(&m, b'E', &body, &mut counts).unwrap();
        let (code, msg) = crate::wire::error_fields(&out[5..]);
        assert_eq!(code.as_deref(), Some("22P02"));
        assert_eq!(
            msg.as_deref(),
            Some("invalid input syntax for type integer: \"[redacted:email]\"")
        );
        let mut n = 7u32.to_be_bytes().to_vec();
        n.extend_from_slice(b"chan\0card 4111 1111 1111 1111\0");
        let out = notification(&m, &n, &mut counts).unwrap();
        assert!(out.ends_with(b"chan\0card [redacted:card]\0"));
    }
}
