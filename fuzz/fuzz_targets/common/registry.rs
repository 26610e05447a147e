//! The kiln-registry fuzz check, shared by the fuzz target and the corpus
//! replay in `cargo test` (`registry/tests/integration/fuzz_corpus.rs`).

use kiln_registry::api::{Route, form_pairs, fuzzing};
use kiln_registry::manifest::Manifest;
use kiln_registry::{Digest, Hasher, Reference};

/// What a client may say a manifest is; the second byte picks one.
const MEDIA_TYPES: [Option<&str>; 5] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
];

/// Request paths, manifests, references, range headers, query strings and
/// mirrored registry names from hostile clients: typed errors, never a
/// panic; what parses prints back to itself. The first byte picks the
/// parser. Returns whether anything parsed.
pub(crate) fn check(data: &[u8]) -> bool {
    let Some((pick, rest)) = data.split_first() else {
        return false;
    };
    let text = String::from_utf8_lossy(rest);
    match pick % 5 {
        0 => {
            let route = Route::parse(&text);
            if let Ok(Route::Manifest(name, reference)) = &route {
                assert!(!name.as_str().contains(".."));
                let again: Reference = reference
                    .to_string()
                    .parse()
                    .expect("printed reference parses");
                assert_eq!(&again, reference);
            }
            route.is_ok()
        }
        1 => {
            let Some((kind, doc)) = rest.split_first() else {
                return false;
            };
            let parsed = Manifest::parse(doc, MEDIA_TYPES[usize::from(*kind) % MEDIA_TYPES.len()]);
            if let Ok(m) = &parsed {
                for d in m.blobs.iter().chain(&m.children) {
                    assert_eq!(&d.as_str().parse::<Digest>().expect("a valid digest"), d);
                }
            }
            parsed.is_ok()
        }
        2 => {
            let digest = text.parse::<Digest>();
            if let Ok(d) = &digest {
                assert_eq!(d.to_string(), text);
                assert!(d.hex().bytes().all(|b| b.is_ascii_hexdigit()));
            }
            // A saved running hash (read back from an upload's record).
            let resumed = Hasher::restore(&text);
            if let Some(h) = &resumed {
                let saved = h.save().expect("a SHA-256 state");
                let again = Hasher::restore(&saved).and_then(|h| h.save());
                assert_eq!(again.as_deref(), Some(saved.as_str()));
                let _ = h.clone().finish();
            }
            digest.is_ok() | text.parse::<Reference>().is_ok() | resumed.is_some()
        }
        3 => {
            fuzzing::ranges(&text, u64::from(rest.len() as u32) + 1) | !form_pairs(&text).is_empty()
        }
        _ => match kiln_dockerfile::registry_component(&text) {
            Some(c) => {
                assert!(!c.contains(['/', ':', '[', ']']), "{c}");
                assert!(
                    kiln_dockerfile::registry_from_component(&c).is_some(),
                    "{c} reads back"
                );
                true
            }
            None => kiln_dockerfile::registry_from_component(&text).is_some(),
        },
    }
}
