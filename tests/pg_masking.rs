//! Inline masking end to end: a seeded database with realistic sensitive
//! values, read through the gateway with psql (text) and a driver in
//! binary mode; no clear value reaches the client in any message, and
//! everything else is exactly what a direct connection returns.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use sluice_core::detect::Detectors;
use sluice_core::mask::{Masker, Style};
use tokio_postgres::{AsyncMessage, NoTls};

/// The sensitive values seeded; none may appear in what a masked client gets.
const SECRETS: &[&str] = &[
    "jane.doe@example.com",
    "4111 1111 1111 1111",
    "4111111111111111",
    "5555555555554444",
    "078-05-1120",
    "+44 20 7946 0958",
    "GB82WEST12345698765432",
    "AKIAIOSFODNN7EXAMPLE",
    "hunter2-correct-horse",
    "203.0.113.77",
    "call after 5pm",
];

fn seed(target: &PgServer) {
    psql_ok(
        &direct(target),
        r#"
        CREATE TABLE customers (
          id int PRIMARY KEY, name text, email text, phone text, card text, ssn text,
          iban text, notes text, profile jsonb, tags text[], card_number bigint,
          last_ip inet, blob bytea, amount numeric(10,2), created date);
        INSERT INTO customers VALUES
          (1, 'Jane Doe', 'jane.doe@example.com', '+44 20 7946 0958', '4111 1111 1111 1111',
           '078-05-1120', 'GB82WEST12345698765432', 'call after 5pm; order 1234567',
           '{"email": "jane.doe@example.com", "db_password": "hunter2-correct-horse", "plan": "gold", "visits": 12}',
           ARRAY['vip', 'jane.doe@example.com'], 5555555555554444, '203.0.113.77',
           convert_to('key AKIAIOSFODNN7EXAMPLE', 'UTF8'), 120.50, '2024-01-02'),
          (2, 'Order Bot', 'n/a', 'n/a', 'order 1234567890123', 'v1.2.3',
           'version 10.4.1 shipped 2024-03-05 12:30:00', 'no notes', '{"plan": "free"}', ARRAY['basic'],
           1234567, NULL, convert_to('plain', 'UTF8'), 3.00, '2024-02-03');
        CREATE VIEW customer_notes AS SELECT id, name, notes FROM customers;
        CREATE VIEW customer_names AS SELECT id, name FROM customers;
        "#,
    );
}

fn gateway(target: &PgServer) -> Gateway {
    Gateway::start(
        "",
        "allow_plaintext_loopback = true",
        &(String::from(
            "[policy.groups]\npii-readers = [\"carol\"]\n\n\
             [[masking.columns]]\ncolumn = \"public.customers.notes\"\nkind = \"notes\"\n\n",
        ) + &connection_toml("dev", target, "prefer", "env = \"dev\"")),
    )
}

fn agent_token(gw: &Gateway) -> String {
    gw.cli_ok(&[
        "token",
        "issue",
        "--principal",
        "carol",
        "--actor",
        "agent:claude",
        "--connection",
        "dev",
        "--ttl",
        "10m",
    ])
    .trim()
    .to_string()
}

/// Everything psql printed, results and errors, whether it succeeded or not.
fn psql_output(info: &str, sql: &str) -> String {
    let out = psql(info, sql);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_no_secret(what: &str, out: &str) {
    for s in SECRETS {
        assert!(!out.contains(s), "{what}: {s:?} leaked in {out}");
    }
}

#[test]
fn psql_never_sees_a_clear_value_and_everything_else_is_untouched() {
    let target = PgServer::start(Auth::Scram, false);
    seed(&target);
    let gw = gateway(&target);
    let info = gw.conninfo("dev", "carol", &agent_token(&gw));

    let all = psql_ok(&info, "SELECT * FROM customers ORDER BY id");
    assert_no_secret("select *", &all);
    assert!(all.contains("[redacted:email]"), "{all}");
    assert!(
        all.contains("\"db_password\": \"[redacted:secret]\""),
        "JSON masked in place: {all}"
    );
    // Order numbers, versions and timestamps are not mistaken for anything.
    assert!(all.contains("order 1234567890123") && all.contains("version 10.4.1 shipped"));

    // Renaming, casting, wrapping and aggregating do not reveal the values.
    for sql in [
        "SELECT email AS contact FROM customers",
        "SELECT upper(email), lower(card), email::varchar(100) FROM customers",
        "SELECT 'mail: ' || email || ' / ' || phone FROM customers",
        "SELECT string_agg(email, ',') FROM customers",
        "SELECT profile->>'email', profile->'db_password', tags[2] FROM customers",
        "SELECT row_to_json(c) FROM customers c",
        "SELECT json_agg(c) FROM customers c",
        "SELECT card_number, card_number::text, last_ip, host(last_ip) FROM customers",
        "SELECT convert_from(blob, 'UTF8'), blob FROM customers",
        "SELECT ssn, iban FROM customers",
    ] {
        assert_no_secret(sql, &psql_ok(&info, sql));
    }

    // A column rule follows the data, not the name: aliases, subqueries,
    // expressions, whole rows and views over the column are masked.
    for sql in [
        "SELECT notes FROM customers",
        "SELECT notes AS harmless FROM customers",
        "SELECT h FROM (SELECT notes AS h FROM customers) s",
        "SELECT upper(notes), notes || '!' FROM customers",
        "SELECT row_to_json(c) FROM customers c",
        "SELECT * FROM customers",
        "SELECT * FROM customer_notes",
        "SELECT string_agg(notes, ';') FROM customers",
    ] {
        let out = psql_ok(&info, sql);
        assert_no_secret(sql, &out);
        assert!(!out.contains("no notes"), "{sql}: {out}");
    }
    assert!(psql_ok(&info, "SELECT notes FROM customers").contains("[redacted:notes]"));
    // What does not derive from it stays clear.
    assert_eq!(psql_ok(&info, "SELECT count(*) FROM customers").trim(), "2");
    assert_eq!(
        psql_ok(&info, "SELECT name FROM customer_names ORDER BY id"),
        "Jane Doe\nOrder Bot\n"
    );

    // Ways around a rule that a review found, each closed.
    psql_ok(&info, "ANALYZE customers");
    for sql in [
        "PREPARE p AS SELECT upper(notes) FROM customers; EXECUTE p",
        "BEGIN; DECLARE cur CURSOR FOR SELECT upper(notes) FROM customers; FETCH ALL cur; COMMIT",
        "SELECT x || '' FROM customers c(a, b, c3, d, e, f, g, x)",
        "SELECT table_to_xml('customers', true, false, '')",
        "SELECT query_to_xml('select notes from customers', true, false, '')",
        "SELECT histogram_bounds::text, most_common_vals::text FROM pg_stats WHERE tablename = 'customers'",
        "SELECT blob::text, ARRAY[blob]::text FROM customers",
        "SELECT set_config('application_name', email, false) FROM customers WHERE id = 1",
    ] {
        let all = psql_output(&info, sql);
        assert_no_secret(sql, &all);
        assert!(!all.contains(&hex::encode("AKIAIOSFODNN7EXAMPLE")), "{sql}: {all}");
    }
    // Views that hide where values come from: a whole row next to a
    // column (not in pg_depend), and a function of the database's own.
    psql_ok(
        &info,
        "CREATE VIEW v_json AS SELECT id, to_jsonb(c) AS doc FROM customers c; \
         CREATE FUNCTION all_notes() RETURNS SETOF text LANGUAGE sql AS 'SELECT notes FROM customers'; \
         CREATE VIEW v_fn AS SELECT * FROM all_notes() AS n",
    );
    for sql in [
        "SELECT doc, doc->>'notes' FROM v_json",
        "SELECT * FROM v_fn",
        "SELECT notes::int FROM customer_notes",
        "EXPLAIN ANALYZE SELECT notes::int FROM customers",
        "SELECT ARRAY['password=\"hunter2-correct-horse\"']::text, ROW('password=\"hunter2-correct-horse\"')::text",
    ] {
        let all = psql_output(&info, sql);
        assert_no_secret(sql, &all);
    }
    // A child table (partitions alike) inherits its parent's rules.
    psql_ok(
        &info,
        "CREATE TABLE customers_archive () INHERITS (customers); \
         INSERT INTO customers_archive (id, name, notes) VALUES (3, 'Old', 'call after 5pm, archived')",
    );
    for sql in [
        "SELECT notes FROM customers_archive",
        "SELECT notes || '' FROM customers_archive",
        "SELECT notes FROM ONLY customers_archive",
    ] {
        let out = psql_ok(&info, sql);
        assert_no_secret(sql, &out);
        assert!(out.contains("[redacted:"), "{sql}: {out}");
    }
    psql_ok(&info, "DROP TABLE customers_archive");
    // Dotted numbers that are not addresses stay.
    assert_eq!(
        psql_ok(&info, "SELECT 'snmp 1.3.6.1.4.1.2021'").trim(),
        "snmp 1.3.6.1.4.1.2021"
    );
    psql_ok(
        &info,
        "CREATE VIEW \"LoudNotes\" AS SELECT notes AS x FROM customers",
    );
    assert_no_secret(
        "quoted view",
        &psql_ok(&info, "SELECT upper(x) FROM \"LoudNotes\""),
    );
    // An error that would echo a value under a rule keeps only its SQLSTATE.
    let out = psql(&info, "SELECT notes::int FROM customers");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("withheld"), "{err}");
    assert_no_secret("rule error", &err);
    // Code is not mistaken for addresses.
    assert_eq!(
        psql_ok(&info, "SELECT 'x::bigint and std::io::Error'").trim(),
        "x::bigint and std::io::Error"
    );

    // Columns without sensitive values are byte-identical to a direct read.
    let plain = "SELECT id, name, amount, created, tags[1] FROM customers ORDER BY id";
    assert_eq!(psql_ok(&info, plain), psql_ok(&direct(&target), plain));

    // COPY out, text and CSV, masked row by row; a COPY that would return
    // a column under a rule is refused (its rows do not say which column a
    // value is), and so is binary COPY.
    for sql in [
        "COPY (SELECT id, email, profile, blob FROM customers) TO STDOUT",
        "COPY (SELECT id, email, phone, blob FROM customers) TO STDOUT WITH (FORMAT csv, HEADER)",
        "COPY (SELECT * FROM customer_names) TO STDOUT",
    ] {
        let out = psql_ok(&info, sql);
        assert_no_secret(sql, &out);
        assert!(!out.contains(&hex::encode("AKIAIOSFODNN7EXAMPLE")), "{out}");
        assert!(out.lines().count() >= 2, "{out}");
    }
    for sql in [
        "COPY customers TO STDOUT",
        "COPY customers (id, notes) TO STDOUT",
        "COPY (SELECT * FROM customer_notes) TO STDOUT",
        "COPY (SELECT upper(notes) FROM customers) TO STDOUT",
    ] {
        let out = psql(&info, sql);
        assert!(!out.status.success(), "{sql}");
        assert_no_secret(sql, &String::from_utf8_lossy(&out.stdout));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("use SELECT"),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Expressions over a view that reads a column under a rule are masked.
    let out = psql_ok(
        &info,
        "SELECT upper(notes), length(name) FROM customer_notes",
    );
    assert!(!out.contains("CALL AFTER"), "{out}");
    assert_eq!(
        psql_ok(&info, "SELECT 1").trim(),
        "1",
        "the session goes on"
    );
    let out = psql(&info, "COPY customers TO STDOUT WITH (FORMAT binary)");
    assert!(!out.status.success());
    assert_no_secret("binary copy", &String::from_utf8_lossy(&out.stdout));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use SELECT"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = psql(
        &info,
        "COPY (SELECT id, email, blob, card_number FROM customers) TO STDOUT WITH (FORMAT binary)",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.starts_with(b"PGCOPY\n\xff\r\n\0"));
    assert_no_secret("binary copy", &String::from_utf8_lossy(&out.stdout));
    assert!(!out
        .stdout
        .windows(8)
        .any(|w| w == 5555555555554444i64.to_be_bytes()));
    assert_eq!(
        psql_ok(&info, "SELECT 1").trim(),
        "1",
        "the session goes on"
    );

    // Errors and notices echo values; they are masked too.
    let out = psql(&info, "SELECT email::int FROM customers WHERE id = 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[redacted:email]"), "{err}");
    assert_no_secret("error", &err);
    let out = psql(
        &info,
        "DO $$ BEGIN RAISE NOTICE 'found %', (SELECT card FROM customers WHERE id = 1); END $$",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    // A DO block hides what it reads: with rules configured, its notices
    // keep only their severity and code.
    assert!(
        err.contains("NOTICE") && (err.contains("[redacted:card]") || err.contains("withheld")),
        "{err}"
    );
    assert_no_secret("notice", &err);

    // What was masked is recorded, by kind, never the values.
    assert!(
        eventually(Duration::from_secs(10), || {
            let record = gw.last_session("carol").to_string();
            assert_no_secret("the record", &record);
            record.contains("\"masked\":{\"")
        }),
        "masked counts recorded"
    );

    // The tools for people who configure masking: what a masked principal
    // gets, column by column with the rule that fired; and which columns
    // hold detectable values no rule covers. Neither shows a clear value.
    let report = gw.cli_json(&[
        "mask",
        "test",
        "--connection",
        "dev",
        "SELECT id, email, notes, upper(notes) AS shout FROM customers ORDER BY id",
    ]);
    assert_no_secret("mask test", &report.to_string());
    let by: Vec<&str> = report["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["masked_by"].as_str().unwrap())
        .collect();
    assert_eq!(
        by,
        vec![
            "detectors",
            "detectors",
            "public.customers.notes as notes",
            "derived (notes)"
        ]
    );
    assert_eq!(report["columns"][1]["masked"]["email"], 1);
    assert_eq!(report["rows"][0][2], "[redacted:notes]");
    let scan = gw.cli_json(&["mask", "scan", "--connection", "dev"]);
    assert_no_secret("mask scan", &scan.to_string());
    let columns: Vec<&str> = scan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["column"].as_str().unwrap())
        .collect();
    for c in [
        "public.customers.email",
        "public.customers.card",
        "public.customers.ssn",
    ] {
        assert!(columns.contains(&c), "{c} in {columns:?}");
    }
    assert!(!columns.contains(&"public.customers.id"));
    let refused = gw.cli(&[
        "mask",
        "test",
        "--connection",
        "dev",
        "DELETE FROM customers",
    ]);
    assert!(!refused.status.success());
    assert_eq!(
        psql_ok(&direct(&target), "SELECT count(*) FROM customers").trim(),
        "2"
    );

    // A human in the cleared group sees clear values, and that is recorded.
    let carol = gw.conninfo("dev", "carol", &gw.token("carol", "dev", "10m"));
    assert!(psql_ok(&carol, "SELECT email FROM customers").contains("jane.doe@example.com"));
    assert!(eventually(Duration::from_secs(10), || {
        gw.last_session("carol")["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "session.unmasked")
    }));
    // Anyone else, human or not, is masked.
    let dave = gw.conninfo("dev", "dave", &gw.token("dave", "dev", "10m"));
    assert_no_secret("dave", &psql_ok(&dave, "SELECT * FROM customers"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_mode_driver_gets_masked_values_it_can_decode() {
    let target = PgServer::start(Auth::Scram, false);
    seed(&target);
    let gw = gateway(&target);
    let token = agent_token(&gw);
    let (client, mut conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} dbname=dev user=carol password={token}",
            gw.pg_port
        ),
        NoTls,
    )
    .await
    .unwrap();
    let (tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = msg {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });

    // Prepared statements return binary values, decoded by type.
    let row = client
        .query_one(
            "SELECT id, email, profile, tags, card_number, last_ip::text, blob, amount::float8 FROM customers WHERE id = $1",
            &[&1i32],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_eq!(row.get::<_, String>(1), "[redacted:email]");
    let profile: String = client
        .query_one("SELECT profile::text FROM customers WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(profile.contains("[redacted:secret]") && profile.contains("\"gold\""));
    let tags: Vec<String> = row.get(3);
    assert_eq!(
        tags,
        vec!["vip".to_string(), "[redacted:email]".to_string()]
    );
    assert_eq!(
        row.get::<_, Option<i64>>(4),
        None,
        "a card in a bigint becomes NULL"
    );
    assert_eq!(
        row.get::<_, Option<String>>(5),
        Some("[redacted:ip]/32".into())
    );
    assert_eq!(row.get::<_, Vec<u8>>(6), b"key [redacted:secret]".to_vec());
    assert_eq!(row.get::<_, f64>(7), 120.5);
    // Binary arrays and fixed-width types of any kind decode as direct.
    let arrays = client
        .query_one(
            "SELECT ARRAY[1, 2, 3]::int4[], ARRAY[1.5, 2.5]::float8[], ARRAY[true], 'pg_class'::regclass::oid",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(arrays.get::<_, Vec<i32>>(0), vec![1, 2, 3]);
    assert_eq!(arrays.get::<_, Vec<f64>>(1), vec![1.5, 2.5]);
    assert_eq!(arrays.get::<_, Vec<bool>>(2), vec![true]);
    // Unchanged rows decode exactly as direct ones.
    let other = client
        .query_one("SELECT card_number, blob FROM customers WHERE id = 2", &[])
        .await
        .unwrap();
    assert_eq!(other.get::<_, Option<i64>>(0), Some(1234567));
    assert_eq!(other.get::<_, Vec<u8>>(1), b"plain".to_vec());

    // Notifications are masked.
    client.batch_execute("LISTEN events").await.unwrap();
    client
        .batch_execute("NOTIFY events, 'new signup jane.doe@example.com'")
        .await
        .unwrap();
    let payload = tokio::time::timeout(Duration::from_secs(10), notes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payload, "new signup [redacted:email]");

    // A stream of rows keeps its shape: same count, same columns.
    let rows = client
        .query(
            "SELECT g, 'user' || g || '@example.com', g * 1000 FROM generate_series(1, 500) g",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 500);
    assert!(rows
        .iter()
        .all(|r| r.len() == 3 && r.get::<_, String>(1) == "[redacted:email]"));
    let _ = client.query("SELECT 1", &[]).await.unwrap();
    let copy = client
        .copy_out("COPY (SELECT email FROM customers) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<_> = copy.collect().await;
    let text: String = chunks
        .into_iter()
        .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
        .collect();
    assert!(text.contains("[redacted:email]") && !text.contains("jane.doe"));

    // Binary COPY: the gateway describes the COPY's query to learn the
    // types, and the driver decodes the masked rows.
    use tokio_postgres::binary_copy::BinaryCopyOutStream;
    use tokio_postgres::types::Type;
    let stream = client
        .copy_out("COPY (SELECT id, email, card_number, amount::float8 FROM customers ORDER BY id) TO STDOUT (FORMAT binary)")
        .await
        .unwrap();
    let rows: Vec<_> =
        BinaryCopyOutStream::new(stream, &[Type::INT4, Type::TEXT, Type::INT8, Type::FLOAT8])
            .collect()
            .await;
    let rows: Vec<_> = rows
        .into_iter()
        .map(|r| r.map_err(|e| format!("{e:?}")).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<i32>(0), 1);
    assert_eq!(rows[0].get::<&str>(1), "[redacted:email]");
    assert_eq!(rows[0].get::<Option<i64>>(2), None, "a card in a bigint");
    assert_eq!(rows[0].get::<f64>(3), 120.5);
    assert_eq!(rows[1].get::<Option<i64>>(2), Some(1234567));
    // The types come from a session of the gateway's own, whose
    // search_path may find another table of the same name: a field whose
    // bytes hold a finding is withheld whatever its described type.
    client
        .batch_execute(
            "CREATE SCHEMA s2; CREATE TABLE public.people (id int, info date); \
             CREATE TABLE s2.people (id int, info text); \
             INSERT INTO s2.people VALUES (1, E'x\\njane.doe@example.com'); \
             SET search_path = s2, public",
        )
        .await
        .unwrap();
    let stream = client
        .copy_out("COPY (SELECT info FROM people) TO STDOUT (FORMAT binary)")
        .await
        .unwrap();
    let rows: Vec<_> = BinaryCopyOutStream::new(stream, &[Type::TEXT])
        .collect()
        .await;
    let got = rows[0]
        .as_ref()
        .unwrap()
        .get::<Option<&str>>(0)
        .map(str::to_string);
    assert!(
        got.is_none() || !got.as_deref().unwrap().contains("jane.doe"),
        "{got:?}"
    );
    client
        .batch_execute("SET search_path = public")
        .await
        .unwrap();
    // A binary COPY of a column under a rule is still refused (through
    // the extended protocol, where an error cannot take the data's place,
    // by closing the session).
    let refused = client
        .copy_out("COPY (SELECT notes FROM customers) TO STDOUT (FORMAT binary)")
        .await;
    let error = match refused {
        Ok(s) => format!("{:?}", s.collect::<Vec<_>>().await),
        Err(e) => format!("{e:?}"),
    };
    assert!(error.contains("masking rules"), "{error}");
    assert!(!error.contains("call after"), "{error}");
}

/// An Execute that no Describe told about cannot be decoded by type: its
/// values are withheld, never passed through unchecked.
#[test]
fn rows_of_an_undescribed_execute_are_withheld() {
    use std::io::Write;
    let target = PgServer::start(Auth::Scram, false);
    seed(&target);
    let gw = gateway(&target);
    let mut s = raw_login(gw.pg_port, "carol", "dev", &agent_token(&gw));
    s.write_all(
        &[
            parse_msg(
                "",
                "SELECT id, notes, card_number FROM customers ORDER BY id",
            ),
            bind_msg("", ""),
            execute_msg(""),
            sync_msg(),
        ]
        .concat(),
    )
    .unwrap();
    let mut rows = 0;
    loop {
        let (tag, body) = read_msg(&mut s);
        if tag == b'D' {
            rows += 1;
            let n = u16::from_be_bytes([body[0], body[1]]);
            let mut at = 2;
            for _ in 0..n {
                let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                assert_eq!(len, -1, "every value withheld");
                at += 4;
            }
        }
        if tag == b'Z' {
            break;
        }
    }
    assert_eq!(rows, 2, "the rows themselves still arrive");

    // A statement prepared in SQL and run through Bind and Execute keeps
    // what its PREPARE reads.
    s.write_all(&query_msg(
        "PREPARE p AS SELECT upper(notes) AS u, notes || '' AS v FROM customers",
    ))
    .unwrap();
    read_until_ready(&mut s);
    s.write_all(
        &[
            bind_msg("", "p"),
            frontend_msg(b'D', b"P\0"),
            execute_msg(""),
            sync_msg(),
        ]
        .concat(),
    )
    .unwrap();
    let mut got = Vec::new();
    loop {
        let (tag, body) = read_msg(&mut s);
        got.extend_from_slice(&body);
        if tag == b'Z' {
            break;
        }
    }
    let got = String::from_utf8_lossy(&got);
    assert!(!got.to_lowercase().contains("call after"), "{got}");
    assert!(got.contains("[redacted:notes]"), "{got}");

    // Every byte the client receives, for statements that touch every kind
    // of message that can carry data, holds no clear value.
    let mut received = Vec::new();
    for sql in [
        "SELECT * FROM customers",
        "SELECT email::int FROM customers",
        "COPY (SELECT id, email, phone, blob FROM customers) TO STDOUT",
        "LISTEN leaks; NOTIFY leaks, 'card 4111 1111 1111 1111'",
        "DO $$ BEGIN RAISE NOTICE '%', (SELECT email FROM customers WHERE id = 1); END $$",
        "SET application_name = 'jane.doe@example.com'",
        "SELECT * FROM customer_notes",
    ] {
        s.write_all(&query_msg(sql)).unwrap();
        loop {
            let (tag, body) = read_msg(&mut s);
            received.push(tag);
            received.extend_from_slice(&body);
            if tag == b'Z' {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&received);
    assert_no_secret("raw bytes", &text);
    assert!(text.contains("[redacted:email]") && text.contains("[redacted:card]"));
}

/// Property: for random values, a masked session returns the same rows and
/// columns as a direct one; each value is the direct value, masked exactly
/// where a detector finds something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masking_keeps_rows_and_columns_and_changes_only_what_is_found() {
    use rand::{Rng, SeedableRng};
    let target = PgServer::start(Auth::Scram, false);
    let gw = gateway(&target);
    let token = agent_token(&gw);
    let (direct_client, conn) = tokio_postgres::connect(&direct(&target), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let (masked_client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} dbname=dev user=carol password={token}",
            gw.pg_port
        ),
        NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    direct_client
        .batch_execute("CREATE TABLE samples (id int, v text, j jsonb, n bigint)")
        .await
        .unwrap();
    let parts = [
        "hello",
        "order 12345678",
        "jane@example.com",
        "4111 1111 1111 1111",
        "v2.3.4",
        "+1 415 555 2671",
        "2024-05-06 07:08:09",
        "10.0.0.1",
        "password=s3cret",
        "é ü ✓",
        "",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for id in 0..300i32 {
        let v: Vec<&str> = (0..rng.gen_range(0..4))
            .map(|_| parts[rng.gen_range(0..parts.len())])
            .collect();
        let v = v.join(" ");
        let j = serde_json::json!({ "note": v, "n": id }).to_string();
        let n: i64 = if rng.gen_bool(0.2) {
            4111111111111111
        } else {
            rng.gen_range(0..1_000_000_000)
        };
        direct_client
            .execute(
                "INSERT INTO samples VALUES ($1, $2, $3::text::jsonb, $4)",
                &[&id, &v, &j, &n],
            )
            .await
            .unwrap();
    }
    let masker = Masker::new(
        Detectors::default(),
        BTreeMap::new(),
        Style::Redact,
        [0; 32],
    );
    let sql = "SELECT id, v, j::text, n FROM samples ORDER BY id";
    let want = direct_client.query(sql, &[]).await.unwrap();
    let got = masked_client.query(sql, &[]).await.unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.len(), w.len());
        let wv: String = w.get(1);
        let gv: String = g.get(1);
        let expected = masker.mask_text(&wv).map(|(t, _)| t).unwrap_or(wv.clone());
        assert_eq!(gv, expected, "value {wv:?}");
        let wn: i64 = w.get(3);
        let gn: Option<i64> = g.get(3);
        if masker.mask_text(&wn.to_string()).is_some() {
            assert_eq!(gn, None);
        } else {
            assert_eq!(gn, Some(wn));
        }
        let gj: String = g.get(2);
        serde_json::from_str::<serde_json::Value>(&gj).expect("masked JSON still parses");
    }
    // The same through the simple protocol (text format).
    let rows: Vec<_> = masked_client
        .simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), want.len());
    for (g, w) in rows.iter().zip(&want) {
        assert_eq!(g.len(), w.len());
        let wv: String = w.get(1);
        let expected = masker.mask_text(&wv).map(|(t, _)| t).unwrap_or(wv.clone());
        assert_eq!(g.get(1), Some(expected.as_str()));
    }
}
