//! Lifecycle commands: `tenant suspend|resume|events|logs|describe`.

use std::io::Write;
use std::time::Duration;

use chrono::Utc;
use common::lifecycle::TenantEvent;
use common::resources::AgentResources;
use common::{TenantId, TenantView};
use serde_json::{json, Value};

use crate::api::{tenant_id, Api};
use crate::cli::Output;
use crate::commands::Outcome;
use crate::error::ZtmError;
use crate::output::{self, ago, Cell};
use crate::transport::{Method, Service};

/// How often `--watch` and `-f` ask again.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// Events shown by `describe`.
const DESCRIBE_EVENTS: usize = 10;

impl Api<'_> {
    async fn post_empty(&self, id: &TenantId, action: &str) -> Result<(), ZtmError> {
        self.call(
            Service::Orchestrator,
            Method::Post,
            &format!("/tenants/{id}/{action}"),
            None,
        )
        .await
        .map(drop)
    }

    pub async fn events(
        &self,
        id: &TenantId,
        after: u64,
        limit: Option<usize>,
    ) -> Result<Vec<TenantEvent>, ZtmError> {
        let mut path = format!("/tenants/{id}/events?after={after}");
        if let Some(l) = limit {
            path.push_str(&format!("&limit={l}"));
        }
        let resp = self
            .call(Service::Orchestrator, Method::Get, &path, None)
            .await?;
        serde_json::from_str(&resp.body).map_err(|e| {
            ZtmError::Rejected(format!(
                "unexpected answer from orchestrator to GET {path}: {e}"
            ))
        })
    }

    pub async fn logs(&self, id: &TenantId, query: &str) -> Result<String, ZtmError> {
        let path = format!("/tenants/{id}/logs{query}");
        Ok(self
            .call(Service::Orchestrator, Method::Get, &path, None)
            .await?
            .body)
    }
}

/// `tenant update` with resource overrides (and any other setting given with them).
pub async fn update(
    api: &Api<'_>,
    id: &str,
    bot_token: Option<&str>,
    idle_timeout: Option<i64>,
    resources: &AgentResources,
) -> Result<Outcome, ZtmError> {
    let id = tenant_id(id)?;
    let body = crate::api::body_of(&common::wire::UpdateTenant {
        bot_token: bot_token.map(str::to_owned),
        idle_timeout_s: idle_timeout,
        resources: Some(resources.clone()),
    })?;
    let resp = api
        .call(
            Service::Orchestrator,
            Method::Patch,
            &format!("/tenants/{id}"),
            Some(body),
        )
        .await?;
    let view: TenantView = serde_json::from_str(&resp.body).map_err(|e| {
        ZtmError::Rejected(format!("unexpected answer from orchestrator to PATCH: {e}"))
    })?;
    Ok(Outcome::Tenant(view))
}

pub async fn suspend(api: &Api<'_>, id: &str) -> Result<Outcome, ZtmError> {
    let id = tenant_id(id)?;
    api.post_empty(&id, "suspend").await?;
    Ok(Outcome::Report {
        data: json!({ "tenant_id": id, "phase": "Suspended" }),
        text: format!(
            "tenant {:?} is suspended (agent stopped, state saved; its users are told so)\n",
            id.as_str()
        ),
    })
}

pub async fn resume(api: &Api<'_>, id: &str) -> Result<Outcome, ZtmError> {
    let id = tenant_id(id)?;
    api.post_empty(&id, "resume").await?;
    Ok(Outcome::Report {
        data: json!({ "tenant_id": id, "suspended": false }),
        text: format!(
            "tenant {:?} is resumed (the next message wakes it)\n",
            id.as_str()
        ),
    })
}

/// The event history; with `watch`, then every new event as it comes, until interrupted.
pub async fn events(
    api: &Api<'_>,
    id: &str,
    watch: bool,
    limit: Option<usize>,
    format: Output,
) -> Result<Outcome, ZtmError> {
    let id = tenant_id(id)?;
    let events = api.events(&id, 0, limit).await?;
    if !watch {
        return Ok(Outcome::Report {
            data: serde_json::to_value(&events).unwrap_or_default(),
            text: event_table(&events, true),
        });
    }
    let mut last = events.last().map_or(0, |e| e.seq);
    print(&render_events(&events, format, true));
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let new = api.events(&id, last, None).await?;
        if let Some(e) = new.last() {
            last = e.seq;
            print(&render_events(&new, format, false));
        }
    }
}

/// Query string of `GET /tenants/{id}/logs`.
pub fn logs_query(tail: Option<usize>, since: Option<&str>, previous: bool) -> String {
    let mut q = Vec::new();
    if let Some(t) = tail {
        q.push(format!("tail={t}"));
    }
    if let Some(s) = since {
        q.push(format!("since={}", s.trim()));
    }
    if previous {
        q.push("previous=true".into());
    }
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// The agent's log; with `follow`, then new lines as they are written, until interrupted.
pub async fn logs(
    api: &Api<'_>,
    id: &str,
    follow: bool,
    since: Option<String>,
    tail: Option<usize>,
    previous: bool,
) -> Result<Outcome, ZtmError> {
    let id = tenant_id(id)?;
    let text = api
        .logs(&id, &logs_query(tail, since.as_deref(), previous))
        .await?;
    if !follow {
        return Ok(Outcome::Raw(text));
    }
    print(&text);
    let mut seen = text;
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let now = api
            .logs(&id, &logs_query(Some(1000), None, previous))
            .await?;
        let fresh = new_suffix(&seen, &now);
        if !fresh.is_empty() {
            print(fresh);
        }
        seen = now;
    }
}

/// What `now` has beyond `before`: the lines after the longest end of `before` that `now` repeats.
fn new_suffix<'a>(before: &str, now: &'a str) -> &'a str {
    if before.is_empty() {
        return now;
    }
    if let Some(rest) = now.strip_prefix(before) {
        return rest;
    }
    // The window moved: find the last line printed, and print what follows it.
    let last_line = before.lines().last().unwrap_or_default();
    match now.rfind(&format!("{last_line}\n")) {
        Some(i) if !last_line.is_empty() => &now[i + last_line.len() + 1..],
        _ => now,
    }
}

/// Everything an operator asks first, in one view (`kubectl describe` style).
pub async fn describe(api: &Api<'_>, id: &str) -> Result<Outcome, ZtmError> {
    let id = tenant_id(id)?;
    let view = api.get(&id).await?;
    let events = api.events(&id, 0, Some(DESCRIBE_EVENTS)).await?;
    // Configuration summary: the config API (`GET /tenants/{id}/config`) where the server has it.
    let config = match api
        .call(
            Service::Orchestrator,
            Method::Get,
            &format!("/tenants/{id}/config"),
            None,
        )
        .await
    {
        Ok(r) => serde_json::from_str::<Value>(&r.body).ok(),
        Err(_) => None,
    };
    let data = json!({
        "tenant": view,
        "config": config,
        "events": events,
    });
    let text = describe_text(&view, config.as_ref(), &events);
    Ok(Outcome::Report { data, text })
}

fn describe_text(v: &TenantView, config: Option<&Value>, events: &[TenantEvent]) -> String {
    let now = Utc::now();
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let phase = v.phase.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
    let runtime = v
        .runtime_status
        .map(|r| r.to_string())
        .unwrap_or_else(|| "-".into());
    let address = match (v.pod_ip.as_str(), v.agent_port) {
        ("", _) => "-".to_owned(),
        (ip, Some(p)) => format!("{ip}:{p}"),
        (ip, None) => ip.to_owned(),
    };
    let mut out = String::new();
    let mut line = |k: &str, val: String| out.push_str(&format!("{:<16}{val}\n", format!("{k}:")));
    line("Tenant", v.tenant_id.to_string());
    line("Phase", phase);
    line("Runtime status", runtime);
    line("Status", v.status.to_string());
    line("Suspended", v.suspended.to_string());
    line("Pod", dash(&v.pod_name));
    line("Agent address", address);
    line("Namespace", v.namespace.clone());
    line("State prefix", v.s3_prefix.clone());
    line("Idle timeout", format!("{}s", v.idle_timeout_s));
    let r = &v.resources;
    let overrides: Vec<String> = [
        ("cpu_request", &r.cpu_request),
        ("cpu_limit", &r.cpu_limit),
        ("memory_request", &r.memory_request),
        ("memory_limit", &r.memory_limit),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
    .collect();
    line(
        "Resources",
        if overrides.is_empty() {
            "platform defaults".into()
        } else {
            format!("{} (the rest: platform defaults)", overrides.join(" "))
        },
    );
    line(
        "Created",
        format!(
            "{} ({})",
            common::tenant::format_time(&v.created_at),
            ago(now, v.created_at)
        ),
    );
    line("Last active", ago(now, v.last_active_at));
    line(
        "Bot token",
        if v.bot_token_set { "set" } else { "missing" }.into(),
    );
    match &v.last_error {
        Some(e) => line(
            "Last error",
            format!("{} ({}): {}", e.reason, ago(now, e.at), e.message),
        ),
        None => line("Last error", "-".into()),
    }
    let warm = events
        .iter()
        .rev()
        .find(|e| e.reason == "Woke")
        .map(|e| e.message.clone())
        .unwrap_or_else(|| "-".into());
    line("Last start", warm);
    line(
        "Config",
        match config {
            Some(c) => summarise_config(c),
            None => "- (no configuration API on this server)".into(),
        },
    );
    out.push_str("Conditions:\n");
    let rows = v
        .conditions
        .iter()
        .map(|c| {
            vec![
                Cell::from(format!("  {}", c.kind)),
                Cell::from(&*c.status),
                Cell::from(dash(&c.reason)),
                Cell::from(dash(&c.message)),
            ]
        })
        .collect();
    out.push_str(&output::table(
        &["  TYPE", "STATUS", "REASON", "MESSAGE"],
        rows,
        false,
    ));
    out.push_str("Events:\n");
    if events.is_empty() {
        out.push_str("  <none>\n");
    } else {
        for l in event_table(events, true).lines() {
            out.push_str(&format!("  {l}\n"));
        }
    }
    out
}

/// One line of the configuration's top-level settings, secrets never shown (the server hides them).
fn summarise_config(c: &Value) -> String {
    match c.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .filter(|(_, v)| v.is_string() || v.is_number() || v.is_boolean())
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => "defaults".into(),
    }
}

fn render_events(events: &[TenantEvent], format: Output, header: bool) -> String {
    match format {
        Output::Table => event_table(events, header),
        // One JSON object per line while watching, so each can be parsed as it comes.
        Output::Json => events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default() + "\n")
            .collect(),
        Output::Yaml => events
            .iter()
            .map(|e| format!("---\n{}", output::yaml(e)))
            .collect(),
    }
}

fn event_table(events: &[TenantEvent], header: bool) -> String {
    let now = Utc::now();
    let rows = events
        .iter()
        .map(|e| {
            vec![
                Cell::from(e.seq.to_string()),
                Cell::from(ago(now, e.at)),
                Cell::from(e.kind.as_str()),
                Cell::from(e.reason.as_str()),
                Cell::from(e.message.as_str()),
            ]
        })
        .collect();
    let table = output::table(&["SEQ", "AGE", "TYPE", "REASON", "MESSAGE"], rows, false);
    if header {
        table
    } else {
        table.lines().skip(1).map(|l| format!("{l}\n")).collect()
    }
}

fn print(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_prints_only_new_lines() {
        assert_eq!(new_suffix("", "a\nb\n"), "a\nb\n");
        assert_eq!(new_suffix("a\nb\n", "a\nb\nc\n"), "c\n");
        assert_eq!(new_suffix("a\nb\n", "b\nc\nd\n"), "c\nd\n");
        assert_eq!(new_suffix("a\nb\n", "a\nb\n"), "");
    }

    #[test]
    fn logs_query_string() {
        assert_eq!(logs_query(None, None, false), "");
        assert_eq!(
            logs_query(Some(20), Some("5m"), true),
            "?tail=20&since=5m&previous=true"
        );
    }
}
