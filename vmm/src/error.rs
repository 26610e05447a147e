//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong configuring, starting or driving a VM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A unix socket path too long for `sun_path` or otherwise unusable.
    #[error("invalid socket path {path:?}: {reason}")]
    InvalidSocketPath {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A snapshot path with characters QEMU's shell would interpret.
    #[error("invalid snapshot path {0:?}: only [A-Za-z0-9/._+-] may be used")]
    InvalidSnapshotPath(PathBuf),
    /// A kernel image that cannot be booted directly (see
    /// [`crate::GuestKernel::pvh_image`]).
    #[error("kernel image: {0}")]
    KernelImage(String),
    /// A configuration the backend cannot boot as given.
    #[error("invalid VM configuration: {0}")]
    InvalidConfig(String),
    /// The backend (or this host) cannot do what the configuration or call
    /// asks (check [`crate::Capabilities`] first).
    #[error("{backend} cannot do {feature}")]
    Unsupported {
        /// `qemu` or `cloud-hypervisor`.
        backend: &'static str,
        /// What was asked for.
        feature: &'static str,
    },
    /// A vsock context id that is reserved (0, 1, 2) or the wildcard.
    #[error("invalid vsock CID {0}: must be 3 or more")]
    InvalidCid(u32),
    /// A memory size that is not `N[K|M|G]` of at least 16 MiB.
    #[error("invalid memory size {0:?}: expected e.g. 256M or 1G, at least 16M")]
    InvalidMemory(String),
    /// The VMM process could not be started.
    #[error("starting {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The control socket could not be reached.
    #[error("connecting to {path:?}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the control socket failed.
    #[error("talking to the VMM")]
    Io(#[source] std::io::Error),
    /// The VMM said something that is not its protocol.
    #[error("unexpected QMP message: {0}")]
    Protocol(String),
    /// A REST API call answered with an error status.
    #[error("{endpoint} failed with HTTP {status}: {message}")]
    Api {
        /// The endpoint (`/vm.create`).
        endpoint: &'static str,
        /// The HTTP status.
        status: u16,
        /// The response body.
        message: String,
    },
    /// The VMM refused a command.
    #[error("{command} failed: {class}: {description}")]
    Command {
        /// The command.
        command: String,
        /// QMP error class.
        class: String,
        /// QMP error text.
        description: String,
    },
    /// Something did not happen in time.
    #[error("{what} did not happen within {after:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
    /// A file the guest needs (kernel module, init, configuration) could
    /// not be read, or the kernel's module index is missing.
    #[error("reading {path:?} for the guest")]
    GuestFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel has the module neither built in nor as a file.
    #[error("the kernel has no module {name}")]
    MissingModule {
        /// The module name.
        name: String,
    },
    /// The work directory or a file in it could not be written.
    #[error("writing {path:?}")]
    WorkDir {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The guest could not run the workload (its init said why).
    #[error("the guest failed: {message}")]
    Guest {
        /// The guest init's message.
        message: String,
        /// The end of the console output.
        console: String,
    },
    /// The VMM stopped the guest (`internal-error`, e.g. a KVM that cannot
    /// run it, or `guest-panicked`).
    #[error("the VMM stopped the guest ({status}); console ends with:\n{console}")]
    GuestStopped {
        /// The VMM's run state.
        status: String,
        /// The end of the console output.
        console: String,
    },
    /// The guest stopped without reporting an exit status (a kernel or
    /// disk that does not boot).
    #[error("the guest stopped without reporting an exit status; console ends with:\n{console}")]
    NoExitStatus {
        /// The end of the console output.
        console: String,
    },
    /// The VMM exited before it was ready.
    #[error("the VMM exited early ({status}): {stderr}")]
    Exited {
        /// Its exit status.
        status: String,
        /// The end of what it printed.
        stderr: String,
    },
}
