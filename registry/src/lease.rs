//! Leases in the store: at most one holder of a named piece of work at a
//! time among the processes sharing a store, taken over once the holder
//! stops renewing it (it crashed).
//!
//! A claim is a document `leases/<name>/<holder>`, alive while younger than
//! the lease's time to live by the store's clock. To acquire, a process
//! looks for a live claim of another (held: give up), writes its own, then
//! lists the claims again and keeps the lease only when no other live claim
//! is there (else it withdraws). Of two processes that each write then
//! list, at least one sees the other's claim on a linearizable store, so
//! two never both hold it (both may withdraw, and retry later). A holder
//! renews well within the time to live; work that must never run twice
//! also needs its own idempotence (a lease holder can stall past its
//! lease).

use std::io;
use std::time::{Duration, SystemTime};

use crate::storage::Storage;

/// A lease over work named `name` (one key component: `[A-Za-z0-9._-]`),
/// claimed as `holder` (unique per process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    name: String,
    holder: String,
    ttl: Duration,
}

fn valid(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 200
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Lease {
    /// A lease on `name` for `holder`, alive for `ttl` after each renewal.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a name or holder that is not one key component.
    pub fn new(name: &str, holder: &str, ttl: Duration) -> io::Result<Self> {
        if !(valid(name) && valid(holder)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "lease names and holders are [A-Za-z0-9._-]{1,200}",
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            holder: holder.to_owned(),
            ttl,
        })
    }

    fn dir(&self) -> String {
        format!("leases/{}", self.name)
    }

    fn key(&self) -> String {
        format!("leases/{}/{}", self.name, self.holder)
    }

    /// Whether another holder's live claim is there; expired claims of
    /// others, twice past their time to live, are removed on the way.
    async fn others_alive(&self, store: &impl Storage) -> io::Result<bool> {
        let now = SystemTime::now();
        let mut alive = false;
        for c in store.list_doc_entries(&self.dir()).await? {
            if c.name == self.holder {
                continue;
            }
            let age = now.duration_since(c.modified).unwrap_or_default();
            if age < self.ttl {
                alive = true;
            } else if age > self.ttl * 2 {
                store
                    .delete_doc(&format!("{}/{}", self.dir(), c.name))
                    .await?;
            }
        }
        Ok(alive)
    }

    /// Tries to take the lease; whether this holder has it now.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn acquire(&self, store: &impl Storage) -> io::Result<bool> {
        if self.others_alive(store).await? {
            return Ok(false);
        }
        store.put_doc(&self.key(), b"").await?;
        if self.others_alive(store).await? {
            store.delete_doc(&self.key()).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Keeps the lease alive for another time to live.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn renew(&self, store: &impl Storage) -> io::Result<()> {
        store.put_doc(&self.key(), b"").await
    }

    /// Gives the lease up.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn release(&self, store: &impl Storage) -> io::Result<()> {
        store.delete_doc(&self.key()).await.map(drop)
    }

    /// Whether anyone (this holder included) holds the lease now.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn is_held(&self, store: &impl Storage) -> io::Result<bool> {
        let now = SystemTime::now();
        Ok(store
            .list_doc_entries(&self.dir())
            .await?
            .iter()
            .any(|c| now.duration_since(c.modified).unwrap_or_default() < self.ttl))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ObjectStorage;

    fn store() -> ObjectStorage {
        ObjectStorage::new(Arc::new(object_store::memory::InMemory::new()), "t")
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_taken_over_after_expiry() {
        let s = store();
        let ttl = Duration::from_millis(300);
        let a = Lease::new("convert-x", "a", ttl).unwrap();
        let b = Lease::new("convert-x", "b", ttl).unwrap();
        assert!(!a.is_held(&s).await.unwrap());
        assert!(a.acquire(&s).await.unwrap());
        assert!(!b.acquire(&s).await.unwrap());
        assert!(a.acquire(&s).await.unwrap(), "the holder may take it again");
        assert!(b.is_held(&s).await.unwrap());
        // Renewed, it stays a's.
        tokio::time::sleep(ttl / 2).await;
        a.renew(&s).await.unwrap();
        tokio::time::sleep(ttl / 2 + Duration::from_millis(20)).await;
        assert!(!b.acquire(&s).await.unwrap());
        // Not renewed (a "crashed"): b takes over.
        tokio::time::sleep(ttl + Duration::from_millis(20)).await;
        assert!(b.acquire(&s).await.unwrap());
        assert!(!a.acquire(&s).await.unwrap());
        b.release(&s).await.unwrap();
        assert!(a.acquire(&s).await.unwrap());
        assert!(Lease::new("a/b", "x", ttl).is_err());
        assert!(Lease::new("ok", "..", ttl).is_err());
    }

    #[tokio::test]
    async fn racing_holders_never_both_win() {
        let s = Arc::new(store());
        for round in 0..50 {
            let name = format!("work-{round}");
            let tasks: Vec<_> = (0..4)
                .map(|h| {
                    let (s, name) = (s.clone(), name.clone());
                    tokio::spawn(async move {
                        let l =
                            Lease::new(&name, &format!("h{h}"), Duration::from_secs(30)).unwrap();
                        l.acquire(&*s).await.unwrap()
                    })
                })
                .collect();
            let mut winners = 0;
            for t in tasks {
                winners += usize::from(t.await.unwrap());
            }
            assert!(winners <= 1, "round {round}: {winners} holders");
        }
    }
}
