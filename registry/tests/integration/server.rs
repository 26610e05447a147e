//! An in-process registry on loopback, and what only a server test shows:
//! sessions across restarts, concurrent uploads, hostile paths and bodies.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use kiln_registry::{FsStorage, Limits, ObjectStorage, Registry, Storage, api};
use reqwest::Method;

use crate::client::{Oci, error_code, location, sha256};
use crate::conformance;

/// A registry serving `dir` until the returned handle is dropped.
struct Server {
    oci: Oci,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(dir: &Path, limits: Limits) -> Server {
    serve_store(FsStorage::open(dir).unwrap(), limits).await
}

async fn serve_store<S: Storage>(storage: S, limits: Limits) -> Server {
    let registry = Arc::new(Registry::new(storage, limits));
    let app = api::router(registry, Arc::new(api::Open), api::ApiOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server {
        oci: Oci::new(&format!("http://{addr}"), None),
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_workflows_on_an_open_registry() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), Limits::default()).await;
    conformance::all(&s.oci, "myorg/myrepo", "myorg/other").await;
    // Names of any depth.
    conformance::pull(&s.oci, "a/b/c/d").await;
    let r = s.oci.get("/v2/_catalog").await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["repositories"],
        serde_json::json!(["a/b/c/d", "myorg/myrepo"])
    );
    let r = s.oci.get("/v2/_catalog?n=1").await;
    assert!(r.headers().get("link").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_session_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let blob: Vec<u8> = (0..100u8).collect();
    let loc = {
        let s = serve(dir.path(), Limits::default()).await;
        let r = s
            .oci
            .send(Method::POST, "/v2/r/blobs/uploads/", &[], vec![])
            .await;
        let loc = location(&r);
        let r = s
            .oci
            .send(
                Method::PATCH,
                &loc,
                &[("content-range", "0-49")],
                blob[..50].to_vec(),
            )
            .await;
        assert_eq!(r.status(), 202);
        loc
    };
    let s = serve(dir.path(), Limits::default()).await;
    let r = s.oci.get(&loc).await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-49");
    let r = s
        .oci
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", "50-99")],
            blob[50..].to_vec(),
        )
        .await;
    assert_eq!(r.status(), 202);
    // Completed on the new process: re-hashed from storage, verified.
    let r = s
        .oci
        .send(
            Method::PUT,
            &format!("{loc}?digest={}", sha256(b"wrong")),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        s.oci.get(&loc).await.status(),
        404,
        "a failed completion ends the session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_one_blob_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), Limits::default()).await;
    let blob = vec![7u8; 3 << 20];
    let d = sha256(&blob);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let oci = s.oci.clone();
        let blob = blob.clone();
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            oci.send(
                Method::POST,
                &format!("/v2/r{}/blobs/uploads/?digest={d}", i % 2),
                &[],
                blob,
            )
            .await
            .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    let r = s.oci.get(&format!("/v2/r0/blobs/{d}")).await;
    assert_eq!(r.bytes().await.unwrap().len(), blob.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_typed_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut limits = Limits::default();
    limits.max_manifest_bytes = 1024;
    limits.max_blob_bytes = 4096;
    let s = serve(dir.path(), limits).await;
    let files_before = count_files(dir.path());
    for (method, path, status) in [
        (Method::GET, "/v2/..%2F..%2Fetc/manifests/latest", 400),
        (Method::GET, "/v2/UPPER/tags/list", 400),
        (Method::GET, "/v2/a/blobs/sha256:..%2F..%2Fx", 400),
        (
            Method::GET,
            "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
            400,
        ),
        (Method::GET, "/v2/a/blobs/uploads/..%2F..%2Fdocs", 404),
        (
            Method::PATCH,
            "/v2/a/blobs/uploads/0123456789abcdef0123456789abcdef",
            404,
        ),
        (Method::PUT, "/v2/a/manifests/.hidden", 400),
        (Method::GET, "/v2/nothing-here", 404),
    ] {
        let r = s.oci.send(method.clone(), path, &[], b"x".to_vec()).await;
        assert_eq!(r.status(), status, "{method} {path}");
        let _ = error_code(r).await;
    }
    // A session belongs to its repository.
    let r = s
        .oci
        .send(Method::POST, "/v2/a/blobs/uploads/", &[], vec![])
        .await;
    let loc = location(&r);
    let stolen = loc.replacen("/v2/a/", "/v2/b/", 1);
    assert_eq!(
        s.oci
            .send(Method::PATCH, &stolen, &[], b"x".to_vec())
            .await
            .status(),
        404
    );
    // Over the limits.
    let r = s
        .oci
        .put_manifest(
            "a",
            "big",
            "application/vnd.oci.image.manifest.v1+json",
            &vec![b' '; 2000],
        )
        .await;
    assert_eq!(r.status(), 413);
    let r = s.oci.send(Method::PATCH, &loc, &[], vec![0; 5000]).await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        s.oci.get(&loc).await.headers()["range"],
        "0-0",
        "nothing of it kept"
    );
    let r = s
        .oci
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", "0-9")],
            vec![0; 11],
        )
        .await;
    assert_eq!(r.status(), 400, "longer than its Content-Range");
    // Only the one open session was written.
    assert_eq!(count_files(dir.path()), files_before + 2);
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += count_files(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_manifest_links_blobs_and_children_into_another_repository() {
    use kiln_registry::Reference;
    use kiln_registry_token::RepositoryName;
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), Limits::default()).await;
    // An index of one image in "src", pushed over HTTP.
    let (image, config, layer) = conformance::image(&s.oci, "src", "copy").await;
    let image_digest = sha256(&image);
    let r = s
        .oci
        .put_manifest(
            "src",
            &image_digest,
            "application/vnd.oci.image.manifest.v1+json",
            &image,
        )
        .await;
    assert_eq!(r.status(), 201);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image_digest,
            "size": image.len(),
        }],
    })
    .to_string();
    let r = s
        .oci
        .put_manifest(
            "src",
            "multi",
            "application/vnd.oci.image.index.v1+json",
            index.as_bytes(),
        )
        .await;
    assert_eq!(r.status(), 201);
    drop(s);
    let registry = Registry::new(FsStorage::open(dir.path()).unwrap(), Limits::default());
    let (src, dst): (RepositoryName, RepositoryName) =
        ("src".parse().unwrap(), "dst/copy".parse().unwrap());
    let multi = Reference::Tag("multi".parse().unwrap());
    assert!(registry.copy_manifest(&src, &dst, &multi).await.unwrap());
    assert!(
        !registry.copy_manifest(&src, &dst, &multi).await.unwrap(),
        "already there"
    );
    let (_, bytes) = registry.manifest(&dst, &multi).await.unwrap();
    assert_eq!(&bytes[..], index.as_bytes(), "byte for byte");
    let child = Reference::Digest(image_digest.parse().unwrap());
    assert!(
        registry.manifest_info(&dst, &child).await.is_ok(),
        "the child came along"
    );
    for blob in [&config, &layer] {
        let d = blob.parse().unwrap();
        assert!(
            registry.blob_size(&dst, &d).await.is_ok(),
            "blob {blob} linked"
        );
    }
    // Unknown references are errors; nothing is written for them.
    let missing = Reference::Tag("nope".parse().unwrap());
    assert!(registry.copy_manifest(&src, &dst, &missing).await.is_err());
    assert!(registry.manifest_info(&dst, &missing).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_may_list_blobs_of_its_repository_as_buildkit_caches_do() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), Limits::default()).await;
    // BuildKit's registry cache without image-manifest=true: an index whose
    // entries are the layers and the cache config, pushed as blobs.
    let layer = s.oci.push_blob("cache/x", b"a layer").await;
    let config = s.oci.push_blob("cache/x", b"{\"layers\":[]}").await;
    let index = |digests: &[&str]| {
        let manifests: Vec<serde_json::Value> = digests
            .iter()
            .map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": 7}))
            .collect();
        serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests})
            .to_string()
    };
    let oci_index = "application/vnd.oci.image.index.v1+json";
    let r = s
        .oci
        .put_manifest(
            "cache/x",
            "latest",
            oci_index,
            index(&[&layer, &config]).as_bytes(),
        )
        .await;
    assert_eq!(r.status(), 201);
    // A child that is neither a manifest nor a blob of the repository.
    let elsewhere = s.oci.push_blob("other", b"not in cache/x").await;
    let r = s
        .oci
        .put_manifest(
            "cache/x",
            "bad",
            oci_index,
            index(&[&layer, &elsewhere]).as_bytes(),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_workflows_on_an_object_store_shared_by_two_registries() {
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let a = serve_store(ObjectStorage::new(store.clone(), "reg"), Limits::default()).await;
    let b = serve_store(ObjectStorage::new(store, "reg"), Limits::default()).await;
    conformance::all(&a.oci, "myorg/myrepo", "myorg/other").await;
    // An upload started on one registry process continues and finishes on
    // another over the same store; the first serves the blob.
    let blob: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let r = a
        .oci
        .send(Method::POST, "/v2/shared/blobs/uploads/", &[], vec![])
        .await;
    assert_eq!(r.status(), 202);
    let loc = location(&r);
    let r = b
        .oci
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", "0-999")],
            blob[..1000].to_vec(),
        )
        .await;
    assert_eq!(r.status(), 202);
    let r = a.oci.send(Method::GET, &loc, &[], vec![]).await;
    assert_eq!(r.status(), 204);
    assert_eq!(crate::client::header(&r, "range").as_deref(), Some("0-999"));
    let digest = sha256(&blob);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = b
        .oci
        .send(
            Method::PUT,
            &format!("{loc}{sep}digest={digest}"),
            &[],
            blob[1000..].to_vec(),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = a.oci.get(&format!("/v2/shared/blobs/{digest}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.unwrap()[..], &blob[..]);
    // A tag written through one is read through the other.
    let r = b.oci.get("/v2/myorg/myrepo/tags/list").await;
    assert_eq!(r.status(), 200);
}

/// The S3 bucket of a real distributed store the test script started
/// (scripts/garage-cluster: three Garage nodes, replication factor 3):
/// `KILN_TEST_S3_ENDPOINT`, `_BUCKET`, `_KEY_ID`, `_SECRET`. Required in CI.
pub(crate) fn s3_store() -> Option<Arc<object_store::aws::AmazonS3>> {
    let var = |k: &str| std::env::var(format!("KILN_TEST_S3_{k}")).ok();
    let (Some(endpoint), Some(bucket), Some(key), Some(secret)) =
        (var("ENDPOINT"), var("BUCKET"), var("KEY_ID"), var("SECRET"))
    else {
        let msg = "KILN_TEST_S3_* not set: no S3 store to test against (scripts/test starts a Garage cluster)";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("\n!!!!! SKIPPING: {msg} !!!!!\n");
        return None;
    };
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region(var("REGION").unwrap_or_else(|| "garage".into()))
        .with_bucket_name(bucket)
        .with_access_key_id(key)
        .with_secret_access_key(secret)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    Some(Arc::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_workflows_on_s3_shared_by_two_registries() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(store) = s3_store() else { return };
    // A prefix of this run's own: the bucket outlives test runs.
    let prefix = format!("test-{}-{}", std::process::id(), line!());
    // Both map chunked uploads onto S3 multipart uploads.
    let replica = || ObjectStorage::new(store.clone(), &prefix).with_multipart(store.clone());
    let a = serve_store(replica(), Limits::default()).await;
    let b = serve_store(replica(), Limits::default()).await;
    conformance::all(&a.oci, "myorg/myrepo", "myorg/other").await;
    // Start on A, continue on B, finish on B (which has the running hash:
    // the parts are joined in the store) or on A (which re-hashes: the
    // parts are completed, read back and joined again).
    for (seed, finisher) in [(0u32, &b), (1, &a)] {
        let blob: Vec<u8> = (0..20u32 << 20).map(|i| ((i + seed) % 251) as u8).collect();
        let r = a
            .oci
            .send(Method::POST, "/v2/shared/blobs/uploads/", &[], vec![])
            .await;
        assert_eq!(
            crate::client::header(&r, "oci-chunk-min-length").as_deref(),
            Some("5242880")
        );
        let loc = location(&r);
        let r = b
            .oci
            .send(
                Method::PATCH,
                &loc,
                &[("content-range", &format!("0-{}", (9 << 20) - 1))],
                blob[..9 << 20].to_vec(),
            )
            .await;
        assert_eq!(r.status(), 202);
        let digest = sha256(&blob);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = finisher
            .oci
            .send(
                Method::PUT,
                &format!("{loc}{sep}digest={digest}"),
                &[],
                blob[9 << 20..].to_vec(),
            )
            .await;
        assert_eq!(r.status(), 201);
        let r = a
            .oci
            .send(
                Method::GET,
                &format!("/v2/shared/blobs/{digest}"),
                &[("range", "bytes=10485760-10485769")],
                vec![],
            )
            .await;
        assert_eq!(r.status(), 206);
        assert_eq!(
            &r.bytes().await.unwrap()[..],
            &blob[10 << 20..(10 << 20) + 10]
        );
        let r = b.oci.get(&format!("/v2/shared/blobs/{digest}")).await;
        assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
        // The session is gone, its objects with it.
        let r = a.oci.send(Method::GET, &loc, &[], vec![]).await;
        assert_eq!(r.status(), 404);
        let id = loc.trim_end_matches('/').rsplit('/').next().unwrap();
        let id = id.split('?').next().unwrap();
        let left = replica().list_uploads().await.unwrap();
        assert!(!left.iter().any(|u| u.name == id), "{id} left: {left:?}");
    }
}
