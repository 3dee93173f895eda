//! Cancel keys: clients get a key made up by the gateway, never the
//! backend's; a CancelRequest carrying it is passed to the right backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

#[derive(Clone)]
struct Backend {
    address: String,
    pid: i32,
    key: i32,
    /// Wakes the session's statement held for review, if one is.
    held: Arc<Notify>,
}

/// The live sessions' cancel keys.
#[derive(Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<(i32, i32), Backend>>,
}

impl CancelRegistry {
    /// Registers a backend; returns the (pid, key) pair to give the client,
    /// and what a cancel wakes while a statement is held for review.
    pub fn register(&self, address: &str, pid: i32, key: i32) -> ((i32, i32), Arc<Notify>) {
        let held = Arc::new(Notify::new());
        let mut rng = rand::thread_rng();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let id = (rng.gen_range(1..i32::MAX), rng.gen::<i32>());
            if let std::collections::hash_map::Entry::Vacant(v) = map.entry(id) {
                v.insert(Backend {
                    address: address.to_string(),
                    pid,
                    key,
                    held: held.clone(),
                });
                return (id, held);
            }
        }
    }

    /// Forgets a session's key.
    pub fn remove(&self, id: (i32, i32)) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Forwards a cancel to the backend the key belongs to; unknown keys are
    /// ignored, as the server does, so keys cannot be probed.
    pub async fn cancel(&self, pid: i32, key: i32) -> bool {
        let backend = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(pid, key))
            .cloned();
        let Some(b) = backend else { return false };
        // A held statement is the client's to cancel too (Ctrl-C in psql).
        b.held.notify_waiters();
        cancel_backend(&b.address, b.pid, b.key).await
    }
}

/// Sends a CancelRequest for a backend to its server.
pub async fn cancel_backend(address: &str, pid: i32, key: i32) -> bool {
    let mut buf = BytesMut::new();
    frontend::cancel_request(pid, key, &mut buf);
    match TcpStream::connect(address).await {
        Ok(mut s) => s.write_all(&buf).await.is_ok(),
        Err(e) => {
            tracing::warn!(error = %e, "could not forward a cancel request");
            false
        }
    }
}
