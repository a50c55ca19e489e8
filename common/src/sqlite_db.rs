//! The one SQLite connection wrapper behind the embedded registry and inbox.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use crate::StoreError;

pub fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::unavailable_in("sqlite", e)
}

/// A connection in WAL mode with `synchronous=FULL`: a committed write survives a crash of the
/// process and of the machine.
#[derive(Clone)]
pub struct SqliteDb {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteDb {
    /// Opens (creating the directory and file) and applies `schema` (idempotent DDL).
    pub fn open(path: &Path, schema: &str) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(StoreError::unavailable)?;
        }
        let conn = Connection::open(path).map_err(db_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
        )
        .map_err(db_err)?;
        conn.execute_batch(schema).map_err(db_err)?;
        Ok(SqliteDb {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection off the async runtime.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
        .map_err(StoreError::unavailable)?
    }

    /// Runs `f` on the connection from a thread that may block.
    pub fn with_blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db_err))
            .await
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
        let err = SqliteDb::open(dir.path(), "").err().expect("cannot open");
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
}
