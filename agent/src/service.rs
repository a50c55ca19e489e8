//! Message handling: one message at a time, after the configured reply latency.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::activity::{busy_request, Reporter};
use crate::brain::{Brain, BrainError};

/// The agent's brain behind a lock, so messages are answered one by one like a single LLM session.
#[derive(Clone)]
pub struct Agent {
    brain: Arc<Mutex<Brain>>,
    delay: Duration,
    /// Told about long tasks (`/busy N`), so it keeps the agent awake meanwhile.
    activity: Option<Arc<Reporter>>,
}

impl Agent {
    pub fn new(brain: Brain, delay: Duration) -> Self {
        Agent {
            brain: Arc::new(Mutex::new(brain)),
            delay,
            activity: None,
        }
    }

    /// Reports its own activity through `reporter` while a long task runs.
    pub fn with_activity(mut self, reporter: Arc<Reporter>) -> Self {
        self.activity = Some(reporter);
        self
    }

    /// Replies to a message; a repeated idempotency key gets the stored reply at once.
    pub async fn handle(&self, key: Option<String>, text: String) -> Result<String, BrainError> {
        let mut brain = self.brain.clone().lock_owned().await;
        if let Some(k) = &key {
            if let Some(stored) = brain.stored_response(k)? {
                return Ok(stored);
            }
        }
        tokio::time::sleep(self.delay).await;
        if let (Some(r), Some(busy)) = (&self.activity, busy_request(&text)) {
            r.busy_for(busy);
        }
        tokio::task::spawn_blocking(move || brain.reply(key.as_deref(), &text))
            .await
            .expect("brain task panicked")
    }

    /// How many messages the brain holds.
    pub async fn count(&self) -> Result<u64, BrainError> {
        self.brain.lock().await.count()
    }

    /// Waits for the message in flight, then writes a consistent copy of the brain to `tmp`.
    pub async fn snapshot(&self, tmp: &Path) -> Result<(), BrainError> {
        let brain = self.brain.clone().lock_owned().await;
        let tmp = tmp.to_owned();
        tokio::task::spawn_blocking(move || brain.snapshot(&tmp))
            .await
            .expect("brain task panicked")
    }

    /// Waits for the message in flight, then saves the brain to the state directory; returns the
    /// generation written.
    pub async fn save(&self, state_dir: &Path) -> Result<u64, BrainError> {
        let brain = self.brain.clone().lock_owned().await;
        let dir = state_dir.to_owned();
        tokio::task::spawn_blocking(move || brain.save(&dir))
            .await
            .expect("brain task panicked")
    }
}
