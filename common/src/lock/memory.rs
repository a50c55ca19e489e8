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
    /// The last fencing token each key handed out.
    generations: Mutex<HashMap<String, u64>>,
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

    async fn try_acquire_fenced(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        floor: u64,
    ) -> Result<Option<u64>, StoreError> {
        // One critical section for both maps: the token order is the acquisition order.
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if held.get(key).is_some_and(|(_, expires)| *expires > now) {
            return Ok(None);
        }
        held.insert(key.to_owned(), (owner.to_owned(), now + ttl));
        let mut generations = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        let g = generations.entry(key.to_owned()).or_insert(0);
        *g = (*g).max(floor) + 1;
        Ok(Some(*g))
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
