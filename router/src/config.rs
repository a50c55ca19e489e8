//! Router configuration from the environment, plus delivery tuning knobs
//! whose defaults suit production and which tests shorten.

use std::path::PathBuf;
use std::time::Duration;

use common::config::{self, ConfigError, SharedBackend};
use common::Secret;

pub const DEFAULT_STARTING_MESSAGE: &str = "⏳ Starting up...";
/// Told once to each chat whose updates wait out an outage of the orchestrator or its backends.
pub const DEFAULT_DELAYED_MESSAGE: &str =
    "⏳ The bot is delayed by a platform problem. Your message is kept and will be answered.";
/// Told to users of a suspended tenant (router env `SUSPENDED_MESSAGE`).
pub const DEFAULT_SUSPENDED_MESSAGE: &str =
    "⏸ This bot is paused by its operator. Your message was not delivered; please try again later.";

#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub data_dir: PathBuf,
    /// The inbox and the endpoint cache: Redis, or a SQLite inbox in `data_dir` and an in-process
    /// cache.
    pub backend: SharedBackend,
    pub orchestrator_addr: String,
    /// Public URL Telegram reaches this router at; webhook registration needs it.
    pub public_base_url: Option<String>,
    pub api_token: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    /// Registers webhooks with the secret token but still accepts updates without one: the window of
    /// a cut-over between `WEBHOOK_SECRET` and `ztm webhook register --all` (docs/migration.md).
    pub webhook_secret_optional: bool,
    pub telegram_api_url: String,
    pub pod_name: Option<String>,
    /// The agents' port (`AGENT_PORT`, 3000): a bare-IP endpoint cache value (the Go router's) means it.
    pub agent_port: u16,
    pub delivery: DeliveryConfig,
    /// How long in-flight requests and deliveries may take to finish on SIGTERM.
    pub shutdown_timeout: Duration,
}

/// Knobs of the delivery pipeline (see the report / README for their env names).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub starting_message: String,
    pub delayed_message: String,
    /// How long an update may wait out an outage before it is given up (Telegram's own horizon).
    pub inbox_max_age: Duration,
    /// Sent instead of the starting message when the tenant is suspended.
    pub suspended_message: String,
    /// How often the inbox is scanned for tenants with work nobody is delivering.
    pub scan_interval: Duration,
    /// Lifetime of a tenant's delivery claim; renewed every third of it while working.
    pub claim_ttl: Duration,
    /// Wake attempts whose start failed (the agent's own fault) before the waiting chats are told;
    /// also the number of outage retries before they are told the bot is delayed, and the bound on
    /// re-wakes after connection failures.
    pub wake_attempts: u32,
    /// Forward attempts when the agent answers 5xx or times out.
    pub agent_attempts: u32,
    pub telegram_attempts: u32,
    /// First retry delay; doubles per attempt up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub agent_timeout: Duration,
    /// Longer than the orchestrator's `POD_READY_WAIT_S`, since a cold start can take that long.
    pub wake_timeout: Duration,
    pub activity_interval: Duration,
    pub bot_token_ttl: Duration,
    /// Without `WEBHOOK_SECRET`: how long the webhook remembers that a tenant exists, and that one
    /// does not (short, so that a tenant just created is accepted at once).
    pub known_tenant_ttl: Duration,
    pub unknown_tenant_ttl: Duration,
    /// Telegram pacing (`router::reply`): messages a second per bot, a chat's burst, then
    /// messages a minute per private chat and per group (burst + rate stay within 20 a minute).
    pub telegram_bot_per_s: u32,
    pub telegram_chat_burst: u32,
    pub telegram_chat_per_min: u32,
    pub telegram_group_per_min: u32,
    /// How often `typing…` is renewed while the agent works.
    pub typing_interval: Duration,
    /// Lifetime of an endpoint cache entry (`router:endpoint:{id}`); renewed while the agent serves.
    pub endpoint_ttl: Duration,
    /// When the orchestrator's record says the agent runs, a wake slower than this is announced
    /// anyway (the agent had died and is being started again).
    pub starting_notice_after: Duration,
    /// Most entries one tenant may have waiting in the inbox; beyond it its webhooks get 429 and
    /// Telegram retries them later, so one flooded bot cannot fill the inbox for everyone.
    pub max_pending_per_tenant: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            starting_message: DEFAULT_STARTING_MESSAGE.to_owned(),
            delayed_message: DEFAULT_DELAYED_MESSAGE.to_owned(),
            inbox_max_age: Duration::from_secs(24 * 3600),
            suspended_message: DEFAULT_SUSPENDED_MESSAGE.to_owned(),
            scan_interval: Duration::from_millis(1000),
            claim_ttl: Duration::from_secs(30),
            wake_attempts: 5,
            agent_attempts: 3,
            telegram_attempts: 3,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(5),
            agent_timeout: Duration::from_secs(120),
            wake_timeout: Duration::from_secs(240),
            activity_interval: Duration::from_secs(10),
            bot_token_ttl: Duration::from_secs(60),
            known_tenant_ttl: Duration::from_secs(300),
            unknown_tenant_ttl: Duration::from_secs(1),
            telegram_bot_per_s: 30,
            telegram_chat_burst: 3,
            telegram_chat_per_min: 60,
            telegram_group_per_min: 17,
            typing_interval: Duration::from_secs(4),
            endpoint_ttl: common::cache::ENDPOINT_TTL,
            starting_notice_after: Duration::from_secs(2),
            max_pending_per_tenant: 1000,
        }
    }
}

impl DeliveryConfig {
    /// Delay before retry number `attempt` (1-based): base, 2×base, 4×base, … capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

fn millis(name: &str, default: Duration) -> Result<Duration, ConfigError> {
    config::parse(name, default.as_millis() as u64).map(Duration::from_millis)
}

fn secs(name: &str, default: Duration) -> Result<Duration, ConfigError> {
    config::parse(name, default.as_secs()).map(Duration::from_secs)
}

/// `v`, or the error naming `name` when it is zero.
fn nonzero<T: PartialEq + Default>(name: &str, v: T, reason: &str) -> Result<T, ConfigError> {
    if v == T::default() {
        return Err(ConfigError {
            name: name.to_owned(),
            reason: reason.into(),
        });
    }
    Ok(v)
}

fn at_least_one(name: &str, default: u32) -> Result<u32, ConfigError> {
    nonzero(name, config::parse(name, default)?, "must be at least 1")
}

fn positive(name: &str, d: Duration) -> Result<Duration, ConfigError> {
    nonzero(name, d, "must be greater than 0")
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        let d = DeliveryConfig::default();
        let delivery = DeliveryConfig {
            starting_message: config::string("STARTING_MESSAGE", DEFAULT_STARTING_MESSAGE),
            delayed_message: config::string("DELAYED_MESSAGE", DEFAULT_DELAYED_MESSAGE),
            inbox_max_age: positive("INBOX_MAX_AGE_S", secs("INBOX_MAX_AGE_S", d.inbox_max_age)?)?,
            suspended_message: config::string("SUSPENDED_MESSAGE", DEFAULT_SUSPENDED_MESSAGE),
            scan_interval: positive(
                "INBOX_SCAN_INTERVAL_MS",
                millis("INBOX_SCAN_INTERVAL_MS", d.scan_interval)?,
            )?,
            claim_ttl: positive("INBOX_CLAIM_TTL_S", secs("INBOX_CLAIM_TTL_S", d.claim_ttl)?)?,
            wake_attempts: at_least_one("WAKE_ATTEMPTS", d.wake_attempts)?,
            agent_attempts: at_least_one("AGENT_ATTEMPTS", d.agent_attempts)?,
            telegram_attempts: at_least_one("TELEGRAM_ATTEMPTS", d.telegram_attempts)?,
            backoff_base: millis("RETRY_BACKOFF_MS", d.backoff_base)?,
            backoff_max: millis("RETRY_BACKOFF_MAX_MS", d.backoff_max)?,
            agent_timeout: positive("AGENT_TIMEOUT_S", secs("AGENT_TIMEOUT_S", d.agent_timeout)?)?,
            wake_timeout: positive("WAKE_TIMEOUT_S", secs("WAKE_TIMEOUT_S", d.wake_timeout)?)?,
            activity_interval: millis("ACTIVITY_INTERVAL_MS", d.activity_interval)?,
            bot_token_ttl: secs("BOT_TOKEN_CACHE_S", d.bot_token_ttl)?,
            known_tenant_ttl: secs("KNOWN_TENANT_CACHE_S", d.known_tenant_ttl)?,
            unknown_tenant_ttl: millis("UNKNOWN_TENANT_CACHE_MS", d.unknown_tenant_ttl)?,
            telegram_bot_per_s: at_least_one("TELEGRAM_BOT_PER_S", d.telegram_bot_per_s)?,
            telegram_chat_burst: at_least_one("TELEGRAM_CHAT_BURST", d.telegram_chat_burst)?,
            telegram_chat_per_min: at_least_one("TELEGRAM_CHAT_PER_MIN", d.telegram_chat_per_min)?,
            telegram_group_per_min: at_least_one(
                "TELEGRAM_GROUP_PER_MIN",
                d.telegram_group_per_min,
            )?,
            typing_interval: positive(
                "TYPING_INTERVAL_MS",
                millis("TYPING_INTERVAL_MS", d.typing_interval)?,
            )?,
            endpoint_ttl: positive(
                "ENDPOINT_CACHE_TTL_S",
                secs("ENDPOINT_CACHE_TTL_S", d.endpoint_ttl)?,
            )?,
            starting_notice_after: millis("STARTING_NOTICE_AFTER_MS", d.starting_notice_after)?,
            max_pending_per_tenant: at_least_one(
                "INBOX_TENANT_MAX_PENDING",
                d.max_pending_per_tenant,
            )?,
        };
        let api_token = config::secret("API_TOKEN");
        let webhook_secret = config::secret("WEBHOOK_SECRET");
        config::require_secrets(
            config::on_kubernetes(),
            config::flag("ALLOW_INSECURE")?,
            &[
                ("API_TOKEN", api_token.is_some()),
                ("WEBHOOK_SECRET", webhook_secret.is_some()),
            ],
        )?;
        Ok(Config {
            port: config::parse("PORT", 9090u16)?,
            data_dir: PathBuf::from(config::string("DATA_DIR", "./data")),
            backend: SharedBackend::from_env(),
            orchestrator_addr: config::url("ORCHESTRATOR_ADDR", Some("http://localhost:8080"))?
                .unwrap_or_default(),
            public_base_url: config::url("PUBLIC_BASE_URL", None)?,
            api_token,
            webhook_secret,
            webhook_secret_optional: config::flag("WEBHOOK_SECRET_OPTIONAL")?,
            telegram_api_url: config::url(
                "TELEGRAM_API_URL",
                Some(common::telegram::DEFAULT_API_URL),
            )?
            .unwrap_or_default(),
            pod_name: config::var("POD_NAME"),
            agent_port: config::parse("AGENT_PORT", 3000u16)?,
            delivery,
            shutdown_timeout: secs("SHUTDOWN_TIMEOUT_S", Duration::from_secs(20))?,
        })
    }

    /// Identifies this replica in delivery claims: the pod name, else host, pid and a random suffix.
    pub fn replica_id(&self) -> String {
        if let Some(p) = &self.pod_name {
            return p.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| config::var("HOSTNAME"))
            .unwrap_or_else(|| "router".into());
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        format!("{host}-{}-{suffix}", std::process::id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let d = DeliveryConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
            ..DeliveryConfig::default()
        };
        assert_eq!(d.backoff(1), Duration::from_millis(100));
        assert_eq!(d.backoff(2), Duration::from_millis(200));
        assert_eq!(d.backoff(3), Duration::from_millis(350));
        assert_eq!(d.backoff(40), Duration::from_millis(350));
    }
}
