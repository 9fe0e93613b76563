//! The ledger's single writer task: group commit.
//!
//! [`run`] waits for the first queued job, takes whatever else is queued (up to
//! [`MAX_BATCH`]), inserts all the issuances with one multi-row
//! `INSERT … ON CONFLICT (serial) DO NOTHING RETURNING serial` inside one
//! transaction, commits, then answers each waiter: `Ok` when its serial came back,
//! [`LedgerError::Duplicate`] when it did not (already in the ledger, or earlier in
//! the same batch), and the shared [`LedgerError::Write`] for everyone when the
//! transaction failed. One commit (one WAL append on SQLite, one round trip on
//! PostgreSQL) thus serves every certificate signed while the previous one ran.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use super::{Issuance, LedgerError, Pool, on_pool};

/// The most issuances committed in one transaction (8 bind parameters each, far
/// below SQLite's 32,766 and PostgreSQL's 65,535).
pub const MAX_BATCH: usize = 512;

/// What the writer is asked to do.
pub(crate) enum Job {
    /// Record an issuance and answer once committed (or refused).
    Record(Issuance, oneshot::Sender<Result<(), LedgerError>>),
    /// Finish the jobs queued before this one, answer, and stop.
    Close(oneshot::Sender<()>),
}

/// The writer loop; ends on [`Job::Close`] or when every sender is dropped.
pub(crate) async fn run(pool: Pool, url: String, mut queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut waiters = Vec::with_capacity(MAX_BATCH);
    loop {
        if queue.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        let mut closing = None;
        for job in jobs.drain(..) {
            match job {
                Job::Record(issuance, done) if closing.is_none() => {
                    batch.push(issuance);
                    waiters.push(done);
                }
                Job::Record(_, done) => {
                    let _ = done.send(Err(LedgerError::Closed));
                }
                Job::Close(done) => closing = Some(done),
            }
        }
        if !batch.is_empty() {
            commit(&pool, &url, &mut batch, &mut waiters).await;
        }
        if let Some(done) = closing {
            queue.close();
            while let Ok(job) = queue.try_recv() {
                if let Job::Record(_, done) = job {
                    let _ = done.send(Err(LedgerError::Closed));
                }
            }
            let _ = done.send(());
            return;
        }
    }
}

/// Writes `batch` in one transaction and answers `waiters` (same order); leaves
/// both empty.
async fn commit(
    pool: &Pool,
    url: &str,
    batch: &mut Vec<Issuance>,
    waiters: &mut Vec<oneshot::Sender<Result<(), LedgerError>>>,
) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let written: Result<Vec<(String,)>, sqlx::Error> = on_pool!(pool, pool => {
        async {
            let mut tx = pool.begin().await?;
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO issuances (serial, spiffe_id, not_before, not_after, \
                 requester, key_algorithm, authenticator, recorded_at) ",
            );
            q.push_values(batch.iter(), |mut row, i| {
                row.push_bind(i.serial.clone())
                    .push_bind(i.spiffe_id.clone())
                    .push_bind(i.not_before)
                    .push_bind(i.not_after)
                    .push_bind(i.requester.clone())
                    .push_bind(i.key_algorithm.clone())
                    .push_bind(i.authenticator.clone())
                    .push_bind(now);
            });
            q.push(" ON CONFLICT (serial) DO NOTHING RETURNING serial");
            let written = q.build_query_as().fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok(written)
        }
        .await
    });
    match written {
        Ok(rows) => {
            let mut fresh: HashSet<String> = rows.into_iter().map(|(s,)| s).collect();
            for (issuance, done) in batch.drain(..).zip(waiters.drain(..)) {
                // The first issuance with a serial got the row; any later one with
                // the same serial, like one whose serial was already stored, did not.
                let answer = if fresh.remove(&issuance.serial) {
                    Ok(())
                } else {
                    Err(LedgerError::Duplicate {
                        serial: issuance.serial,
                    })
                };
                let _ = done.send(answer);
            }
        }
        Err(e) => {
            tracing::error!(url, error = %e, size = batch.len(), "ledger batch not committed");
            let e = Arc::new(e);
            batch.clear();
            for done in waiters.drain(..) {
                let _ = done.send(Err(LedgerError::Write {
                    url: url.to_string(),
                    source: e.clone(),
                }));
            }
        }
    }
}
