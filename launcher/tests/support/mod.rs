//! What the launcher's integration tests share.

use std::path::Path;

/// ZeroClaw's memories in `db` (a `brain.db`), oldest first.
pub fn memories(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT content FROM memories ORDER BY rowid")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}
