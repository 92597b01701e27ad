//! A room-protocol client for tests: a real WebSocket to `/rtc`, JSON in
//! and out, and bounded waits that keep the test's str0m peers running.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct RoomClient {
    rt: tokio::runtime::Runtime,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Every JSON message received so far, in order.
    pub inbox: Vec<Value>,
    /// The server closed the socket.
    pub closed: bool,
}

/// Why a connection failed: HTTP status and body of the refused upgrade.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl From<tokio_tungstenite::tungstenite::Error> for Refused {
    /// A refused upgrade's status and body; status 0 for any other failure.
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Refused {
        match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => Refused {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            },
            e => Refused {
                status: 0,
                body: e.to_string(),
            },
        }
    }
}

impl RoomClient {
    pub fn connect(base: &str, token: &str, resume: Option<&str>) -> Result<RoomClient, Refused> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut url = format!(
            "{}/rtc?access_token={token}",
            base.replace("http://", "ws://")
        );
        if let Some(r) = resume {
            url.push_str(&format!("&resume={r}"));
        }
        let connected = rt.block_on(tokio_tungstenite::connect_async(url));
        match connected {
            Ok((ws, _)) => Ok(RoomClient {
                rt,
                ws,
                inbox: vec![],
                closed: false,
            }),
            Err(e) => Err(Refused::from(e)),
        }
    }

    pub fn send(&mut self, v: Value) {
        self.send_raw(Message::Text(v.to_string().into()));
    }

    pub fn send_raw(&mut self, m: Message) {
        let _ = self.rt.block_on(self.ws.send(m));
    }

    /// Drop the TCP connection without a close handshake (a network blip).
    pub fn drop_connection(self) {
        drop(self);
    }

    /// Read whatever arrives within `wait`.
    fn pump(&mut self, wait: Duration) {
        let next = self
            .rt
            .block_on(async { tokio::time::timeout(wait, self.ws.next()).await });
        match next {
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Ok(v) = serde_json::from_str(t.as_str()) {
                    self.inbox.push(v);
                }
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => self.closed = true,
            _ => {}
        }
    }

    /// Wait (at most `timeout`) for a message matching `pred` that arrived
    /// after message number `from`; `drive` runs between reads (the peers).
    pub fn wait_from(
        &mut self,
        from: usize,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
        drive: &mut dyn FnMut(),
    ) -> Option<Value> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(v) = self.inbox.iter().skip(from).find(|v| pred(v)) {
                return Some(v.clone());
            }
            if Instant::now() >= end || self.closed {
                return None;
            }
            self.pump(Duration::from_millis(3));
            drive();
        }
    }

    /// Wait for the first message of `kind` after message number `from`.
    pub fn wait_type(
        &mut self,
        from: usize,
        kind: &str,
        timeout: Duration,
        drive: &mut dyn FnMut(),
    ) -> Option<Value> {
        self.wait_from(from, |v| v["type"] == kind, timeout, drive)
    }

    /// Messages of `kind` received so far.
    pub fn count(&self, kind: &str) -> usize {
        self.inbox.iter().filter(|v| v["type"] == kind).count()
    }
}

/// A no-op drive for waits without peers.
pub fn idle() {}
