//! Command-line grammar (clap derive); parsing errors are clap's usage errors (exit 2).

use clap::{Args, Parser, Subcommand, ValueEnum};
use common::TenantStatus;

#[derive(Debug, Parser)]
#[command(
    name = "ztm",
    version = common::VERSION,
    about = "Operate the multi-tenant agent platform",
    after_help = "Environment: ZTM_API_TOKEN is sent as the Bearer token of the services' API_TOKEN.\n\
                  Exit status: 0 success, 1 failed operation (one line on stderr), 2 usage error."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// kubectl context (port-forward and exec transports).
    #[arg(long, global = true, env = "ZTM_KUBE_CONTEXT")]
    pub context: Option<String>,
    /// Kubernetes namespace of the platform.
    #[arg(short = 'n', long, global = true, env = "ZTM_NAMESPACE", default_value = common::tenant::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Never colour the output (as NO_COLOR does).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// Orchestrator base URL (HTTP transport), e.g. http://localhost:8080.
    #[arg(long, global = true, env = "ZTM_ORCHESTRATOR_URL", value_parser = url)]
    pub orchestrator_url: Option<String>,
    /// Router base URL (HTTP transport), e.g. http://localhost:9090.
    #[arg(long, global = true, env = "ZTM_ROUTER_URL", value_parser = url)]
    pub router_url: Option<String>,
    /// How to reach the services: auto = http when a URL is set, else kubectl port-forward.
    #[arg(long, global = true, value_enum, default_value_t = TransportKind::Auto)]
    pub transport: TransportKind,
    /// API token sent as a Bearer token (from ZTM_API_TOKEN only, so it stays out of shell history).
    #[arg(skip = std::env::var("ZTM_API_TOKEN").ok().filter(|t| !t.is_empty()))]
    pub api_token: Option<String>,
}

/// An http(s) base URL; a malformed one is a usage error.
fn url(v: &str) -> Result<String, String> {
    common::config::check_url(v.trim())?;
    Ok(v.trim().trim_end_matches('/').to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    Auto,
    Http,
    PortForward,
    Exec,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, inspect, change, wake, put to sleep and delete tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Register or delete a tenant's Telegram webhook (through the router).
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Send a message to a tenant's agent through the router and print its reply.
    Chat { id: String, message: String },
    /// Health and readiness of both services, tenants by status.
    Status,
    /// Cut-over from the Go platform (docs/migration.md).
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Client version, and the services' when they tell it.
    Version,
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant; BOT_TOKEN `-` reads the token from stdin.
    Create {
        id: String,
        bot_token: String,
        /// Seconds of inactivity before the agent sleeps (10..2592000).
        #[arg(long, allow_negative_numbers = true)]
        idle_timeout: Option<i64>,
    },
    List {
        /// Only tenants with this status (idle, provisioning, running, terminated).
        #[arg(long)]
        status: Option<TenantStatus>,
    },
    Get {
        id: String,
    },
    Update {
        id: String,
        /// New bot token (`-` reads it from stdin); re-registers the webhook.
        #[arg(long)]
        bot_token: Option<String>,
        #[arg(long, allow_negative_numbers = true)]
        idle_timeout: Option<i64>,
        /// CPU request of the agent (e.g. 250m); "" = the platform default. Applied at the next start.
        #[arg(long)]
        cpu_request: Option<String>,
        /// CPU limit (e.g. 1, 1500m); "" = the platform default.
        #[arg(long, visible_alias = "cpu")]
        cpu_limit: Option<String>,
        /// Memory request (e.g. 512Mi); "" = the platform default.
        #[arg(long)]
        memory_request: Option<String>,
        /// Memory limit (e.g. 1Gi); "" = the platform default.
        #[arg(long, visible_alias = "memory")]
        memory_limit: Option<String>,
    },
    /// Delete a tenant and its agent (idempotent).
    Delete {
        id: String,
        /// Also delete the saved agent memory.
        #[arg(long)]
        purge_state: bool,
    },
    /// Start the tenant's agent now.
    Wake {
        id: String,
    },
    /// Stop the tenant's agent now (its memory is saved).
    Sleep {
        id: String,
    },
    /// Show or change the tenant's agent configuration (persona, model, delegates); in force from
    /// the agent's next start.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Stop the agent (state saved) and keep it stopped: its users are told it is paused.
    Suspend {
        id: String,
    },
    /// Undo suspend: the next message wakes the agent as usual.
    Resume {
        id: String,
    },
    /// What the platform did to the tenant and why (the last 100 events).
    Events {
        id: String,
        /// Keep printing new events as they happen.
        #[arg(long, short = 'w')]
        watch: bool,
        /// Only the newest N.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// The agent's own output (stdout and stderr).
    Logs {
        id: String,
        /// Keep printing new lines.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only lines of the last D (30s, 5m, 2h, 1d).
        #[arg(long, value_parser = duration)]
        since: Option<String>,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// The previous agent's (container's) log.
        #[arg(long)]
        previous: bool,
    },
    /// Record, phase, conditions, configuration, address, recent events in one view.
    Describe {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the configuration (YAML; `-o json` for JSON).
    Get { id: String },
    /// Change the configuration: the current one with the given changes (or `--from-json` as the
    /// base), validated by the orchestrator before it is stored.
    Set {
        id: String,
        /// A persona file, NAME=PATH (e.g. SOUL.md=./soul.md); repeatable.
        #[arg(long = "file", value_name = "NAME=PATH", value_parser = file_arg)]
        files: Vec<(String, std::path::PathBuf)>,
        /// A directory of persona files (AGENTS.md, SOUL.md, ...), with delegate agents' files in
        /// `agents/<slug>/*.md`.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        /// 0 to 2.
        #[arg(long, allow_negative_numbers = true)]
        temperature: Option<f64>,
        /// A whole configuration (JSON or YAML) replacing the current one.
        #[arg(long, value_name = "FILE")]
        from_json: Option<std::path::PathBuf>,
    },
    /// Open the configuration in $VISUAL/$EDITOR as YAML and store it when saved (validated first).
    Edit { id: String },
}

/// `NAME=PATH` of `--file`.
fn file_arg(v: &str) -> Result<(String, std::path::PathBuf), String> {
    match v.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_owned(), path.into()))
        }
        _ => Err(format!("{v:?} is not NAME=PATH (e.g. SOUL.md=./soul.md)")),
    }
}

/// `30s`, `5m`, `2h`, `1d` or plain seconds; anything else is a usage error.
fn duration(v: &str) -> Result<String, String> {
    let v = v.trim();
    let digits = v.trim_end_matches(['s', 'm', 'h', 'd']);
    let unit_len = v.len() - digits.len();
    if digits.is_empty() || unit_len > 1 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{v:?} is not a duration like 30s, 5m, 2h or 1d"));
    }
    Ok(v.to_owned())
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Point the tenant's bot at the router (with its secret token); `--all` for every tenant.
    Register {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every tenant, one call at a time under Telegram's rate limits.
        #[arg(long)]
        all: bool,
        /// Least milliseconds between two registrations with --all.
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
    },
    Delete {
        id: String,
    },
    /// The bot's webhook as Telegram sees it (URL, pending updates, last error), token never shown.
    Info {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Read a running Go deployment and list what the swap changes and what must be done first
    /// (exit 1 while something blocks).
    Check {
        /// Redis to inspect (endpoint cache, wake locks), e.g. localhost:6379 after a port-forward.
        #[arg(long, env = "ZTM_REDIS_ADDR")]
        redis_addr: Option<String>,
        /// Skip the Kubernetes checks (no kubectl access).
        #[arg(long)]
        no_kubernetes: bool,
        /// Skip reading each tenant's webhook through the router (before the new router runs: the
        /// Go router has no `GET /admin/webhook/{id}`).
        #[arg(long)]
        no_webhooks: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ztm").chain(args.iter().copied()))
    }

    #[test]
    fn globals_go_anywhere() {
        let cli = parse(&["tenant", "list", "-o", "json", "--status", "idle"]).unwrap();
        assert_eq!(cli.global.output, Output::Json);
        assert!(matches!(
            cli.command,
            Command::Tenant(TenantCommand::List {
                status: Some(TenantStatus::Idle)
            })
        ));
        let cli = parse(&[
            "--transport",
            "port-forward",
            "--namespace",
            "prod",
            "status",
        ])
        .unwrap();
        assert_eq!(cli.global.transport, TransportKind::PortForward);
        assert_eq!(cli.global.namespace, "prod");
    }

    #[test]
    fn create_and_update_arguments() {
        let cli = parse(&["tenant", "create", "bob", "-", "--idle-timeout", "60"]).unwrap();
        match cli.command {
            Command::Tenant(TenantCommand::Create {
                id,
                bot_token,
                idle_timeout,
            }) => assert_eq!(
                (id.as_str(), bot_token.as_str(), idle_timeout),
                ("bob", "-", Some(60))
            ),
            other => panic!("{other:?}"),
        }
        let cli = parse(&["tenant", "update", "bob", "--idle-timeout", "-5"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Tenant(TenantCommand::Update {
                idle_timeout: Some(-5),
                bot_token: None,
                ..
            })
        ));
        let cli = parse(&["tenant", "delete", "bob", "--purge-state"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Tenant(TenantCommand::Delete {
                purge_state: true,
                ..
            })
        ));
    }

    #[test]
    fn go_ztm_flags_are_accepted() {
        let cli = parse(&["-n", "prod", "--no-color", "tenant", "list"]).unwrap();
        assert_eq!(cli.global.namespace, "prod");
        assert!(cli.global.no_color);
        let cli = parse(&["webhook", "register", "--all"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Webhook(WebhookCommand::Register {
                id: None,
                all: true,
                interval_ms: 50
            })
        ));
        assert!(parse(&["webhook", "register"]).is_err());
        assert!(parse(&["webhook", "register", "bob", "--all"]).is_err());
        let cli = parse(&["migrate", "check", "--redis-addr", "localhost:6379"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Migrate(MigrateCommand::Check {
                redis_addr: Some(_),
                no_kubernetes: false,
                no_webhooks: false
            })
        ));
    }

    #[test]
    fn usage_errors() {
        for args in [
            &["bogus"][..],
            &["tenant"],
            &["tenant", "create"],
            &["tenant", "get"],
            &["-o", "xml", "tenant", "list"],
            &["tenant", "create", "x", "t", "--idle-timeout", "soon"],
            &["tenant", "list", "--status", "sleepy"],
            &["completion", "tcsh"],
            &["--transport", "ssh", "status"],
            &["--orchestrator-url", "localhost:8080", "status"],
            &["tenant", "logs", "bob", "--since", "soon"],
            &["tenant", "logs", "bob", "--tail", "-3"],
            &["tenant", "suspend"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
