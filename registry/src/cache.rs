//! Bounded in-memory caches of what reads ask the store most: tags,
//! manifests' records, manifest bytes, blob sizes. Entries this process
//! writes are updated at once; what other processes over the same store
//! write is seen once an entry is older than the time to live
//! ([`crate::Limits::cache_ttl`]): no entry is served past it. Manifest
//! bytes are named by their digest, so they never go stale; that cache is
//! bounded by bytes instead. Only what exists is cached (a miss always asks
//! the store), so a push on another replica is visible at once.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::Digest;

/// Entries of a time-to-live cache at most.
const MAX_ENTRIES: usize = 65_536;

/// A map whose entries are served for `ttl` after they were stored.
#[derive(Debug)]
pub(crate) struct TtlCache<K, V> {
    ttl: Duration,
    map: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Instant)>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, k: &K) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self.lock();
        let (v, at) = map.get(k)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    pub(crate) fn insert(&self, k: K, v: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(k, (v, Instant::now()));
    }

    pub(crate) fn remove(&self, k: &K) {
        self.lock().remove(k);
    }

    pub(crate) fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.lock().retain(|k, (v, _)| keep(k, v));
    }
}

/// Manifest bytes by digest, at most `max_bytes` in all.
#[derive(Debug)]
pub(crate) struct BytesCache {
    max_bytes: usize,
    state: Mutex<(HashMap<Digest, Bytes>, usize)>,
}

impl BytesCache {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            state: Mutex::new((HashMap::new(), 0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<Digest, Bytes>, usize)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, d: &Digest) -> Option<Bytes> {
        self.lock().0.get(d).cloned()
    }

    pub(crate) fn insert(&self, d: Digest, b: Bytes) {
        if b.len() > self.max_bytes / 8 {
            return;
        }
        let mut state = self.lock();
        let (map, total) = &mut *state;
        // Room by dropping arbitrary entries (a hash map's order: close
        // enough to random eviction).
        while *total + b.len() > self.max_bytes {
            let Some(k) = map.keys().next().cloned() else {
                break;
            };
            if let Some(old) = map.remove(&k) {
                *total -= old.len();
            }
        }
        *total += b.len();
        if let Some(old) = map.insert(d, b) {
            *total -= old.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_bytes_stay_bounded() {
        let c = TtlCache::new(Duration::from_millis(30));
        c.insert("a", 1);
        assert_eq!(c.get(&"a"), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get(&"a"), None);
        let off = TtlCache::new(Duration::ZERO);
        off.insert("a", 1);
        assert_eq!(off.get(&"a"), None);

        let b = BytesCache::new(64);
        for i in 0..100u8 {
            b.insert(Digest::sha256_of(&[i]), Bytes::from(vec![i; 8]));
            assert!(b.lock().1 <= 64);
        }
        b.insert(Digest::sha256_of(b"big"), Bytes::from(vec![0; 9]));
        assert!(
            b.get(&Digest::sha256_of(b"big")).is_none(),
            "over an eighth: not kept"
        );
        let d = Digest::sha256_of(b"x");
        b.insert(d.clone(), Bytes::from_static(b"x"));
        assert_eq!(b.get(&d).unwrap(), Bytes::from_static(b"x"));
    }
}
