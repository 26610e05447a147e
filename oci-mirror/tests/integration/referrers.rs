//! Referrers: an SBOM artifact whose `subject` is the copied image, found
//! at the source through the tag-schema fallback (Debian's distribution 2.8
//! has no referrers API), copied, and listed under the same fallback tag at
//! the destination.

use kiln_oci_mirror::{CopyOptions, Manifest, RegistryClient, RegistryConfig, copy};

use crate::peers::{Layout, Registry, raw_manifest, runtime, scratch, sha256, tools};

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
