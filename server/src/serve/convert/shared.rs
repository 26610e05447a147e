//! Conversion records and outputs in the registry's store, shared by the
//! replicas over it.
//!
//! Keys (documents of the store):
//! - `conversions/<alg>-<hex>`: the record (JSON);
//! - `conversion-repos/<alg>-<hex>/<repository with / as ,>`: a repository
//!   the manifest was pushed to (one document each: replicas never
//!   overwrite each other's);
//! - `conversions-pending/<alg>-<hex>`: the conversion is not over, so a
//!   replica that finds no live lease on it takes it up;
//! - `leases/convert-<alg>-<hex>/<holder>`: who converts it
//!   ([`kiln_registry::lease::Lease`]).
//!
//! Over an object store the outputs are objects too,
//! `kiln/conversions/<alg>-<hex>.ext4` and `.run.json` under the prefix,
//! uploaded before the record says ready.

use std::io;
use std::path::Path;

use futures_util::StreamExt;
use kiln_registry::Storage as _;
use kiln_registry::lease::Lease;
use object_store::ObjectStoreExt as _;
use tokio::io::AsyncWriteExt;

use super::{Conversions, MAX_ALSO_IN, Record, State, file_stem, keeps};
use crate::serve::Store;
use kiln_registry::ObjectStorage;

const RECORDS: &str = "conversions";
const REPOS: &str = "conversion-repos";
const PENDING: &str = "conversions-pending";

/// A conversion output's object in the bucket: the name of its local file
/// (`<alg>-<hex>.ext4`, `.run.json`) under `kiln/conversions/`.
fn output_object(objects: &ObjectStorage, local: &Path) -> object_store::path::Path {
    let name = local
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    objects.object_path(&format!("kiln/conversions/{name}"))
}

fn flat(repository: &str) -> String {
    repository.replace('/', ",")
}

impl Conversions {
    /// Whether other processes may share the store (an object store).
    pub(super) fn is_shared(&self) -> bool {
        matches!(self.registry.storage(), Store::Object(_))
    }

    fn lease(&self, digest: &str) -> io::Result<Lease> {
        Lease::new(
            &format!("convert-{}", file_stem(digest)),
            &self.holder,
            self.lease_ttl,
        )
    }

    /// The stored record of `digest`, with every repository it was pushed
    /// to.
    pub(super) async fn load(&self, digest: &str) -> io::Result<Option<Record>> {
        let store = self.registry.storage();
        let stem = file_stem(digest);
        let Some(bytes) = store.get_doc(&format!("{RECORDS}/{stem}")).await? else {
            return Ok(None);
        };
        let mut r: Record = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
        self.merge_repositories(&mut r, MAX_ALSO_IN).await?;
        Ok(Some(r))
    }

    /// Adds to `r.also_in` the repositories the store lists for it now (up
    /// to `limit` in all).
    async fn merge_repositories(&self, r: &mut Record, limit: usize) -> io::Result<()> {
        let stem = file_stem(&r.digest);
        for f in self
            .registry
            .storage()
            .list_docs(&format!("{REPOS}/{stem}"))
            .await?
        {
            let repo = f.replace(',', "/");
            if repo != r.repository && !r.also_in.contains(&repo) && r.also_in.len() < limit {
                r.also_in.push(repo);
            }
        }
        Ok(())
    }

    /// Writes a record; a final one is no longer pending.
    pub(super) async fn save(&self, r: &Record) -> io::Result<()> {
        let store = self.registry.storage();
        let stem = file_stem(&r.digest);
        let bytes = serde_json::to_vec_pretty(r).map_err(io::Error::other)?;
        store.put_doc(&format!("{RECORDS}/{stem}"), &bytes).await?;
        if r.state.is_final() {
            store.delete_doc(&format!("{PENDING}/{stem}")).await?;
        }
        Ok(())
    }

    pub(super) async fn add_stored_repository(
        &self,
        digest: &str,
        repository: &str,
    ) -> io::Result<()> {
        let key = format!("{REPOS}/{}/{}", file_stem(digest), flat(repository));
        self.registry.storage().put_doc(&key, b"").await
    }

    /// Notes another repository of a known record; when the record was
    /// pruned meanwhile (its manifest had been deleted everywhere), stores
    /// it anew. (Pruning deletes the record, then looks at the
    /// repositories: of the two write-then-read sequences one sees the
    /// other, so the push always ends with a record.)
    pub(super) async fn add_repository_or_publish(&self, record: Record) -> io::Result<()> {
        self.add_stored_repository(&record.digest, &record.repository)
            .await?;
        if self.load(&record.digest).await?.is_none() {
            self.lock().remove(&record.digest);
            return self.publish(record).await;
        }
        Ok(())
    }

    /// Removes the conversions of manifests no repository holds any more
    /// (deleted, or collected as untagged): record, repositories and
    /// outputs, here and in the store. Those not over yet are left alone.
    /// Returns how many went.
    pub(crate) async fn prune(&self) -> io::Result<usize> {
        let store = self.registry.storage();
        let mut pruned = 0;
        for stem in store.list_docs(RECORDS).await? {
            let digest = stem.replacen('-', ":", 1);
            let Some(record) = self.load(&digest).await? else {
                continue;
            };
            if !record.state.is_final() || self.held_anywhere(&record).await? {
                continue;
            }
            store.delete_doc(&format!("{RECORDS}/{stem}")).await?;
            // A push to another repository may have raced the deletion.
            // (All of them, unbounded: one holding it is enough to keep it.)
            let mut again = record.clone();
            self.merge_repositories(&mut again, usize::MAX).await?;
            if self.held_anywhere(&again).await? {
                let mut fresh = again;
                fresh.state = State::Pending;
                self.publish(fresh).await?;
                continue;
            }
            for f in store.list_docs(&format!("{REPOS}/{stem}")).await? {
                store.delete_doc(&format!("{REPOS}/{stem}/{f}")).await?;
            }
            store.delete_doc(&format!("{PENDING}/{stem}")).await?;
            self.delete_outputs(&digest).await?;
            self.lock().remove(&digest);
            pruned += 1;
        }
        Ok(pruned)
    }

    /// Whether any of the record's repositories holds its manifest.
    async fn held_anywhere(&self, record: &Record) -> io::Result<bool> {
        let Ok(digest) = record.digest.parse::<kiln_registry::Digest>() else {
            return Ok(false);
        };
        for repo in std::iter::once(&record.repository).chain(&record.also_in) {
            let Ok(name) = repo.parse() else { continue };
            match self
                .registry
                .manifest_info(&name, &kiln_registry::Reference::Digest(digest.clone()))
                .await
            {
                Ok(_) => return Ok(true),
                Err(kiln_registry::Error::ManifestUnknown(_)) => {}
                Err(kiln_registry::Error::Io(e)) => return Err(e),
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
        }
        Ok(false)
    }

    /// Removes a conversion's outputs, here and in the store.
    async fn delete_outputs(&self, digest: &str) -> io::Result<()> {
        let (ext4, run) = self.local_paths(digest);
        for f in [&ext4, &run] {
            match tokio::fs::remove_file(f).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            if let Store::Object(objects) = self.registry.storage() {
                match objects
                    .object_store()
                    .delete(&output_object(objects, f))
                    .await
                {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
        }
        Ok(())
    }

    /// Stores a new push's record unless the store has one that stands for
    /// it (another replica's), and queues it when there is work.
    pub(super) async fn publish(&self, record: Record) -> io::Result<()> {
        self.add_stored_repository(&record.digest, &record.repository)
            .await?;
        if let Some(stored) = self.load(&record.digest).await?
            && keeps(&stored, &record)
        {
            self.lock().insert(record.digest.clone(), stored);
            return Ok(());
        }
        self.save(&record).await?;
        if record.state == State::Skipped {
            tracing::info!(digest = %record.digest, repository = %record.repository, "conversion skipped: cache repository");
            return Ok(());
        }
        let stem = file_stem(&record.digest);
        self.registry
            .storage()
            .put_doc(&format!("{PENDING}/{stem}"), b"")
            .await?;
        tracing::info!(digest = %record.digest, repository = %record.repository, "conversion queued");
        self.enqueue(&record.digest);
        Ok(())
    }

    /// Takes the conversion's lease, unless another process holds it or it
    /// is over already; the record to convert is then this process's.
    pub(super) async fn claim(&self, digest: &str) -> io::Result<Option<Lease>> {
        let lease = self.lease(digest)?;
        let store = self.registry.storage();
        if !lease.acquire(store).await? {
            tracing::info!(%digest, "conversion held by another replica");
            return Ok(None);
        }
        match self.load(digest).await? {
            Some(stored) if stored.state.is_final() => {
                self.save(&stored).await?;
                self.lock().insert(digest.to_owned(), stored);
                lease.release(store).await?;
                Ok(None)
            }
            Some(stored) => {
                self.lock().insert(digest.to_owned(), stored);
                Ok(Some(lease))
            }
            None if self.lock().contains_key(digest) => Ok(Some(lease)),
            None => {
                lease.release(store).await?;
                Ok(None)
            }
        }
    }

    /// Queues every pending conversion no live process holds.
    pub(super) async fn take_over(&self) -> io::Result<()> {
        let store = self.registry.storage();
        for stem in store.list_docs(PENDING).await? {
            let digest = stem.replacen('-', ":", 1);
            if self.locals().contains(&digest) || self.lease(&digest)?.is_held(store).await? {
                continue;
            }
            match self.load(&digest).await? {
                None => {
                    store.delete_doc(&format!("{PENDING}/{stem}")).await?;
                }
                Some(r) if r.state.is_final() => {
                    store.delete_doc(&format!("{PENDING}/{stem}")).await?;
                    self.lock().insert(digest, r);
                }
                Some(mut r) => {
                    r.state = State::Pending;
                    self.lock().insert(digest.clone(), r);
                    tracing::info!(%digest, "conversion taken up (its holder stopped)");
                    self.enqueue(&digest);
                }
            }
        }
        Ok(())
    }

    /// Uploads a conversion's outputs beside the registry's objects (over
    /// an object store; on a local directory they stay where they are).
    pub(super) async fn upload_outputs(&self, ext4: &Path, run: &Path) -> io::Result<()> {
        let Store::Object(objects) = self.registry.storage() else {
            return Ok(());
        };
        for file in [ext4, run] {
            let mut writer = object_store::buffered::BufWriter::new(
                objects.object_store().clone(),
                output_object(objects, file),
            );
            let mut reader = tokio::fs::File::open(file).await?;
            tokio::io::copy(&mut reader, &mut writer).await?;
            writer.shutdown().await?;
        }
        Ok(())
    }

    /// Fetches outputs another replica converted.
    pub(super) async fn fetch_outputs(
        &self,
        digest: &str,
        ext4: &Path,
        run: &Path,
    ) -> io::Result<()> {
        let Store::Object(objects) = self.registry.storage() else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no conversion outputs for {digest}"),
            ));
        };
        for file in [run, ext4] {
            if file.exists() {
                continue;
            }
            let got = objects
                .object_store()
                .get(&output_object(objects, file))
                .await
                .map_err(io::Error::other)?;
            let tmp = file.with_extension(format!(
                "{}.tmp",
                super::super::auth::random_bytes::<4>()
                    .map_err(io::Error::other)?
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ));
            let mut out = tokio::fs::File::create(&tmp).await?;
            let mut stream = got.into_stream();
            let result = async {
                while let Some(chunk) = stream.next().await {
                    out.write_all(&chunk.map_err(io::Error::other)?).await?;
                }
                out.sync_all().await?;
                tokio::fs::rename(&tmp, file).await
            }
            .await;
            if result.is_err() {
                tokio::fs::remove_file(&tmp).await.ok();
            }
            result?;
        }
        Ok(())
    }
}
