//! The thin IO shell around [`WorkerCore`]: a single-threaded tokio runtime
//! that waits for a datagram, a command, the next timeout or shutdown, and
//! moves bytes and time into the core and transmits out of it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::net::{TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::net::{Protocol, Transmit};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::core::{WorkerContext, WorkerCore};
use super::tcp::{TcpEvent, TcpIce};
use super::Command;
use crate::metrics::PacketCounts;

/// Datagrams read per wake-up before timers and commands get a turn.
const RECV_BATCH: usize = 64;
const RECV_BUFFER: usize = 2048;
/// How often the sent-packet counters reach the shared metrics.
const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

pub fn run(
    ctx: WorkerContext,
    socket: StdUdpSocket,
    tcp: Option<StdTcpListener>,
    commands: mpsc::Receiver<Command>,
    load: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) {
    let index = ctx.index;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot start worker runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let socket = match UdpSocket::from_std(socket) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "cannot register UDP socket");
                return;
            }
        };
        let tcp = match tcp.map(TcpListener::from_std).transpose() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "cannot register ICE-TCP listener");
                return;
            }
        };
        worker_loop(ctx, socket, tcp, commands, load, shutdown).await;
    });
    tracing::info!(worker = index, "media worker stopped");
}

/// Relays' own sockets (edge nodes), by local address.
type RelaySockets = RefCell<HashMap<SocketAddr, (Arc<UdpSocket>, CancellationToken)>>;

/// A datagram read from a relay socket: (its local address, source, bytes).
type RelayDatagram = (SocketAddr, SocketAddr, Vec<u8>);

fn send(
    socket: &UdpSocket,
    tcp: &TcpIce,
    relays: &RelaySockets,
    counts: &mut PacketCounts,
    t: Transmit,
) {
    let relay = relays.borrow().get(&t.source).map(|(s, _)| s.clone());
    let socket = match &relay {
        Some(s) => &**s,
        None => socket,
    };
    if t.proto == Protocol::Tcp {
        // A full queue or a closed connection loses the frame, like UDP.
        if tcp.send(t.destination, &t.contents) {
            counts.packets_sent += 1;
            counts.bytes_sent += t.contents.len() as u64;
        }
        return;
    }
    match socket.try_send_to(&t.contents, t.destination) {
        Ok(n) => {
            counts.packets_sent += 1;
            counts.bytes_sent += n as u64;
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            // Socket buffer full: the packet is lost like on the wire; NACK/RTX repairs it.
            tracing::trace!("send buffer full; dropping datagram");
        }
        Err(e) => tracing::debug!(error = %e, dest = %t.destination, "send failed"),
    }
}

async fn worker_loop(
    ctx: WorkerContext,
    socket: UdpSocket,
    tcp: Option<TcpListener>,
    mut commands: mpsc::Receiver<Command>,
    load: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) {
    let metrics = ctx.metrics.clone();
    let mut core = WorkerCore::new(ctx, Instant::now());
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut sent = PacketCounts::default();
    let mut next_flush = Instant::now();
    let (tcp, mut tcp_events) = TcpIce::new(tcp);
    let relays: RelaySockets = RefCell::new(HashMap::new());
    let (relay_tx, mut relay_rx) = mpsc::channel::<RelayDatagram>(1024);
    loop {
        let mut transmit = |t: Transmit| send(&socket, &tcp, &relays, &mut sent, t);
        let deadline = tokio::time::Instant::from_std(core.next_timeout());
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                core.shutdown(Instant::now(), &mut transmit);
                break;
            }
            cmd = commands.recv() => {
                let Some(mut cmd) = cmd else { break };
                if let Command::OpenRelay { socket, .. } = &mut cmd {
                    if let Some(s) = socket.take() {
                        add_relay_socket(&relays, s, relay_tx.clone());
                    }
                }
                core.handle_command(Instant::now(), cmd, &mut transmit);
            }
            datagram = relay_rx.recv() => {
                if let Some((local, source, data)) = datagram {
                    core.handle_relay_datagram(Instant::now(), local, source, &data, &mut transmit);
                }
            }
            ready = socket.readable() => {
                if let Err(e) = ready {
                    tracing::warn!(error = %e, "socket not readable");
                    continue;
                }
                let now = Instant::now();
                for _ in 0..RECV_BATCH {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, source)) => {
                            core.handle_datagram(now, Protocol::Udp, source, &buf[..n], &mut transmit)
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // ICMP errors (peer gone) surface here; they concern one peer only.
                            tracing::trace!(error = %e, "recv error");
                            break;
                        }
                    }
                }
            }
            accepted = tcp.accept() => match accepted {
                Ok((stream, remote)) => tcp.add(stream, remote),
                Err(e) => tracing::debug!(error = %e, "ICE-TCP accept failed"),
            },
            event = tcp_events.recv() => match event {
                Some(TcpEvent::Frame(remote, frame)) => {
                    core.handle_datagram(Instant::now(), Protocol::Tcp, remote, &frame, &mut transmit);
                }
                Some(TcpEvent::Closed(remote)) => tcp.closed(remote),
                None => {}
            },
            _ = tokio::time::sleep_until(deadline) => {}
        }
        let now = Instant::now();
        core.handle_timeout(now, &mut transmit);
        if now >= next_flush {
            next_flush = now + FLUSH_INTERVAL;
            sent.flush(&metrics);
        }
        load.store(core.participant_count(), Ordering::Relaxed);
        for gone in core.closed_relay_sockets() {
            if let Some((_, reader)) = relays.borrow_mut().remove(&gone) {
                reader.cancel();
            }
        }
    }
}

/// Register a relay's socket: a task reads it into the worker loop.
fn add_relay_socket(relays: &RelaySockets, socket: StdUdpSocket, tx: mpsc::Sender<RelayDatagram>) {
    let socket = match socket.local_addr().and_then(|a| {
        socket.set_nonblocking(true)?;
        Ok((a, UdpSocket::from_std(socket)?))
    }) {
        Ok((local, s)) => (local, Arc::new(s)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot register relay socket");
            return;
        }
    };
    let (local, socket) = socket;
    let stop = CancellationToken::new();
    relays
        .borrow_mut()
        .insert(local, (socket.clone(), stop.clone()));
    tokio::spawn(async move {
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                got = socket.recv_from(&mut buf) => match got {
                    Ok((n, source)) => {
                        if tx.send((local, source, buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::trace!(error = %e, "relay socket recv error"),
                },
            }
        }
    });
}
