//! Embedded registry: one SQLite file, `$DATA_DIR/registry.db`.

use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{Registry, SettingsUpdate, StatusUpdate};
use crate::sqlite_db::{db_err, SqliteDb};
use crate::tenant::{format_time, parse_time};
use crate::{Secret, StoreError, TenantId, TenantRecord, TenantStatus};

pub struct SqliteRegistry {
    db: SqliteDb,
}

const COLUMNS: &str = "tenant_id, status, pod_name, pod_ip, agent_port, namespace, s3_prefix, bot_token, created_at, last_active_at, idle_timeout_s";

impl SqliteRegistry {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = SqliteDb::open(
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
             );",
        )?;
        Ok(SqliteRegistry { db })
    }
}

fn read_row(row: &Row<'_>) -> rusqlite::Result<Result<TenantRecord, StoreError>> {
    let id: String = row.get(0)?;
    let status: String = row.get(1)?;
    let created: String = row.get(8)?;
    let active: String = row.get(9)?;
    let timeout: i64 = row.get(10)?;
    let port: Option<i64> = row.get(4)?;
    let parse = || -> Result<TenantRecord, StoreError> {
        Ok(TenantRecord {
            tenant_id: TenantId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            status: status.parse().map_err(StoreError::Corrupt)?,
            pod_name: row.get(2).unwrap_or_default(),
            pod_ip: row.get(3).unwrap_or_default(),
            agent_port: port.and_then(|p| u16::try_from(p).ok()),
            namespace: row.get(5).unwrap_or_default(),
            s3_prefix: row.get(6).unwrap_or_default(),
            bot_token: Secret::new(row.get::<_, String>(7).unwrap_or_default()),
            created_at: parse_time(&created)
                .ok_or_else(|| StoreError::Corrupt("created_at".into()))?,
            last_active_at: parse_time(&active)
                .ok_or_else(|| StoreError::Corrupt("last_active_at".into()))?,
            idle_timeout_s: super::stored_idle_timeout(Some(timeout.max(0) as u64)),
        })
    };
    Ok(parse())
}

fn get_sync(c: &Connection, id: &str) -> Result<Option<TenantRecord>, StoreError> {
    c.query_row(
        &format!("SELECT {COLUMNS} FROM tenants WHERE tenant_id = ?1"),
        params![id],
        read_row,
    )
    .optional()
    .map_err(db_err)?
    .transpose()
}

#[async_trait]
impl Registry for SqliteRegistry {
    async fn create(&self, r: &TenantRecord) -> Result<(), StoreError> {
        let r = r.clone();
        self.db.with(move |c| {
            let n = c
                .execute(
                    &format!("INSERT OR IGNORE INTO tenants ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"),
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
                        r.idle_timeout_s as i64
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
        self.db.with(move |c| get_sync(c, &id)).await
    }

    async fn list(&self, status: Option<TenantStatus>) -> Result<Vec<TenantRecord>, StoreError> {
        self.db.with(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM tenants WHERE (?1 IS NULL OR status = ?1) ORDER BY tenant_id"
                ))
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![status.map(|s| s.as_str())], read_row)
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.map_err(db_err)??);
            }
            Ok(out)
        })
        .await
    }

    async fn update_settings(
        &self,
        id: &TenantId,
        u: &SettingsUpdate,
    ) -> Result<TenantRecord, StoreError> {
        let id = id.to_string();
        let u = u.clone();
        self.db
            .with(move |c| {
                let tx = c.transaction().map_err(db_err)?;
                let n = tx
                    .execute(
                        "UPDATE tenants SET bot_token = COALESCE(?2, bot_token),
                        idle_timeout_s = COALESCE(?3, idle_timeout_s) WHERE tenant_id = ?1",
                        params![
                            id,
                            u.bot_token.as_ref().map(|t| t.expose().to_owned()),
                            u.idle_timeout_s.map(|t| t as i64)
                        ],
                    )
                    .map_err(db_err)?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                let rec = get_sync(&tx, &id)?.ok_or(StoreError::NotFound)?;
                tx.commit().map_err(db_err)?;
                Ok(rec)
            })
            .await
    }

    async fn set_status(
        &self,
        id: &TenantId,
        from: TenantStatus,
        u: &StatusUpdate,
    ) -> Result<TenantRecord, StoreError> {
        let id = id.to_string();
        let u = u.clone();
        self.db
            .with(move |c| {
                let tx = c.transaction().map_err(db_err)?;
                let n = tx
                .execute(
                    "UPDATE tenants SET status = ?3, pod_name = ?4, pod_ip = ?5, agent_port = ?6,
                        last_active_at = COALESCE(?7, last_active_at)
                     WHERE tenant_id = ?1 AND status = ?2",
                    params![
                        id,
                        from.as_str(),
                        u.status.as_str(),
                        u.pod_name,
                        u.pod_ip,
                        u.agent_port,
                        u.touch.as_ref().map(format_time)
                    ],
                )
                .map_err(db_err)?;
                let rec = get_sync(&tx, &id)?;
                match (n, rec) {
                    (_, None) => Err(StoreError::NotFound),
                    (0, Some(r)) => Err(StoreError::Conflict(format!(
                        "status is {}, expected {from}",
                        r.status
                    ))),
                    (_, Some(r)) => {
                        tx.commit().map_err(db_err)?;
                        Ok(r)
                    }
                }
            })
            .await
    }

    async fn touch(&self, id: &TenantId, at: DateTime<Utc>) -> Result<(), StoreError> {
        let id = id.to_string();
        self.db
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

    async fn delete(&self, id: &TenantId) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.db
            .with(move |c| {
                let n = c
                    .execute("DELETE FROM tenants WHERE tenant_id = ?1", params![id])
                    .map_err(db_err)?;
                Ok(n > 0)
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
