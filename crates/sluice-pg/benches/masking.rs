//! What inline masking costs per value and per row, on rows like the ones
//! `WORKLOAD=rows bash bench/pgbench.sh` reads (an id, a name, an email
//! half the time, a note). Run with `cargo bench -p sluice-pg --bench masking`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use sluice_core::detect::Detectors;
use sluice_core::mask::{Masker, Style};
use sluice_core::masking::{MaskCounts, Masking};
use sluice_pg::mask::{data_row, Plan};

fn row(i: u32) -> Vec<u8> {
    let values = [
        i.to_string(),
        format!("Person {i}"),
        if i.is_multiple_of(2) {
            format!("user{i}@example.com")
        } else {
            "no email".into()
        },
        format!("joined in {}, plan {}", 2000 + i % 25, i % 7),
    ];
    let mut b = (values.len() as u16).to_be_bytes().to_vec();
    for v in values {
        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn main() {
    let m = Masking::new(
        Masker::new(
            Detectors::default(),
            BTreeMap::new(),
            Style::Redact,
            [1; 32],
        ),
        vec![],
    );
    let plans: Vec<Plan> = [23u32, 25, 25, 25]
        .iter()
        .map(|&oid| Plan {
            type_oid: oid,
            binary: Some(false),
            rule: None,
        })
        .collect();
    let rows: Vec<Vec<u8>> = (0..10_000).map(row).collect();
    for round in 0..3 {
        let start = Instant::now();
        let mut counts = MaskCounts::default();
        for r in &rows {
            black_box(data_row(&m, &plans, r, &mut counts).unwrap());
        }
        let per_row = start.elapsed().as_secs_f64() * 1e6 / rows.len() as f64;
        println!("round {round}: {per_row:.2} us per 4-column row (3 text values)");
    }
    for text in [
        "Person 12345",
        "user12345@example.com",
        "joined in 2007, plan 3",
        "no email",
    ] {
        let start = Instant::now();
        for _ in 0..20_000 {
            black_box(m.masker.mask_text(black_box(text)));
        }
        println!(
            "{:>8.2} us  mask_text({text:?})",
            start.elapsed().as_secs_f64() * 1e6 / 20_000.0
        );
    }
}
