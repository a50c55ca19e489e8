use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::WakeLock;
use crate::StoreError;

/// In-process lock: safe only with a single orchestrator replica.
#[derive(Default)]
pub struct MemoryLock {
    held: Mutex<HashMap<String, (String, Instant)>>,
}

impl MemoryLock {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl WakeLock for MemoryLock {
    async fn try_acquire(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match held.get(key) {
            Some((_, expires)) if *expires > now => Ok(false),
            _ => {
                held.insert(key.to_owned(), (owner.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match held.get_mut(key) {
            Some((o, expires)) if o == owner && *expires > now => {
                *expires = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match held.get(key) {
            // As in Redis, where the key is gone by then: a lapsed lock was no longer held.
            Some((_, expires)) if *expires <= now => {
                held.remove(key);
                Ok(false)
            }
            Some((o, _)) if o == owner => {
                held.remove(key);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}
