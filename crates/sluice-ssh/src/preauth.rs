//! The connections not yet authenticated: bounded in all and per client
//! address, and when the gateway is full the oldest gives way. A flood of
//! idle connections then cannot keep new clients out: a client that
//! authenticates within a second or two gets in unless the flood opens
//! more than the whole bound in that time.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The places for unauthenticated connections.
pub struct PreAuthSlots {
    total: usize,
    per_address: usize,
    inner: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    next: u64,
    /// By age: the first is the oldest.
    live: BTreeMap<u64, (IpAddr, Arc<Notify>)>,
    by_address: HashMap<IpAddr, usize>,
}

impl Slots {
    fn forget(&mut self, id: u64) -> Option<Arc<Notify>> {
        let (addr, evict) = self.live.remove(&id)?;
        if let Some(n) = self.by_address.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&addr);
            }
        }
        Some(evict)
    }
}

/// One connection's place, given back when it authenticates or ends.
pub struct PreAuth {
    id: u64,
    /// Notified when the place was given to a newer connection.
    pub evicted: Arc<Notify>,
    slots: Arc<PreAuthSlots>,
}

impl Drop for PreAuth {
    fn drop(&mut self) {
        self.slots.lock().forget(self.id);
    }
}

/// The address a client is counted under: IPv6 clients by their /64, which
/// one host usually holds whole.
fn address_key(ip: IpAddr) -> IpAddr {
    // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[4..].fill(0);
            IpAddr::from(s)
        }
        v4 => v4,
    }
}

impl PreAuthSlots {
    /// Room for `total` connections, `per_address` from one address.
    pub fn new(total: usize, per_address: usize) -> Arc<PreAuthSlots> {
        Arc::new(PreAuthSlots {
            total,
            per_address,
            inner: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new connection from `ip`; `None` when that address
    /// has all it may have. A full gateway evicts its oldest connection.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<PreAuth> {
        let addr = address_key(ip);
        let mut slots = self.lock();
        if slots
            .by_address
            .get(&addr)
            .is_some_and(|n| *n >= self.per_address)
        {
            return None;
        }
        if slots.live.len() >= self.total {
            if let Some(oldest) = slots.live.keys().next().copied() {
                if let Some(evict) = slots.forget(oldest) {
                    evict.notify_one();
                }
            }
        }
        let id = slots.next;
        slots.next += 1;
        let evicted = Arc::new(Notify::new());
        slots.live.insert(id, (addr, evicted.clone()));
        *slots.by_address.entry(addr).or_insert(0) += 1;
        Some(PreAuth {
            id,
            evicted,
            slots: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_gives_way_and_addresses_are_bounded() {
        let slots = PreAuthSlots::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let first = slots.acquire(a).unwrap();
        let _second = slots.acquire(a).unwrap();
        assert!(slots.acquire(a).is_none(), "per address");
        let _third = slots.acquire(b).unwrap();
        let _fourth = slots.acquire(c).unwrap();
        // The first was evicted to make room, and told so.
        let told = first.evicted.clone();
        let waited = futures_lite_poll(told);
        assert!(waited);
        drop(first);
        // Its address has room again.
        assert!(slots.acquire(a).is_some());
        // IPv6 clients count by their /64.
        let v6 = PreAuthSlots::new(10, 1);
        let _x = v6.acquire("2001:db8::1".parse().unwrap()).unwrap();
        assert!(v6.acquire("2001:db8::2".parse().unwrap()).is_none());
        assert!(v6.acquire("2001:db8:0:1::2".parse().unwrap()).is_some());
        // IPv4 clients of a dual-stack listener count each on their own.
        let _y = v6.acquire("::ffff:127.0.0.2".parse().unwrap()).unwrap();
        assert!(v6.acquire("::ffff:127.0.0.3".parse().unwrap()).is_some());
        assert!(v6.acquire("127.0.0.2".parse().unwrap()).is_none());
    }

    fn futures_lite_poll(n: Arc<Notify>) -> bool {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async {
                tokio::time::timeout(std::time::Duration::from_millis(100), n.notified())
                    .await
                    .is_ok()
            })
    }
}
