//! Where `kiln-init` reports to the host: the console report named by the
//! host's secret (see [`kiln_init::report_line`]), or the virtio-serial
//! port the host named, found by its name. The port's driver
//! (`virtio_console`) is loaded only once the workload
//! runs (or when a report is due earlier): probing the port costs boot time
//! the workload need not wait for. The workload cannot claim the port
//! first unless it runs as root (the node is `root` 0600), and a root
//! workload owns the guest kernel anyway: the exit status is the guest's
//! word either way.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::kmod::{ModuleInitFlags, finit_module};

/// The module file name of the channel's driver.
pub(crate) const DRIVER: &str = "virtio_console.ko";

/// Where `exit=N` / `error=...` go.
pub(crate) struct Channel {
    name: String,
    driver: Option<File>,
    port: Option<File>,
    nonce: String,
}

impl Channel {
    /// No channel (yet).
    pub(crate) fn none() -> Self {
        Self {
            name: String::new(),
            driver: None,
            port: None,
            nonce: String::new(),
        }
    }

    /// The port `name`, whose driver module (opened, still to be loaded) is
    /// `driver` when modular; without a port, the console report named by
    /// `nonce`.
    pub(crate) fn new(name: &str, driver: Option<File>, nonce: &str) -> Self {
        Self {
            name: name.to_owned(),
            driver,
            port: None,
            nonce: nonce.to_owned(),
        }
    }

    /// Loads the driver if that is still to be done.
    pub(crate) fn load_driver(&mut self) {
        if let Some(module) = self.driver.take() {
            // EEXIST (built in, or loaded already) is fine; anything else
            // shows as a missing port when reporting.
            let _ = finit_module(&module, c"", ModuleInitFlags::empty());
        }
    }

    /// Writes one line to the host (if there is a channel or a nonce).
    pub(crate) fn report(&mut self, line: &str) {
        if self.name.is_empty() {
            if !self.nonce.is_empty() {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(kiln_init::report_line(&self.nonce, line).as_bytes());
                let _ = out.flush();
            }
            return;
        }
        self.load_driver();
        if self.port.is_none() {
            self.port =
                find_port(&self.name).and_then(|p| fs::OpenOptions::new().write(true).open(p).ok());
        }
        if let Some(port) = &mut self.port {
            let _ = writeln!(port, "{line}");
            let _ = port.flush();
        }
    }
}

/// The `/dev` node of the virtio-serial port named `name`.
fn find_port(name: &str) -> Option<PathBuf> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        for entry in fs::read_dir("/sys/class/virtio-ports")
            .into_iter()
            .flatten()
            .flatten()
        {
            let port_name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
            if port_name.trim() == name {
                let dev = Path::new("/dev").join(entry.file_name());
                if dev.exists() {
                    return Some(dev);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}
