//! ZeroClaw's memory (`<workspace>/memory/brain.db`, SQLite in WAL mode) restored from the state
//! directory before it starts and saved back after it stops. A save is a consistent copy made by
//! SQLite (`VACUUM INTO` a local file, which also folds in what is still in `-wal`), then one new
//! generation in the state directory through [`common::state_file`]: never a copy of the live file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::state_file;
use rusqlite::{Connection, OpenFlags};
use thiserror::Error;

/// The name of the memory file, in the workspace and in the state directory.
pub const BRAIN_FILE: &str = "brain.db";
/// SQLite's side files; stale ones next to a restored database would be replayed onto it.
const SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

#[derive(Debug, Error)]
pub enum StateError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("copying {path} with SQLite: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// `<workspace>/memory/brain.db`, where ZeroClaw's SQLite memory lives.
pub fn brain_path(workspace: &Path) -> PathBuf {
    workspace.join("memory").join(BRAIN_FILE)
}

fn remove_if_present(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path)(e)),
        _ => Ok(()),
    }
}

fn side_file(brain: &Path, suffix: &str) -> PathBuf {
    let mut name = brain.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Puts the newest complete saved copy from `state_dir` at `brain` (through a temp file and a
/// rename on local disk) and removes stale side files. Returns the generation restored (0 for
/// the legacy plain file), or `None` when nothing was saved yet (a local copy is then kept).
pub fn restore(state_dir: &Path, brain: &Path) -> Result<Option<u64>, StateError> {
    let saved = state_file::newest(state_dir, BRAIN_FILE)
        .map_err(io_err("reading the state directory", state_dir))?;
    let Some(saved) = saved else {
        return Ok(None);
    };
    let dir = brain.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let tmp = side_file(brain, ".restore");
    remove_if_present(&tmp)?;
    fs::copy(&saved.path, &tmp).map_err(io_err("copying", &saved.path))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", &tmp))?;
    for suffix in SIDE_FILES {
        remove_if_present(&side_file(brain, suffix))?;
    }
    fs::rename(&tmp, brain).map_err(io_err("renaming to", brain))?;
    Ok(Some(saved.generation))
}

/// Removes SQLite's side files next to `brain`: a restore must not have a stale WAL replayed onto it.
pub fn remove_side_files(brain: &Path) -> Result<(), StateError> {
    for suffix in SIDE_FILES {
        remove_if_present(&side_file(brain, suffix))?;
    }
    Ok(())
}

/// Saves a consistent copy of `brain` into `state_dir` as a new generation, staging it in
/// `scratch_dir` (local disk). Returns the generation written, or `None` when there is no
/// database to save (ZeroClaw never started or never wrote memory).
pub fn save(brain: &Path, scratch_dir: &Path, state_dir: &Path) -> Result<Option<u64>, StateError> {
    if !brain.is_file() {
        return Ok(None);
    }
    fs::create_dir_all(scratch_dir).map_err(io_err("creating", scratch_dir))?;
    let tmp = scratch_dir.join(format!(".{BRAIN_FILE}.save-{}", std::process::id()));
    remove_if_present(&tmp)?;
    let result = snapshot(brain, &tmp).and_then(|()| {
        state_file::save(state_dir, BRAIN_FILE, &tmp)
            .map_err(io_err("saving into the state directory", state_dir))
    });
    let _ = fs::remove_file(&tmp);
    result.map(Some)
}

/// `VACUUM INTO` `tmp`: SQLite reads the database with its WAL, under a read transaction, so the
/// copy holds every committed write and no torn page.
pub fn snapshot(brain: &Path, tmp: &Path) -> Result<(), StateError> {
    let sql = |source| StateError::Sql {
        path: brain.to_owned(),
        source,
    };
    // Read-write: opening recovers a WAL left by a process that died.
    let conn = Connection::open_with_flags(
        brain,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    let target = tmp.to_str().ok_or_else(|| StateError::Io {
        what: "non-UTF-8 path",
        path: tmp.to_owned(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(sql)?;
    drop(conn);
    fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL-mode database whose rows are all still in `-wal`: the writer stays open and never
    /// checkpoints, as ZeroClaw leaves it when it is killed.
    fn live_wal_db(brain: &Path, rows: &[&str]) -> Connection {
        fs::create_dir_all(brain.parent().unwrap()).unwrap();
        let conn = Connection::open(brain).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE memories (content TEXT NOT NULL);",
        )
        .unwrap();
        for r in rows {
            conn.execute("INSERT INTO memories (content) VALUES (?1)", [r])
                .unwrap();
        }
        conn
    }

    fn contents(db: &Path) -> Vec<String> {
        let conn = Connection::open(db).unwrap();
        let mut stmt = conn
            .prepare("SELECT content FROM memories ORDER BY rowid")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_save_holds_the_writes_still_in_the_wal() {
        let ws = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let brain = brain_path(ws.path());
        let writer = live_wal_db(&brain, &["likes tea", "lives in Oslo"]);
        assert!(side_file(&brain, "-wal").metadata().unwrap().len() > 0);

        assert_eq!(save(&brain, ws.path(), state.path()).unwrap(), Some(1));
        drop(writer);
        let saved = state_file::newest(state.path(), BRAIN_FILE)
            .unwrap()
            .unwrap();
        assert_eq!(contents(&saved.path), ["likes tea", "lives in Oslo"]);
        // The staging copy is gone; the state directory holds one generation and its marker.
        assert!(!ws
            .path()
            .join(format!(".{BRAIN_FILE}.save-{}", std::process::id()))
            .exists());
        assert_eq!(fs::read_dir(state.path()).unwrap().count(), 2);
    }

    #[test]
    fn restore_takes_the_newest_save_and_drops_stale_side_files() {
        let ws = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let brain = brain_path(ws.path());
        let writer = live_wal_db(&brain, &["one"]);
        save(&brain, ws.path(), state.path()).unwrap();
        writer
            .execute("INSERT INTO memories (content) VALUES ('two')", [])
            .unwrap();
        save(&brain, ws.path(), state.path()).unwrap();
        // Written after the last save: lost with the pod, as it must be.
        writer
            .execute("INSERT INTO memories (content) VALUES ('unsaved')", [])
            .unwrap();
        std::mem::forget(writer);

        // A fresh pod: empty workspace.
        let fresh = tempfile::tempdir().unwrap();
        let restored = brain_path(fresh.path());
        assert_eq!(restore(state.path(), &restored).unwrap(), Some(2));
        assert_eq!(contents(&restored), ["one", "two"]);

        // The same node again: the old local copy with its WAL is replaced by the saved one.
        assert_eq!(restore(state.path(), &brain).unwrap(), Some(2));
        for suffix in ["-wal", "-shm"] {
            assert!(!side_file(&brain, suffix).exists(), "{suffix}");
        }
        assert_eq!(contents(&brain), ["one", "two"]);
    }

    #[test]
    fn nothing_saved_keeps_the_local_copy_and_nothing_to_save_writes_nothing() {
        let ws = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let brain = brain_path(ws.path());
        assert_eq!(restore(state.path(), &brain).unwrap(), None);
        assert_eq!(save(&brain, ws.path(), state.path()).unwrap(), None);
        assert_eq!(fs::read_dir(state.path()).unwrap().count(), 0);
        drop(live_wal_db(&brain, &["local"]));
        assert_eq!(restore(state.path(), &brain).unwrap(), None);
        assert_eq!(contents(&brain), ["local"]);
    }

    #[test]
    fn a_failed_save_leaves_the_previous_generation_in_force() {
        let ws = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let brain = brain_path(ws.path());
        drop(live_wal_db(&brain, &["good"]));
        save(&brain, ws.path(), state.path()).unwrap();
        // The local database is destroyed (not SQLite any more): the save fails, the good one stays.
        fs::write(&brain, b"this is not a database, just some bytes....").unwrap();
        assert!(matches!(
            save(&brain, ws.path(), state.path()),
            Err(StateError::Sql { .. })
        ));
        let fresh = tempfile::tempdir().unwrap();
        let restored = brain_path(fresh.path());
        assert_eq!(restore(state.path(), &restored).unwrap(), Some(1));
        assert_eq!(contents(&restored), ["good"]);
    }

    #[test]
    fn the_legacy_plain_file_of_the_go_platform_is_restored() {
        let src = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let old = src.path().join("old.db");
        drop(live_wal_db(&old, &["from go"]));
        fs::copy(&old, state.path().join(BRAIN_FILE)).unwrap();
        let ws = tempfile::tempdir().unwrap();
        let brain = brain_path(ws.path());
        assert_eq!(restore(state.path(), &brain).unwrap(), Some(0));
        assert_eq!(contents(&brain), ["from go"]);
    }
}
