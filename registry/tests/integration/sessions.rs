//! Upload sessions shared by registries over one store: the running hash
//! travels with the session, so a chunk sent to any of them is hashed on
//! the way; and bytes a racing request left in a session are never
//! committed under the digest the client's own bytes have.

use bytes::Bytes;
use kiln_registry::storage::ByteStream;
use kiln_registry::{Digest, FsStorage, Hasher, Limits, Registry, Storage};

fn body(bytes: &[u8]) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = bytes
        .chunks(700)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn a_running_hash_travels_with_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let replica = || Registry::new(FsStorage::open(dir.path()).unwrap(), Limits::default());
    let (a, b) = (replica(), replica());
    let repo = "app".parse().unwrap();
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 31 + i / 7) as u8).collect();
    let id = a.start_upload(&repo).await.unwrap();
    assert_eq!(
        a.append(&repo, &id, Some(0), None, body(&data[..1000]))
            .await
            .unwrap(),
        1000
    );
    // B has never seen the session: it takes up the hash A saved.
    assert_eq!(
        b.append(&repo, &id, Some(1000), None, body(&data[1000..3000]))
            .await
            .unwrap(),
        3000
    );
    let record = b
        .storage()
        .get_doc(&format!("uploads/{id}"))
        .await
        .unwrap()
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["hash"]["offset"], 3000, "{record}");
    let mut h = Hasher::restore(record["hash"]["state"].as_str().unwrap()).unwrap();
    h.update(&data[3000..]);
    let digest = Digest::sha256_of(&data);
    assert_eq!(h.finish(), digest);
    // A, whose own hash stopped at 1000 bytes, finishes with B's.
    a.complete(&repo, &id, &digest, Some(body(&data[3000..])))
        .await
        .unwrap();
    assert_eq!(b.blob_size(&repo, &digest).await.unwrap(), 5000);
    // A saved state that does not fit is ignored (the data is re-read).
    let id = b.start_upload(&repo).await.unwrap();
    b.append(&repo, &id, Some(0), None, body(&data[..2000]))
        .await
        .unwrap();
    let key = format!("uploads/{id}");
    let doc = b.storage().get_doc(&key).await.unwrap().unwrap();
    let mut doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    doc["hash"]["state"] = "0.00.".into();
    b.storage()
        .put_doc(&key, &serde_json::to_vec(&doc).unwrap())
        .await
        .unwrap();
    let other = Digest::sha256_of(&data[..2500]);
    replica()
        .complete(&repo, &id, &other, Some(body(&data[2000..2500])))
        .await
        .unwrap();
    assert_eq!(a.blob_size(&repo, &other).await.unwrap(), 2500);
}

#[tokio::test]
async fn bytes_rewritten_by_a_racing_request_are_refused_not_stored() {
    use object_store::ObjectStoreExt as _;
    let store = std::sync::Arc::new(object_store::memory::InMemory::new());
    let registry = Registry::new(
        kiln_registry::ObjectStorage::new(store.clone(), "r"),
        Limits::default(),
    );
    let repo = "app".parse().unwrap();
    let data = b"what the client sent".to_vec();
    let id = registry.start_upload(&repo).await.unwrap();
    registry
        .append(&repo, &id, Some(0), None, body(&data))
        .await
        .unwrap();
    // What a request racing through another replica left in its place.
    let piece = object_store::path::Path::from(format!("r/uploads/{id}/data/{:020}", 0));
    store
        .put(&piece, b"what a racer wrote!!".to_vec().into())
        .await
        .unwrap();
    let digest = Digest::sha256_of(&data);
    let e = registry
        .complete(&repo, &id, &digest, None)
        .await
        .unwrap_err();
    assert!(matches!(e, kiln_registry::Error::InvalidUpload(_)), "{e}");
    assert!(registry.blob_size(&repo, &digest).await.is_err());
    assert!(registry.storage().list_uploads().await.unwrap().is_empty());
}
