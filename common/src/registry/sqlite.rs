//! Embedded registry: one SQLite file, `$DATA_DIR/registry.db`.

use std::path::Path;
use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{ErrorChange, ListChunks, Registry, SettingsUpdate, StatusUpdate};
use crate::lifecycle::{EventType, LastError, NewEvent, TenantEvent, EVENTS_KEPT};
use crate::resources::AgentResources;
use crate::sqlite_db::{db_err, open_connection, SqliteDb};
use crate::tenant::{format_time, parse_time};
use crate::{Secret, StoreError, TenantId, TenantRecord, TenantStatus};

/// Writes go to one writer (group commit), reads to their own connection.
pub struct SqliteRegistry {
    writer: SqliteDb,
    reader: SqliteDb,
}

const COLUMNS: &str = "tenant_id, status, pod_name, pod_ip, agent_port, namespace, s3_prefix, bot_token, created_at, last_active_at, idle_timeout_s, agent_token, agent_config, suspended, deleting, last_error_reason, last_error_message, last_error_at, cpu_request, cpu_limit, memory_request, memory_limit, fence";

/// Columns added after the first schema: added to older files on open.
const ADDED_COLUMNS: [(&str, &str); 12] = [
    ("agent_token", "TEXT NOT NULL DEFAULT ''"),
    ("agent_config", "TEXT"),
    ("suspended", "INTEGER NOT NULL DEFAULT 0"),
    ("deleting", "INTEGER NOT NULL DEFAULT 0"),
    ("last_error_reason", "TEXT"),
    ("last_error_message", "TEXT"),
    ("last_error_at", "TEXT"),
    ("cpu_request", "TEXT"),
    ("cpu_limit", "TEXT"),
    ("memory_request", "TEXT"),
    ("memory_limit", "TEXT"),
    ("fence", "INTEGER NOT NULL DEFAULT 0"),
];

impl SqliteRegistry {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = open_connection(
            path,
            "CREATE TABLE IF NOT EXISTS tenants (
                tenant_id TEXT PRIMARY KEY,
                status TEXT NOT NULL,
                pod_name TEXT NOT NULL DEFAULT '',
                pod_ip TEXT NOT NULL DEFAULT '',
                agent_port INTEGER,
                namespace TEXT NOT NULL,
                s3_prefix TEXT NOT NULL,
                bot_token TEXT NOT NULL,
                created_at TEXT NOT NULL,
                last_active_at TEXT NOT NULL,
                idle_timeout_s INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS tenant_events (
                tenant_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                at TEXT NOT NULL,
                type TEXT NOT NULL,
                reason TEXT NOT NULL,
                message TEXT NOT NULL,
                PRIMARY KEY (tenant_id, seq)
             );",
        )?;
        let have: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('tenants')")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .map_err(db_err)?;
        for (name, ty) in ADDED_COLUMNS {
            if !have.iter().any(|h| h == name) {
                conn.execute_batch(&format!("ALTER TABLE tenants ADD COLUMN {name} {ty}"))
                    .map_err(db_err)?;
            }
        }
        Ok(SqliteRegistry {
            writer: SqliteDb::writer(conn, "registry-writer")?,
            reader: SqliteDb::reader(open_connection(path, "")?, "registry-reader")?,
        })
    }
}

/// Decodes one row of [`COLUMNS`]. Text that is only parsed (id, status, times) is borrowed from
/// SQLite, not copied: a 10,000-tenant list spent most of its time allocating (`make bench` row 6).
/// A text column of another type reads as empty, as it always has.
fn read_row(row: &Row<'_>) -> rusqlite::Result<Result<TenantRecord, StoreError>> {
    let text = |i: usize| row.get_ref(i).ok().and_then(|v| v.as_str().ok());
    let owned = |i: usize| text(i).unwrap_or_default().to_owned();
    let optional = |i: usize| text(i).map(str::to_owned);
    let flag = |i: usize| row.get::<_, i64>(i).unwrap_or(0);
    let timeout: i64 = row.get(10)?;
    let port: Option<i64> = row.get(4)?;
    let time = |i: usize, what: &'static str| {
        text(i)
            .and_then(parse_time)
            .ok_or_else(|| StoreError::corrupt(what))
    };
    let record = || -> Result<TenantRecord, StoreError> {
        Ok(TenantRecord {
            tenant_id: TenantId::parse(text(0).unwrap_or_default())
                .map_err(StoreError::corrupt_from)?,
            status: text(1)
                .unwrap_or_default()
                .parse()
                .map_err(StoreError::corrupt)?,
            pod_name: owned(2),
            pod_ip: owned(3),
            agent_port: port.and_then(|p| u16::try_from(p).ok()),
            namespace: owned(5),
            s3_prefix: owned(6),
            bot_token: Secret::new(owned(7)),
            created_at: time(8, "created_at")?,
            last_active_at: time(9, "last_active_at")?,
            idle_timeout_s: super::stored_idle_timeout(Some(timeout.max(0) as u64)),
            agent_token: Secret::new(owned(11)),
            agent_config: optional(12),
            suspended: flag(13) != 0,
            deleting: flag(14) != 0,
            last_error: text(15)
                .and_then(|reason| last_error(reason, text(16).unwrap_or_default(), text(17))),
            resources: AgentResources {
                cpu_request: optional(18),
                cpu_limit: optional(19),
                memory_request: optional(20),
                memory_limit: optional(21),
            },
            fence: flag(22).max(0) as u64,
        })
    };
    Ok(record())
}

fn last_error(reason: &str, message: &str, at: Option<&str>) -> Option<LastError> {
    Some(LastError {
        reason: reason.to_owned(),
        message: message.to_owned(),
        at: at.and_then(parse_time)?,
    })
}

/// `(set?, reason, message, at)` parameters of a status change's `last_error`.
fn error_params(c: &ErrorChange) -> (i64, Option<String>, Option<String>, Option<String>) {
    match c {
        ErrorChange::Keep => (0, None, None, None),
        ErrorChange::Clear => (1, None, None, None),
        ErrorChange::Set(e) => (
            1,
            Some(e.reason.clone()),
            Some(e.message.clone()),
            Some(format_time(&e.at)),
        ),
    }
}

fn set_flag(c: &Connection, id: &str, column: &str, on: bool) -> Result<TenantRecord, StoreError> {
    let n = c
        .execute(
            &format!("UPDATE tenants SET {column} = ?2 WHERE tenant_id = ?1"),
            params![id, on as i64],
        )
        .map_err(db_err)?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    written(c, id)
}

/// The tenant's record as the job wrote it: what every single-tenant write returns.
fn written(c: &Connection, id: &str) -> Result<TenantRecord, StoreError> {
    get_sync(c, id)?.ok_or(StoreError::NotFound)
}

/// Rows a list decodes before it hands them on: a 10,000-tenant `GET /tenants` is encoded while
/// it is read, in buffers that never grow (`make bench` row 6).
const LIST_CHUNK: usize = 256;

/// Reads the tenants of `status` (all: `None`) in id order, `LIST_CHUNK` at a time, into `each`
/// until it answers `false`.
fn read_list(
    c: &Connection,
    status: Option<TenantStatus>,
    mut each: impl FnMut(Vec<TenantRecord>) -> bool,
) -> Result<(), StoreError> {
    static SELECT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {COLUMNS} FROM tenants WHERE (?1 IS NULL OR status = ?1) ORDER BY tenant_id"
        )
    });
    let mut stmt = c.prepare_cached(&SELECT).map_err(db_err)?;
    let mut rows = stmt
        .query_map(params![status.map(|s| s.as_str())], read_row)
        .map_err(db_err)?
        .peekable();
    while rows.peek().is_some() {
        let chunk = rows
            .by_ref()
            .take(LIST_CHUNK)
            .map(|row| row.map_err(db_err)?)
            .collect::<Result<Vec<_>, _>>()?;
        if !each(chunk) {
            break;
        }
    }
    Ok(())
}

fn get_sync(c: &Connection, id: &str) -> Result<Option<TenantRecord>, StoreError> {
    static SELECT: LazyLock<String> =
        LazyLock::new(|| format!("SELECT {COLUMNS} FROM tenants WHERE tenant_id = ?1"));
    c.prepare_cached(&SELECT)
        .map_err(db_err)?
        .query_row(params![id], read_row)
        .optional()
        .map_err(db_err)?
        .transpose()
}

#[async_trait]
impl Registry for SqliteRegistry {
    async fn create(&self, r: &TenantRecord) -> Result<(), StoreError> {
        let r = r.clone();
        self.writer.with(move |c| {
            let n = c
                .execute(
                    &format!("INSERT OR IGNORE INTO tenants ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23)"),
                    params![
                        r.tenant_id.as_str(),
                        r.status.as_str(),
                        r.pod_name,
                        r.pod_ip,
                        r.agent_port,
                        r.namespace,
                        r.s3_prefix,
                        r.bot_token.expose(),
                        format_time(&r.created_at),
                        format_time(&r.last_active_at),
                        r.idle_timeout_s as i64,
                        r.agent_token.expose(),
                        r.agent_config,
                        r.suspended as i64,
                        r.deleting as i64,
                        r.last_error.as_ref().map(|e| e.reason.clone()),
                        r.last_error.as_ref().map(|e| e.message.clone()),
                        r.last_error.as_ref().map(|e| format_time(&e.at)),
                        r.resources.cpu_request,
                        r.resources.cpu_limit,
                        r.resources.memory_request,
                        r.resources.memory_limit,
                        r.fence.min(i64::MAX as u64) as i64
                    ],
                )
                .map_err(db_err)?;
            if n == 0 {
                return Err(StoreError::AlreadyExists);
            }
            Ok(())
        })
        .await
    }

    async fn get(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        let id = id.to_string();
        self.reader.with(move |c| get_sync(c, &id)).await
    }

    async fn list(&self, status: Option<TenantStatus>) -> Result<Vec<TenantRecord>, StoreError> {
        self.reader
            .with(move |c| {
                let mut out = Vec::new();
                read_list(c, status, |chunk| {
                    out.extend(chunk);
                    true
                })?;
                Ok(out)
            })
            .await
    }

    async fn list_chunks(
        &self,
        status: Option<TenantStatus>,
        chunks: ListChunks,
    ) -> Result<(), StoreError> {
        self.reader
            .with(move |c| read_list(c, status, |chunk| chunks.send(chunk).is_ok()))
            .await
    }

    async fn update_settings(
        &self,
        id: &TenantId,
        u: &SettingsUpdate,
    ) -> Result<TenantRecord, StoreError> {
        let id = id.to_string();
        let u = u.clone();
        self.writer
            .with(move |c| {
                let res = u.resources.clone().unwrap_or_default();
                let n = c
                    .execute(
                        "UPDATE tenants SET bot_token = COALESCE(?2, bot_token),
                        idle_timeout_s = COALESCE(?3, idle_timeout_s),
                        cpu_request = CASE WHEN ?4 THEN ?5 ELSE cpu_request END,
                        cpu_limit = CASE WHEN ?4 THEN ?6 ELSE cpu_limit END,
                        memory_request = CASE WHEN ?4 THEN ?7 ELSE memory_request END,
                        memory_limit = CASE WHEN ?4 THEN ?8 ELSE memory_limit END
                        WHERE tenant_id = ?1",
                        params![
                            id,
                            u.bot_token.as_ref().map(|t| t.expose().to_owned()),
                            u.idle_timeout_s.map(|t| t as i64),
                            u.resources.is_some(),
                            res.cpu_request,
                            res.cpu_limit,
                            res.memory_request,
                            res.memory_limit
                        ],
                    )
                    .map_err(db_err)?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                written(c, &id)
            })
            .await
    }

    async fn set_status(
        &self,
        id: &TenantId,
        from: TenantStatus,
        u: &StatusUpdate,
    ) -> Result<TenantRecord, StoreError> {
        let tid = id.clone();
        let id = id.to_string();
        let u = u.clone();
        self.writer
            .with(move |c| {
                let (set_err, reason, message, at) = error_params(&u.last_error);
                let n = c
                .execute(
                    "UPDATE tenants SET status = ?3, pod_name = ?4, pod_ip = ?5, agent_port = ?6,
                        last_active_at = COALESCE(?7, last_active_at),
                        last_error_reason = CASE WHEN ?8 THEN ?9 ELSE last_error_reason END,
                        last_error_message = CASE WHEN ?8 THEN ?10 ELSE last_error_message END,
                        last_error_at = CASE WHEN ?8 THEN ?11 ELSE last_error_at END,
                        fence = COALESCE(?12, fence)
                     WHERE tenant_id = ?1 AND status = ?2 AND (?12 IS NULL OR fence <= ?12)",
                    params![
                        id,
                        from.as_str(),
                        u.status.as_str(),
                        u.pod_name,
                        u.pod_ip,
                        u.agent_port,
                        u.touch.as_ref().map(format_time),
                        set_err,
                        reason,
                        message,
                        at,
                        u.fence.map(|f| f.min(i64::MAX as u64) as i64)
                    ],
                )
                .map_err(db_err)?;
                let rec = get_sync(c, &id)?;
                match (n, rec) {
                    (_, None) => Err(StoreError::NotFound),
                    (0, Some(r)) => Err(super::status_conflict(&tid, from, &u, &r)),
                    (_, Some(r)) => Ok(r),
                }
            })
            .await
    }

    async fn touch(&self, id: &TenantId, at: DateTime<Utc>) -> Result<(), StoreError> {
        let id = id.to_string();
        self.writer
            .with(move |c| {
                let n = c
                    .execute(
                        "UPDATE tenants SET last_active_at = ?2 WHERE tenant_id = ?1",
                        params![id, format_time(&at)],
                    )
                    .map_err(db_err)?;
                if n == 0 {
                    Err(StoreError::NotFound)
                } else {
                    Ok(())
                }
            })
            .await
    }

    async fn set_agent_token_if_absent(
        &self,
        id: &TenantId,
        token: &Secret,
    ) -> Result<TenantRecord, StoreError> {
        let id = id.to_string();
        let token = token.expose().to_owned();
        self.writer
            .with(move |c| {
                c.execute(
                    "UPDATE tenants SET agent_token = ?2 WHERE tenant_id = ?1 AND agent_token = ''",
                    params![id, token],
                )
                .map_err(db_err)?;
                written(c, &id)
            })
            .await
    }

    async fn set_agent_config(
        &self,
        id: &TenantId,
        config: Option<&str>,
    ) -> Result<TenantRecord, StoreError> {
        let id = id.to_string();
        let config = config.map(str::to_owned);
        self.writer
            .with(move |c| {
                let n = c
                    .execute(
                        "UPDATE tenants SET agent_config = ?2 WHERE tenant_id = ?1",
                        params![id, config],
                    )
                    .map_err(db_err)?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                written(c, &id)
            })
            .await
    }

    async fn delete(&self, id: &TenantId) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.writer
            .with(move |c| {
                let n = c
                    .execute("DELETE FROM tenants WHERE tenant_id = ?1", params![id])
                    .map_err(db_err)?;
                Ok(n > 0)
            })
            .await
    }

    async fn set_suspended(
        &self,
        id: &TenantId,
        suspended: bool,
    ) -> Result<TenantRecord, StoreError> {
        let id = id.to_string();
        self.writer
            .with(move |c| set_flag(c, &id, "suspended", suspended))
            .await
    }

    async fn set_deleting(&self, id: &TenantId) -> Result<TenantRecord, StoreError> {
        let id = id.to_string();
        self.writer
            .with(move |c| set_flag(c, &id, "deleting", true))
            .await
    }

    async fn append_event(&self, id: &TenantId, e: &NewEvent) -> Result<u64, StoreError> {
        let id = id.to_string();
        let e = e.clone();
        self.writer
            .with(move |c| {
                let last: i64 = c
                    .query_row(
                        "SELECT COALESCE(MAX(seq), 0) FROM tenant_events WHERE tenant_id = ?1",
                        params![id],
                        |r| r.get(0),
                    )
                    .map_err(db_err)?;
                let seq = last + 1;
                c.execute(
                    "INSERT INTO tenant_events (tenant_id, seq, at, type, reason, message)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        id,
                        seq,
                        format_time(&e.at),
                        e.kind.as_str(),
                        e.reason,
                        e.message
                    ],
                )
                .map_err(db_err)?;
                c.execute(
                    "DELETE FROM tenant_events WHERE tenant_id = ?1 AND seq <= ?2",
                    params![id, seq - EVENTS_KEPT as i64],
                )
                .map_err(db_err)?;
                Ok(seq as u64)
            })
            .await
    }

    async fn events(
        &self,
        id: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TenantEvent>, StoreError> {
        let id = id.to_string();
        self.reader
            .with(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT seq, at, type, reason, message FROM tenant_events
                         WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq DESC LIMIT ?3",
                    )
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map(
                        params![
                            id,
                            after.min(i64::MAX as u64) as i64,
                            limit.min(i64::MAX as usize) as i64
                        ],
                        |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, String>(3)?,
                                r.get::<_, String>(4)?,
                            ))
                        },
                    )
                    .map_err(db_err)?;
                let mut out = Vec::new();
                for row in rows {
                    let (seq, at, kind, reason, message) = row.map_err(db_err)?;
                    out.push(TenantEvent {
                        seq: seq.max(0) as u64,
                        at: parse_time(&at).ok_or_else(|| StoreError::corrupt("event time"))?,
                        kind: EventType::parse(&kind),
                        reason,
                        message,
                    });
                }
                out.reverse();
                Ok(out)
            })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.reader.ping().await
    }

    fn name(&self) -> &'static str {
        "sqlite"
    }
}
