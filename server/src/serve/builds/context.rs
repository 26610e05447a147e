//! A build's source: a tarball (plain, gzip or zstd) unpacked into a fresh
//! directory only if every entry stays inside it.
//!
//! Refused, with nothing left behind: absolute paths and `..` components,
//! links whose target leaves the context (absolute targets included), hard
//! links to paths not yet unpacked, devices and FIFOs, entries beyond the
//! size or count limits, and archives that are not tar.

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// Why a source tarball was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ContextError {
    #[error("the source is not a tar archive (plain, gzip or zstd): {0}")]
    NotTar(String),
    #[error("{path:?}: {why}")]
    Unsafe { path: String, why: &'static str },
    #[error("the source unpacks to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the source has more than {limit} entries")]
    TooManyEntries { limit: usize },
    #[error("unpacking the source: {0}")]
    Io(#[from] std::io::Error),
}

/// Limits on an unpacked source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub bytes: u64,
    pub entries: usize,
}

/// The archive's bytes, decompressed by magic number.
fn decompressed<'a>(file: std::fs::File) -> Result<Box<dyn Read + 'a>, ContextError> {
    let mut r = BufReader::new(file);
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// `path` as relative components, or why it is not one.
fn relative(path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("a path with '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("an absolute path"),
        }
    }
    Ok(out)
}

/// Whether a symlink at `at` (relative) pointing to `target` stays inside.
fn link_stays_inside(at: &Path, target: &Path) -> bool {
    if target.has_root() {
        return false;
    }
    let mut depth = at.components().count().saturating_sub(1) as i64;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Unpacks the tarball `archive` into `dest` (which must not exist).
/// On error `dest` is removed.
pub(crate) fn unpack(archive: &Path, dest: &Path, limits: Limits) -> Result<(), ContextError> {
    std::fs::create_dir(dest)?;
    let result = unpack_into(archive, dest, limits);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dest);
    }
    result
}

fn unpack_into(archive: &Path, dest: &Path, limits: Limits) -> Result<(), ContextError> {
    let mut tar = tar::Archive::new(decompressed(std::fs::File::open(archive)?)?);
    tar.set_preserve_permissions(true);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(true);
    let mut total = 0u64;
    let mut seen = std::collections::HashSet::new();
    let entries = tar
        .entries()
        .map_err(|e| ContextError::NotTar(e.to_string()))?;
    for (n, entry) in entries.enumerate() {
        if n >= limits.entries {
            return Err(ContextError::TooManyEntries {
                limit: limits.entries,
            });
        }
        let mut entry = entry.map_err(|e| ContextError::NotTar(e.to_string()))?;
        let raw = entry
            .path()
            .map_err(|e| ContextError::NotTar(e.to_string()))?
            .into_owned();
        let shown = raw.display().to_string();
        let unsafe_entry = |why| ContextError::Unsafe {
            path: shown.clone(),
            why,
        };
        let path = relative(&raw).map_err(unsafe_entry)?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| ContextError::NotTar(e.to_string()))?
                    .ok_or_else(|| unsafe_entry("a link without a target"))?
                    .into_owned();
                if kind == tar::EntryType::Symlink {
                    if !link_stays_inside(&path, &target) {
                        return Err(unsafe_entry("a symbolic link out of the source"));
                    }
                } else {
                    let target = relative(&target)
                        .map_err(|_| unsafe_entry("a hard link out of the source"))?;
                    if !seen.contains(&target) {
                        return Err(unsafe_entry("a hard link to a file not in the source"));
                    }
                }
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            _ => return Err(unsafe_entry("not a file, directory or link")),
        }
        if path.as_os_str().is_empty() {
            continue;
        }
        total = total.saturating_add(entry.header().size().unwrap_or(0));
        if total > limits.bytes {
            return Err(ContextError::TooLarge {
                limit: limits.bytes,
            });
        }
        // A symlink unpacked earlier must not redirect this entry outside:
        // no parent of the path may be a link.
        let mut parent = dest.to_path_buf();
        for c in path.parent().into_iter().flat_map(Path::components) {
            parent.push(c);
            if parent
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                return Err(unsafe_entry("a path through a symbolic link"));
            }
        }
        if !entry.unpack_in(dest)? {
            return Err(unsafe_entry("a path out of the source"));
        }
        seen.insert(path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let bytes = b.into_inner().unwrap();
        let path = dir.path().join("src.tar");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, body: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Written raw: `set_path` itself refuses `..`.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, body).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(kind);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }

    const LIMITS: Limits = Limits {
        bytes: 1 << 20,
        entries: 100,
    };

    fn try_unpack(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Result<PathBuf, String> {
        let (dir, tarball) = archive(build);
        let dest = dir.path().join("ctx");
        let r = unpack(&tarball, &dest, LIMITS).map_err(|e| e.to_string());
        if r.is_err() {
            assert!(!dest.exists(), "a refused source left {}", dest.display());
        }
        std::mem::forget(dir);
        r.map(|()| dest)
    }

    #[test]
    fn unpacks_files_and_inside_links() {
        let dest = try_unpack(|b| {
            file(b, "Dockerfile", b"FROM scratch\n");
            file(b, "src/a.txt", b"a");
            link(b, tar::EntryType::Symlink, "src/b", "a.txt");
            link(b, tar::EntryType::Symlink, "up", "src/../Dockerfile");
            link(b, tar::EntryType::Link, "hard", "src/a.txt");
        })
        .unwrap();
        assert_eq!(std::fs::read(dest.join("src/b")).unwrap(), b"a");
        assert_eq!(std::fs::read(dest.join("hard")).unwrap(), b"a");
        std::fs::remove_dir_all(dest.parent().unwrap()).unwrap();
    }

    #[test]
    fn refuses_escapes() {
        for (what, build) in [
            (
                "'..'",
                Box::new(|b: &mut tar::Builder<Vec<u8>>| file(b, "../evil", b"x"))
                    as Box<dyn FnOnce(&mut tar::Builder<Vec<u8>>)>,
            ),
            ("absolute", Box::new(|b| file(b, "/etc/evil", b"x"))),
            (
                "symbolic link out",
                Box::new(|b| link(b, tar::EntryType::Symlink, "l", "../../etc")),
            ),
            (
                "symbolic link out",
                Box::new(|b| link(b, tar::EntryType::Symlink, "l", "/etc/passwd")),
            ),
            (
                "hard link out",
                Box::new(|b| link(b, tar::EntryType::Link, "h", "../etc/passwd")),
            ),
            (
                "not in the source",
                Box::new(|b| link(b, tar::EntryType::Link, "h", "etc/passwd")),
            ),
            (
                "through a symbolic link",
                Box::new(|b| {
                    link(b, tar::EntryType::Symlink, "d", ".");
                    file(b, "d/x", b"x");
                }),
            ),
            (
                "not a file",
                Box::new(|b| link(b, tar::EntryType::Char, "dev", "")),
            ),
        ] {
            let e = try_unpack(build).unwrap_err();
            assert!(e.contains(what) || e.contains("link"), "{what}: {e}");
        }
    }

    #[test]
    fn refuses_what_is_not_tar_and_oversized_sources() {
        let (dir, path) = archive(|_| {});
        std::fs::write(
            &path,
            b"this is not a tarball at all, not even close............",
        )
        .unwrap();
        let e = unpack(&path, &dir.path().join("x"), LIMITS);
        assert!(e.is_err(), "{e:?}");
        let big = vec![0u8; 2 << 20];
        let e = try_unpack(|b| file(b, "big", &big)).unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }

    #[test]
    fn gzip_and_zstd_sources() {
        let (dir, path) = archive(|b| file(b, "Dockerfile", b"FROM scratch\n"));
        let plain = std::fs::read(&path).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &plain).unwrap();
        for (name, bytes) in [
            ("gz", gz.finish().unwrap()),
            ("zst", zstd::encode_all(&plain[..], 1).unwrap()),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let dest = dir.path().join(format!("ctx-{name}"));
            unpack(&p, &dest, LIMITS).unwrap();
            assert!(dest.join("Dockerfile").is_file());
        }
    }
}
