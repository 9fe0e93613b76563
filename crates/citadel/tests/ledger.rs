//! The issuance ledger against real databases: a SQLite file in a temp dir, and
//! PostgreSQL when `MIZZEN_TEST_POSTGRES_URL` names one (scripts/test starts it).
//! Persistence across reopen, newest-first listing, group commit under concurrency,
//! survival of a SIGKILL mid-write, and the errors users see.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use citadel::ledger::{Issuance, Ledger, LedgerError, ListQuery};

fn issuance(n: usize) -> Issuance {
    Issuance {
        serial: format!("{n:032x}"),
        spiffe_id: format!("spiffe://cluster.local/ns/ns{}/sa/sa", n % 7),
        not_before: 1_700_000_000 + n as i64,
        not_after: 1_700_086_400 + n as i64,
        requester: format!("system:serviceaccount:ns{}:sa", n % 7),
        key_algorithm: if n.is_multiple_of(2) {
            "ECDSA-P256"
        } else {
            "RSA-2048"
        }
        .to_string(),
        authenticator: "jwt".to_string(),
    }
}

/// Records `count` issuances numbered from `first`, from `tasks` concurrent tasks.
async fn record_concurrently(ledger: &Ledger, first: usize, count: usize, tasks: usize) {
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let ledger = ledger.clone();
        set.spawn(async move {
            for n in (first + t..first + count).step_by(tasks) {
                ledger.record(issuance(n)).await.expect("record");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("recording task");
    }
}

/// The persistence checks shared by both backends: `ledger` is fresh, and `reopen`
/// opens the same database again.
async fn persists_across_reopen(ledger: Ledger, url: &str) {
    const N: usize = 2_000;
    record_concurrently(&ledger, 0, N, 50).await;
    // One more, alone, so it is certainly the newest.
    ledger.record(issuance(N)).await.unwrap();
    ledger.close().await;
    assert!(matches!(
        ledger.record(issuance(N + 1)).await,
        Err(LedgerError::Closed)
    ));

    let ledger = Ledger::open(url).await.expect("reopen");
    assert_eq!(ledger.count().await.unwrap(), N as u64 + 1);
    let all = ledger.list(&ListQuery::default()).await.unwrap();
    assert_eq!(all.len(), N + 1);
    assert_eq!(all[0].issuance, issuance(N), "newest first");
    let serials: HashSet<_> = all.iter().map(|r| r.issuance.serial.clone()).collect();
    assert_eq!(serials.len(), N + 1);
    for n in 0..=N {
        assert!(
            serials.contains(&issuance(n).serial),
            "issuance {n} missing"
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        all.iter()
            .all(|r| (now - 600..=now + 1).contains(&r.recorded_at))
    );

    let ns3 = "spiffe://cluster.local/ns/ns3/sa/sa";
    let only = ledger
        .list(&ListQuery {
            limit: None,
            spiffe_id: Some(ns3.to_string()),
        })
        .await
        .unwrap();
    assert_eq!(only.len(), (0..=N).filter(|n| n % 7 == 3).count());
    assert!(only.iter().all(|r| r.issuance.spiffe_id == ns3));
    // Same relative order as the full listing.
    let expected: Vec<_> = all.iter().filter(|r| r.issuance.spiffe_id == ns3).collect();
    assert_eq!(only.iter().collect::<Vec<_>>(), expected);

    let first10 = ledger
        .list(&ListQuery {
            limit: Some(10),
            spiffe_id: None,
        })
        .await
        .unwrap();
    assert_eq!(first10, all[..10]);
    let json = serde_json::to_value(&first10[0]).unwrap();
    assert_eq!(json["serial"], issuance(N).serial);
    assert_eq!(json["authenticator"], "jwt");
    assert!(json["recorded_at"].is_i64());

    // Recording resumes after a reopen.
    ledger.record(issuance(N + 1)).await.unwrap();
    assert_eq!(ledger.count().await.unwrap(), N as u64 + 2);
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_ledger_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // The key directory does not exist yet: open creates it and the file.
    let url = Ledger::default_url(&dir.path().join("keys"));
    let ledger = Ledger::open(&url).await.expect("open");
    assert_eq!(ledger.backend(), "sqlite");
    assert!(dir.path().join("keys/ledger.db").is_file());
    persists_across_reopen(ledger, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_records_10k_from_64_tasks_in_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&Ledger::default_url(dir.path()))
        .await
        .unwrap();
    let start = Instant::now();
    record_concurrently(&ledger, 0, 10_000, 64).await;
    let took = start.elapsed();
    println!(
        "recorded 10,000 issuances from 64 tasks on SQLite in {took:?} ({:.0}/s)",
        10_000.0 / took.as_secs_f64()
    );
    assert_eq!(ledger.count().await.unwrap(), 10_000);
    // One commit per issuance would take far longer; group commit keeps this well
    // above citadel's 5,000 signatures per second even in a debug build.
    assert!(took.as_secs_f64() < 2.0, "10,000 records took {took:?}");
    ledger.close().await;
}

#[tokio::test]
async fn duplicate_serial_is_an_error_and_spares_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&Ledger::default_url(dir.path()))
        .await
        .unwrap();
    ledger.record(issuance(1)).await.unwrap();
    let err = ledger.record(issuance(1)).await.unwrap_err();
    assert!(
        matches!(&err, LedgerError::Duplicate { serial } if *serial == issuance(1).serial),
        "{err:?}"
    );
    assert!(err.to_string().contains("already in the ledger"), "{err}");

    // Duplicates inside one batch: exactly one of each pair wins, and the fresh
    // issuances queued with them are recorded.
    let (a, b, c, d) = tokio::join!(
        ledger.record(issuance(2)),
        ledger.record(issuance(2)),
        ledger.record(issuance(3)),
        ledger.record(issuance(1)),
    );
    assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    c.unwrap();
    assert!(matches!(d, Err(LedgerError::Duplicate { .. })));
    assert_eq!(ledger.count().await.unwrap(), 3);
    ledger.close().await;
}

#[tokio::test]
async fn bad_urls_are_named_in_the_error() {
    for url in ["mysql://root:hunter2@db/ledger", "ledger.db", ""] {
        let err = Ledger::open(url).await.unwrap_err();
        assert!(matches!(err, LedgerError::UnsupportedUrl { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("sqlite://") && msg.contains("postgres://"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "password leaked: {msg}");
    }
    let msg = Ledger::open("mysql://root:hunter2@db/ledger")
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("mysql://root:***@db/ledger"), "{msg}");

    let err = Ledger::open("sqlite:///tmp/x.db?mode=bogus")
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::InvalidUrl { .. }), "{err:?}");
    assert!(err.to_string().contains("sqlite:///tmp/x.db?mode=bogus"));

    // Nothing listens on port 1: the error names the URL without its password.
    let err = Ledger::open("postgres://mizzen:hunter2@127.0.0.1:1/ledger")
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("postgres://mizzen:***@127.0.0.1:1/ledger") && !msg.contains("hunter2"),
        "{msg}"
    );
}

#[tokio::test]
async fn uncreatable_directory_and_missing_file_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let err = Ledger::open(&Ledger::default_url(&file.join("keys")))
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::CreateDir { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&file.join("keys").display().to_string()) && msg.contains("--key-dir"),
        "{msg}"
    );

    let url = Ledger::default_url(&dir.path().join("absent"));
    let err = Ledger::open_existing(&url).await.unwrap_err();
    assert!(matches!(err, LedgerError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("start citadel with --key-dir"));
    assert!(
        !dir.path().join("absent").exists(),
        "open_existing created something"
    );

    // Once created, open_existing finds it.
    Ledger::open(&url).await.unwrap().close().await;
    let ledger = Ledger::open_existing(&url).await.unwrap();
    assert_eq!(ledger.count().await.unwrap(), 0);
    ledger.close().await;
}

/// Environment variable that turns [`crash_helper_writer`] on and names its file.
const CRASH_DB: &str = "MIZZEN_LEDGER_CRASH_TEST_DB";

#[test]
#[ignore = "helper process for sqlite_survives_sigkill_mid_write; run by it"]
fn crash_helper_writer() {
    let path = std::env::var(CRASH_DB).expect("run by sqlite_survives_sigkill_mid_write");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ledger = Ledger::open(&Ledger::default_url(Path::new(&path)))
            .await
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..16 {
            let ledger = ledger.clone();
            tasks.spawn(async move {
                // Bounded, in case the parent dies without killing us (a closed
                // stdout also ends the helper: println! panics).
                for n in (t..1_000_000).step_by(16) {
                    let i = issuance(n);
                    ledger.record(i.clone()).await.unwrap();
                    // Printed only once `record` returned: committed.
                    println!("committed {}", i.serial);
                }
            });
        }
        tasks.join_next().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_sigkill_mid_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash_helper_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DB, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut committed = Vec::new();
    while committed.len() < 500 {
        let line = lines
            .next()
            .expect("the helper stopped before committing 500 issuances")
            .unwrap();
        if let Some(serial) = line.strip_prefix("committed ") {
            committed.push(serial.to_string());
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-stream
    child.wait().unwrap();
    // Lines already in the pipe were printed after their commit, too.
    for line in lines {
        if let Some(serial) = line.unwrap().strip_prefix("committed ") {
            committed.push(serial.to_string());
        }
    }

    let url = Ledger::default_url(dir.path());
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let (check,): (String,) = sqlx::query_as("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(check, "ok");
        conn.close().await.unwrap();
    }
    let ledger = Ledger::open(&url).await.unwrap();
    let stored: HashSet<String> = ledger
        .list(&ListQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.issuance.serial)
        .collect();
    let lost: Vec<_> = committed.iter().filter(|s| !stored.contains(*s)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} committed serials lost",
        lost.len(),
        committed.len()
    );
    assert!(stored.len() >= committed.len());
    eprintln!(
        "killed the writer after {} reported commits; {} rows stored",
        committed.len(),
        stored.len()
    );
    // The ledger still takes writes.
    ledger.record(issuance(1 << 40)).await.unwrap();
    ledger.close().await;
}

/// A fresh database on the server `MIZZEN_TEST_POSTGRES_URL` names, dropped on
/// drop. Fails the test when the variable is unset: these tests are `#[ignore]`d
/// and run only where PostgreSQL is (scripts/test).
struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(tag: &str) -> PgDatabase {
        use sqlx::Connection;
        let admin = std::env::var("MIZZEN_TEST_POSTGRES_URL").expect(
            "MIZZEN_TEST_POSTGRES_URL is not set: run scripts/test, which starts PostgreSQL, \
             or point it at a server where the user may CREATE DATABASE",
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("mizzen_ledger_{tag}_{}_{nanos}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to MIZZEN_TEST_POSTGRES_URL");
        // `name` is ours: letters, digits and underscores.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let (base, query) = match admin.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin.as_str(), String::new()),
        };
        let authority_end = base.find("://").unwrap() + 3;
        let host_end = base[authority_end..]
            .find('/')
            .map_or(base.len(), |i| authority_end + i);
        let url = format!("{}/{name}{query}", &base[..host_end]);
        PgDatabase { admin, name, url }
    }

    async fn drop_database(self) {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.admin).await.unwrap();
        let drop = format!("DROP DATABASE {} WITH (FORCE)", self.name);
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: scripts/test starts one and sets MIZZEN_TEST_POSTGRES_URL"]
async fn postgres_ledger_persists_across_reopen() {
    let db = PgDatabase::create("persist").await;
    let ledger = Ledger::open(&db.url).await.expect("open");
    assert_eq!(ledger.backend(), "postgres");
    persists_across_reopen(ledger, &db.url).await;
    // Migrations are idempotent: a third open applies nothing and sees the rows.
    let again = Ledger::open_existing(&db.url).await.unwrap();
    assert_eq!(again.count().await.unwrap(), 2_002);
    again.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: scripts/test starts one and sets MIZZEN_TEST_POSTGRES_URL"]
async fn postgres_duplicate_serial_is_an_error() {
    let db = PgDatabase::create("dup").await;
    let ledger = Ledger::open(&db.url).await.unwrap();
    ledger.record(issuance(1)).await.unwrap();
    let (a, b) = tokio::join!(ledger.record(issuance(1)), ledger.record(issuance(2)));
    assert!(matches!(a, Err(LedgerError::Duplicate { .. })), "{a:?}");
    b.unwrap();
    assert_eq!(ledger.count().await.unwrap(), 2);
    let start = Instant::now();
    record_concurrently(&ledger, 10, 10_000, 64).await;
    println!(
        "recorded 10,000 issuances from 64 tasks on PostgreSQL in {:?}",
        start.elapsed()
    );
    ledger.close().await;
    db.drop_database().await;
}
