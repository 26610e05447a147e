//! The oci-mirror fuzz check, shared by the fuzz target and the corpus
//! replay in `cargo test` (`oci-mirror/tests/integration/fuzz_corpus.rs`).

use kiln_oci_mirror::{CredentialSource, ImageLocation, fuzzing, mirrored};

/// What a registry may say a manifest is; the first byte picks one.
const MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Image locations print and parse back to themselves; mirrored names of
/// valid locations are valid or a typed error; Docker config lookups never
/// panic (and never run a credential helper: only the lookup is fuzzed);
/// nor do manifests and referrers lists from a registry. Returns whether
/// anything parsed.
pub(crate) fn check(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let location = text.parse::<ImageLocation>().ok();
    if let Some(l) = &location {
        let again: ImageLocation = l.to_string().parse().expect("printed location parses");
        assert_eq!(&again, l);
        let _ = mirrored(l, "127.0.0.1:5000/m");
    }
    let creds = CredentialSource::from_docker_config(&text, "127.0.0.1:5000")
        .is_ok_and(|c| !matches!(c, CredentialSource::None));
    let manifest = data.split_first().is_some_and(|(pick, rest)| {
        fuzzing::manifest(rest, MEDIA_TYPES[usize::from(*pick) % MEDIA_TYPES.len()])
    });
    location.is_some() || creds || manifest
}
