//! Referrers: an SBOM artifact whose `subject` is the copied image, found
//! at the source through the tag-schema fallback (Debian's distribution 2.8
//! has no referrers API), copied, and listed under the same fallback tag at
//! the destination. Then the referrers API itself, which no registry
//! installable here serves: a proxy in front of distribution indexes the
//! manifests pushed through it by `subject` and answers
//! `GET /v2/<name>/referrers/<digest>` one descriptor per page.

use std::collections::HashMap;
use std::sync::Mutex;

use kiln_oci_mirror::{CopyOptions, Manifest, RegistryClient, RegistryConfig, copy};
use serde_json::{Value, json};

use crate::peers::{Layout, Registry, raw_manifest, runtime, scratch, sha256, tools};
use crate::proxy::{Hook, Proxy, Request, body_start};

fn client(host: &str) -> RegistryClient {
    let mut cfg = RegistryConfig::new(host);
    cfg.insecure = true;
    RegistryClient::new(cfg).unwrap()
}

/// Uploads `data` as a blob of `repo` (POST, then PUT with the digest).
async fn push_blob(host: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let http = reqwest::Client::new();
    let start = http
        .post(format!("http://{host}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 202);
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{host}{location}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let put = http
        .put(format!("{url}{sep}digest={digest}"))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
    digest
}

fn manifest(bytes: Vec<u8>, media_type: &str) -> Manifest {
    Manifest {
        digest: sha256(&bytes),
        bytes,
        media_type: media_type.into(),
    }
}

#[test]
fn referrers_are_copied_and_listed_under_the_fallback_tag() {
    if !tools() {
        return;
    }
    let dir = scratch("referrers");
    let (a, b) = (
        Registry::start(&dir.join("a")),
        Registry::start(&dir.join("b")),
    );
    let layout = Layout::new(&dir.join("layout"));
    let (image, image_size) = layout.image(7, &[64 << 10, 1000], "amd64");
    layout.tag("v1", &[(image, image_size, "amd64")]);
    layout.push("v1", &format!("{}/src/app:v1", a.host), false);
    // skopeo may rewrite the manifest on push (it compresses layers): the
    // subject is what the registry holds.
    let pushed = raw_manifest(&format!("{}/src/app:v1", a.host));
    let (subject, subject_size) = (sha256(&pushed), pushed.len());

    let rt = runtime();
    let (sc, dc) = (client(&a.host), client(&b.host));
    // An SBOM artifact pointing at the image, and the fallback index.
    let fallback = format!("sha256-{}", &subject[7..]);
    let sbom = br#"{"spdxVersion":"SPDX-2.3","name":"app"}"#;
    let referrer = rt.block_on(async {
        let empty = push_blob(&a.host, "src/app", b"{}").await;
        let layer = push_blob(&a.host, "src/app", sbom).await;
        let artifact = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/spdx+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/spdx+json", "digest": layer, "size": sbom.len()}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": subject_size},
        });
        let artifact = manifest(
            serde_json::to_vec(&artifact).unwrap(),
            "application/vnd.oci.image.manifest.v1+json",
        );
        sc.put_manifest("src/app", &artifact.digest, &artifact).await.unwrap();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": artifact.digest,
                "size": artifact.bytes.len(),
                "artifactType": "application/spdx+json",
            }],
        });
        let index = manifest(
            serde_json::to_vec(&index).unwrap(),
            "application/vnd.oci.image.index.v1+json",
        );
        sc.put_manifest("src/app", &fallback, &index).await.unwrap();
        artifact
    });

    let options = CopyOptions {
        referrers: true,
        ..CopyOptions::default()
    };
    let src = format!("{}/src/app:v1", a.host).parse().unwrap();
    let dst = format!("{}/mirror/app:v1", b.host).parse().unwrap();
    for round in 0..2 {
        let report = rt.block_on(copy(&sc, &src, &dc, &dst, &options)).unwrap();
        assert_eq!(report.referrers, 1, "round {round}");
    }
    // The artifact, byte for byte, and the fallback tag listing it once.
    let copied = raw_manifest(&format!("{}/mirror/app@{}", b.host, referrer.digest));
    assert_eq!(copied, referrer.bytes);
    let listed: serde_json::Value =
        serde_json::from_slice(&raw_manifest(&format!("{}/mirror/app:{fallback}", b.host)))
            .unwrap();
    let digests: Vec<&str> = listed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests, [referrer.digest.as_str()]);
    // The SBOM blob itself came along.
    let head = rt.block_on(async {
        reqwest::Client::new()
            .head(format!(
                "http://{}/v2/mirror/app/blobs/{}",
                b.host,
                sha256(sbom)
            ))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(head, 200);

    // Without the option, nothing but the image.
    let plain = format!("{}/plain/app:v1", b.host).parse().unwrap();
    let report = rt
        .block_on(copy(&sc, &src, &dc, &plain, &CopyOptions::default()))
        .unwrap();
    assert_eq!(report.referrers, 0);
}

/// The referrers API over a registry without one: descriptors of the
/// manifests with a `subject` pushed through the proxy, by (repository,
/// subject), answered one per page with a `Link` to the next.
#[derive(Default)]
struct ReferrersApi {
    index: Mutex<HashMap<(String, String), Vec<Value>>>,
}

impl ReferrersApi {
    fn listed(&self, repo: &str, subject: &str) -> Vec<String> {
        let index = self.index.lock().unwrap();
        let list = index.get(&(repo.to_owned(), subject.to_owned()));
        list.into_iter()
            .flatten()
            .map(|d| d["digest"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Hook for ReferrersApi {
    fn answer(&self, request: &Request) -> Option<Vec<u8>> {
        let (path, query) = request
            .target()
            .split_once('?')
            .unwrap_or((request.target(), ""));
        let (repo, subject) = path.strip_prefix("/v2/")?.rsplit_once("/referrers/")?;
        if request.method() != "GET" {
            return None;
        }
        let page: usize = query
            .strip_prefix("page=")
            .map_or(0, |p| p.parse().unwrap());
        let list = self
            .index
            .lock()
            .unwrap()
            .get(&(repo.to_owned(), subject.to_owned()))
            .cloned()
            .unwrap_or_default();
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": list.get(page).into_iter().collect::<Vec<_>>(),
        }))
        .unwrap();
        let link = if page + 1 < list.len() {
            format!(
                "Link: </v2/{repo}/referrers/{subject}?page={}>; rel=\"next\"\r\n",
                page + 1
            )
        } else {
            String::new()
        };
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\n{link}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend(body);
        Some(response)
    }

    fn relay(&self, request: &Request, response: Vec<u8>) -> (Vec<u8>, bool) {
        let stored = request.method() == "PUT" && response.starts_with(b"HTTP/1.1 201");
        let Some((repo, _)) = request
            .target()
            .strip_prefix("/v2/")
            .and_then(|p| p.rsplit_once("/manifests/"))
            .filter(|_| stored)
        else {
            return (response, true);
        };
        let manifest: Value = serde_json::from_slice(&request.body).unwrap();
        let Some(subject) = manifest["subject"]["digest"].as_str() else {
            return (response, true);
        };
        let digest = sha256(&request.body);
        let descriptor = json!({
            "mediaType": manifest["mediaType"],
            "digest": digest,
            "size": request.body.len(),
            "artifactType": manifest.get("artifactType").unwrap_or(&manifest["config"]["mediaType"]),
        });
        let mut index = self.index.lock().unwrap();
        let list = index
            .entry((repo.to_owned(), subject.to_owned()))
            .or_default();
        if !list.iter().any(|d| d["digest"] == digest) {
            list.push(descriptor);
        }
        // As a registry with the API says it indexed the subject.
        let split = body_start(&response);
        let mut answered = response[..split - 2].to_vec();
        answered.extend(format!("OCI-Subject: {subject}\r\n\r\n").as_bytes());
        answered.extend(&response[split..]);
        (answered, true)
    }
}

/// The tags of `repo` at a registry.
async fn tags(host: &str, repo: &str) -> Vec<String> {
    let list: Value = reqwest::get(format!("http://{host}/v2/{repo}/tags/list"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut tags: Vec<String> = list["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    tags.sort();
    tags
}

/// Pushes an artifact manifest with `subject` (an SBOM-like blob as its
/// layer) through `client` to `repo`; returns it.
async fn push_referrer(
    client: &RegistryClient,
    blob_host: &str,
    repo: &str,
    artifact_type: &str,
    content: &[u8],
    subject: &Manifest,
) -> Manifest {
    let empty = push_blob(blob_host, repo, b"{}").await;
    let layer = push_blob(blob_host, repo, content).await;
    let artifact = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": artifact_type, "digest": layer, "size": content.len()}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.bytes.len()},
    });
    let artifact = manifest(
        serde_json::to_vec(&artifact).unwrap(),
        "application/vnd.oci.image.manifest.v1+json",
    );
    client
        .put_manifest(repo, &artifact.digest, &artifact)
        .await
        .unwrap();
    artifact
}

#[test]
fn referrers_api_is_followed_across_pages_and_fallback_tags_made_only_where_needed() {
    if !tools() {
        return;
    }
    let dir = scratch("referrers-api");
    let (a, b) = (
        Registry::start(&dir.join("a")),
        Registry::start(&dir.join("b")),
    );
    let (source, dest) = (
        Proxy::start(&a.host, ReferrersApi::default()),
        Proxy::start(&b.host, ReferrersApi::default()),
    );
    let layout = Layout::new(&dir.join("layout"));
    let (image, image_size) = layout.image(8, &[32 << 10], "amd64");
    layout.tag("v1", &[(image, image_size, "amd64")]);
    layout.push("v1", &format!("{}/src/app:v1", a.host), false);
    let pushed = raw_manifest(&format!("{}/src/app:v1", a.host));
    let image = manifest(pushed, "application/vnd.oci.image.manifest.v1+json");

    let rt = runtime();
    let sc = client(&source.host);
    // Two referrers of the image (two pages), one of the SBOM; no
    // fallback tag at the source: only the API finds them.
    let (sbom, signature, sbom_signature) = rt.block_on(async {
        let sbom = push_referrer(
            &sc,
            &a.host,
            "src/app",
            "application/spdx+json",
            b"{\"spdxVersion\":\"SPDX-2.3\"}",
            &image,
        )
        .await;
        let signature = push_referrer(
            &sc,
            &a.host,
            "src/app",
            "application/vnd.dev.sigstore.bundle+json",
            b"sig-of-image",
            &image,
        )
        .await;
        let sbom_signature = push_referrer(
            &sc,
            &a.host,
            "src/app",
            "application/vnd.dev.sigstore.bundle+json",
            b"sig-of-sbom",
            &sbom,
        )
        .await;
        (sbom, signature, sbom_signature)
    });
    assert_eq!(source.listed("src/app", &image.digest).len(), 2);
    // A source listing one referrer twice (and its subject among its own
    // referrers): each is copied once.
    {
        let mut index = source.index.lock().unwrap();
        let list = index
            .get_mut(&("src/app".to_owned(), image.digest.clone()))
            .unwrap();
        let again = list[0].clone();
        list.push(again);
        list.push(json!({"mediaType": image.media_type, "digest": image.digest, "size": image.bytes.len()}));
    }
    assert_eq!(rt.block_on(tags(&a.host, "src/app")), ["v1"]);

    let options = CopyOptions {
        referrers: true,
        ..CopyOptions::default()
    };
    let src = format!("{}/src/app:v1", source.host).parse().unwrap();
    let mut expected = vec![sbom.digest.clone(), signature.digest.clone()];
    expected.sort();
    // To a registry with the API: it lists them itself, no fallback tags.
    let with_api = format!("{}/mirror/app:v1", dest.host).parse().unwrap();
    for round in 0..2 {
        let report = rt
            .block_on(copy(&sc, &src, &client(&dest.host), &with_api, &options))
            .unwrap();
        assert_eq!(report.referrers, 3, "round {round}");
    }
    let mut listed = dest.listed("mirror/app", &image.digest);
    listed.sort();
    assert_eq!(listed, expected);
    assert_eq!(
        dest.listed("mirror/app", &sbom.digest),
        std::slice::from_ref(&sbom_signature.digest)
    );
    assert_eq!(rt.block_on(tags(&b.host, "mirror/app")), ["v1"]);
    for m in [&sbom, &signature, &sbom_signature] {
        assert_eq!(
            raw_manifest(&format!("{}/mirror/app@{}", b.host, m.digest)),
            m.bytes
        );
    }

    // A referrer that cannot be copied fails the copy before the tag is
    // written: the subject is there by digest, the tag is not.
    source
        .index
        .lock()
        .unwrap()
        .get_mut(&("src/app".to_owned(), image.digest.clone()))
        .unwrap()
        .push(json!({"mediaType": image.media_type, "digest": format!("sha256:{}", "0".repeat(64)), "size": 2}));
    let broken = format!("{}/broken/app:v1", dest.host).parse().unwrap();
    let err = rt
        .block_on(copy(&sc, &src, &client(&dest.host), &broken, &options))
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    assert!(rt.block_on(tags(&b.host, "broken/app")).is_empty());
    assert_eq!(
        raw_manifest(&format!("{}/broken/app@{}", b.host, image.digest)),
        image.bytes
    );
    source
        .index
        .lock()
        .unwrap()
        .get_mut(&("src/app".to_owned(), image.digest.clone()))
        .unwrap()
        .pop();

    // To a registry without it: the fallback tags, for both subjects.
    let without = format!("{}/plain/app:v1", b.host).parse().unwrap();
    let report = rt
        .block_on(copy(&sc, &src, &client(&b.host), &without, &options))
        .unwrap();
    assert_eq!(report.referrers, 3);
    let fallback = |subject: &str| {
        let index: Value = serde_json::from_slice(&raw_manifest(&format!(
            "{}/plain/app:sha256-{}",
            b.host,
            &subject[7..]
        )))
        .unwrap();
        let mut digests: Vec<String> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap().to_owned())
            .collect();
        digests.sort();
        digests
    };
    assert_eq!(fallback(&image.digest), expected);
    assert_eq!(
        fallback(&sbom.digest),
        std::slice::from_ref(&sbom_signature.digest)
    );
}
