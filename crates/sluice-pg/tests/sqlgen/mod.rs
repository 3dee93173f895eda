//! Random SQL-ish input for the classifier's property tests: word soup
//! from SQL's vocabulary, raw noise, and corpus statements cut, spliced or
//! sprinkled with noise. Seeded (SLUICE_FUZZ_SEED) and so reproducible.

#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const WORDS: &[&str] = &[
    "SELECT",
    "select",
    "DELETE",
    "UPDATE",
    "INSERT",
    "INTO",
    "FROM",
    "WHERE",
    "SET",
    "VALUES",
    "orders",
    "o",
    "id",
    "qty",
    "=",
    "1",
    "'x'",
    ";",
    "(",
    ")",
    ",",
    "*",
    "WITH",
    "d",
    "AS",
    "RETURNING",
    "EXPLAIN",
    "ANALYZE",
    "(ANALYZE false)",
    "DROP",
    "TABLE",
    "TRUNCATE",
    "COPY",
    "TO",
    "STDOUT",
    "STDIN",
    "'/tmp/x'",
    "PROGRAM",
    "FOR",
    "UPDATE",
    "CREATE",
    "PREPARE",
    "EXECUTE",
    "p",
    "DO",
    "$$",
    "$t$",
    "BEGIN",
    "END",
    "--",
    "/*",
    "*/",
    "\n",
    "E'\\''",
    "'",
    "\\",
    "\"drop\"",
    "pg_sleep(0)",
    "pg_terminate_backend(1)",
    "nextval('s')",
    "lower(item)",
    "my_func()",
    "count(*)",
    "UNION",
    "ALL",
    "SHOW",
    "ALL",
    "GRANT",
    "ON",
    "TO",
    "PUBLIC",
    "VACUUM",
    "LOCK",
    "NOTIFY",
    "c",
    "MERGE",
    "USING",
    "WHEN",
    "MATCHED",
    "THEN",
    "NOTHING",
    "DECLARE",
    "CURSOR",
    "FETCH",
    "JOIN",
    "LATERAL",
    "ORDER BY",
    "LIMIT",
    "OFFSET",
    "1e3",
    "U&'\\0041'",
    "ROW",
    "ARRAY[1]",
    "::text",
    "CASE",
    "ELSE",
    "NULL",
    "IS",
    "NOT",
];

pub fn seed() -> u64 {
    std::env::var("SLUICE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5_1u64 << 32 | 0xCE)
}

pub fn soup(rng: &mut StdRng) -> String {
    let n = rng.gen_range(1..24);
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
        s.push(if rng.gen_bool(0.9) { ' ' } else { '\t' });
    }
    s
}

pub fn noise(rng: &mut StdRng) -> String {
    let n = rng.gen_range(0..64);
    (0..n)
        .map(|_| match rng.gen_range(0..4) {
            0 => rng.gen_range(0u8..128) as char,
            1 => char::from_u32(rng.gen_range(0x80..0x3000)).unwrap_or('?'),
            _ => b"';$\\-/*()\"e\n"[rng.gen_range(0..12)] as char,
        })
        .collect()
}

/// Generates inputs, a third of each kind.
pub struct Generator {
    rng: StdRng,
    corpus: Vec<String>,
    i: u64,
}

impl Generator {
    /// A generator seeded from SLUICE_FUZZ_SEED, mutating `corpus_toml`'s statements.
    pub fn new(corpus_toml: &str) -> Generator {
        let corpus = corpus_toml
            .split("sql = ")
            .skip(1)
            .filter_map(|c| c.lines().next().map(|l| l.trim_matches('"').to_string()))
            .filter(|s| !s.is_empty() && !s.starts_with("\'\'\'"))
            .collect();
        Generator {
            rng: StdRng::seed_from_u64(seed()),
            corpus,
            i: 0,
        }
    }

    /// The next input (never containing NUL, which no message can carry).
    pub fn next(&mut self) -> String {
        self.i += 1;
        let rng = &mut self.rng;
        let sql = match self.i % 3 {
            0 => soup(rng),
            1 => noise(rng),
            _ => {
                let base = &self.corpus[rng.gen_range(0..self.corpus.len())];
                let mut chars: Vec<char> = base.chars().collect();
                let at = rng.gen_range(0..=chars.len());
                match rng.gen_range(0..3) {
                    0 => chars.truncate(at),
                    1 => chars.splice(at..at, soup(rng).chars()).for_each(drop),
                    _ => chars.splice(at..at, noise(rng).chars()).for_each(drop),
                }
                chars.into_iter().collect()
            }
        };
        sql.replace('\0', " ")
    }
}
