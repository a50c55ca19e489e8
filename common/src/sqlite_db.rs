//! The SQLite connections behind the embedded registry and inbox: each owned by one thread that
//! runs queued jobs, so no caller holds a thread of tokio's blocking pool while it waits its turn.
//!
//! Why not `spawn_blocking` around a mutex (the first version): in a storm of 1,000 wakes the
//! registry's callers filled the blocking pool waiting on the mutex, and every `tokio::fs` call of
//! the local runtime queued behind them (`make bench` row 4: last reply 6.5 s → 11 s).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::StoreError;

pub fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::unavailable_in("sqlite", e)
}

/// Most jobs a writer commits in one transaction (one fsync).
const MAX_BATCH: usize = 256;

/// Opens `path` (creating its directory) in WAL mode with `synchronous=FULL`, so that a committed
/// write survives a crash of the process and of the machine, and applies `schema` (idempotent DDL).
pub fn open_connection(path: &Path, schema: &str) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(StoreError::unavailable)?;
    }
    let conn = Connection::open(path).map_err(db_err)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
    )
    .map_err(db_err)?;
    conn.execute_batch(schema).map_err(db_err)?;
    Ok(conn)
}

/// Hears whether the transaction a job ran in committed, and answers its caller.
type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A caller's work, atomic on its own (a savepoint), returning how to answer the caller.
type Job = Box<dyn FnOnce(&Connection) -> Done + Send>;

/// A connection on its own thread. Every job is atomic (its own savepoint: all of it or, when it
/// returns an error or panics, none of it). A writer groups the jobs that queue up while it
/// commits into the next transaction, so concurrent writes share one fsync, and answers each
/// caller only once that commit is on disk; a reader runs each job alone.
#[derive(Clone)]
pub struct SqliteDb {
    jobs: mpsc::Sender<Job>,
}

impl SqliteDb {
    /// Moves `conn` to a writer thread (group commit). The thread ends once every handle is dropped.
    pub fn writer(conn: Connection, name: &str) -> Result<Self, StoreError> {
        Self::spawn(conn, name, run_writer)
    }

    /// Moves `conn` to a reader thread: in WAL mode its reads never wait for a writer's fsync.
    pub fn reader(conn: Connection, name: &str) -> Result<Self, StoreError> {
        Self::spawn(conn, name, run_reader)
    }

    fn spawn(
        conn: Connection,
        name: &str,
        run: fn(Connection, mpsc::Receiver<Job>),
    ) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(conn, queue))
            .map_err(StoreError::unavailable)?;
        Ok(SqliteDb { jobs })
    }

    /// Runs `f` on the connection, atomically, and answers once it is durable.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |c: &Connection| {
            let result = in_savepoint(c, f);
            Box::new(move |committed: Result<(), StoreError>| {
                let _ = answer.send(committed.and(result));
            })
        });
        self.jobs.send(job).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db_err))
            .await
    }
}

fn stopped() -> StoreError {
    StoreError::unavailable_msg("sqlite: connection thread stopped")
}

/// Runs `f` between `SAVEPOINT` and `RELEASE`, rolling back to the savepoint when it fails or
/// panics. Outside a transaction the savepoint is one itself.
fn in_savepoint<T>(
    c: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    c.execute_batch("SAVEPOINT job").map_err(db_err)?;
    let result = catch_unwind(AssertUnwindSafe(|| f(c)))
        .unwrap_or_else(|_| Err(StoreError::unavailable_msg("sqlite: a job panicked")));
    let end = if result.is_ok() {
        "RELEASE job"
    } else {
        "ROLLBACK TO job; RELEASE job"
    };
    match (c.execute_batch(end).map_err(db_err), result) {
        (Ok(()), result) => result,
        (Err(e), _) => Err(e),
    }
}

fn run_reader(conn: Connection, queue: mpsc::Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        job(&conn)(Ok(()));
    }
}

/// The next group commit's jobs: waits for one, then takes those already queued (at most `max`).
/// `None` once every sender is gone.
pub fn next_batch<T>(queue: &mpsc::Receiver<T>, max: usize) -> Option<Vec<T>> {
    let mut batch = vec![queue.recv().ok()?];
    batch.extend(std::iter::from_fn(|| queue.try_recv().ok()).take(max - 1));
    Some(batch)
}

fn run_writer(conn: Connection, queue: mpsc::Receiver<Job>) {
    while let Some(batch) = next_batch(&queue, MAX_BATCH) {
        if let Err(e) = conn.execute_batch("BEGIN") {
            // Each job commits alone then (its savepoint is its own transaction) and reports
            // its own failure.
            tracing::warn!(error = %db_err(e), "sqlite: cannot begin a group commit");
            batch.into_iter().for_each(|job| job(&conn)(Ok(())));
            continue;
        }
        let answers: Vec<Done> = batch.into_iter().map(|job| job(&conn)).collect();
        let committed = conn.execute_batch("COMMIT").map_err(db_err);
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        answers
            .into_iter()
            .for_each(|answer| answer(committed.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An adapter's failure keeps SQLite's own error as its source, below the operator's text.
    #[test]
    fn a_sqlite_failure_keeps_the_driver_error_as_its_source() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the database file should be: SQLite cannot open it.
        let err = open_connection(dir.path(), "").expect_err("cannot open");
        assert!(
            err.to_string().starts_with("backend unavailable: sqlite: "),
            "{err}"
        );
        let source = std::error::Error::source(&err).expect("a source");
        assert!(
            source.downcast_ref::<rusqlite::Error>().is_some(),
            "{source:?}"
        );
    }

    fn count(c: &Connection) -> Result<i64, StoreError> {
        c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .map_err(db_err)
    }

    /// Jobs that share a commit stay atomic one by one: a job that fails or panics leaves nothing,
    /// its neighbours in the batch are committed, and the writer goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn each_job_of_a_group_commit_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let schema = "CREATE TABLE t (k INTEGER PRIMARY KEY)";
        let writer = SqliteDb::writer(open_connection(&path, schema).unwrap(), "w").unwrap();
        let reader = SqliteDb::reader(open_connection(&path, "").unwrap(), "r").unwrap();
        let jobs = (0..300i64).map(|k| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .with(move |c| {
                        c.execute("INSERT INTO t (k) VALUES (?1)", [k * 2])
                            .map_err(db_err)?;
                        c.execute("INSERT INTO t (k) VALUES (?1)", [k * 2 + 1])
                            .map_err(db_err)?;
                        match k % 3 {
                            1 => Err(StoreError::Conflict("refused".into())),
                            2 => panic!("a job that panics"),
                            _ => Ok(k),
                        }
                    })
                    .await
            })
        });
        let results = futures::future::join_all(jobs).await;
        let ok = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Ok(Err(StoreError::Conflict(_)))))
            .count();
        let panicked = results
            .iter()
            .filter(|r| matches!(r, Ok(Err(StoreError::Unavailable { .. }))))
            .count();
        assert_eq!((ok, refused, panicked), (100, 100, 100));
        // Readable from the other connection once answered: both rows of each good job, none else.
        assert_eq!(reader.with(count).await.unwrap(), 200);
        let odd: i64 = reader
            .with(|c| {
                c.query_row("SELECT COUNT(*) FROM t WHERE (k / 2) % 3 != 0", [], |r| {
                    r.get(0)
                })
                .map_err(db_err)
            })
            .await
            .unwrap();
        assert_eq!(odd, 0, "rows of a refused or panicked job were committed");
        writer.ping().await.expect("the writer still runs");
    }

    /// An answer means the write is on disk: a fresh connection (another process) reads it.
    #[tokio::test]
    async fn an_answered_write_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = SqliteDb::writer(
            open_connection(&path, "CREATE TABLE t (k INTEGER PRIMARY KEY)").unwrap(),
            "w",
        )
        .unwrap();
        writer
            .with(|c| {
                c.execute("INSERT INTO t (k) VALUES (1)", [])
                    .map_err(db_err)
            })
            .await
            .unwrap();
        let other = Connection::open(&path).unwrap();
        assert_eq!(count(&other).unwrap(), 1);
    }
}
