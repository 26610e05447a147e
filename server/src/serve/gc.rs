//! The online garbage collector: `kiln_registry::Registry::collect` once
//! per interval. Replicas over one store share the work: the first to find
//! no run recorded within the interval (`gc/last` in the store) runs it;
//! two that race both run, which is safe, only wasteful. After each run the
//! conversions of manifests no repository holds any more are removed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use kiln_registry::{Registry, Storage as _};

use super::Store;
use super::config::GcSettings;
use super::convert::Conversions;

/// Where the last run is recorded (its report).
const LAST: &str = "gc/last";

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Totals {
    pub runs: u64,
    pub failures: u64,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    pub conversions_pruned: u64,
}

/// The collector's counters.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    runs: AtomicU64,
    failures: AtomicU64,
    blobs_deleted: AtomicU64,
    bytes_freed: AtomicU64,
    conversions_pruned: AtomicU64,
}

impl Collector {
    /// Starts the collector (unless `interval_secs` is 0).
    pub(crate) fn start(
        registry: Arc<Registry<Store>>,
        conversions: Arc<Conversions>,
        settings: GcSettings,
    ) -> Arc<Self> {
        let this = Arc::new(Self::default());
        if settings.interval_secs > 0 {
            tokio::spawn(this.clone().run(registry, conversions, settings));
        }
        this
    }

    pub(crate) fn totals(&self) -> Totals {
        Totals {
            runs: self.runs.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            blobs_deleted: self.blobs_deleted.load(Ordering::Relaxed),
            bytes_freed: self.bytes_freed.load(Ordering::Relaxed),
            conversions_pruned: self.conversions_pruned.load(Ordering::Relaxed),
        }
    }

    async fn run(
        self: Arc<Self>,
        registry: Arc<Registry<Store>>,
        conversions: Arc<Conversions>,
        settings: GcSettings,
    ) {
        let interval = Duration::from_secs(settings.interval_secs);
        let options = settings.options();
        loop {
            // Replicas started together drift apart.
            let jitter = 0.9 + 0.2 * f64::from(rand_u8()) / 255.0;
            tokio::time::sleep(interval.mul_f64(jitter)).await;
            match ran_within(&registry, interval.mul_f64(0.8)).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "garbage collection: reading the last run"),
            }
            // Claim the interval before the (long) run.
            registry.storage().put_doc(LAST, b"{}").await.ok();
            match registry.collect(&options).await {
                Ok(report) => {
                    self.runs.fetch_add(1, Ordering::Relaxed);
                    self.blobs_deleted
                        .fetch_add(report.blobs_deleted as u64, Ordering::Relaxed);
                    self.bytes_freed
                        .fetch_add(report.bytes_freed, Ordering::Relaxed);
                    for p in &report.problems {
                        tracing::warn!(problem = %p, "garbage collection");
                    }
                    tracing::info!(%report, "garbage collection");
                    if let Ok(json) = serde_json::to_vec(&report) {
                        registry.storage().put_doc(LAST, &json).await.ok();
                    }
                    // Conversions of manifests gone everywhere go too.
                    match conversions.prune().await {
                        Ok(0) => {}
                        Ok(n) => {
                            self.conversions_pruned
                                .fetch_add(n as u64, Ordering::Relaxed);
                            tracing::info!(
                                conversions = n,
                                "conversions of deleted manifests removed"
                            );
                        }
                        Err(e) => tracing::warn!(error = %e, "pruning conversions"),
                    }
                }
                Err(e) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "garbage collection failed");
                }
            }
        }
    }
}

/// Whether any replica recorded a run within `within`.
async fn ran_within(registry: &Registry<Store>, within: Duration) -> std::io::Result<bool> {
    let now = SystemTime::now();
    Ok(registry
        .storage()
        .list_doc_entries("gc")
        .await?
        .iter()
        .any(|e| e.name == "last" && now.duration_since(e.modified).unwrap_or_default() < within))
}

fn rand_u8() -> u8 {
    let mut b = [0u8; 1];
    getrandom::fill(&mut b).ok();
    b[0]
}
