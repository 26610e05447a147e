//! The read caches' bound: two registries over one store; what one writes
//! the other serves within `cache_ttl`, and its own writes at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kiln_registry::{Error, Limits, ObjectStorage, Reference, Registry};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn index(n: u32) -> Bytes {
    Bytes::from(format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{INDEX}\",\"manifests\":[],\"annotations\":{{\"n\":\"{n}\"}}}}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replicas_writes_are_seen_within_the_cache_ttl() {
    let store = Arc::new(object_store::memory::InMemory::new());
    let mut limits = Limits::default();
    limits.cache_ttl = Duration::from_millis(300);
    let a = Registry::new(ObjectStorage::new(store.clone(), "r"), limits);
    let b = Registry::new(ObjectStorage::new(store, "r"), limits);
    let repo = "app".parse().unwrap();
    let v1 = Reference::Tag("v1".parse().unwrap());

    let d1 = a
        .put_manifest(&repo, &v1, Some(INDEX), index(1))
        .await
        .unwrap()
        .digest;
    // Not cached as missing: B sees A's push at once.
    assert_eq!(b.manifest_info(&repo, &v1).await.unwrap().digest, d1);
    // A moves the tag: A sees it at once, B within the bound.
    let d2 = a
        .put_manifest(&repo, &v1, Some(INDEX), index(2))
        .await
        .unwrap()
        .digest;
    assert_eq!(a.manifest_info(&repo, &v1).await.unwrap().digest, d2);
    let moved = Instant::now();
    loop {
        let seen = b.manifest_info(&repo, &v1).await.unwrap().digest;
        if seen == d2 {
            break;
        }
        assert_eq!(seen, d1);
        assert!(
            moved.elapsed() < Duration::from_millis(350),
            "stale past the bound"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A deletes it: gone on A at once, on B within the bound.
    let (_, bytes) = b
        .manifest(&repo, &Reference::Digest(d2.clone()))
        .await
        .unwrap();
    assert_eq!(bytes, index(2));
    a.delete_manifest(&repo, &Reference::Digest(d2.clone()))
        .await
        .unwrap();
    assert!(matches!(
        a.manifest_info(&repo, &v1).await,
        Err(Error::ManifestUnknown(_))
    ));
    tokio::time::sleep(Duration::from_millis(310)).await;
    assert!(b.manifest_info(&repo, &v1).await.is_err());
    assert!(b.manifest(&repo, &Reference::Digest(d2)).await.is_err());
}
