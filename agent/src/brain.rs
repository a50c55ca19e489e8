//! The agent's memory: SQLite `brain.db` holding every message and its reply, restored from and
//! saved to the state directory (the saved copy is authoritative at start). The state directory may
//! be the S3 CSI driver's mount, which has no rename and no overwrite, so a save is a consistent copy
//! made on local disk and then written there as a new generation by [`common::state_file`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use common::state_file;
use rusqlite::{params, Connection, OptionalExtension};
use thiserror::Error;

pub const BRAIN_FILE: &str = "brain.db";

#[derive(Debug, Error)]
pub enum BrainError {
    #[error("brain.db: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BrainError {
    let path = path.to_owned();
    move |source| BrainError::Io { what, path, source }
}

pub struct Brain {
    conn: Connection,
    data_dir: PathBuf,
}

impl Brain {
    /// Opens (or creates) `data_dir/brain.db`.
    pub fn open(data_dir: &Path) -> Result<Self, BrainError> {
        fs::create_dir_all(data_dir).map_err(io_err("creating", data_dir))?;
        let conn = Connection::open(data_dir.join(BRAIN_FILE))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS messages (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 idempotency_key TEXT UNIQUE,
                 text TEXT NOT NULL,
                 response TEXT NOT NULL,
                 created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
             );",
        )?;
        Ok(Brain {
            conn,
            data_dir: data_dir.to_owned(),
        })
    }

    /// The reply already given for this idempotency key, if any.
    pub fn stored_response(&self, key: &str) -> Result<Option<String>, BrainError> {
        Ok(self
            .conn
            .query_row(
                "SELECT response FROM messages WHERE idempotency_key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores the message and returns `echo: <text> (#N)`, N being the message count including it.
    /// A key seen before returns the stored reply and counts nothing.
    pub fn reply(&mut self, key: Option<&str>, text: &str) -> Result<String, BrainError> {
        let tx = self.conn.transaction()?;
        if let Some(key) = key {
            let stored = tx
                .query_row(
                    "SELECT response FROM messages WHERE idempotency_key = ?1",
                    [key],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(stored) = stored {
                return Ok(stored);
            }
        }
        let count: i64 = tx.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))?;
        let response = format!("echo: {text} (#{})", count + 1);
        tx.execute(
            "INSERT INTO messages (idempotency_key, text, response) VALUES (?1, ?2, ?3)",
            params![key, text, response],
        )?;
        tx.commit()?;
        Ok(response)
    }

    pub fn count(&self) -> Result<u64, BrainError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Saves a consistent copy into `state_dir` as the next generation of `brain.db`: `VACUUM INTO`
    /// a temp file on local disk (the data directory), then one sequential write of it into the state
    /// directory. A save that fails or is cut leaves the previous generation in force. Returns the
    /// generation written.
    pub fn save(&self, state_dir: &Path) -> Result<u64, BrainError> {
        let tmp = self
            .data_dir
            .join(format!(".{BRAIN_FILE}.save-{}", std::process::id()));
        remove_if_present(&tmp)?;
        let result = self.vacuum_into(&tmp).and_then(|()| {
            state_file::save(state_dir, BRAIN_FILE, &tmp).map_err(io_err("saving into", state_dir))
        });
        let _ = fs::remove_file(&tmp);
        result
    }

    /// A consistent copy of the brain at `tmp` (a warm agent's save through a grant uploads it).
    pub fn snapshot(&self, tmp: &Path) -> Result<(), BrainError> {
        remove_if_present(tmp)?;
        self.vacuum_into(tmp)
    }

    fn vacuum_into(&self, tmp: &Path) -> Result<(), BrainError> {
        let tmp_str = tmp.to_str().ok_or_else(|| BrainError::Io {
            what: "non-UTF-8 path",
            path: tmp.to_owned(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        self.conn.execute("VACUUM INTO ?1", [tmp_str])?;
        Ok(())
    }
}

fn remove_if_present(path: &Path) -> Result<(), BrainError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path)(e)),
        _ => Ok(()),
    }
}

/// Removes journal files of an earlier local copy, so they cannot be replayed onto a restored one.
pub fn remove_journals(data_dir: &Path) -> Result<(), BrainError> {
    for suffix in ["-journal", "-wal", "-shm"] {
        remove_if_present(&data_dir.join(format!("{BRAIN_FILE}{suffix}")))?;
    }
    Ok(())
}

/// Copies the newest complete saved copy in `state_dir` (a generation, or the plain `brain.db` of
/// earlier versions and of the Go platform) over `data_dir/brain.db`; returns whether there was one.
/// Stale journal files of the old local copy are removed so they cannot be replayed onto the restored one.
pub fn restore(state_dir: &Path, data_dir: &Path) -> Result<bool, BrainError> {
    let Some(saved) =
        state_file::newest(state_dir, BRAIN_FILE).map_err(io_err("reading", state_dir))?
    else {
        return Ok(false);
    };
    fs::create_dir_all(data_dir).map_err(io_err("creating", data_dir))?;
    let target = data_dir.join(BRAIN_FILE);
    let tmp = data_dir.join(format!(".{BRAIN_FILE}.restore-{}", std::process::id()));
    fs::copy(&saved.path, &tmp).map_err(io_err("copying", &saved.path))?;
    remove_journals(data_dir)?;
    fs::rename(&tmp, &target).map_err(io_err("renaming to", &target))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_goes_up_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Brain::open(dir.path()).unwrap();
        assert_eq!(b.reply(None, "hi").unwrap(), "echo: hi (#1)");
        assert_eq!(b.reply(Some("k2"), "hi").unwrap(), "echo: hi (#2)");
        assert_eq!(b.reply(None, "there").unwrap(), "echo: there (#3)");
        assert_eq!(b.count().unwrap(), 3);
    }

    #[test]
    fn idempotency_key_returns_stored_reply_without_counting() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Brain::open(dir.path()).unwrap();
        assert_eq!(b.reply(Some("bob:1"), "a").unwrap(), "echo: a (#1)");
        assert_eq!(b.reply(Some("bob:2"), "b").unwrap(), "echo: b (#2)");
        assert_eq!(b.reply(Some("bob:1"), "a").unwrap(), "echo: a (#1)");
        assert_eq!(
            b.stored_response("bob:2").unwrap().as_deref(),
            Some("echo: b (#2)")
        );
        assert_eq!(b.stored_response("bob:3").unwrap(), None);
        assert_eq!(b.count().unwrap(), 2);
    }

    #[test]
    fn save_and_restore_round_trip() {
        let data = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        {
            let mut b = Brain::open(data.path()).unwrap();
            b.reply(Some("k1"), "one").unwrap();
            b.reply(None, "two").unwrap();
            b.save(state.path()).unwrap();
        }
        let mut leftovers: Vec<_> = fs::read_dir(state.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        leftovers.sort();
        assert_eq!(
            leftovers,
            ["brain.db.0000000001", "brain.db.0000000001.sha256"]
        );
        let local: Vec<_> = fs::read_dir(data.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".save-"))
            .collect();
        assert!(
            local.is_empty(),
            "temp copy left in the data dir: {local:?}"
        );

        // A fresh node: empty data dir, the saved copy is restored and the counter goes on.
        let fresh = tempfile::tempdir().unwrap();
        assert!(restore(state.path(), fresh.path()).unwrap());
        let mut b = Brain::open(fresh.path()).unwrap();
        assert_eq!(b.reply(None, "three").unwrap(), "echo: three (#3)");
        assert_eq!(b.reply(Some("k1"), "one").unwrap(), "echo: one (#1)");
    }

    #[test]
    fn saved_copy_wins_over_a_newer_local_one() {
        let data = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let mut b = Brain::open(data.path()).unwrap();
        b.reply(None, "saved").unwrap();
        b.save(state.path()).unwrap();
        b.reply(None, "lost").unwrap();
        drop(b);
        assert!(restore(state.path(), data.path()).unwrap());
        assert_eq!(Brain::open(data.path()).unwrap().count().unwrap(), 1);
    }

    #[test]
    fn nothing_to_restore() {
        let data = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        assert!(!restore(state.path(), data.path()).unwrap());
    }

    #[test]
    fn a_plain_brain_db_of_the_go_platform_is_restored() {
        let go = tempfile::tempdir().unwrap();
        {
            let mut b = Brain::open(go.path()).unwrap();
            b.reply(None, "from go").unwrap();
        }
        let state = tempfile::tempdir().unwrap();
        fs::copy(go.path().join(BRAIN_FILE), state.path().join(BRAIN_FILE)).unwrap();
        let data = tempfile::tempdir().unwrap();
        assert!(restore(state.path(), data.path()).unwrap());
        let mut b = Brain::open(data.path()).unwrap();
        assert_eq!(b.reply(None, "next").unwrap(), "echo: next (#2)");
        assert_eq!(b.save(state.path()).unwrap(), 1);
        let fresh = tempfile::tempdir().unwrap();
        assert!(restore(state.path(), fresh.path()).unwrap());
        assert_eq!(Brain::open(fresh.path()).unwrap().count().unwrap(), 2);
    }
}
