//! Each command: ask the services through the transport, return what to print.

use std::io::{BufRead, IsTerminal};

use chrono::Utc;
use common::TenantView;
use serde_json::{json, Value};

use crate::api::{tenant_id, Api};
use crate::cli::{Command, Output, TenantCommand, WebhookCommand};
use crate::error::ZtmError;
use crate::output;
use crate::transport::{Method, Service, Transport};

/// What a command produced: rendered per `--output`.
// One value per CLI run, rendered once: boxing the large view would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    Tenants(Vec<TenantView>),
    Tenant(TenantView),
    /// A server answer or a report: `data` for json/yaml, `text` for the table format.
    Report {
        data: Value,
        text: String,
    },
    /// Printed as is whatever the format (completion scripts).
    Raw(String),
}

impl Outcome {
    pub fn render(&self, format: Output, colour: bool) -> String {
        match (self, format) {
            (Outcome::Raw(s), _) => s.clone(),
            (Outcome::Tenants(t), Output::Table) => output::tenant_table(t, Utc::now(), colour),
            (Outcome::Tenant(t), Output::Table) => output::tenant_detail(t, Utc::now(), colour),
            (Outcome::Report { text, .. }, Output::Table) => text.clone(),
            (Outcome::Tenants(t), Output::Json) => output::json(t),
            (Outcome::Tenant(t), Output::Json) => output::json(t),
            (Outcome::Report { data, .. }, Output::Json) => output::json(data),
            (Outcome::Tenants(t), Output::Yaml) => output::yaml(t),
            (Outcome::Tenant(t), Output::Yaml) => output::yaml(t),
            (Outcome::Report { data, .. }, Output::Yaml) => output::yaml(data),
        }
    }
}

/// A result of `status`: the report, and whether anything was unhealthy (exit 1 after printing).
pub struct Run {
    pub outcome: Outcome,
    pub problem: Option<String>,
}

impl From<Outcome> for Run {
    fn from(outcome: Outcome) -> Self {
        Run {
            outcome,
            problem: None,
        }
    }
}

pub async fn run(command: Command, transport: &dyn Transport) -> Result<Run, ZtmError> {
    run_as(command, transport, Output::Table).await
}

/// `run`, for commands that print as they go (`--watch`, `-f`) in `format`.
pub async fn run_as(
    command: Command,
    transport: &dyn Transport,
    format: Output,
) -> Result<Run, ZtmError> {
    let api = Api::new(transport);
    let outcome = match command {
        Command::Tenant(c) => match lifecycle_command(c, &api, format).await? {
            Ok(outcome) => outcome,
            Err(c) => tenant(c, &api).await?,
        },
        Command::Webhook(WebhookCommand::Register {
            all: true,
            interval_ms,
            ..
        }) => {
            let interval = std::time::Duration::from_millis(interval_ms);
            let (data, text, problem) = crate::webhook_all::register_all(&api, interval).await?;
            return Ok(Run {
                outcome: Outcome::Report { data, text },
                problem,
            });
        }
        Command::Webhook(WebhookCommand::Register { id, .. }) => {
            let id = tenant_id(id.as_deref().unwrap_or_default())?;
            let data = api.webhook(&id, Method::Post).await?;
            let url = data.get("url").and_then(Value::as_str).unwrap_or("?");
            let text = format!("webhook of tenant {:?} registered: {url}\n", id.as_str());
            Outcome::Report { data, text }
        }
        Command::Webhook(WebhookCommand::Delete { id }) => {
            let id = tenant_id(&id)?;
            let data = api.webhook(&id, Method::Delete).await?;
            let text = format!("webhook of tenant {:?} deleted\n", id.as_str());
            Outcome::Report { data, text }
        }
        Command::Webhook(WebhookCommand::Info { id }) => {
            let id = tenant_id(&id)?;
            let data = api.webhook(&id, Method::Get).await?;
            let text = output::webhook_info(&data, Utc::now().timestamp());
            Outcome::Report { data, text }
        }
        Command::Chat { id, message } => {
            let id = tenant_id(&id)?;
            let data = api.chat(&id, &message).await?;
            let reply = data
                .get("response")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let text = format!("{reply}\n");
            Outcome::Report { data, text }
        }
        Command::Status => return status(&api).await,
        Command::Version => version(&api).await,
        Command::Completion { .. } => unreachable!("completion needs no transport"),
        Command::Migrate(_) => unreachable!("migrate runs through migrate::run"),
    };
    Ok(outcome.into())
}

/// The lifecycle subcommands (`crate::lifecycle`); any other is handed back.
async fn lifecycle_command(
    c: TenantCommand,
    api: &Api<'_>,
    format: Output,
) -> Result<Result<Outcome, TenantCommand>, ZtmError> {
    use crate::lifecycle as l;
    Ok(Ok(match c {
        TenantCommand::Suspend { id } => l::suspend(api, &id).await?,
        TenantCommand::Resume { id } => l::resume(api, &id).await?,
        TenantCommand::Events { id, watch, limit } => {
            l::events(api, &id, watch, limit, format).await?
        }
        TenantCommand::Logs {
            id,
            follow,
            since,
            tail,
            previous,
        } => l::logs(api, &id, follow, since, tail, previous).await?,
        TenantCommand::Describe { id } => l::describe(api, &id).await?,
        TenantCommand::Update {
            id,
            bot_token,
            idle_timeout,
            cpu_request,
            cpu_limit,
            memory_request,
            memory_limit,
        } if cpu_request.is_some()
            || cpu_limit.is_some()
            || memory_request.is_some()
            || memory_limit.is_some() =>
        {
            let resources = common::resources::AgentResources {
                cpu_request,
                cpu_limit,
                memory_request,
                memory_limit,
            };
            let token = bot_token.as_deref().map(token_arg).transpose()?;
            l::update(api, &id, token.as_deref(), idle_timeout, &resources).await?
        }
        other => return Ok(Err(other)),
    }))
}

async fn tenant(c: TenantCommand, api: &Api<'_>) -> Result<Outcome, ZtmError> {
    Ok(match c {
        TenantCommand::Create {
            id,
            bot_token,
            idle_timeout,
        } => {
            let id = tenant_id(&id)?;
            let token = token_arg(&bot_token)?;
            Outcome::Tenant(api.create(&id, &token, idle_timeout).await?)
        }
        TenantCommand::List { status } => Outcome::Tenants(api.list(status).await?),
        TenantCommand::Get { id } => Outcome::Tenant(api.get(&tenant_id(&id)?).await?),
        TenantCommand::Update {
            id,
            bot_token,
            idle_timeout,
            ..
        } => {
            let id = tenant_id(&id)?;
            let token = bot_token.as_deref().map(token_arg).transpose()?;
            Outcome::Tenant(api.update(&id, token.as_deref(), idle_timeout).await?)
        }
        TenantCommand::Delete { id, purge_state } => {
            let id = tenant_id(&id)?;
            api.delete(&id, purge_state).await?;
            let data = json!({ "tenant_id": id, "deleted": true, "purged_state": purge_state });
            let text = if purge_state {
                format!("tenant {:?} deleted (saved state purged)\n", id.as_str())
            } else {
                format!("tenant {:?} deleted\n", id.as_str())
            };
            Outcome::Report { data, text }
        }
        TenantCommand::Wake { id } => {
            let id = tenant_id(&id)?;
            let data = api.wake(&id).await?;
            let endpoint = data.get("endpoint").and_then(Value::as_str).unwrap_or("?");
            let text = format!("tenant {:?} is running at {endpoint}\n", id.as_str());
            Outcome::Report { data, text }
        }
        TenantCommand::Sleep { id } => {
            let id = tenant_id(&id)?;
            api.sleep(&id).await?;
            let data = json!({ "tenant_id": id, "status": "idle" });
            let text = format!("tenant {:?} is asleep (state saved)\n", id.as_str());
            Outcome::Report { data, text }
        }
        TenantCommand::Config(c) => crate::config_cmd::run(c, api).await?,
        other => unreachable!("handled by lifecycle_command: {other:?}"),
    })
}

/// The token itself, or read from stdin for `-` (without echo on a terminal).
fn token_arg(arg: &str) -> Result<String, ZtmError> {
    if arg != "-" {
        return Ok(arg.to_owned());
    }
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprint!("Bot token: ");
    }
    let _echo_off = interactive.then(EchoOff::new).flatten();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    drop(_echo_off);
    if interactive {
        eprintln!();
    }
    read.map_err(|e| ZtmError::Input(format!("reading the bot token from stdin: {e}")))?;
    let token = line.trim().to_owned();
    if token.is_empty() {
        return Err(ZtmError::Input("no bot token on stdin".into()));
    }
    Ok(token)
}

/// Terminal echo switched off until dropped.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Option<Self> {
        // SAFETY: termios is plain data; tcgetattr/tcsetattr only read and write that struct for fd 0.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            (libc::tcsetattr(0, libc::TCSANOW, &t) == 0).then_some(EchoOff(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `new` on the same fd.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.0);
        }
    }
}

/// Health (`/healthz`) and readiness (`/readyz`) of one service.
async fn probe(api: &Api<'_>, service: Service) -> Value {
    let healthz = api.call(service, Method::Get, "/healthz", None).await;
    let (healthy, error) = match &healthz {
        Ok(_) => (true, None),
        Err(e) => (false, Some(e.to_string())),
    };
    let (ready, error) = if healthy {
        match api.call(service, Method::Get, "/readyz", None).await {
            Ok(_) => (true, None),
            Err(e) => (false, Some(e.to_string())),
        }
    } else {
        (false, error)
    };
    json!({ "healthy": healthy, "ready": ready, "error": error })
}

async fn status(api: &Api<'_>) -> Result<Run, ZtmError> {
    let orchestrator = probe(api, Service::Orchestrator).await;
    let router = probe(api, Service::Router).await;
    let tenants = if orchestrator["healthy"] == true {
        api.list(None).await.map_err(|e| e.to_string())
    } else {
        Err("orchestrator unreachable".to_owned())
    };
    let mut counts = serde_json::Map::new();
    if let Ok(list) = &tenants {
        counts.insert("total".into(), json!(list.len()));
        for s in ["idle", "provisioning", "running", "terminated"] {
            let n = list.iter().filter(|t| t.status.as_str() == s).count();
            counts.insert(s.into(), json!(n));
        }
    }
    let mut text = String::new();
    let mut problem = None;
    let rows = [("orchestrator", &orchestrator), ("router", &router)].map(|(name, p)| {
        let state = match (p["healthy"] == true, p["ready"] == true) {
            (true, true) => "ok".to_owned(),
            (true, false) => "not ready".to_owned(),
            _ => "down".to_owned(),
        };
        if let Some(e) = p["error"].as_str() {
            problem.get_or_insert_with(|| e.to_owned());
        }
        vec![
            output::Cell::from(name),
            output::Cell::from(state),
            output::Cell::from(p["error"].as_str().unwrap_or("")),
        ]
    });
    text.push_str(&output::table(
        &["SERVICE", "STATE", "DETAIL"],
        rows.into(),
        false,
    ));
    match &tenants {
        Ok(_) => text.push_str(&format!(
            "\ntenants: {} (idle {}, provisioning {}, running {}, terminated {})\n",
            counts["total"],
            counts["idle"],
            counts["provisioning"],
            counts["running"],
            counts["terminated"]
        )),
        Err(e) => {
            text.push_str(&format!("\ntenants: unknown ({e})\n"));
            problem.get_or_insert_with(|| e.clone());
        }
    }
    let data = json!({
        "orchestrator": orchestrator,
        "router": router,
        "tenants": if tenants.is_ok() { Value::Object(counts) } else { Value::Null },
    });
    Ok(Run {
        outcome: Outcome::Report { data, text },
        problem,
    })
}

/// A `version="..."` label of the service's metrics, the only place a version could be exposed.
async fn server_version(api: &Api<'_>, service: Service) -> Value {
    match api.call(service, Method::Get, "/metrics", None).await {
        Ok(resp) => {
            let version = resp.body.lines().find_map(|l| {
                let rest = &l[l.find("version=\"")? + 9..];
                Some(rest[..rest.find('"')?].to_owned())
            });
            json!({ "reachable": true, "version": version })
        }
        Err(e) => json!({ "reachable": false, "version": null, "error": e.to_string() }),
    }
}

async fn version(api: &Api<'_>) -> Outcome {
    let orchestrator = server_version(api, Service::Orchestrator).await;
    let router = server_version(api, Service::Router).await;
    let describe = |v: &Value| match (v["version"].as_str(), v["error"].as_str()) {
        (Some(ver), _) => ver.to_owned(),
        (None, Some(e)) => format!("unknown ({e})"),
        (None, None) => "unknown (reachable; the service does not report its version)".to_owned(),
    };
    let rows = vec![
        vec![
            output::Cell::from("ztm"),
            output::Cell::from(common::VERSION),
        ],
        vec![
            output::Cell::from("orchestrator"),
            output::Cell::from(describe(&orchestrator)),
        ],
        vec![
            output::Cell::from("router"),
            output::Cell::from(describe(&router)),
        ],
    ];
    let text = output::table(&["COMPONENT", "VERSION"], rows, false);
    let data = json!({ "client": common::VERSION, "orchestrator": orchestrator, "router": router });
    Outcome::Report { data, text }
}
