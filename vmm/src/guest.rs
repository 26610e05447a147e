//! The guest side, packed by the host: a kernel's module directory, the
//! modules a Kiln guest needs (with their dependencies, in load order), and
//! the initramfs holding `kiln-init`, those modules and its configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kiln_init::{CONFIG_PATH, InitConfig, MODULE_DIR};

use crate::{CpioWriter, Error};

/// Modules a guest needs when the kernel has them as modules: virtio
/// transports (mmio for microvm, pci for q35), the block and console
/// drivers, overlayfs, and `button` + `evdev` so `kiln-init` sees the ACPI
/// power button (graceful shutdown).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "overlay",
    "button",
    "evdev",
];

/// A kernel image and its modules directory.
#[derive(Debug, Clone)]
pub struct GuestKernel {
    /// The kernel image (`bzImage`).
    pub image: PathBuf,
    /// `lib/modules/VERSION` of the same kernel.
    pub modules: PathBuf,
}

impl GuestKernel {
    /// A Debian-style layout: `ROOT/boot/vmlinuz-VERSION` with modules in
    /// `ROOT/lib/modules/VERSION`.
    ///
    /// # Errors
    ///
    /// [`Error::GuestFile`] when the modules directory is not there.
    pub fn from_image(image: impl Into<PathBuf>) -> Result<Self, Error> {
        let image = image.into();
        let name = image
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let version = name.strip_prefix("vmlinuz-").unwrap_or(name);
        let root = image
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/"));
        let modules = root.join("lib/modules").join(version);
        let index = modules.join("modules.builtin");
        if let Err(source) = std::fs::metadata(&index) {
            return Err(Error::GuestFile {
                path: index,
                source,
            });
        }
        Ok(Self { image, modules })
    }

    /// The uncompressed, PVH-bootable `vmlinux` inside the bzImage,
    /// extracted once into `cache_dir` (named by a hash of the image's path,
    /// inode, size and mtime, so a changed kernel is extracted again;
    /// written under a temporary name and renamed). QEMU's microvm boots it directly, skipping the
    /// real-mode setup and the in-guest decompression.
    ///
    /// # Errors
    ///
    /// [`Error::GuestFile`] for unreadable or unwritable files,
    /// [`Error::KernelImage`] for a kernel that cannot be booted this way.
    pub fn pvh_image(&self, cache_dir: &Path) -> Result<PathBuf, Error> {
        use sha2::{Digest, Sha256};
        let file_err = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::GuestFile { path, source }
        };
        // Keyed by what identifies the file (path, inode, size, mtime), so
        // a cached kernel costs a stat, not a read.
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&self.image).map_err(file_err(&self.image))?;
        let identity = format!(
            "{}\0{}\0{}\0{}.{}",
            self.image.display(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec()
        );
        let out = cache_dir.join(format!("vmlinux-{:x}", Sha256::digest(identity.as_bytes())));
        if out.exists() {
            return Ok(out);
        }
        let bzimage = std::fs::read(&self.image).map_err(file_err(&self.image))?;
        let elf = crate::vmlinux::extract(&bzimage, crate::vmlinux::MAX_VMLINUX)?;
        std::fs::create_dir_all(cache_dir).map_err(file_err(cache_dir))?;
        // A name of its own for every writer (threads of one process too).
        static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = out.with_extension(format!("tmp{}-{n}", std::process::id()));
        std::fs::write(&tmp, &elf).map_err(file_err(&tmp))?;
        std::fs::rename(&tmp, &out).map_err(file_err(&out))?;
        Ok(out)
    }

    /// The `.ko` files to load for `names`, dependencies first (from each
    /// module's own `depends=` in `.modinfo`, so an unpacked kernel package
    /// without `modules.dep` works); modules built into the kernel
    /// (`modules.builtin`) are skipped.
    ///
    /// # Errors
    ///
    /// [`Error::MissingModule`] for a module the kernel has in neither form,
    /// [`Error::GuestFile`] for an unreadable module directory.
    pub fn module_closure(&self, names: &[&str]) -> Result<Vec<PathBuf>, Error> {
        let builtin =
            std::fs::read_to_string(self.modules.join("modules.builtin")).unwrap_or_default();
        let builtin: BTreeSet<String> =
            builtin.lines().map(|l| module_name(Path::new(l))).collect();
        let mut files = BTreeMap::new();
        let mut pending = vec![self.modules.join("kernel")];
        while let Some(dir) = pending.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|source| Error::GuestFile {
                path: dir.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.to_string_lossy().ends_with(".ko") {
                    files.insert(module_name(&path), path);
                }
            }
        }
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for name in names {
            self.visit(
                &name.replace('-', "_"),
                &files,
                &builtin,
                &mut seen,
                &mut order,
                0,
            )?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        files: &BTreeMap<String, PathBuf>,
        builtin: &BTreeSet<String>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<PathBuf>,
        depth: usize,
    ) -> Result<(), Error> {
        if builtin.contains(name) || !seen.insert(name.to_string()) || depth > 32 {
            return Ok(());
        }
        let path = files.get(name).ok_or_else(|| Error::MissingModule {
            name: name.to_string(),
        })?;
        let bytes = std::fs::read(path).map_err(|source| Error::GuestFile {
            path: path.clone(),
            source,
        })?;
        for dep in modinfo(&bytes, "depends")
            .split(',')
            .filter(|d| !d.is_empty())
        {
            self.visit(
                &dep.replace('-', "_"),
                files,
                builtin,
                seen,
                order,
                depth + 1,
            )?;
        }
        order.push(path.clone());
        Ok(())
    }
}

/// `virtio_blk` for `.../virtio_blk.ko` (dashes as underscores, as the
/// kernel names modules).
fn module_name(path: &Path) -> String {
    let base = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    base.split(".ko").next().unwrap_or(base).replace('-', "_")
}

/// The value of `key=` in a module's `.modinfo` strings.
fn modinfo(module: &[u8], key: &str) -> String {
    let needle = format!("{key}=");
    module
        .split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(needle.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// Builds the initramfs: `/init` (the static `kiln-init`), the modules in
/// load order, `/dev/console`, and `config` with the module names filled in.
///
/// # Errors
///
/// [`Error::GuestFile`] when a file cannot be read.
pub fn initramfs(init: &Path, modules: &[PathBuf], config: &InitConfig) -> Result<Vec<u8>, Error> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| Error::GuestFile {
            path: p.to_owned(),
            source,
        })
    };
    // Writing into a Vec cannot fail.
    let io = |source| Error::GuestFile {
        path: PathBuf::from("initramfs"),
        source,
    };
    let mut config = config.clone();
    config.modules.clear();
    let mut cpio = CpioWriter::new(Vec::new());
    for dir in [
        "dev",
        "proc",
        "sys",
        "kiln",
        "kiln/modules",
        "lower",
        "rw",
        "newroot",
    ] {
        cpio.dir(dir, 0o755).map_err(io)?;
    }
    cpio.char_device("dev/console", 0o600, 5, 1).map_err(io)?;
    cpio.file("init", 0o755, &read(init)?).map_err(io)?;
    let module_dir = MODULE_DIR.trim_start_matches('/');
    for (i, module) in modules.iter().enumerate() {
        let base = module
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("module.ko");
        let name = format!("{i:02}-{base}");
        cpio.file(&format!("{module_dir}/{name}"), 0o644, &read(module)?)
            .map_err(io)?;
        config.modules.push(name);
    }
    let json = serde_json::to_vec_pretty(&config).map_err(|e| io(e.into()))?;
    cpio.file(CONFIG_PATH.trim_start_matches('/'), 0o644, &json)
        .map_err(io)?;
    cpio.finish().map_err(io)
}
