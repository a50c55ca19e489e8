//! The local runtime's agent logs: each agent's stdout and stderr go straight to
//! `$DATA_DIR/agents/{id}/agent.log` (a file, not a pipe, so an agent adopted by a restarted
//! orchestrator keeps writing). One previous file, `agent.log.1`, is kept: the log of the previous
//! agent run, or the older part of this run's once it passed `MAX_LOG_BYTES` (checked at every
//! start and every reconciler listing, so the bound is soft between listings).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::LogQuery;

pub const LOG_FILE: &str = "agent.log";
pub const PREVIOUS_LOG_FILE: &str = "agent.log.1";
/// Size at which the current log is moved to the previous one.
pub const MAX_LOG_BYTES: u64 = 1024 * 1024;

fn current(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE)
}

fn previous(dir: &Path) -> PathBuf {
    dir.join(PREVIOUS_LOG_FILE)
}

/// The file a new agent writes to: the last run's log becomes the previous one.
pub fn open_for_start(dir: &Path) -> io::Result<File> {
    let path = current(dir);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
        std::fs::rename(&path, previous(dir))?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Keeps the running agent's log under `MAX_LOG_BYTES`: copies it to the previous file and
/// truncates it in place (the agent holds it open in append mode, so its next write lands at the
/// new start). Lines written between the copy and the truncation are lost.
pub fn bound(dir: &Path) -> io::Result<bool> {
    let path = current(dir);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() > MAX_LOG_BYTES => {}
        _ => return Ok(false),
    }
    std::fs::copy(&path, previous(dir))?;
    OpenOptions::new().write(true).open(&path)?.set_len(0)?;
    Ok(true)
}

/// The log (or the previous one), its last `tail` lines when given. `None`: no log at all.
pub fn read(dir: &Path, query: &LogQuery) -> io::Result<Option<String>> {
    let path = if query.previous {
        previous(dir)
    } else {
        current(dir)
    };
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // Never read more than a bounded window, whatever the file grew to between bound checks.
    let len = file.metadata()?.len();
    let start = len.saturating_sub(2 * MAX_LOG_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok(Some(match query.tail {
        Some(n) => last_lines(&text, n).to_owned(),
        None => text,
    }))
}

fn last_lines(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    match trimmed.rmatch_indices('\n').nth(n - 1) {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn tail_counts_lines_from_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(last_lines("a\nb\n", 5), "a\nb\n");
        assert_eq!(last_lines("a\n", 0), "");
    }

    #[test]
    fn a_start_keeps_the_last_run_and_a_big_log_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let q = LogQuery::default();
        assert_eq!(read(dir.path(), &q).unwrap(), None);
        let mut f = open_for_start(dir.path()).unwrap();
        writeln!(f, "first run").unwrap();
        let mut f = open_for_start(dir.path()).unwrap();
        writeln!(f, "second run").unwrap();
        assert_eq!(read(dir.path(), &q).unwrap().unwrap(), "second run\n");
        let prev = LogQuery {
            previous: true,
            ..LogQuery::default()
        };
        assert_eq!(read(dir.path(), &prev).unwrap().unwrap(), "first run\n");

        let line = "x".repeat(1023) + "\n";
        for _ in 0..1100 {
            f.write_all(line.as_bytes()).unwrap();
        }
        assert!(bound(dir.path()).unwrap());
        writeln!(f, "after rotation").unwrap();
        assert_eq!(read(dir.path(), &q).unwrap().unwrap(), "after rotation\n");
        let size = std::fs::metadata(dir.path().join(PREVIOUS_LOG_FILE))
            .unwrap()
            .len();
        assert!(size > MAX_LOG_BYTES && size < MAX_LOG_BYTES + 100 * 1024);
        assert!(!bound(dir.path()).unwrap(), "small again");
    }
}
