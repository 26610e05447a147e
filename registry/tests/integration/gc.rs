//! Garbage collection against the registry API: what it removes and keeps,
//! the handshake with writers, and a collector in a loop while clients push
//! and delete — on a local directory, an in-memory object store and (in
//! CI) the Garage cluster.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kiln_registry::storage::ByteStream;
use kiln_registry::{
    Digest, Error, FsStorage, GcOptions, Limits, ObjectStorage, Reference, Registry, Storage,
};
use kiln_registry_token::RepositoryName;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn limits(deadline: Duration) -> Limits {
    let mut l = Limits::default();
    l.write_deadline = deadline;
    l
}

fn options(grace: Duration) -> GcOptions {
    let mut o = GcOptions::default();
    o.grace = grace;
    o
}

fn repo(name: &str) -> RepositoryName {
    name.parse().unwrap()
}

fn body(bytes: Vec<u8>) -> ByteStream {
    Box::pin(futures_util::stream::iter([Ok(Bytes::from(bytes))]))
}

async fn try_push_blob<S: Storage>(
    reg: &Registry<S>,
    r: &RepositoryName,
    bytes: &[u8],
) -> Result<Digest, Error> {
    let d = Digest::sha256_of(bytes);
    let id = reg.start_upload(r).await?;
    reg.complete(r, &id, &d, Some(body(bytes.to_vec()))).await?;
    Ok(d)
}

async fn push_blob<S: Storage>(reg: &Registry<S>, r: &RepositoryName, bytes: &[u8]) -> Digest {
    try_push_blob(reg, r, bytes).await.unwrap()
}

fn manifest(config: &Digest, config_len: usize, layers: &[(Digest, usize)]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, n)| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d.as_str(), "size": n})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config.as_str(), "size": config_len},
        "layers": layers,
    }))
    .unwrap()
}

/// Pushes an image of `layers` (plus a config naming `tag`) as `r:tag`,
/// or untagged (by digest) when `tag` is `None`.
async fn push_image<S: Storage>(
    reg: &Registry<S>,
    r: &RepositoryName,
    tag: Option<&str>,
    layers: &[Vec<u8>],
) -> Result<Digest, Error> {
    let config = format!("{{\"tag\":{:?},\"n\":{}}}", tag, layers.len()).into_bytes();
    let c = try_push_blob(reg, r, &config).await?;
    let mut ls = Vec::new();
    for l in layers {
        ls.push((try_push_blob(reg, r, l).await?, l.len()));
    }
    let m = manifest(&c, config.len(), &ls);
    let reference = match tag {
        Some(t) => Reference::Tag(t.parse().unwrap()),
        None => Reference::Digest(Digest::sha256_of(&m)),
    };
    Ok(reg
        .put_manifest(r, &reference, Some(MANIFEST), m.into())
        .await?
        .digest)
}

async fn stored<S: Storage>(reg: &Registry<S>) -> Vec<String> {
    let mut v: Vec<String> = reg
        .storage()
        .list_blobs()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_only_what_nothing_references_once_past_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let deadline = Duration::from_millis(50);
    let grace = Duration::from_millis(400);
    let reg = Registry::new(FsStorage::open(dir.path()).unwrap(), limits(deadline));
    let app = repo("team/app");
    let kept = push_image(&reg, &app, Some("v1"), &[b"base".to_vec(), b"app".to_vec()])
        .await
        .unwrap();
    let untagged = push_image(&reg, &app, None, &[b"base".to_vec(), b"old".to_vec()])
        .await
        .unwrap();
    // An upload session opened before the orphan is pushed holds it back.
    let open = reg.start_upload(&app).await.unwrap();
    let orphan = push_blob(&reg, &app, b"orphan layer").await;

    // Young: nothing goes, the dry run agrees.
    let r = reg.collect(&options(grace)).await.unwrap();
    assert_eq!((r.blobs_deleted, r.blobs_young), (0, 1), "{r}");
    assert_eq!(r.manifests, 2);

    // A grace shorter than the write deadline is refused.
    assert!(matches!(
        reg.collect(&options(deadline)).await,
        Err(Error::Unsupported(_))
    ));

    tokio::time::sleep(grace + Duration::from_millis(100)).await;
    // The open upload session holds back every blob younger than it.
    let r = reg.collect(&options(grace)).await.unwrap();
    assert_eq!(r.blobs_deleted, 0, "{r}");
    reg.cancel(&app, &open).await.unwrap();

    let mut dry = options(grace);
    dry.dry_run = true;
    let before = stored(&reg).await;
    let r = reg.collect(&dry).await.unwrap();
    assert_eq!((r.blobs_deleted, r.dry_run), (1, true), "{r}");
    assert_eq!(stored(&reg).await, before, "a dry run removes nothing");

    let r = reg.collect(&options(grace)).await.unwrap();
    assert_eq!((r.blobs_deleted, r.bytes_freed), (1, 12), "{r}");
    assert!(!stored(&reg).await.contains(&orphan.to_string()));
    assert!(matches!(
        reg.blob_size(&app, &orphan).await,
        Err(Error::BlobUnknown(_))
    ));

    // Untagged retention: the untagged image goes, then its own layer;
    // the layer it shares with the tagged image stays.
    let mut retain = options(grace);
    retain.untagged_after = Some(Duration::from_millis(100));
    let r = reg.collect(&retain).await.unwrap();
    assert_eq!(r.untagged_deleted, [format!("team/app@{untagged}")]);
    // Its manifest, its config and its own layer.
    assert_eq!(r.blobs_deleted, 3, "{r}");
    assert!(
        reg.manifest(&app, &Reference::Digest(untagged))
            .await
            .is_err()
    );
    let (_, bytes) = reg
        .manifest(&app, &Reference::Digest(kept.clone()))
        .await
        .unwrap();
    let scrub = reg.scrub(|_| {}).await.unwrap();
    assert!(scrub.is_clean(), "{scrub:?}");
    assert_eq!(scrub.manifests, 1);
    assert!(bytes.len() > 10);

    // Corruption is found by the scrub.
    let victim = FsStorage::blob_path_in(dir.path(), &Digest::sha256_of(b"app"));
    std::fs::write(&victim, b"ppa").unwrap();
    let scrub = reg.scrub(|_| {}).await.unwrap();
    assert_eq!(scrub.corrupt.len(), 1, "{scrub:?}");
    assert!(scrub.corrupt[0].contains("content hashes to"));

    // A manifest whose bytes are gone may reference anything: a run that
    // meets one removes no blob, and says why.
    push_blob(&reg, &app, b"another orphan").await;
    tokio::time::sleep(grace + Duration::from_millis(100)).await;
    std::fs::remove_file(FsStorage::blob_path_in(dir.path(), &kept)).unwrap();
    // (A registry that has not read it yet: this one keeps its bytes.)
    let fresh = Registry::new(FsStorage::open(dir.path()).unwrap(), limits(deadline));
    let r = fresh.collect(&options(grace)).await.unwrap();
    assert_eq!((r.problems.len(), r.blobs_deleted), (1, 0), "{r}");
    assert!(
        r.problems[0].starts_with(&format!("team/app@{kept}")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_upload_sessions_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::new(
        FsStorage::open(dir.path()).unwrap(),
        limits(Duration::from_millis(20)),
    );
    let app = repo("app");
    let id = reg.start_upload(&app).await.unwrap();
    reg.append(&app, &id, None, None, body(b"half".to_vec()))
        .await
        .unwrap();
    let mut o = options(Duration::from_millis(100));
    o.upload_ttl = Duration::from_secs(3600);
    assert_eq!(reg.collect(&o).await.unwrap().uploads_deleted, 0);
    tokio::time::sleep(Duration::from_millis(150)).await;
    o.upload_ttl = Duration::from_millis(100);
    assert_eq!(reg.collect(&o).await.unwrap().uploads_deleted, 1);
    assert!(matches!(
        reg.upload_size(&app, &id).await,
        Err(Error::UploadUnknown(_))
    ));
    assert!(reg.storage().list_uploads().await.unwrap().is_empty());
}

/// The handshake, step by step: a write that relies on a blob a sweep
/// marker names waits until the sweep is over; a write that recorded the
/// blob first makes the collector spare it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_and_sweeps_never_cross() {
    let dir = tempfile::tempdir().unwrap();
    let deadline = Duration::from_secs(4);
    let store = FsStorage::open(dir.path()).unwrap();
    let reg = Arc::new(Registry::new(store, limits(deadline)));
    let app = repo("app");
    let layer = push_blob(&reg, &app, b"layer").await;
    let config = push_blob(&reg, &app, b"{}").await;
    let m = manifest(&config, 2, &[(layer.clone(), 5)]);

    // A collector is announced and sweeping the layer.
    let s = reg.storage();
    s.put_doc("gc/active/other", b"0").await.unwrap();
    s.put_doc("gc/sweeps/other-b0", format!("{layer}\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the look cache
    let put = {
        let (reg, app, m) = (reg.clone(), app.clone(), m.clone());
        tokio::spawn(async move {
            reg.put_manifest(
                &app,
                &Reference::Tag("v1".parse().unwrap()),
                Some(MANIFEST),
                m.into(),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!put.is_finished(), "the PUT waits for the sweep");
    // What it recorded: the manifest, the config and the layer.
    let touches = s.list_docs("gc/touches").await.unwrap();
    assert_eq!(touches.len(), 1);
    let touch = s
        .get_doc(&format!("gc/touches/{}", touches[0]))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8(touch).unwrap().contains(layer.as_str()));
    // The sweep deletes the layer and ends: the PUT finds it missing.
    s.delete_blob(&layer).await.unwrap();
    s.delete_doc("gc/sweeps/other-b0").await.unwrap();
    let r = put.await.unwrap();
    assert!(matches!(r, Err(Error::ManifestBlobUnknown(_))), "{r:?}");

    // Now the other order: the write records the blob first; a collector
    // then spares it although nothing references it and it is old.
    let layer = push_blob(&reg, &app, b"layer").await;
    let grace = deadline + Duration::from_millis(100);
    tokio::time::sleep(grace).await;
    let mut dry = options(grace);
    dry.dry_run = true;
    let r = reg.collect(&dry).await.unwrap();
    assert_eq!(r.blobs_deleted, 2, "layer and config: {r}");
    // A writer's touch (as a mount while the collector is announced leaves).
    s.put_doc("gc/touches/1-x", format!("{layer}\n").as_bytes())
        .await
        .unwrap();
    let r = reg.collect(&options(grace)).await.unwrap();
    assert_eq!(r.blobs_in_use, 1, "{r}");
    assert_eq!(r.blobs_deleted, 1, "{r}");
    assert_eq!(reg.blob_size(&app, &layer).await.unwrap(), 5);
}

/// Pushers push and delete while a collector runs in a loop; afterwards no
/// manifest references a missing blob, every acknowledged tag still
/// resolves, and once past the grace nothing unreferenced remains.
async fn collector_in_a_loop_while_clients_push_and_delete<S: Storage>(
    store: S,
    run: Duration,
    deadline: Duration,
) {
    let grace = deadline * 5;
    let reg = Arc::new(Registry::new(store, limits(deadline)));
    let stop = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let collector = {
        let (reg, stop, runs) = (reg.clone(), stop.clone(), runs.clone());
        tokio::spawn(async move {
            let mut o = options(grace);
            o.untagged_after = Some(grace);
            while !stop.load(Ordering::Relaxed) {
                reg.collect(&o).await.unwrap();
                runs.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let started = Instant::now();
    let mut pushers = Vec::new();
    for p in 0..4u32 {
        let reg = reg.clone();
        pushers.push(tokio::spawn(async move {
            let r = repo(&format!("p{p}"));
            let mut tags: HashMap<String, Digest> = HashMap::new();
            let mut retried = 0;
            let mut i = 0u32;
            while started.elapsed() < run {
                i += 1;
                let tag = format!("t{}", i % 3);
                // A base layer every pusher shares, one of its own.
                let layers = [b"shared base".to_vec(), format!("p{p}-{i}").into_bytes()];
                match push_image(&reg, &r, Some(&tag), &layers).await {
                    Ok(d) => {
                        tags.insert(tag.clone(), d);
                    }
                    Err(Error::ManifestBlobUnknown(_) | Error::Unavailable(_)) => retried += 1,
                    Err(e) => panic!("push: {e}"),
                }
                if i.is_multiple_of(4)
                    && let Some(d) = tags.remove(&format!("t{}", (i + 1) % 3))
                {
                    reg.delete_manifest(&r, &Reference::Digest(d))
                        .await
                        .unwrap();
                }
                if i.is_multiple_of(5) {
                    // An untagged push, left for the retention policy.
                    let _ = push_image(&reg, &r, None, &[format!("u{p}-{i}").into_bytes()]).await;
                }
            }
            (r, tags, retried, i)
        }));
    }
    let mut acknowledged = Vec::new();
    let mut pushes = 0;
    for p in pushers {
        let (r, tags, retried, n) = p.await.unwrap();
        assert!(retried * 10 <= n, "{retried} of {n} pushes needed a retry");
        pushes += n;
        acknowledged.push((r, tags));
    }
    stop.store(true, Ordering::Relaxed);
    collector.await.unwrap();
    assert!(runs.load(Ordering::Relaxed) >= 2, "the collector ran");
    assert!(pushes >= 20, "{pushes} pushes");

    for (r, tags) in &acknowledged {
        for (tag, d) in tags {
            let info = reg
                .manifest_info(r, &Reference::Tag(tag.parse().unwrap()))
                .await
                .unwrap();
            assert_eq!(&info.digest, d, "{r}:{tag}");
        }
    }
    let scrub = reg.scrub(|_| {}).await.unwrap();
    assert!(scrub.is_clean(), "{scrub:?}");

    // Past the grace: a last run leaves exactly what is referenced.
    tokio::time::sleep(grace).await;
    let mut o = options(grace);
    o.untagged_after = Some(grace);
    reg.collect(&o).await.unwrap();
    let r = reg.collect(&o).await.unwrap();
    assert_eq!(r.blobs_young + r.blobs_deleted, 0, "{r}");
    assert_eq!(r.blobs, r.blobs_referenced, "{r}");
    let scrub = reg.scrub(|_| {}).await.unwrap();
    assert!(scrub.is_clean(), "{scrub:?}");
    let tagged: usize = acknowledged.iter().map(|(_, t)| t.len()).sum();
    assert_eq!(scrub.manifests, tagged, "only tagged manifests remain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_in_a_loop_while_clients_push_and_delete_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    collector_in_a_loop_while_clients_push_and_delete(
        FsStorage::open(dir.path()).unwrap(),
        Duration::from_secs(5),
        Duration::from_millis(300),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_in_a_loop_while_clients_push_and_delete_on_an_object_store() {
    let store = Arc::new(object_store::memory::InMemory::new());
    collector_in_a_loop_while_clients_push_and_delete(
        ObjectStorage::new(store, "reg"),
        Duration::from_secs(5),
        Duration::from_millis(300),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_in_a_loop_while_clients_push_and_delete_on_s3() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(store) = crate::server::s3_store() else {
        return;
    };
    let prefix = format!("test-gc-{}", std::process::id());
    collector_in_a_loop_while_clients_push_and_delete(
        ObjectStorage::new(store.clone(), &prefix).with_multipart(store),
        Duration::from_secs(10),
        // Every object operation is fsynced on three nodes: a sweep batch
        // takes a while.
        Duration::from_secs(2),
    )
    .await;
}
