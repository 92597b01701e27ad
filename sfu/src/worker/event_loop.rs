//! The thin IO shell around [`WorkerCore`]: a single-threaded tokio runtime
//! that waits for a datagram, a command, the next timeout or shutdown, and
//! moves bytes and time into the core and transmits out of it.

use std::io::ErrorKind;
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

fn send(socket: &UdpSocket, tcp: &TcpIce, counts: &mut PacketCounts, t: Transmit) {
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
    loop {
        let mut transmit = |t: Transmit| send(&socket, &tcp, &mut sent, t);
        let deadline = tokio::time::Instant::from_std(core.next_timeout());
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                core.shutdown(Instant::now(), &mut transmit);
                break;
            }
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { break };
                core.handle_command(Instant::now(), cmd, &mut transmit);
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
    }
}
