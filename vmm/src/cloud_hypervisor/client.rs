//! Cloud Hypervisor's REST API over its unix socket (`--api-socket`):
//! HTTP/1.1, one request per connection, bodies as in [`super::api`].

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::api::{RestoreConfig, VmConfig, VmInfo, VmResize, VmSnapshotConfig, VmmPingResponse};
use crate::{Error, SocketPath};

/// An API operation: its HTTP method and path below `/api/v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `GET /vmm.ping`.
    VmmPing,
    /// `PUT /vmm.shutdown`: the VMM process exits.
    VmmShutdown,
    /// `PUT /vm.create` with a `VmConfig`.
    VmCreate,
    /// `PUT /vm.boot`.
    VmBoot,
    /// `GET /vm.info`.
    VmInfo,
    /// `PUT /vm.pause`.
    VmPause,
    /// `PUT /vm.resume`.
    VmResume,
    /// `PUT /vm.shutdown`.
    VmShutdown,
    /// `PUT /vm.power-button`: ACPI power button (graceful shutdown).
    VmPowerButton,
    /// `PUT /vm.snapshot` with a `VmSnapshotConfig`.
    VmSnapshot,
    /// `PUT /vm.restore` with a `RestoreConfig`.
    VmRestore,
    /// `PUT /vm.resize` with a `VmResize`.
    VmResize,
}

impl Endpoint {
    /// Every endpoint the client uses.
    pub const ALL: [Self; 12] = [
        Self::VmmPing,
        Self::VmmShutdown,
        Self::VmCreate,
        Self::VmBoot,
        Self::VmInfo,
        Self::VmPause,
        Self::VmResume,
        Self::VmShutdown,
        Self::VmPowerButton,
        Self::VmSnapshot,
        Self::VmRestore,
        Self::VmResize,
    ];

    /// `GET` or `PUT`.
    pub fn method(self) -> &'static str {
        match self {
            Self::VmmPing | Self::VmInfo => "GET",
            _ => "PUT",
        }
    }

    /// The path in the API document (`/vm.create`).
    pub fn path(self) -> &'static str {
        match self {
            Self::VmmPing => "/vmm.ping",
            Self::VmmShutdown => "/vmm.shutdown",
            Self::VmCreate => "/vm.create",
            Self::VmBoot => "/vm.boot",
            Self::VmInfo => "/vm.info",
            Self::VmPause => "/vm.pause",
            Self::VmResume => "/vm.resume",
            Self::VmShutdown => "/vm.shutdown",
            Self::VmPowerButton => "/vm.power-button",
            Self::VmSnapshot => "/vm.snapshot",
            Self::VmRestore => "/vm.restore",
            Self::VmResize => "/vm.resize",
        }
    }
}

/// The bytes of one request (`Connection: close`: one per connection).
pub fn encode_request(endpoint: Endpoint, body: Option<&[u8]>) -> Vec<u8> {
    let mut out = format!(
        "{} /api/v1{} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n",
        endpoint.method(),
        endpoint.path()
    )
    .into_bytes();
    match body {
        Some(body) => {
            out.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(body);
        }
        None => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
    }
    out
}

/// A decoded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// Decodes a whole HTTP/1.1 response (status line, headers, a body of
/// `Content-Length` bytes or up to the end).
///
/// # Errors
///
/// [`Error::Protocol`] for anything that is not such a response.
pub fn decode_response(bytes: &[u8]) -> Result<Response, Error> {
    let bad = |what: &str| Error::Protocol(format!("Cloud Hypervisor API response: {what}"));
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not HTTP/1.x"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| bad("bad status"))?;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| bad("bad header line"))?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| bad("bad Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad("chunked bodies are not used by Cloud Hypervisor"));
        }
    }
    let rest = &bytes[end + 4..];
    let body = match length {
        Some(n) if n > rest.len() => return Err(bad("body shorter than Content-Length")),
        Some(n) => rest[..n].to_vec(),
        None => rest.to_vec(),
    };
    Ok(Response { status, body })
}

/// Longest response read (`vm.info` of a big VM is a few KiB).
const MAX_RESPONSE: u64 = 4 << 20;

/// A client for one VMM's API socket.
#[derive(Debug, Clone)]
pub struct ChClient {
    socket: SocketPath,
    timeout: Duration,
}

impl ChClient {
    /// A client for the VMM listening on `socket`.
    pub fn new(socket: SocketPath) -> Self {
        Self {
            socket,
            timeout: Duration::from_secs(30),
        }
    }

    async fn call(&self, endpoint: Endpoint, body: Option<Vec<u8>>) -> Result<Vec<u8>, Error> {
        let exchange = async {
            let mut stream =
                UnixStream::connect(self.socket.as_path())
                    .await
                    .map_err(|source| Error::Connect {
                        path: self.socket.as_path().to_owned(),
                        source,
                    })?;
            stream
                .write_all(&encode_request(endpoint, body.as_deref()))
                .await
                .map_err(Error::Io)?;
            let mut bytes = Vec::new();
            (&mut stream)
                .take(MAX_RESPONSE)
                .read_to_end(&mut bytes)
                .await
                .map_err(Error::Io)?;
            Ok::<_, Error>(bytes)
        };
        let bytes = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("Cloud Hypervisor {}", endpoint.path()),
                after: self.timeout,
            })??;
        let response = decode_response(&bytes)?;
        if !(200..300).contains(&response.status) {
            return Err(Error::Api {
                endpoint: endpoint.path(),
                status: response.status,
                message: String::from_utf8_lossy(&response.body).trim().to_string(),
            });
        }
        Ok(response.body)
    }

    async fn put<T: Serialize>(&self, endpoint: Endpoint, body: &T) -> Result<(), Error> {
        let json = serde_json::to_vec(body).map_err(|e| Error::Protocol(e.to_string()))?;
        self.call(endpoint, Some(json)).await.map(drop)
    }

    async fn get<T: DeserializeOwned>(&self, endpoint: Endpoint) -> Result<T, Error> {
        let body = self.call(endpoint, None).await?;
        serde_json::from_slice(&body)
            .map_err(|e| Error::Protocol(format!("{} response: {e}", endpoint.path())))
    }

    /// `vmm.ping`.
    ///
    /// # Errors
    ///
    /// Connection, protocol and API errors.
    pub async fn ping(&self) -> Result<VmmPingResponse, Error> {
        self.get(Endpoint::VmmPing).await
    }

    /// `vm.create`.
    ///
    /// # Errors
    ///
    /// As [`ChClient::ping`].
    pub async fn create(&self, config: &VmConfig) -> Result<(), Error> {
        self.put(Endpoint::VmCreate, config).await
    }

    /// `vm.info`.
    ///
    /// # Errors
    ///
    /// As [`ChClient::ping`].
    pub async fn info(&self) -> Result<VmInfo, Error> {
        self.get(Endpoint::VmInfo).await
    }

    /// A body-less `PUT`: `vm.boot`, `vm.pause`, `vm.resume`, `vm.shutdown`,
    /// `vm.power-button`, `vmm.shutdown`.
    ///
    /// # Errors
    ///
    /// As [`ChClient::ping`].
    pub async fn action(&self, endpoint: Endpoint) -> Result<(), Error> {
        self.call(endpoint, None).await.map(drop)
    }

    /// The same client with another per-request timeout (snapshots and
    /// restores of large guests take longer than the default 30 s).
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            socket: self.socket.clone(),
            timeout,
        }
    }

    /// `vm.snapshot` into `dir`.
    ///
    /// # Errors
    ///
    /// As [`ChClient::ping`].
    pub async fn snapshot(&self, dir: &Path) -> Result<(), Error> {
        let config = VmSnapshotConfig {
            destination_url: format!("file://{}", dir.display()),
        };
        self.put(Endpoint::VmSnapshot, &config).await
    }

    /// `vm.restore` from `dir`.
    ///
    /// # Errors
    ///
    /// As [`ChClient::ping`].
    pub async fn restore(&self, dir: &Path) -> Result<(), Error> {
        let config = RestoreConfig {
            source_url: format!("file://{}", dir.display()),
            prefault: None,
        };
        self.put(Endpoint::VmRestore, &config).await
    }

    /// `vm.resize`.
    ///
    /// # Errors
    ///
    /// As [`ChClient::ping`].
    pub async fn resize(&self, resize: &VmResize) -> Result<(), Error> {
        self.put(Endpoint::VmResize, resize).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_http_1_1_with_a_length() {
        let bytes = encode_request(Endpoint::VmCreate, Some(b"{}"));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("PUT /api/v1/vm.create HTTP/1.1\r\n"));
        assert!(text.contains("Content-Length: 2\r\n\r\n{}"));
        let text = String::from_utf8(encode_request(Endpoint::VmmPing, None)).unwrap();
        assert!(text.starts_with("GET /api/v1/vmm.ping HTTP/1.1\r\n"));
    }

    #[test]
    fn responses_decode_and_malformed_ones_are_errors() {
        let ok = decode_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra").unwrap();
        assert_eq!((ok.status, ok.body.as_slice()), (200, b"{}".as_slice()));
        let empty = decode_response(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!(empty.status, 204);
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SSH-2.0\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(
                decode_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
