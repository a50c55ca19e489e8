//! Rendering results: aligned tables for people, JSON or YAML of the server's objects for scripts.

use std::io::IsTerminal;

use chrono::{DateTime, Utc};
use common::{TenantStatus, TenantView};
use serde::Serialize;

/// Colour only on a terminal and only when `NO_COLOR` is unset or empty.
pub fn colour_wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub fn json<T: Serialize + ?Sized>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("serialisable");
    s.push('\n');
    s
}

pub fn yaml<T: Serialize + ?Sized>(v: &T) -> String {
    serde_yaml::to_string(v).expect("serialisable")
}

/// "3m ago" style age of `t` at `now`.
pub fn ago(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds();
    match s {
        i64::MIN..=0 => "just now".into(),
        1..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// A table cell: its text and an optional ANSI colour code applied after padding.
pub struct Cell {
    text: String,
    colour: Option<&'static str>,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell { text, colour: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::from(text.to_owned())
    }
}

/// Columns padded to their widest cell, two spaces apart, no trailing blanks.
pub fn table(headers: &[&str], rows: Vec<Vec<Cell>>, colour: bool) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.text.chars().count());
        }
    }
    let header: Vec<Cell> = headers
        .iter()
        .map(|h| Cell {
            text: h.to_string(),
            colour: Some("1"),
        })
        .collect();
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            let pad = if i == last {
                String::new()
            } else {
                " ".repeat(w - cell.text.chars().count() + 2)
            };
            match (colour, cell.colour) {
                (true, Some(code)) => {
                    line.push_str(&format!("\x1b[{code}m{}\x1b[0m{pad}", cell.text))
                }
                _ => line.push_str(&format!("{}{pad}", cell.text)),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn status_cell(s: TenantStatus) -> Cell {
    let colour = match s {
        TenantStatus::Running => "32",
        TenantStatus::Provisioning => "33",
        TenantStatus::Idle => "2",
        TenantStatus::Terminated => "31",
    };
    Cell {
        text: s.to_string(),
        colour: Some(colour),
    }
}

fn phase_cell(t: &TenantView) -> Cell {
    use common::lifecycle::Phase;
    let Some(p) = t.phase else {
        return Cell::from("-");
    };
    let colour = match p {
        Phase::Ready => "32",
        Phase::Progressing => "33",
        Phase::Sleeping => "2",
        Phase::Suspended | Phase::Deleting => "35",
        Phase::Error => "31",
    };
    Cell {
        text: p.to_string(),
        colour: Some(colour),
    }
}

/// One tenant: its table row, then its last error when it has one.
pub fn tenant_detail(t: &TenantView, now: DateTime<Utc>, colour: bool) -> String {
    let mut out = tenant_table(std::slice::from_ref(t), now, colour);
    if let Some(e) = &t.last_error {
        out.push_str(&format!(
            "last error: {} ({}): {}\n",
            e.reason,
            ago(now, e.at),
            e.message
        ));
    }
    out
}

pub fn tenant_table(tenants: &[TenantView], now: DateTime<Utc>, colour: bool) -> String {
    let rows = tenants
        .iter()
        .map(|t| {
            vec![
                Cell::from(t.tenant_id.as_str()),
                status_cell(t.status),
                phase_cell(t),
                Cell::from(if t.pod_name.is_empty() {
                    "-"
                } else {
                    t.pod_name.as_str()
                }),
                Cell::from(format!("{}s", t.idle_timeout_s)),
                Cell::from(ago(now, t.last_active_at)),
            ]
        })
        .collect();
    table(
        &[
            "TENANT",
            "STATUS",
            "PHASE",
            "POD",
            "IDLE TIMEOUT",
            "LAST ACTIVE",
        ],
        rows,
        colour,
    )
}

/// `ztm webhook info`: Telegram's view of the bot's webhook, with what is wrong spelled out.
pub fn webhook_info(v: &serde_json::Value, now: i64) -> String {
    let s = |k: &str| v.get(k).and_then(serde_json::Value::as_str);
    let id = s("tenant_id").unwrap_or("?");
    let url = s("url").unwrap_or_default();
    let mut out = String::new();
    let mut line = |k: &str, val: String| out.push_str(&format!("{k:<18}{val}\n"));
    line(
        "url:",
        if url.is_empty() {
            "(none)".into()
        } else {
            url.to_owned()
        },
    );
    match (s("expected_url"), v.get("url_matches").and_then(serde_json::Value::as_bool)) {
        (Some(e), Some(true)) => line("expected:", format!("{e} (matches)")),
        (Some(e), _) => line(
            "expected:",
            format!("{e} (MISROUTED: Telegram sends this bot's updates elsewhere; run `ztm webhook register {id}`)"),
        ),
        (None, _) => line("expected:", "unknown (the router has no PUBLIC_BASE_URL)".into()),
    }
    let pending = v
        .get("pending_update_count")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    line("pending updates:", pending.to_string());
    let error = match (
        s("last_error_message"),
        v.get("last_error_date").and_then(serde_json::Value::as_i64),
    ) {
        (Some(m), Some(d)) => {
            let at = DateTime::from_timestamp(d, 0).unwrap_or_default();
            let now = DateTime::from_timestamp(now, 0).unwrap_or_default();
            format!("{m} ({})", ago(now, at))
        }
        (Some(m), None) => m.to_owned(),
        (None, _) => "none".into(),
    };
    line("last error:", error);
    if let Some(n) = v.get("max_connections").and_then(serde_json::Value::as_u64) {
        line("max connections:", n.to_string());
    }
    let list = |k: &str| {
        v.get(k).and_then(serde_json::Value::as_array).map(|a| {
            a.iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
    };
    match (
        list("allowed_updates"),
        v.get("allowed_updates_match")
            .and_then(serde_json::Value::as_bool),
    ) {
        (Some(a), Some(false)) => line(
            "allowed updates:",
            format!(
                "{a} (the platform subscribes to {}: re-register)",
                list("expected_allowed_updates").unwrap_or_default()
            ),
        ),
        (Some(a), _) => line(
            "allowed updates:",
            if a.is_empty() {
                "all (Telegram's default)".into()
            } else {
                a
            },
        ),
        (None, _) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 10, 0, 0).unwrap()
    }

    fn view(id: &str, status: TenantStatus, pod: &str, active_s_ago: i64) -> TenantView {
        TenantView {
            tenant_id: common::TenantId::parse(id).unwrap(),
            status,
            pod_name: pod.into(),
            pod_ip: if pod.is_empty() {
                String::new()
            } else {
                "10.0.0.7".into()
            },
            agent_port: None,
            namespace: "tenants".into(),
            s3_prefix: format!("tenants/{id}/"),
            created_at: Utc.with_ymd_and_hms(2026, 1, 1, 9, 30, 0).unwrap(),
            last_active_at: now() - chrono::Duration::seconds(active_s_ago),
            idle_timeout_s: 300,
            bot_token_set: true,
            phase: None,
            runtime_status: None,
            suspended: false,
            last_error: None,
            conditions: Vec::new(),
            resources: Default::default(),
        }
    }

    #[test]
    fn ages() {
        let n = now();
        let at = |s| n - chrono::Duration::seconds(s);
        assert_eq!(ago(n, at(0)), "just now");
        assert_eq!(ago(n, at(-30)), "just now");
        assert_eq!(ago(n, at(42)), "42s ago");
        assert_eq!(ago(n, at(180)), "3m ago");
        assert_eq!(ago(n, at(3 * 3600 + 5)), "3h ago");
        assert_eq!(ago(n, at(5 * 86_400)), "5d ago");
    }

    #[test]
    fn table_snapshot() {
        let mut alice = view("alice", TenantStatus::Running, "zeroclaw-alice", 180);
        alice.phase = Some(common::lifecycle::Phase::Ready);
        let tenants = [alice, view("bob-the-builder", TenantStatus::Idle, "", 7200)];
        assert_eq!(
            tenant_table(&tenants, now(), false),
            "\
TENANT           STATUS   PHASE  POD             IDLE TIMEOUT  LAST ACTIVE
alice            running  Ready  zeroclaw-alice  300s          3m ago
bob-the-builder  idle     -      -               300s          2h ago
"
        );
    }

    #[test]
    fn colour_wraps_status_without_breaking_alignment() {
        let out = tenant_table(&[view("a", TenantStatus::Running, "", 0)], now(), true);
        assert!(out.contains("\x1b[32mrunning\x1b[0m  "), "{out:?}");
        assert!(out.starts_with("\x1b[1mTENANT\x1b[0m  "), "{out:?}");
        let plain = tenant_table(&[view("a", TenantStatus::Running, "", 0)], now(), false);
        assert!(!plain.contains('\x1b'));
    }

    #[test]
    fn json_and_yaml_snapshots() {
        let v = view("alice", TenantStatus::Running, "zeroclaw-alice", 180);
        assert_eq!(
            json(&v),
            r#"{
  "tenant_id": "alice",
  "status": "running",
  "pod_name": "zeroclaw-alice",
  "pod_ip": "10.0.0.7",
  "namespace": "tenants",
  "s3_prefix": "tenants/alice/",
  "created_at": "2026-01-01T09:30:00Z",
  "last_active_at": "2026-01-02T09:57:00Z",
  "idle_timeout_s": 300,
  "bot_token_set": true
}
"#
        );
        assert_eq!(
            yaml(&v),
            "\
tenant_id: alice
status: running
pod_name: zeroclaw-alice
pod_ip: 10.0.0.7
namespace: tenants
s3_prefix: tenants/alice/
created_at: 2026-01-01T09:30:00Z
last_active_at: 2026-01-02T09:57:00Z
idle_timeout_s: 300
bot_token_set: true
"
        );
    }

    #[test]
    fn webhook_info_explains_a_misrouted_bot() {
        let v = serde_json::json!({
            "tenant_id": "bob", "url": "https://old.example/tg/bob",
            "expected_url": "https://new.example/tg/bob", "url_matches": false,
            "pending_update_count": 7, "last_error_message": "Connection refused",
            "last_error_date": 1000, "max_connections": 40,
            "allowed_updates": ["message"], "expected_allowed_updates": ["message", "callback_query"],
            "allowed_updates_match": false
        });
        let text = webhook_info(&v, 1000 + 300);
        assert!(text.contains("MISROUTED"), "{text}");
        assert!(text.contains("ztm webhook register bob"), "{text}");
        assert!(text.contains("pending updates:  7"), "{text}");
        assert!(text.contains("Connection refused (5m ago)"), "{text}");
        assert!(text.contains("re-register"), "{text}");
    }
}
