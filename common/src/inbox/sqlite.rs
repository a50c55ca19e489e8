//! Embedded inbox: `$DATA_DIR/inbox.db`, for a single router replica (claims live in memory).

use std::path::Path;

use async_trait::async_trait;
use std::sync::mpsc;

use rusqlite::{params, Connection};
use tokio::sync::oneshot;

use super::{now_ms, Appended, Inbox, InboxEntry, InboxStats, DEDUPE_TTL};
use crate::lock::{MemoryLock, WakeLock};
use crate::sqlite_db::{db_err, SqliteDb};
use crate::{StoreError, TenantId};

pub struct SqliteInbox {
    db: SqliteDb,
    claims: MemoryLock,
    appends: mpsc::Sender<AppendJob>,
}

struct AppendJob {
    tenant: String,
    update_id: i64,
    payload: Vec<u8>,
    done: oneshot::Sender<Result<Appended, StoreError>>,
}

/// Most appends committed in one transaction (one fsync).
const MAX_BATCH: usize = 256;

/// Group commit: appends that queue up while a commit is on disk share the next transaction, so
/// concurrent webhooks pay one fsync between them instead of one each. Ends when the inbox is dropped.
fn run_appender(db: SqliteDb, jobs: mpsc::Receiver<AppendJob>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match db.with_blocking(|c| append_batch(c, &batch)) {
            Ok(outcomes) => {
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = job.done.send(Ok(outcome));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.done.send(Err(e.clone()));
                }
            }
        }
    }
}

fn append_batch(c: &mut Connection, batch: &[AppendJob]) -> Result<Vec<Appended>, StoreError> {
    let now = now_ms();
    let expires = now + DEDUPE_TTL.as_millis() as i64;
    let tx = c.transaction().map_err(db_err)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut mark = tx
            .prepare_cached(
                "INSERT INTO seen (tenant, update_id, expires_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, update_id) DO UPDATE SET expires_ms = excluded.expires_ms
                 WHERE seen.expires_ms < ?4",
            )
            .map_err(db_err)?;
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO entries (tenant, update_id, payload, received_at_ms) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(db_err)?;
        for job in batch {
            let fresh = mark
                .execute(params![job.tenant, job.update_id, expires, now])
                .map_err(db_err)?;
            if fresh == 0 {
                outcomes.push(Appended::Duplicate);
                continue;
            }
            insert
                .execute(params![job.tenant, job.update_id, job.payload, now])
                .map_err(db_err)?;
            outcomes.push(Appended::New);
        }
        // Expired dedupe marks go a few at a time (by index) so no append pays for a big sweep.
        tx.prepare_cached(
            "DELETE FROM seen WHERE (tenant, update_id) IN
                (SELECT tenant, update_id FROM seen WHERE expires_ms < ?1 ORDER BY expires_ms LIMIT 64)",
        )
        .map_err(db_err)?
        .execute(params![now])
        .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)?;
    Ok(outcomes)
}

impl SqliteInbox {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = SqliteDb::open(
            path,
            "CREATE TABLE IF NOT EXISTS entries (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                tenant TEXT NOT NULL,
                update_id INTEGER NOT NULL,
                payload BLOB NOT NULL,
                received_at_ms INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS entries_by_tenant ON entries (tenant, id);
             CREATE TABLE IF NOT EXISTS seen (
                tenant TEXT NOT NULL,
                update_id INTEGER NOT NULL,
                expires_ms INTEGER NOT NULL,
                PRIMARY KEY (tenant, update_id)
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS seen_by_expiry ON seen (expires_ms);",
        )?;
        let (appends, jobs) = mpsc::channel();
        let writer = db.clone();
        std::thread::Builder::new()
            .name("inbox-append".into())
            .spawn(move || run_appender(writer, jobs))
            .map_err(StoreError::unavailable)?;
        Ok(SqliteInbox {
            db,
            claims: MemoryLock::new(),
            appends,
        })
    }
}

#[async_trait]
impl Inbox for SqliteInbox {
    async fn append(
        &self,
        tenant: &TenantId,
        update_id: i64,
        payload: &[u8],
    ) -> Result<Appended, StoreError> {
        let (done, result) = oneshot::channel();
        let job = AppendJob {
            tenant: tenant.to_string(),
            update_id,
            payload: payload.to_vec(),
            done,
        };
        let closed = || StoreError::Unavailable("sqlite inbox writer stopped".into());
        self.appends.send(job).map_err(|_| closed())?;
        result.await.map_err(|_| closed())?
    }

    async fn pending(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let tenant = tenant.to_string();
        self.db
            .with(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT id, update_id, payload, received_at_ms FROM entries
                     WHERE tenant = ?1 ORDER BY id LIMIT ?2",
                    )
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map(params![tenant, limit as i64], |r| {
                        Ok(InboxEntry {
                            id: r.get::<_, i64>(0)?.to_string(),
                            update_id: r.get(1)?,
                            payload: r.get(2)?,
                            received_at_ms: r.get(3)?,
                        })
                    })
                    .map_err(db_err)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
            })
            .await
    }

    async fn ack(&self, tenant: &TenantId, entry_id: &str) -> Result<(), StoreError> {
        let tenant = tenant.to_string();
        let id: i64 = entry_id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("bad entry id {entry_id:?}")))?;
        self.db
            .with(move |c| {
                c.execute(
                    "DELETE FROM entries WHERE id = ?1 AND tenant = ?2",
                    params![id, tenant],
                )
                .map_err(db_err)?;
                Ok(())
            })
            .await
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        self.db
            .with(|c| {
                let mut stmt = c
                    .prepare_cached("SELECT DISTINCT tenant FROM entries")
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map([], |r| r.get::<_, String>(0))
                    .map_err(db_err)?;
                let mut out = Vec::new();
                for t in rows {
                    let t = t.map_err(db_err)?;
                    out.push(TenantId::parse(&t).map_err(|e| StoreError::Corrupt(e.to_string()))?);
                }
                Ok(out)
            })
            .await
    }

    fn claims(&self) -> &dyn WakeLock {
        &self.claims
    }

    async fn stats(&self) -> Result<InboxStats, StoreError> {
        self.db
            .with(|c| {
                c.query_row(
                    "SELECT COUNT(*), MIN(received_at_ms) FROM entries",
                    [],
                    |r| {
                        Ok(InboxStats {
                            depth: r.get::<_, i64>(0)? as u64,
                            oldest_received_at_ms: r.get(1)?,
                        })
                    },
                )
                .map_err(db_err)
            })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await
    }

    fn name(&self) -> &'static str {
        "sqlite"
    }
}
