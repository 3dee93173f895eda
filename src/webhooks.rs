//! Delivers review notices to the configured webhooks: signed, retried
//! with back-off, never in the way of the review itself. A delivery that
//! finally fails is an audit event.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_core::audit::EventDraft;
use sluice_core::notify;
use sluice_core::reviews::ReviewNotice;
use sluice_core::{Core, Secret};
use tokio::sync::broadcast::error::RecvError;

use crate::config::{WebhookFormat, WebhookSection};

/// Attempts per delivery; the pauses between them double from one second.
const ATTEMPTS: u32 = 6;

/// Deliveries under way at once (each may retry for about a minute).
const MAX_IN_FLIGHT: usize = 64;

/// Starts the delivery task (nothing when no webhook is configured).
pub fn spawn(core: &Arc<Core>, hooks: Vec<(WebhookSection, Secret)>) {
    if hooks.is_empty() {
        return;
    }
    let hooks: Arc<Vec<(WebhookSection, Secret)>> = Arc::new(hooks);
    let mut notices = core.review_notices();
    let core = Arc::downgrade(core);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client with defaults");
    tokio::spawn(async move {
        loop {
            let notice = match notices.recv().await {
                Ok(n) => n,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "review notices came faster than webhooks could take them; some were not sent");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let Some(core) = core.upgrade() else { return };
            let notice = Arc::new(notice);
            for i in 0..hooks.len() {
                // Bounded: a slow receiver holds back deliveries, not memory.
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                tokio::spawn(deliver(
                    core.clone(),
                    http.clone(),
                    hooks.clone(),
                    i,
                    notice.clone(),
                    permit,
                ));
            }
        }
    });
}

async fn deliver(
    core: Arc<Core>,
    http: reqwest::Client,
    hooks: Arc<Vec<(WebhookSection, Secret)>>,
    index: usize,
    notice: Arc<ReviewNotice>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let (hook, secret) = &hooks[index];
    let body = match hook.format {
        WebhookFormat::Json => notify::json_body(&notice),
        WebhookFormat::Chat => notify::chat_body(&notice, hook.link_base.as_deref()),
    };
    let delivery = sluice_core::token::new_id("dlv_");
    let mut pause = Duration::from_secs(1);
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        let ts = sluice_core::time::now_ms() / 1000;
        let sent = http
            .post(&hook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(notify::EVENT_HEADER, &notice.event)
            .header(notify::DELIVERY_HEADER, &delivery)
            .header(notify::TIMESTAMP_HEADER, ts.to_string())
            .header(
                notify::SIGNATURE_HEADER,
                notify::sign(secret.expose().as_bytes(), ts, &body),
            )
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => last_error = format!("HTTP {}", r.status().as_u16()),
            Err(e) => last_error = e.without_url().to_string(),
        }
        tracing::warn!(review = %notice.review.id, attempt, error = %last_error, "webhook delivery failed");
        if attempt < ATTEMPTS {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
    let mut ev = EventDraft::new(
        "review.webhook_failed",
        json!({"review_id": notice.review.id, "event": notice.event, "webhook": index,
               "attempts": ATTEMPTS, "error": last_error, "delivery": delivery}),
    );
    ev.connection = Some(notice.review.connection.clone());
    if let Err(e) = core.record(ev).await {
        tracing::error!(error = %e, "could not record a failed webhook delivery");
    }
}
