//! Adapter selection: the one place where the typed configuration becomes the router's inbox and
//! endpoint cache (start-up wiring, so `anyhow` errors that name what could not be opened).

use std::sync::Arc;

use anyhow::Context;
use common::cache::{EndpointCache, MemoryCache};
use common::config::SharedBackend;
use common::inbox::sqlite::SqliteInbox;
use common::inbox::Inbox;

use crate::config::Config;

pub async fn build(config: &Config) -> anyhow::Result<(Arc<dyn Inbox>, Arc<dyn EndpointCache>)> {
    Ok(match &config.backend {
        SharedBackend::Redis { url } => {
            let pool = common::redis_pool::connect(url)
                .await
                .context("REDIS_ADDR")?;
            (
                Arc::new(common::inbox::redis::RedisInbox::new(pool.clone())),
                Arc::new(common::cache::GoEndpointFormat::wrap(
                    Arc::new(common::cache::redis::RedisCache::new(pool)),
                    config.agent_port,
                )),
            )
        }
        SharedBackend::Local => {
            let path = config.data_dir.join("inbox.db");
            let inbox = SqliteInbox::open(&path)
                .with_context(|| format!("opening the inbox {}", path.display()))?;
            (Arc::new(inbox), Arc::new(MemoryCache::new()))
        }
    })
}
