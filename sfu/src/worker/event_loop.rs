//! The thin IO shell around [`WorkerCore`]: a single-threaded tokio runtime
//! that waits for a datagram, a command, the next timeout or shutdown, and
//! moves bytes and time into the core and transmits out of it. The UDP
//! socket is read in batches (`recvmmsg`, and GRO where the kernel offers
//! it, by `quinn-udp`) and written once per wake-up through the [`Outbox`]
//! (`sendmmsg` by `rustix`, GSO by `quinn-udp`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{ErrorKind, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::net::{TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn_udp::{RecvMeta, UdpSocketState};
use str0m::net::{Protocol, Transmit};
use tokio::io::Interest;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::core::{WorkerContext, WorkerCore};
use super::outbox::{BatchLimits, Datagram, Outbox, SendBatch};
use super::tcp::{TcpEvent, TcpIce};
use super::Command;
use crate::metrics::PacketCounts;

/// `recvmmsg` calls per wake-up before timers and commands get a turn
/// (each reads up to `quinn_udp::BATCH_SIZE` buffers).
const RECV_CALLS: usize = 2;
/// One receive buffer: with GRO the kernel may put up to 64 KiB of
/// same-sized datagrams from one source into it.
const RECV_SLOT: usize = 64 * 1024;
const RECV_BUFFER: usize = 2048;
/// Datagrams per `sendmmsg` call.
const SEND_BATCH: usize = 64;
/// How often the sent-packet counters reach the shared metrics.
const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// Kernel buffer asked for on the worker's socket, each way. While the
/// worker is busy for a moment (a 70 KB offer to apply, a keyframe to send
/// to hundreds) what arrives must wait, not be dropped: at Linux's default
/// of 208 KiB (~90 loopback datagrams of 1200 B, each costing ~2.3 KB of
/// buffer) a 25-person meeting lost 24,628 datagrams at the server's socket
/// while its members joined. The kernel caps it at `net.core.rmem_max` /
/// `wmem_max`.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Below this receive buffer the worker warns (the cap is too low).
const SOCKET_BUFFER_WARN_BYTES: usize = 1024 * 1024;

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

/// Route one transmit: ICE-TCP and relay sockets send at once, the worker's
/// own UDP socket at the end of the wake-up (batched).
fn send(
    outbox: &mut Outbox,
    tcp: &TcpIce,
    relays: &RelaySockets,
    counts: &mut PacketCounts,
    t: Transmit,
) {
    if t.proto == Protocol::Tcp {
        // A full queue or a closed connection loses the frame, like UDP.
        if tcp.send(t.destination, &t.contents) {
            counts.packets_sent += 1;
            counts.bytes_sent += t.contents.len() as u64;
        }
        return;
    }
    let relay = relays.borrow().get(&t.source).map(|(s, _)| s.clone());
    let Some(socket) = relay else {
        outbox.push(t.destination, t.contents.into());
        return;
    };
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
    let batch = ctx.udp_batch;
    // A dual-stack socket takes IPv4 destinations as IPv4-mapped IPv6.
    let v6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
    let udp = match UdpSocketState::new((&socket).into()) {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up the UDP socket");
            return;
        }
    };
    tracing::debug!(
        gso_segments = udp.max_gso_segments(),
        gro_segments = udp.gro_segments(),
        "UDP offloads"
    );
    size_socket_buffers(&udp, &socket);
    let mut core = WorkerCore::new(ctx, Instant::now());
    let mut recv_buf = vec![0u8; RECV_SLOT * quinn_udp::BATCH_SIZE];
    let mut recv_meta = vec![RecvMeta::default(); quinn_udp::BATCH_SIZE];
    let mut outbox = Outbox::default();
    let mut sent = PacketCounts::default();
    // Per worker, flushed with the packet counts: no shared cache line per wake-up.
    let timer_lag = metrics.worker_timer_lag.local();
    let mut next_flush = Instant::now();
    let (tcp, mut tcp_events) = TcpIce::new(tcp);
    let relays: RelaySockets = RefCell::new(HashMap::new());
    let (relay_tx, mut relay_rx) = mpsc::channel::<RelayDatagram>(1024);
    loop {
        let mut transmit = |t: Transmit| send(&mut outbox, &tcp, &relays, &mut sent, t);
        let deadline = tokio::time::Instant::from_std(core.next_timeout());
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                core.shutdown(Instant::now(), &mut transmit);
                break;
            }
            cmd = commands.recv() => {
                let Some(mut cmd) = cmd else { break };
                if let Command::OpenRelay { socket, .. } | Command::OpenBridge { socket, .. } = &mut cmd {
                    if let Some(s) = socket.take() {
                        add_relay_socket(&relays, s, relay_tx.clone());
                    }
                }
                core.handle_command(Instant::now(), cmd, &mut transmit);
                // At once: placement reads it for the next request.
                load.store(core.participant_count(), Ordering::Relaxed);
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
                for _ in 0..RECV_CALLS {
                    let mut slots: Vec<IoSliceMut<'_>> =
                        recv_buf.chunks_mut(RECV_SLOT).map(IoSliceMut::new).collect();
                    let got = socket.try_io(Interest::READABLE, || {
                        udp.recv((&socket).into(), &mut slots, &mut recv_meta)
                    });
                    let n = match got {
                        Ok(n) => n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // ICMP errors (peer gone) surface here; they concern one peer only.
                            tracing::trace!(error = %e, "recv error");
                            break;
                        }
                    };
                    for (slot, meta) in slots.iter().zip(&recv_meta).take(n) {
                        let stride = meta.stride.max(1);
                        for datagram in slot[..meta.len.min(slot.len())].chunks(stride) {
                            core.handle_datagram(now, Protocol::Udp, meta.addr, datagram, &mut transmit);
                        }
                    }
                    if n < recv_meta.len() {
                        break;
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
        if let Some(lag) = now.checked_duration_since(deadline.into_std()) {
            timer_lag.observe(lag.as_secs_f64());
        }
        core.handle_timeout(now, &mut transmit);
        send_outbox(&mut outbox, &udp, &socket, v6, batch, &mut sent);
        if now >= next_flush {
            next_flush = now + FLUSH_INTERVAL;
            sent.flush(&metrics);
            timer_lag.flush();
        }
        load.store(core.participant_count(), Ordering::Relaxed);
        for gone in core.closed_relay_sockets() {
            if let Some((_, reader)) = relays.borrow_mut().remove(&gone) {
                reader.cancel();
            }
        }
    }
    // What shutting down produced (DTLS close alerts, RTCP BYE) still leaves.
    send_outbox(&mut outbox, &udp, &socket, v6, batch, &mut sent);
    sent.flush(&metrics);
}

/// Send what the wake-up queued (`batch`: with `sendmmsg` and GSO).
fn send_outbox(
    outbox: &mut Outbox,
    udp: &UdpSocketState,
    socket: &UdpSocket,
    v6: bool,
    batch: bool,
    counts: &mut PacketCounts,
) {
    if outbox.is_empty() {
        return;
    }
    let limits = BatchLimits {
        segments: if batch { udp.max_gso_segments() } else { 1 },
        messages: if batch { SEND_BATCH } else { 1 },
    };
    let flushed = outbox.flush(limits, |b| send_batch(udp, socket, v6, b));
    counts.packets_sent += flushed.datagrams;
    counts.bytes_sent += flushed.bytes;
    counts.send_calls += flushed.calls;
}

/// Ask for [`SOCKET_BUFFER_BYTES`] each way; say what the kernel granted.
fn size_socket_buffers(udp: &UdpSocketState, socket: &UdpSocket) {
    let _ = udp.set_recv_buffer_size(socket.into(), SOCKET_BUFFER_BYTES);
    let _ = udp.set_send_buffer_size(socket.into(), SOCKET_BUFFER_BYTES);
    // Linux reports twice what it grants (the other half is bookkeeping).
    let recv = udp.recv_buffer_size(socket.into()).unwrap_or(0) / 2;
    let send = udp.send_buffer_size(socket.into()).unwrap_or(0) / 2;
    if recv < SOCKET_BUFFER_WARN_BYTES {
        tracing::warn!(
            granted = recv,
            wanted = SOCKET_BUFFER_BYTES,
            "small UDP receive buffer: media arriving while the worker is busy will be dropped; \
             raise net.core.rmem_max (sysctl -w net.core.rmem_max={SOCKET_BUFFER_BYTES})"
        );
    } else {
        tracing::debug!(recv, send, "UDP socket buffers");
    }
}

/// One send call on the worker's socket; how many datagrams left.
fn send_batch<S: AsFd>(udp: &UdpSocketState, socket: &S, v6: bool, batch: &SendBatch<'_>) -> usize {
    match *batch {
        SendBatch::Segmented {
            destination,
            contents,
            segment,
            datagrams,
        } => {
            let transmit = quinn_udp::Transmit {
                destination,
                ecn: None,
                contents,
                segment_size: Some(segment),
                src_ip: None,
            };
            // Errors other than a full buffer are logged (rate-limited) by
            // quinn-udp and reported as sent: UDP loss is repaired end to end.
            match udp.send(socket.into(), &transmit) {
                Ok(()) => datagrams,
                Err(_) => 0,
            }
        }
        SendBatch::Each(datagrams) => send_each(socket, v6, datagrams),
    }
}

/// `sendmmsg` until every datagram was offered; a full socket buffer drops
/// the rest, an error for one destination skips that one.
fn send_each<S: AsFd>(socket: &S, v6: bool, datagrams: &[Datagram]) -> usize {
    use rustix::net::addr::SocketAddrArg;
    use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags};
    let addrs: Vec<_> = datagrams
        .iter()
        .map(|(a, _)| match (v6, a) {
            (true, SocketAddr::V4(v4)) => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()).as_any()
            }
            _ => a.as_any(),
        })
        .collect();
    let iovs: Vec<[IoSlice<'_>; 1]> = datagrams.iter().map(|(_, c)| [IoSlice::new(c)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = datagrams
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut messages: Vec<MMsgHdr<'_>> = addrs
        .iter()
        .zip(&iovs)
        .zip(controls.iter_mut())
        .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
        .collect();
    let (mut offered, mut sent) = (0, 0);
    while offered < messages.len() {
        match sendmmsg(socket, &mut messages[offered..], SendFlags::empty()) {
            Ok(0) => break,
            Ok(k) => {
                offered += k;
                sent += k;
            }
            Err(rustix::io::Errno::AGAIN) => {
                tracing::trace!(
                    dropped = messages.len() - offered,
                    "send buffer full; dropping datagrams"
                );
                break;
            }
            Err(e) => {
                tracing::debug!(error = %e, dest = %datagrams[offered].0, "send failed");
                offered += 1;
            }
        }
    }
    sent
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::outbox::BatchLimits;

    /// The batched sends on real loopback sockets: every datagram arrives,
    /// whole and in order, whether it left in a GSO run or a `sendmmsg`.
    #[test]
    fn batched_sends_deliver_every_datagram_in_order() -> std::io::Result<()> {
        let sender = StdUdpSocket::bind("127.0.0.1:0")?;
        let udp = UdpSocketState::new((&sender).into())?;
        let receivers: Vec<StdUdpSocket> = (0..3)
            .map(|_| StdUdpSocket::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()?;
        let mut outbox = Outbox::default();
        let mut expected = vec![Vec::new(); receivers.len()];
        // Receiver 0: a GSO-able run (equal sizes, a short last one);
        // receivers 1 and 2: interleaved, one datagram each at a time.
        for i in 0..5u8 {
            let len = if i == 4 { 100 } else { 1100 };
            outbox.push(receivers[0].local_addr()?, vec![i; len]);
            expected[0].push(vec![i; len]);
        }
        for i in 0..6u8 {
            let r = 1 + usize::from(i % 2);
            outbox.push(receivers[r].local_addr()?, vec![100 + i; 700]);
            expected[r].push(vec![100 + i; 700]);
        }
        let limits = BatchLimits {
            segments: udp.max_gso_segments(),
            messages: 4,
        };
        let flushed = outbox.flush(limits, |b| send_batch(&udp, &sender, false, b));
        assert_eq!(flushed.datagrams, 11);
        assert!(flushed.calls < 11, "batched: {flushed:?}");
        let mut buf = [0u8; 2048];
        for (r, want) in receivers.iter().zip(&expected) {
            r.set_read_timeout(Some(Duration::from_secs(2)))?;
            for w in want {
                let n = r.recv(&mut buf)?;
                assert_eq!(&buf[..n], &w[..]);
            }
        }
        Ok(())
    }
}
