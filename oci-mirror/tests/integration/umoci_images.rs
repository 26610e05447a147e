//! Images built with umoci (`scripts/test-images`: a small busybox image, a
//! 9-layer debian-based image of ~230 MB, a 2-platform index) pushed to one
//! real registry with skopeo, mirrored with this crate to another that
//! wants basic auth, then checked with skopeo: the same manifest bytes
//! (hence digests) as umoci wrote, and a pull back that skopeo verifies.

use std::path::Path;

use kiln_oci_mirror::{CopyOptions, Credentials, RegistryClient, RegistryConfig, copy};

#[path = "../../../ext4-convert/tests/integration/test_images.rs"]
mod test_images;

use test_images::test_images;

use crate::peers::{
    Registry, have, htpasswd_registry, ok, runtime, scratch, sha256, skopeo, tools,
};

/// The manifest (or index) digest umoci's layout gives `tag`.
fn layout_digest(layout: &Path, tag: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .unwrap_or_else(|| panic!("no tag {tag} in the test images"))
        .to_owned()
}

fn raw(image: &str, creds: Option<&str>) -> Vec<u8> {
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    if let Some(c) = creds {
        args.extend(["--creds", c]);
    }
    let image = format!("docker://{image}");
    args.push(&image);
    ok(skopeo(&args))
}

#[test]
fn umoci_images_are_mirrored_with_their_digests_and_pull_back() {
    if !tools() || !have("htpasswd") {
        return;
    }
    let Some(layout) = test_images() else {
        return;
    };
    let dir = scratch("umoci");
    let a = Registry::start(&dir.join("a"));
    let b = htpasswd_registry(&dir.join("b"));
    let rt = runtime();
    let src_client = {
        let mut cfg = RegistryConfig::new(&a.host);
        cfg.insecure = true;
        RegistryClient::new(cfg).unwrap()
    };
    let dst_client = {
        let mut cfg = RegistryConfig::new(&b.host);
        cfg.insecure = true;
        cfg.credentials = Some(Credentials::new("kiln", "s3cret"));
        RegistryClient::new(cfg).unwrap()
    };
    for (tag, layers, index) in [
        ("busybox", 1, false),
        ("mirror-big", 9, false),
        ("mirror-multi", 0, true),
    ] {
        let want = layout_digest(&layout, tag);
        let src = format!("{}/src/{tag}:1", a.host);
        let mut push = vec!["copy", "--dest-tls-verify=false"];
        if index {
            push.push("--all");
        }
        let from = format!("oci:{}:{tag}", layout.display());
        let to = format!("docker://{src}");
        push.extend([from.as_str(), to.as_str()]);
        ok(skopeo(&push));
        assert_eq!(
            sha256(&raw(&src, None)),
            want,
            "{tag}: skopeo kept umoci's bytes"
        );

        let dst = format!("{}/mirror/{tag}:1", b.host);
        let report = rt
            .block_on(copy(
                &src_client,
                &src.parse().unwrap(),
                &dst_client,
                &dst.parse().unwrap(),
                &CopyOptions::default(),
            ))
            .unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(report.digest, want, "{tag}");
        assert!(!report.digest_changed);
        let manifest = raw(&dst, Some("kiln:s3cret"));
        assert_eq!(sha256(&manifest), want, "{tag}: same manifest bytes");
        let doc: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        if index {
            let children = doc["manifests"].as_array().unwrap();
            assert_eq!(children.len(), 2);
            for child in children {
                let d = child["digest"].as_str().unwrap();
                let child_raw = raw(&format!("{}/mirror/{tag}@{d}", b.host), Some("kiln:s3cret"));
                assert_eq!(sha256(&child_raw), d, "{tag}: child {d}");
            }
        } else {
            assert_eq!(doc["layers"].as_array().unwrap().len(), layers, "{tag}");
        }

        // Pull back with skopeo (which verifies every blob's digest) into a
        // new layout: the same manifest digest as umoci's.
        let back = dir.join(format!("back-{tag}"));
        let mut pull = vec![
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            "kiln:s3cret",
        ];
        if index {
            pull.push("--all");
        }
        let from = format!("docker://{dst}");
        let to = format!("oci:{}:{tag}", back.display());
        pull.extend([from.as_str(), to.as_str()]);
        ok(skopeo(&pull));
        assert_eq!(layout_digest(&back, tag), want, "{tag}: pulled back");
    }
    drop((a, b));
    std::fs::remove_dir_all(&dir).ok();
}
