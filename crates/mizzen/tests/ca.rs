//! `mizzen ca list` as users run it: issuances recorded with citadel's ledger API
//! in a temp key directory come back newest first as a table and as JSON; a missing
//! ledger is exit 1 with what to do, and is not created.

use std::path::Path;
use std::process::{Command, Output};

use citadel::ledger::{Issuance, Ledger};

fn mizzen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mizzen"))
        .args(args)
        .env_remove("CITADEL_KEY_DIR")
        .env_remove("CITADEL_DB_URL")
        .output()
        .expect("mizzen runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn issuance(n: i64, sa: &str, authenticator: &str) -> Issuance {
    Issuance {
        serial: format!("{:032x}", 0xabc0 + n),
        spiffe_id: format!("spiffe://cluster.local/ns/default/sa/{sa}"),
        // 2024-03-01T00:00:00Z plus n hours, valid one day.
        not_before: 1_709_251_200 + n * 3_600,
        not_after: 1_709_251_200 + n * 3_600 + 86_400,
        requester: format!("system:serviceaccount:default:{sa}"),
        key_algorithm: "ECDSA-P256".to_string(),
        authenticator: authenticator.to_string(),
    }
}

fn record(key_dir: &Path, issuances: Vec<Issuance>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let ledger = Ledger::open(&Ledger::default_url(key_dir)).await.unwrap();
            // One at a time, so the recording order is the listing order.
            for i in issuances {
                ledger.record(i).await.unwrap();
            }
            ledger.close().await;
        });
}

#[test]
fn ca_list_prints_the_ledger_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("citadel");
    record(
        &keys,
        vec![
            issuance(0, "web", "jwt"),
            issuance(1, "db", "token-review"),
            issuance(2, "web", "client-cert"),
        ],
    );
    let keys_arg = keys.to_str().unwrap();

    let o = mizzen(&["ca", "list", "--key-dir", keys_arg]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let header: Vec<&str> = lines[0].split("   ").map(str::trim).collect();
    let header: Vec<&str> = header.into_iter().filter(|s| !s.is_empty()).collect();
    assert_eq!(
        header,
        [
            "SERIAL",
            "SPIFFE ID",
            "NOT BEFORE",
            "NOT AFTER",
            "REQUESTER",
            "KEY",
            "AUTHENTICATOR"
        ]
    );
    let newest: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        newest,
        [
            "0000000000000000000000000000abc2",
            "spiffe://cluster.local/ns/default/sa/web",
            "2024-03-01T02:00:00Z",
            "2024-03-02T02:00:00Z",
            "system:serviceaccount:default:web",
            "ECDSA-P256",
            "client-cert"
        ],
        "{out}"
    );
    assert!(lines[2].contains("token-review") && lines[3].contains("abc0"));
    // Columns line up: every row starts its SPIFFE ID where the header does.
    let col = lines[0].find("SPIFFE ID").unwrap();
    assert!(lines[1..].iter().all(|l| l[col..].starts_with("spiffe://")));

    let o = mizzen(&[
        "ca",
        "list",
        "--key-dir",
        keys_arg,
        "-o",
        "json",
        "--spiffe-id",
        "spiffe://cluster.local/ns/default/sa/web",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{json}");
    assert_eq!(rows[0]["serial"], "0000000000000000000000000000abc2");
    assert_eq!(rows[0]["not_before"], 1_709_251_200 + 2 * 3_600);
    assert_eq!(rows[0]["authenticator"], "client-cert");
    assert!(rows[0]["recorded_at"].is_i64());
    assert_eq!(rows[1]["serial"], "0000000000000000000000000000abc0");

    // --limit, and --db-url instead of --key-dir.
    let url = Ledger::default_url(&keys);
    let o = mizzen(&["ca", "list", "--db-url", &url, "--limit", "1", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["serial"], "0000000000000000000000000000abc2");
}

#[test]
fn ca_list_without_a_ledger_says_what_to_do_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("nowhere");
    let o = mizzen(&["ca", "list", "--key-dir", keys.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&keys.join("ledger.db").display().to_string())
            && err.contains("start citadel with --key-dir DIR first"),
        "{err}"
    );
    assert!(stdout(&o).is_empty());
    assert!(!keys.exists(), "mizzen ca list created {}", keys.display());

    let o = mizzen(&["ca", "list", "--db-url", "mysql://db/ledger"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unsupported ledger URL"),
        "{}",
        stderr(&o)
    );
}
