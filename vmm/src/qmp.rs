//! An async QMP client over a unix socket: greeting, capability
//! negotiation, commands matched by `id`, and asynchronous events.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::{Error, SocketPath};

/// Longest QMP line accepted (QMP replies are small; this bounds memory).
const MAX_LINE: usize = 16 << 20;

/// An asynchronous QMP event (`STOP`, `RESUME`, `SHUTDOWN`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event name.
    pub name: String,
    /// Its data (`{}` when none).
    pub data: Value,
}

/// One decoded QMP message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// The greeting QEMU sends on connect.
    Greeting(Value),
    /// A command succeeded.
    Return {
        /// The `id` the command carried.
        id: Option<Value>,
        /// Its result.
        value: Value,
    },
    /// A command failed.
    Error {
        /// The `id` the command carried.
        id: Option<Value>,
        /// QMP's error class.
        class: String,
        /// QMP's description.
        description: String,
    },
    /// An event.
    Event(Event),
}

/// Decodes one QMP line.
///
/// # Errors
///
/// [`Error::Protocol`] for anything that is not a QMP message.
pub fn decode(line: &str) -> Result<Message, Error> {
    let bad = || Error::Protocol(line.chars().take(200).collect());
    let v: Value = serde_json::from_str(line).map_err(|_| bad())?;
    let obj = v.as_object().ok_or_else(bad)?;
    if let Some(greeting) = obj.get("QMP") {
        return Ok(Message::Greeting(greeting.clone()));
    }
    let id = obj.get("id").cloned();
    if let Some(value) = obj.get("return") {
        return Ok(Message::Return {
            id,
            value: value.clone(),
        });
    }
    if let Some(err) = obj.get("error") {
        let text = |k: &str| {
            err.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        return Ok(Message::Error {
            id,
            class: text("class"),
            description: text("desc"),
        });
    }
    if let Some(name) = obj.get("event").and_then(Value::as_str) {
        return Ok(Message::Event(Event {
            name: name.to_owned(),
            data: obj.get("data").cloned().unwrap_or_else(|| json!({})),
        }));
    }
    Err(bad())
}

/// A QMP connection.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    events: VecDeque<Event>,
    next_id: u64,
}

impl Qmp {
    /// Connects (retrying while the socket appears, up to `timeout`), reads
    /// the greeting and negotiates capabilities.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`], [`Error::Timeout`], [`Error::Protocol`].
    pub async fn connect(path: &SocketPath, timeout: Duration) -> Result<Self, Error> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path.as_path()).await {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(Error::Connect {
                        path: path.as_path().to_owned(),
                        source: e,
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let (read, write) = stream.into_split();
        let mut qmp = Self {
            reader: BufReader::new(read),
            writer: write,
            events: VecDeque::new(),
            next_id: 1,
        };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        match tokio::time::timeout(left, qmp.read_message()).await {
            Ok(Ok(Message::Greeting(_))) => {}
            Ok(Ok(other)) => {
                return Err(Error::Protocol(format!(
                    "expected a greeting, got {other:?}"
                )));
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Timeout {
                    what: "QMP greeting".into(),
                    after: timeout,
                });
            }
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    async fn read_message(&mut self) -> Result<Message, Error> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = (&mut self.reader)
                .take(MAX_LINE as u64)
                .read_line(&mut line)
                .await
                .map_err(Error::Io)?;
            if n == 0 {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "QMP socket closed",
                )));
            }
            if !line.trim().is_empty() {
                return decode(line.trim());
            }
        }
    }

    /// Runs a command and returns its result; events that arrive meanwhile
    /// are queued.
    ///
    /// # Errors
    ///
    /// [`Error::Command`] when QEMU refuses it, I/O and protocol errors.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, Error> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"execute": command, "id": id});
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut bytes = serde_json::to_vec(&msg).map_err(|e| Error::Protocol(e.to_string()))?;
        bytes.extend_from_slice(b"\r\n");
        self.writer.write_all(&bytes).await.map_err(Error::Io)?;
        loop {
            match self.read_message().await? {
                Message::Event(e) => self.events.push_back(e),
                Message::Return {
                    id: Some(got),
                    value,
                } if got == json!(id) => return Ok(value),
                Message::Error {
                    id: Some(got),
                    class,
                    description,
                } if got == json!(id) => {
                    return Err(Error::Command {
                        command: command.to_owned(),
                        class,
                        description,
                    });
                }
                // Replies to other ids cannot happen with one caller; skip.
                _ => {}
            }
        }
    }

    /// Waits for event `name` (queued or arriving) for up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], I/O and protocol errors.
    pub async fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Event, Error> {
        if let Some(i) = self.events.iter().position(|e| e.name == name) {
            return Ok(self.events.remove(i).unwrap_or_else(|| unreachable!()));
        }
        let wait = async {
            loop {
                match self.read_message().await? {
                    Message::Event(e) if e.name == name => return Ok(e),
                    Message::Event(e) => self.events.push_back(e),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("QMP event {name}"),
                after: timeout,
            })?
    }

    /// Events received so far and not yet waited for.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_qmp_messages() {
        assert!(matches!(
            decode(r#"{"QMP": {"version": {}, "capabilities": []}}"#).unwrap(),
            Message::Greeting(_)
        ));
        assert_eq!(
            decode(r#"{"return": {"status": "running"}, "id": 3}"#).unwrap(),
            Message::Return {
                id: Some(json!(3)),
                value: json!({"status": "running"})
            }
        );
        assert_eq!(
            decode(r#"{"error": {"class": "GenericError", "desc": "nope"}, "id": 4}"#).unwrap(),
            Message::Error {
                id: Some(json!(4)),
                class: "GenericError".into(),
                description: "nope".into()
            }
        );
        assert_eq!(
            decode(r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#).unwrap(),
            Message::Event(Event {
                name: "STOP".into(),
                data: json!({})
            })
        );
        assert!(decode("not json").is_err());
        assert!(decode("[]").is_err());
        assert!(decode("{}").is_err());
    }
}
