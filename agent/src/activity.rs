//! Reports the agent's own activity to the orchestrator while it works on a long task, so that the
//! platform does not put it to sleep mid-task (`POST {ORCHESTRATOR_URL}/tenants/{id}/activity`
//! with the agent's credential). This echo agent's long task is the message `/busy <seconds>`.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// The message that starts a long task: `/busy 90` keeps the agent busy for 90 s.
pub fn busy_request(text: &str) -> Option<Duration> {
    let secs = text
        .trim()
        .strip_prefix("/busy")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_secs(secs.min(24 * 3600)))
}

pub struct Reporter {
    url: String,
    agent_token: String,
    every: Duration,
    /// Built at the first report: building one loads the system's root certificates, which was
    /// a tenth of the CPU of a storm of 1,000 agent starts (`make bench` row 4), for a report
    /// most agents never send.
    client: OnceLock<reqwest::Client>,
    busy_until: Mutex<Option<Instant>>,
}

impl Reporter {
    /// `orchestrator_url` is the orchestrator's base URL as agents reach it.
    pub fn new(
        orchestrator_url: &str,
        tenant_id: &str,
        agent_token: String,
        every: Duration,
    ) -> Self {
        Reporter {
            url: format!(
                "{}/tenants/{tenant_id}/activity",
                orchestrator_url.trim_end_matches('/')
            ),
            agent_token,
            every,
            client: OnceLock::new(),
            busy_until: Mutex::new(None),
        }
    }

    /// The agent works on something until `for_` from now (extends, never shortens, a busy spell).
    pub fn busy_for(&self, for_: Duration) {
        let until = Instant::now() + for_;
        let mut busy = self.busy_until.lock().unwrap_or_else(|p| p.into_inner());
        *busy = Some(busy.map_or(until, |b| b.max(until)));
    }

    fn busy(&self) -> bool {
        let busy = self.busy_until.lock().unwrap_or_else(|p| p.into_inner());
        busy.is_some_and(|b| Instant::now() < b)
    }

    /// Reports once now when busy, then every `every` while busy; runs until aborted.
    pub async fn run(&self) {
        loop {
            if self.busy() {
                self.report().await;
            }
            tokio::time::sleep(self.every).await;
        }
    }

    async fn report(&self) {
        let client = self.client.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("reqwest client")
        });
        match client
            .post(&self.url)
            .bearer_auth(&self.agent_token)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => tracing::debug!("activity reported"),
            // The status, never the credential.
            Ok(r) => tracing::warn!(status = r.status().as_u16(), "activity report refused"),
            Err(e) => tracing::warn!(error = %e.without_url(), "activity report failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_requests_parse() {
        assert_eq!(busy_request("/busy 90"), Some(Duration::from_secs(90)));
        assert_eq!(busy_request(" /busy  5 "), Some(Duration::from_secs(5)));
        assert_eq!(busy_request("/busy"), None);
        assert_eq!(busy_request("/busy soon"), None);
        assert_eq!(busy_request("hello /busy 5"), None);
    }

    #[tokio::test]
    async fn busy_spells_extend_and_end() {
        let r = Reporter::new(
            "http://127.0.0.1:1",
            "a",
            "t".into(),
            Duration::from_secs(1),
        );
        assert!(!r.busy());
        r.busy_for(Duration::from_secs(60));
        r.busy_for(Duration::from_millis(1));
        assert!(r.busy(), "a shorter spell does not end a longer one");
        let r = Reporter::new(
            "http://127.0.0.1:1",
            "a",
            "t".into(),
            Duration::from_secs(1),
        );
        r.busy_for(Duration::ZERO);
        assert!(!r.busy());
    }
}
