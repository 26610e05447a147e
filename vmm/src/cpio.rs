//! A streaming writer for the cpio "newc" format the Linux kernel unpacks
//! as an initramfs: directories, files, symlinks and device nodes, written
//! with any owner and mode and no root privileges.

use std::io::{self, Write};

/// `S_IFDIR`, `S_IFREG`, `S_IFLNK`, `S_IFCHR` file-type bits.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Writes a newc archive to `W`; call [`CpioWriter::finish`] to write the
/// trailer (an archive without it is incomplete, and is not finished on
/// drop).
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use kiln_vmm::CpioWriter;
/// let mut cpio = CpioWriter::new(Vec::new());
/// cpio.dir("dev", 0o755)?;
/// cpio.char_device("dev/console", 0o600, 5, 1)?;
/// cpio.file("init", 0o755, b"#!/bin/sh\n")?;
/// let bytes = cpio.finish()?;
/// assert!(bytes.starts_with(b"070701"));
/// assert_eq!(bytes.len() % 512, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    inner: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    /// A writer over `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            written: 0,
            next_ino: 1,
        }
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// A directory.
    ///
    /// # Errors
    ///
    /// I/O errors, or a name that is empty, absolute or has a NUL.
    pub fn dir(&mut self, name: &str, mode: u32) -> io::Result<()> {
        self.entry(name, S_IFDIR | (mode & 0o7777), 2, (0, 0), &[])
    }

    /// A regular file with `data`.
    ///
    /// # Errors
    ///
    /// As [`CpioWriter::dir`].
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | (mode & 0o7777), 1, (0, 0), data)
    }

    /// A symbolic link to `target`.
    ///
    /// # Errors
    ///
    /// As [`CpioWriter::dir`].
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// A character device node (e.g. `dev/console`, 5:1).
    ///
    /// # Errors
    ///
    /// As [`CpioWriter::dir`].
    pub fn char_device(&mut self, name: &str, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, S_IFCHR | (mode & 0o7777), 1, (major, minor), &[])
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        if name.is_empty() || name.starts_with('/') || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cpio name {name:?}"),
            ));
        }
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "cpio entries are limited to 4 GiB",
            )
        })?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(ino, mode, nlink, size, rdev, name)?;
        self.write_padded(data)
    }

    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: u32,
        rdev: (u32, u32),
        name: &str,
    ) -> io::Result<()> {
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio name too long"))?;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor
        // rdevminor namesize check
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.write_all(header.as_bytes())?;
        let mut name_bytes = name.as_bytes().to_vec();
        name_bytes.push(0);
        self.write_padded(&name_bytes)
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Writes `bytes` and pads the archive to a 4-byte boundary.
    fn write_padded(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)?;
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.write_all(&[0; 3][..pad])
    }

    /// Writes the trailer, pads to 512 bytes, and returns the writer.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(0, 0, 1, 0, (0, 0), "TRAILER!!!")?;
        let pad = (512 - (self.written % 512) as usize) % 512;
        self.write_all(&vec![0; pad])?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_one_entry() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("a", 0o644, b"hello").unwrap();
        let out = w.finish().unwrap();
        // 110-byte header, "a\0" padded to 112, "hello" padded to 120.
        assert_eq!(&out[..6], b"070701");
        assert_eq!(&out[110..112], b"a\0");
        assert_eq!(&out[112..117], b"hello");
        assert_eq!(&out[117..120], &[0, 0, 0]);
        assert_eq!(&out[120..126], b"070701");
        assert_eq!(out.len() % 512, 0);
        let mode = std::str::from_utf8(&out[14..22]).unwrap();
        assert_eq!(u32::from_str_radix(mode, 16).unwrap(), S_IFREG | 0o644);
    }

    #[test]
    fn bad_names_are_refused() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("/abs", 0o644, b"").is_err());
        assert!(w.file("", 0o644, b"").is_err());
        assert!(w.file("a\0b", 0o644, b"").is_err());
    }
}
