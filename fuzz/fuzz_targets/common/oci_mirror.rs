//! The oci-mirror fuzz check, shared by the fuzz target and the corpus
//! replay in `cargo test` (`oci-mirror/tests/integration/fuzz_corpus.rs`).

use kiln_oci_mirror::{Credentials, ImageLocation, mirrored};

/// Image locations print and parse back to themselves; mirrored names of
/// valid locations are valid or a typed error; Docker config parsing never
/// panics. Returns whether anything parsed.
pub(crate) fn check(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let location = text.parse::<ImageLocation>().ok();
    if let Some(l) = &location {
        let again: ImageLocation = l.to_string().parse().expect("printed location parses");
        assert_eq!(&again, l);
        let _ = mirrored(l, "127.0.0.1:5000/m");
    }
    let creds = Credentials::from_docker_config(&text, "127.0.0.1:5000").is_ok_and(|c| c.is_some());
    location.is_some() || creds
}
