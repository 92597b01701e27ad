//! Media workers: one OS thread per core, each owning a UDP socket and the
//! rooms placed on it (every participant `Rtc` of those rooms).
//!
//! The HTTP side talks to a worker only through [`Command`]s on a bounded
//! channel and awaits the reply; nothing else crosses the thread boundary
//! except the shared [`Registry`](crate::registry::Registry) and metrics.

pub mod core;
pub mod demux;
mod event_loop;
mod outbox;
pub mod tcp;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use signaling::admin::{AdminReply, AdminRequest};
use signaling::backend::{
    BackendError, EventKinds, JoinRoom, LayerSelection, PatchOutcome, RoomConnection,
    SessionCreated, SessionEvents,
};
use signaling::room_protocol::ClientMessage;
use signaling::sdpfrag::SdpFrag;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use self::core::{CreateRequest, WorkerContext};

/// Commands a worker accepts.
#[derive(Debug)]
pub enum Command {
    Create {
        req: CreateRequest,
        reply: oneshot::Sender<Result<SessionCreated, BackendError>>,
        /// The HTTP request's span: the session's span becomes its child.
        span: tracing::Span,
    },
    Patch {
        resource_id: String,
        if_match: Option<String>,
        frag: SdpFrag,
        reply: oneshot::Sender<Result<PatchOutcome, BackendError>>,
    },
    Delete {
        resource_id: String,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    /// Attach to a session's events: registered stream `stream` (the WHEP
    /// server-sent events extension), or, with None, its activity alone
    /// (this node's own relays).
    Events {
        resource_id: String,
        stream: Option<String>,
        reply: oneshot::Sender<Result<SessionEvents, BackendError>>,
    },
    /// Register an event stream of these kinds; its id comes back.
    OpenEvents {
        resource_id: String,
        kinds: EventKinds,
        reply: oneshot::Sender<Result<String, BackendError>>,
    },
    /// Close a registered event stream.
    CloseEvents {
        resource_id: String,
        stream: String,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    /// A WHEP player's layer wish.
    SelectLayer {
        resource_id: String,
        selection: LayerSelection,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    /// A conference participant joins (or resumes).
    Join {
        req: JoinRoom,
        reply: oneshot::Sender<Result<RoomConnection, BackendError>>,
        /// The socket request's span: the session's span becomes its child.
        span: tracing::Span,
    },
    /// A message from a participant's socket.
    RoomMessage {
        participant: String,
        generation: u64,
        msg: ClientMessage,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    /// A participant's socket closed.
    SocketClosed {
        participant: String,
        generation: u64,
    },
    /// An edge node starts relaying a room from its hosting node: the
    /// relay participant's offer comes back. `socket` is the relay's own
    /// UDP socket, which the IO shell takes before the core sees the command.
    OpenRelay {
        req: self::core::relay::OpenRelay,
        socket: Option<UdpSocket>,
        reply: oneshot::Sender<Result<String, BackendError>>,
    },
    /// A satellite room links itself to the room on its hosting node: the
    /// bridge member is created (`socket` as for a relay).
    OpenBridge {
        req: self::core::bridge::OpenBridge,
        socket: Option<UdpSocket>,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    /// A room-protocol message from the hosting node to bridge `resource_id`.
    BridgeInbound {
        resource_id: String,
        msg: signaling::room_protocol::ServerMessage,
    },
    /// The hosting node's answer to a relay's offer.
    AnswerRelay {
        resource_id: String,
        answer_sdp: String,
        /// An address of the hosting side to try besides the answer's
        /// (a worker of this node: its bound address, not the advertised one).
        candidate: Option<SocketAddr>,
        /// The upstream session receives a publisher's media now (when not,
        /// the relay's tracks wait for [`Command::RelayUpstream`]).
        upstream_active: bool,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    /// Relay `resource_id`'s upstream session started or stopped receiving
    /// a publisher's media.
    RelayUpstream { resource_id: String, active: bool },
    /// A relay's downstream node wants only these streams (rids).
    RelayLayers {
        resource_id: String,
        identity: String,
        rids: Vec<String>,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    /// Room administration.
    Admin {
        req: AdminRequest,
        reply: oneshot::Sender<Result<AdminReply, BackendError>>,
    },
}

/// Depth of a worker's command queue (back-pressure on signaling).
pub const COMMAND_QUEUE: usize = 256;

/// The HTTP side's handle on a worker.
#[derive(Clone)]
pub struct WorkerHandle {
    pub index: usize,
    pub media_addr: SocketAddr,
    commands: mpsc::Sender<Command>,
    load: Arc<AtomicUsize>,
}

impl WorkerHandle {
    /// Participants currently on this worker (for placement).
    pub fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    pub async fn send(&self, cmd: Command) -> Result<(), BackendError> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| BackendError::Internal(format!("media worker {} stopped", self.index)))
    }
}

/// Everything needed to start the workers.
pub struct WorkerSettings {
    pub count: usize,
    pub bind_ip: IpAddr,
    pub first_port: u16,
    pub public_ip: Option<IpAddr>,
    /// Ports advertised instead of the bound ones (a port mapping in the
    /// way; the configuration allows them with one worker only).
    pub public_udp_port: Option<u16>,
    pub public_tcp_port: Option<u16>,
    /// First ICE-TCP port (worker N listens on port+N; 0: any free port;
    /// None: no ICE-TCP).
    pub first_tcp_port: Option<u16>,
    pub context: WorkerContext,
}

/// Bind sockets and start the worker threads.
pub fn spawn_workers(
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> std::io::Result<(Vec<WorkerHandle>, Vec<JoinHandle<()>>)> {
    let mut handles = Vec::with_capacity(settings.count);
    let mut threads = Vec::with_capacity(settings.count);
    for index in 0..settings.count {
        let port = if settings.first_port == 0 {
            0
        } else {
            settings.first_port + index as u16
        };
        let socket = UdpSocket::bind(SocketAddr::new(settings.bind_ip, port))?;
        socket.set_nonblocking(true)?;
        let local_addr = socket.local_addr()?;
        let advertised_addr = SocketAddr::new(
            settings.public_ip.unwrap_or(local_addr.ip()),
            settings.public_udp_port.unwrap_or(local_addr.port()),
        );
        let tcp = match settings.first_tcp_port {
            None => None,
            Some(first) => {
                let port = if first == 0 { 0 } else { first + index as u16 };
                let listener =
                    std::net::TcpListener::bind(SocketAddr::new(settings.bind_ip, port))?;
                listener.set_nonblocking(true)?;
                Some(listener)
            }
        };
        let tcp_addr = tcp.as_ref().map(|l| l.local_addr()).transpose()?;
        let advertised_tcp_addr = tcp_addr.map(|a| {
            SocketAddr::new(
                settings.public_ip.unwrap_or(a.ip()),
                settings.public_tcp_port.unwrap_or(a.port()),
            )
        });
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let load = Arc::new(AtomicUsize::new(0));
        let ctx = WorkerContext {
            index,
            advertised_addr,
            advertised_tcp_addr,
            ..settings.context.clone()
        };
        let thread_load = load.clone();
        let thread_shutdown = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name(format!("media-worker-{index}"))
            .spawn(move || event_loop::run(ctx, socket, tcp, rx, thread_load, thread_shutdown))?;
        tracing::info!(worker = index, %local_addr, %advertised_addr, ?tcp_addr, ?advertised_tcp_addr, "media worker started");
        handles.push(WorkerHandle {
            index,
            media_addr: local_addr,
            commands: tx,
            load,
        });
        threads.push(thread);
    }
    Ok((handles, threads))
}
