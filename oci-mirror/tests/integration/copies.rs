//! Copies between two real registries, checked with skopeo.

use std::sync::{Arc, Mutex};

use kiln_oci_mirror::{
    CopyOptions, ImageLocation, Platforms, Progress, RegistryClient, RegistryConfig, copy,
};

use crate::peers::{Layout, Registry, ok, raw_manifest, runtime, scratch, sha256, skopeo, tools};

fn client(host: &str) -> RegistryClient {
    let mut cfg = RegistryConfig::new(host);
    cfg.insecure = true;
    RegistryClient::new(cfg).unwrap()
}

fn loc(s: &str) -> ImageLocation {
    s.parse().unwrap()
}

#[test]
fn multi_layer_image_is_copied_byte_for_byte_then_skipped_when_warm() {
    if !tools() {
        return;
    }
    let dir = scratch("image");
    let (a, b) = (
        Registry::start(&dir.join("a")),
        Registry::start(&dir.join("b")),
    );
    let layout = Layout::new(&dir.join("layout"));
    let m = layout.image(
        1,
        &[
            3 << 20,
            1 << 20,
            512 << 10,
            2 << 20,
            7,
            64 << 10,
            1 << 20,
            300 << 10,
        ],
        "amd64",
    );
    layout.tag("v1", &[(m.0.clone(), m.1, "amd64")]);
    let src = format!("{}/src/app:v1", a.host);
    layout.push("v1", &src, false);

    let rt = runtime();
    let (sc, dc) = (client(&a.host), client(&b.host));
    let dst = format!("{}/mirror/app:v1", b.host);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let options = CopyOptions {
        progress: Some(Arc::new(move |e: &Progress| {
            sink.lock().unwrap().push(e.clone())
        })),
        ..CopyOptions::default()
    };
    let report = rt
        .block_on(copy(&sc, &loc(&src), &dc, &loc(&dst), &options))
        .unwrap();
    assert_eq!(report.blobs_copied, 9);
    // Progress events add up to what was copied.
    let (mut planned, mut streamed, mut done) = (0, 0, 0);
    let events = events.lock().unwrap().clone();
    for e in &events {
        match e {
            Progress::Planned { bytes, .. } => planned += bytes,
            Progress::BlobBytes { bytes, .. } => streamed += bytes,
            Progress::BlobDone { .. } => done += 1,
            _ => {}
        }
    }
    assert_eq!(
        (planned, streamed, done),
        (report.bytes_copied, report.bytes_copied, 9)
    );
    assert!(matches!(
        events.last(),
        Some(Progress::ManifestWritten { .. })
    ));
    assert!(!report.digest_changed);

    let (src_raw, dst_raw) = (raw_manifest(&src), raw_manifest(&dst));
    assert_eq!(src_raw, dst_raw, "manifest copied byte for byte");
    assert_eq!(sha256(&dst_raw), report.digest);
    // (skopeo compressed the layers on push, so the source registry's
    // manifest is not the layout's: compare with what the source serves.)
    assert_eq!(report.digest, sha256(&src_raw));
    let _ = m;
    // Pull it back with skopeo: every blob is there and verifies.
    let back = dir.join("back");
    ok(skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{dst}"),
        &format!("oci:{}:v1", back.display()),
    ]));

    // Warm: nothing to do.
    let warm = rt
        .block_on(copy(
            &sc,
            &loc(&src),
            &dc,
            &loc(&dst),
            &CopyOptions::default(),
        ))
        .unwrap();
    assert_eq!((warm.blobs_copied, warm.manifests), (0, 0));
    assert_eq!(warm.digest, report.digest);

    // A new tag of the same content: blobs are skipped (HEAD), manifest tagged.
    let again = format!("{}/mirror/app:v2", b.host);
    let r = rt
        .block_on(copy(
            &sc,
            &loc(&src),
            &dc,
            &loc(&again),
            &CopyOptions::default(),
        ))
        .unwrap();
    assert_eq!((r.blobs_copied, r.blobs_skipped), (0, 9));
    assert_eq!(raw_manifest(&again), src_raw);

    // Same registry, other repository: blobs are mounted, not uploaded.
    let local = format!("{}/other/app:v1", a.host);
    let r = rt
        .block_on(copy(
            &sc,
            &loc(&src),
            &sc,
            &loc(&local),
            &CopyOptions::default(),
        ))
        .unwrap();
    assert_eq!((r.blobs_copied, r.blobs_skipped), (0, 9));
    assert_eq!(raw_manifest(&local), src_raw);
    drop((a, b));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn index_all_platforms_keeps_its_digest_filtered_index_changes_it() {
    if !tools() {
        return;
    }
    let dir = scratch("index");
    let (a, b) = (
        Registry::start(&dir.join("a")),
        Registry::start(&dir.join("b")),
    );
    let layout = Layout::new(&dir.join("layout"));
    let amd = layout.image(10, &[1 << 20, 256 << 10], "amd64");
    let arm = layout.image(20, &[1 << 20, 128 << 10], "arm64");
    layout.tag(
        "multi",
        &[
            (amd.0.clone(), amd.1, "amd64"),
            (arm.0.clone(), arm.1, "arm64"),
        ],
    );
    let src = format!("{}/src/multi:1", a.host);
    layout.push("multi", &src, true);

    let rt = runtime();
    let (sc, dc) = (client(&a.host), client(&b.host));
    let dst = format!("{}/mirror/multi:1", b.host);
    let all = rt
        .block_on(copy(
            &sc,
            &loc(&src),
            &dc,
            &loc(&dst),
            &CopyOptions::default(),
        ))
        .unwrap();
    assert_eq!(raw_manifest(&dst), raw_manifest(&src));
    assert!(!all.digest_changed);
    assert_eq!(all.manifests, 3);
    // Each platform is pullable from the mirror.
    for arch in ["amd64", "arm64"] {
        let out = skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--override-arch",
            arch,
            &format!("docker://{dst}"),
            &format!("oci:{}:{arch}", dir.join("back").display()),
        ]);
        ok(out);
    }

    let only_arm = format!("{}/mirror/multi:arm", b.host);
    let options = CopyOptions {
        platforms: Platforms::Only(vec!["linux/arm64".into()]),
        ..CopyOptions::default()
    };
    let filtered = rt
        .block_on(copy(&sc, &loc(&src), &dc, &loc(&only_arm), &options))
        .unwrap();
    assert!(
        filtered.digest_changed,
        "a filtered index has another digest"
    );
    let raw = raw_manifest(&only_arm);
    assert_eq!(sha256(&raw), filtered.digest);
    let digests_for = |raw: &[u8], arch: Option<&str>| -> Vec<String> {
        let index: serde_json::Value = serde_json::from_slice(raw).unwrap();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| arch.is_none_or(|a| m["platform"]["architecture"] == a))
            .map(|m| m["digest"].as_str().unwrap().to_owned())
            .collect()
    };
    let source_arm = digests_for(&raw_manifest(&src), Some("arm64"));
    assert_eq!(digests_for(&raw, None), source_arm);
    let _ = (amd, arm);

    let none = CopyOptions {
        platforms: Platforms::Only(vec!["linux/s390x".into()]),
        ..CopyOptions::default()
    };
    let err = rt
        .block_on(copy(
            &sc,
            &loc(&src),
            &dc,
            &loc(&format!("{}/mirror/multi:none", b.host)),
            &none,
        ))
        .unwrap_err();
    assert!(matches!(err, kiln_oci_mirror::Error::NoPlatformMatch));
    drop((a, b));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn large_blobs_go_up_in_chunks_from_ranged_reads() {
    if !tools() {
        return;
    }
    let dir = scratch("chunked");
    let (a, b) = (
        Registry::start(&dir.join("a")),
        Registry::start(&dir.join("b")),
    );
    let layout = Layout::new(&dir.join("layout"));
    let m = layout.image(30, &[5 << 20, 3 << 20, 4096], "amd64");
    layout.tag("v1", &[(m.0.clone(), m.1, "amd64")]);
    let src = format!("{}/src/big:v1", a.host);
    layout.push("v1", &src, false);

    let options = CopyOptions {
        chunk_threshold: 1 << 20,
        // An odd size, so chunks never line up with anything.
        chunk_size: (1 << 20) + 12_345,
        ..CopyOptions::default()
    };
    let dst = format!("{}/mirror/big:v1", b.host);
    let report = runtime()
        .block_on(copy(
            &client(&a.host),
            &loc(&src),
            &client(&b.host),
            &loc(&dst),
            &options,
        ))
        .unwrap();
    assert_eq!(report.blobs_copied, 4);
    assert_eq!(raw_manifest(&dst), raw_manifest(&src));
    ok(skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{dst}"),
        &format!("oci:{}:v1", dir.join("back").display()),
    ]));
    drop((a, b));
    std::fs::remove_dir_all(&dir).ok();
}
