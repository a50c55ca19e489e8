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
                no_kubernetes: false
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
