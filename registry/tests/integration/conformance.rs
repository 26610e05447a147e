//! Every behaviour the OCI conformance suite v1.1.1 checks (see
//! `shared/docs/oci-conformance-cases.md`: P = pull, U = push,
//! D = discovery, M = management), as plain async checks against a running
//! registry, so that they run in `cargo test` against an open registry and,
//! from the server's tests, through token auth.

use reqwest::Method;

use crate::client::{Oci, error_code, header, location, sha256};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const EMPTY_JSON: &str = "application/vnd.oci.empty.v1+json";

/// A manifest as the suite writes them: tab-indented, each descriptor
/// with an unknown field, the config with `data`.
pub(crate) fn manifest(
    config: &str,
    config_len: usize,
    layers: &[(String, usize)],
    extra: &str,
) -> Vec<u8> {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, s)| {
            format!("\n\t\t{{\n\t\t\t\"mediaType\": \"application/vnd.oci.image.layer.v1.tar+gzip\",\n\t\t\t\"digest\": \"{d}\",\n\t\t\t\"size\": {s},\n\t\t\t\"newUnspecifiedField\": null\n\t\t}}")
        })
        .collect();
    format!(
        "{{\n\t\"schemaVersion\": 2,\n\t\"mediaType\": \"{OCI_MANIFEST}\",\n\t\"config\": {{\n\t\t\"mediaType\": \"application/vnd.oci.image.config.v1+json\",\n\t\t\"digest\": \"{config}\",\n\t\t\"size\": {config_len},\n\t\t\"data\": \"e30=\",\n\t\t\"newUnspecifiedField\": \"AAAA\"\n\t}},\n\t\"layers\": [{}\n\t]{extra}\n}}",
        layers.join(",")
    )
    .into_bytes()
}

/// Pushes a config and one layer to `repo`, returns the manifest bytes
/// naming them (not pushed).
pub(crate) async fn image(oci: &Oci, repo: &str, author: &str) -> (Vec<u8>, String, String) {
    let config = format!(
        r#"{{"author":"{author}","architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    );
    let layer = format!("layer of {author}").into_bytes();
    let c = oci.push_blob(repo, config.as_bytes()).await;
    let l = oci.push_blob(repo, &layer).await;
    (
        manifest(&c, config.len(), &[(l.clone(), layer.len())], ""),
        c,
        l,
    )
}

/// P1–P24.
pub(crate) async fn pull(oci: &Oci, repo: &str) {
    let (m0, config, layer) = image(oci, repo, "pull-0").await;
    let (m1, _, _) = image(oci, repo, "pull-1").await;
    let r = oci.put_manifest(repo, "tagtest0", OCI_MANIFEST, &m0).await;
    assert_eq!(r.status(), 201);
    let d0 = sha256(&m0);
    let d1 = sha256(&m1);
    let r = oci.put_manifest(repo, &d1, OCI_MANIFEST, &m1).await;
    assert_eq!(r.status(), 201, "push by digest");

    let missing = sha256(b"never pushed");
    for m in [Method::HEAD, Method::GET] {
        let r = oci
            .send(
                m.clone(),
                &format!("/v2/{repo}/blobs/{missing}"),
                &[],
                vec![],
            )
            .await;
        assert_eq!(r.status(), 404, "{m} unknown blob");
        let r = oci
            .send(
                m.clone(),
                &format!("/v2/{repo}/blobs/{config}"),
                &[],
                vec![],
            )
            .await;
        assert_eq!(r.status(), 200, "{m} blob");
        assert_eq!(
            header(&r, "docker-content-digest").as_deref(),
            Some(config.as_str())
        );
        let r = oci
            .send(
                m.clone(),
                &format!("/v2/{repo}/manifests/.INVALID_MANIFEST_NAME"),
                &[],
                vec![],
            )
            .await;
        assert_eq!(r.status(), 404, "{m} invalid reference");
        let r = oci
            .send(
                m.clone(),
                &format!("/v2/{repo}/manifests/{missing}"),
                &[],
                vec![],
            )
            .await;
        assert_eq!(r.status(), 404, "{m} unknown manifest");
        for (reference, digest, bytes) in [
            (&d0, &d0, &m0),
            (&d1, &d1, &m1),
            (&"tagtest0".to_owned(), &d0, &m0),
        ] {
            let r = oci
                .send(
                    m.clone(),
                    &format!("/v2/{repo}/manifests/{reference}"),
                    &[("accept", OCI_MANIFEST)],
                    vec![],
                )
                .await;
            assert_eq!(r.status(), 200, "{m} manifest {reference}");
            assert_eq!(
                header(&r, "docker-content-digest").as_deref(),
                Some(digest.as_str())
            );
            assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_MANIFEST));
            if m == Method::GET {
                assert_eq!(
                    &r.bytes().await.unwrap()[..],
                    &bytes[..],
                    "stored byte for byte"
                );
            }
        }
    }
    // Ranges of a blob.
    let r = oci
        .send(
            Method::GET,
            &format!("/v2/{repo}/blobs/{layer}"),
            &[("range", "bytes=0-4")],
            vec![],
        )
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(&r.bytes().await.unwrap()[..], b"layer");
    let r = oci
        .send(
            Method::GET,
            &format!("/v2/{repo}/blobs/{layer}"),
            &[("range", "bytes=1000-")],
            vec![],
        )
        .await;
    assert_eq!(r.status(), 416);

    // P19: a malformed digest is a 400 with an OCI error body.
    let r = oci
        .send(
            Method::GET,
            &format!("/v2/{repo}/manifests/sha256:totallywrong"),
            &[],
            b"body".to_vec(),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");

    for d in [&d0, &d1] {
        let r = oci.delete(&format!("/v2/{repo}/manifests/{d}")).await;
        assert_eq!(r.status(), 202);
    }
    for d in [&config, &layer] {
        let r = oci.delete(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(r.status(), 202);
    }
}

/// U1–U29.
pub(crate) async fn push(oci: &Oci, repo: &str, other: &str) {
    let uploads = format!("/v2/{repo}/blobs/uploads/");
    // U1–U2: streamed PATCH, then PUT with an empty body.
    let data = b"streamed blob".to_vec();
    let d = sha256(&data);
    let r = oci.send(Method::POST, &uploads, &[], vec![]).await;
    assert_eq!(r.status(), 202);
    let loc = location(&r);
    let r = oci
        .send(
            Method::PATCH,
            &loc,
            &[("content-type", "application/octet-stream")],
            data.clone(),
        )
        .await;
    assert_eq!(r.status(), 202);
    let loc = location(&r);
    let r = oci
        .send(Method::PUT, &format!("{loc}?digest={d}"), &[], vec![])
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(location(&r), format!("/v2/{repo}/blobs/{d}"));

    // U4–U5: single-request monolithic POST.
    let mono = b"monolithic".to_vec();
    let md = sha256(&mono);
    let r = oci
        .send(
            Method::POST,
            &format!("{uploads}?digest={md}"),
            &[("content-type", "application/octet-stream")],
            mono.clone(),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert!(location(&r).ends_with(&md));
    let r = oci.get(&format!("/v2/{repo}/blobs/{md}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.unwrap()[..], &mono[..]);

    // A wrong digest stores nothing.
    let r = oci
        .send(
            Method::POST,
            &format!("{uploads}?digest={}", sha256(b"other")),
            &[],
            b"this".to_vec(),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(
        oci.get(&format!("/v2/{repo}/blobs/{}", sha256(b"this")))
            .await
            .status(),
        404
    );
    assert_eq!(
        oci.get(&format!("/v2/{repo}/blobs/{}", sha256(b"other")))
            .await
            .status(),
        404
    );

    // U11–U16: chunked.
    let blob: Vec<u8> = (0..42u8).collect();
    let bd = sha256(&blob);
    let r = oci.send(Method::POST, &uploads, &[], vec![]).await;
    let first = location(&r);
    let chunk = |a: usize, b: usize| {
        let range = format!("{a}-{b}");
        let len = (b - a + 1).to_string();
        (range, len, blob[a..=b].to_vec())
    };
    let (range, len, body) = chunk(22, 41);
    let r = oci
        .send(
            Method::PATCH,
            &first,
            &[
                ("content-range", &range),
                ("content-length", &len),
                ("content-type", "application/octet-stream"),
            ],
            body,
        )
        .await;
    assert_eq!(r.status(), 416, "out-of-order first chunk");
    let (range, len, body) = chunk(0, 21);
    let r = oci
        .send(
            Method::PATCH,
            &first,
            &[
                ("content-range", &range),
                ("content-length", &len),
                ("content-type", "application/octet-stream"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-21"));
    let next = location(&r);
    let r = oci
        .send(
            Method::PATCH,
            &first,
            &[
                ("content-range", &range),
                ("content-length", &len),
                ("content-type", "application/octet-stream"),
            ],
            body,
        )
        .await;
    assert_eq!(r.status(), 416, "a repeated chunk, to the first URL");
    let r = oci.get(&first).await;
    assert_eq!(r.status(), 204, "status of the upload at its first URL");
    assert_eq!(header(&r, "range").as_deref(), Some("0-21"));
    assert!(header(&r, "location").is_some());
    let (range, len, body) = chunk(22, 41);
    let r = oci
        .send(
            Method::PATCH,
            &next,
            &[
                ("content-range", &range),
                ("content-length", &len),
                ("content-type", "application/octet-stream"),
            ],
            body,
        )
        .await;
    assert_eq!(r.status(), 202);
    assert!(header(&r, "location").is_some());
    let r = oci
        .send(
            Method::PUT,
            &format!("{}?digest={bd}", location(&r)),
            &[("content-length", "0")],
            vec![],
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        &oci.get(&format!("/v2/{repo}/blobs/{bd}"))
            .await
            .bytes()
            .await
            .unwrap()[..],
        &blob[..]
    );
    // The finished session is gone.
    assert_eq!(oci.get(&first).await.status(), 404);

    // U17–U21: cross-repository mounts.
    let unknown = sha256(b"nowhere");
    let r = oci
        .send(
            Method::POST,
            &format!("/v2/{other}/blobs/uploads/?mount={unknown}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status(), 202, "mount of an unknown blob opens a session");
    assert!(location(&r).starts_with(&format!("/v2/{other}/blobs/uploads/")));
    let r = oci
        .send(
            Method::POST,
            &format!("/v2/{other}/blobs/uploads/?mount={bd}&from={repo}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(location(&r), format!("/v2/{other}/blobs/{bd}"));
    assert_eq!(oci.get(&location(&r)).await.status(), 200);
    let r = oci
        .send(
            Method::POST,
            &format!("/v2/{other}/blobs/uploads/?mount={md}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status(), 201, "automatic mount without from");

    // U23–U26: manifests.
    let (m, config, layer) = image(oci, repo, "push").await;
    assert_eq!(
        oci.get(&format!("/v2/{repo}/manifests/{}", sha256(&m)))
            .await
            .status(),
        404
    );
    for tag in ["test0", "test1", "test2", "test3"] {
        let r = oci.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), 201);
        assert_eq!(location(&r), format!("/v2/{repo}/manifests/{}", sha256(&m)));
    }
    // No layers and no mediaType field: the Content-Type decides.
    let empty = String::from_utf8(manifest(&config, 0, &[], ""))
        .unwrap()
        .replace(&format!("\t\"mediaType\": \"{OCI_MANIFEST}\",\n"), "");
    let r = oci
        .put_manifest(repo, "emptylayer", OCI_MANIFEST, empty.as_bytes())
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        oci.get(&format!("/v2/{repo}/manifests/{}", sha256(&m)))
            .await
            .status(),
        200
    );

    // A manifest naming a blob the repository lacks is refused, not stored.
    let dangling = manifest(&config, 1, &[(sha256(b"absent layer"), 12)], "");
    let r = oci
        .put_manifest(repo, "dangling", OCI_MANIFEST, &dangling)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(
        oci.get(&format!("/v2/{repo}/manifests/dangling"))
            .await
            .status(),
        404
    );
    // A digest reference that is not the bytes' digest.
    let r = oci
        .put_manifest(repo, &sha256(b"x"), OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");

    for d in [sha256(&m), sha256(empty.as_bytes())] {
        let r = oci.delete(&format!("/v2/{repo}/manifests/{d}")).await;
        assert_eq!(r.status(), 202);
    }
    for d in [&config, &layer] {
        let r = oci.delete(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(r.status(), 202);
    }
}

/// D1–D16.
pub(crate) async fn discovery(oci: &Oci, repo: &str) {
    let (m2, _, layer) = image(oci, repo, "discovery").await;
    for tag in ["test0", "test1", "test2", "test3"] {
        assert_eq!(
            oci.put_manifest(repo, tag, OCI_MANIFEST, &m2)
                .await
                .status(),
            201
        );
    }
    // D5: referrers, pushed before their subject exists.
    let empty = oci.push_blob(repo, b"{}").await;
    assert_eq!(
        empty,
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    let (subject_bytes, _, _) = image(oci, repo, "subject").await;
    let subject = sha256(&subject_bytes);
    let subject_desc = format!(
        ",\n\t\"subject\": {{\"mediaType\": \"{OCI_MANIFEST}\", \"digest\": \"{subject}\", \"size\": {}}}",
        subject_bytes.len()
    );
    let a1 = oci.push_blob(repo, b"artifact one").await;
    // Style 1: the artifact type as the config media type.
    let r1 = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.nhl.peanut.butter.bagel\",\"digest\":\"{empty}\",\"size\":2}},\"layers\":[{{\"mediaType\":\"application/x\",\"digest\":\"{a1}\",\"size\":12}}],\"annotations\":{{\"k\":\"one\"}}{subject_desc}}}"
    );
    // Style 2: artifactType with an empty config.
    let r2 = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"artifactType\":\"application/vnd.food.stand\",\"config\":{{\"mediaType\":\"{EMPTY_JSON}\",\"digest\":\"{empty}\",\"size\":2}},\"layers\":[{{\"mediaType\":\"application/x\",\"digest\":\"{a1}\",\"size\":12}}],\"annotations\":{{\"k\":\"two\"}}{subject_desc}}}"
    );
    for r in [&r1, &r2] {
        let resp = oci
            .put_manifest(repo, &sha256(r.as_bytes()), OCI_MANIFEST, r.as_bytes())
            .await;
        assert_eq!(resp.status(), 201);
        assert_eq!(
            header(&resp, "oci-subject").as_deref(),
            Some(subject.as_str()),
            "OCI-Subject"
        );
    }
    // An index with a subject and an artifact type.
    let idx = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"artifactType\":\"application/vnd.nhl.peanut.butter.bagel\",\"manifests\":[{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{}\",\"size\":{}}}],\"annotations\":{{\"k\":\"index\"}}{subject_desc}}}",
        sha256(r1.as_bytes()),
        r1.len()
    );
    let resp = oci
        .put_manifest(repo, &sha256(idx.as_bytes()), OCI_INDEX, idx.as_bytes())
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "oci-subject").as_deref(),
        Some(subject.as_str())
    );
    assert_eq!(
        oci.put_manifest(repo, "tagtest0", OCI_MANIFEST, &subject_bytes)
            .await
            .status(),
        201
    );
    // A referrer whose subject never arrives.
    let ghost = sha256(b"ghost subject");
    let r3 = r2.replace(&subject, &ghost).replace("\"two\"", "\"ghost\"");
    assert_eq!(
        oci.put_manifest(repo, &sha256(r3.as_bytes()), OCI_MANIFEST, r3.as_bytes())
            .await
            .status(),
        201
    );

    // D6–D8: tags, paginated.
    let r = oci.get(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["name"], repo);
    let all: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap();
    assert_eq!(all, ["tagtest0", "test0", "test1", "test2", "test3"]);
    let r = oci.get(&format!("/v2/{repo}/tags/list?n=2")).await;
    let link = header(&r, "link").expect("Link to the next page");
    assert!(
        link.contains("last=test0") && link.ends_with("rel=\"next\""),
        "{link}"
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!(["tagtest0", "test0"]));
    let r = oci
        .get(&format!("/v2/{repo}/tags/list?n=2&last=test0"))
        .await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!(["test1", "test2"]));
    let r = oci
        .get(&format!("/v2/{repo}/tags/list?n=2&last=test2"))
        .await;
    assert!(header(&r, "link").is_none(), "last page has no Link");

    // D9–D12: referrers.
    let r = oci
        .get(&format!("/v2/{repo}/referrers/{}", sha256(b"no referrers")))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_INDEX));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["manifests"], serde_json::json!([]));
    let r = oci.get(&format!("/v2/{repo}/referrers/{subject}")).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    for d in list {
        assert_eq!(d["annotations"].as_object().unwrap().len(), 1, "{d}");
        assert!(d["artifactType"].is_string(), "{d}");
    }
    let r = oci
        .get(&format!(
            "/v2/{repo}/referrers/{subject}?artifactType=application/vnd.nhl.peanut.butter.bagel"
        ))
        .await;
    assert_eq!(
        header(&r, "oci-filters-applied").as_deref(),
        Some("artifactType")
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
    let r = oci.get(&format!("/v2/{repo}/referrers/{ghost}")).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["manifests"].as_array().unwrap().len(),
        1,
        "dangling referrer listed"
    );

    // Deleting a referrer removes it from its subject's list.
    let r = oci
        .delete(&format!("/v2/{repo}/manifests/{}", sha256(r2.as_bytes())))
        .await;
    assert_eq!(r.status(), 202);
    let v: serde_json::Value = oci
        .get(&format!("/v2/{repo}/referrers/{subject}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);

    for d in [
        sha256(idx.as_bytes()),
        sha256(r1.as_bytes()),
        sha256(r3.as_bytes()),
        sha256(&m2),
        subject,
    ] {
        let r = oci.delete(&format!("/v2/{repo}/manifests/{d}")).await;
        assert!(matches!(r.status().as_u16(), 202 | 404), "{}", r.status());
    }
    let r = oci.delete(&format!("/v2/{repo}/blobs/{layer}")).await;
    assert_eq!(r.status(), 202);
}

/// M1–M10.
pub(crate) async fn management(oci: &Oci, repo: &str) {
    let (m3, config, layer) = image(oci, repo, "management").await;
    assert_eq!(
        oci.put_manifest(repo, "tagtest0", OCI_MANIFEST, &m3)
            .await
            .status(),
        201
    );
    assert_eq!(
        oci.put_manifest(repo, "keep", OCI_MANIFEST, &m3)
            .await
            .status(),
        201
    );
    let count = |v: serde_json::Value| v["tags"].as_array().map_or(0, Vec::len);
    let before = count(
        oci.get(&format!("/v2/{repo}/tags/list"))
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(before, 2);
    let r = oci.delete(&format!("/v2/{repo}/manifests/tagtest0")).await;
    assert_eq!(r.status(), 202, "tag deletion");
    let after = count(
        oci.get(&format!("/v2/{repo}/tags/list"))
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(after, before - 1);
    assert_eq!(
        oci.get(&format!("/v2/{repo}/manifests/keep"))
            .await
            .status(),
        200,
        "the manifest stays"
    );
    let d = sha256(&m3);
    let r = oci.delete(&format!("/v2/{repo}/manifests/{d}")).await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        oci.get(&format!("/v2/{repo}/manifests/{d}")).await.status(),
        404
    );
    assert_eq!(
        oci.get(&format!("/v2/{repo}/manifests/keep"))
            .await
            .status(),
        404,
        "its tags went with it"
    );
    let r = oci.delete(&format!("/v2/{repo}/manifests/{d}")).await;
    assert_eq!(r.status(), 404);
    for b in [&config, &layer] {
        let r = oci.delete(&format!("/v2/{repo}/blobs/{b}")).await;
        assert_eq!(r.status(), 202);
        assert_eq!(
            oci.get(&format!("/v2/{repo}/blobs/{b}")).await.status(),
            404
        );
    }
}

/// All four workflows.
pub(crate) async fn all(oci: &Oci, repo: &str, other: &str) {
    pull(oci, repo).await;
    push(oci, repo, other).await;
    discovery(oci, repo).await;
    management(oci, repo).await;
}
