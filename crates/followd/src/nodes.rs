//! What a node does beside serving when several followd nodes share one PostgreSQL database.
//!
//! - [`adopt_loop`]: tells this node's dispatcher about the events handed to it (written by other
//!   nodes for lanes it owns, or requeued) as soon as it is told (`LISTEN`) and at every heartbeat, and
//!   at start and every heartbeat hands it the pending webhooks of nodes whose lease ran out (a node
//!   killed mid-delivery) for the apps it serves. The dispatcher takes them from the outbox through each app's share of the memory.
//! - [`overrides_loop`]: applies webhook settings that the admin API changed on another node, within
//!   a second.

use followd_graph::outbox::{Outbox, WebhookOverride};
use followd_graph::AppId;
use followd_store::postgres::{ADOPT_LANES, HEARTBEAT};
use followd_store::PgStore;
use followd_webhook::Dispatcher;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::apps::Apps;

/// Adopts the pending webhooks of dead nodes and tells the dispatcher of handed events until `stop`.
pub async fn adopt_loop(store: Arc<PgStore>, apps: Vec<AppId>, dispatcher: Dispatcher, mut stop: tokio::sync::watch::Receiver<bool>) {
    let handed = store.handed_signal();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let beat = tokio::select! {
            _ = stop.changed() => return,
            () = handed.notified() => false,
            _ = heartbeat.tick() => true,
        };
        if beat {
            if let Err(e) = store.adopt_orphans(ADOPT_LANES, &apps).await {
                tracing::warn!(error = %e, "cannot look for the webhooks of dead nodes");
            }
        }
        dispatcher.handed();
    }
}

/// Re-reads the stored webhook overrides every second and applies those that changed.
pub async fn overrides_loop(outbox: Arc<dyn Outbox>, apps: Arc<Apps>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut seen: HashMap<AppId, WebhookOverride> = match outbox.load_overrides().await {
        Ok(o) => o.into_iter().collect(),
        Err(_) => HashMap::new(),
    };
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let stored = match outbox.load_overrides().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhook settings of other nodes");
                continue;
            }
        };
        for (app, over) in stored {
            if seen.get(&app) == Some(&over) {
                continue;
            }
            if let Some(a) = apps.get(app) {
                a.set_webhook_override(over.clone());
                tracing::info!(sdkappid = app, "webhook settings changed on another node: applied");
            }
            seen.insert(app, over);
        }
    }
}
