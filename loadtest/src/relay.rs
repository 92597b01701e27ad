//! The physical limit to compare the server with: a raw UDP relay on the
//! same machine (receive a 1200-byte datagram, copy it, send it to each of
//! N receivers; no crypto, no RTP). Its sending thread's CPU time gives
//! packets per CPU-second, the same unit the server is reported in.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// Receivers each datagram is copied to.
    #[arg(long, default_value_t = 100)]
    pub fanout: usize,
    /// Datagrams per second into the relay.
    #[arg(long, default_value_t = 1000)]
    pub pps: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RelayReport {
    pub fanout: usize,
    pub input_pps: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub send_errors: u64,
    pub relay_cpu_secs: f64,
    pub packets_out_per_cpu_sec: f64,
    pub ns_per_packet_out: f64,
    pub received_by_sinks: u64,
}

const PACKET: usize = 1200;

/// CPU seconds of the calling thread.
fn thread_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| {
            let after = s.get(s.rfind(')')? + 1..)?.to_string();
            let f: Vec<&str> = after.split_whitespace().collect();
            Some((f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?) as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

pub fn relay_baseline(args: &RelayArgs) -> std::io::Result<RelayReport> {
    let relay = UdpSocket::bind("127.0.0.1:0")?;
    relay.set_read_timeout(Some(Duration::from_millis(50)))?;
    let relay_addr = relay.local_addr()?;
    let sinks: Vec<UdpSocket> = (0..args.fanout)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let sink_addrs: Vec<SocketAddr> = sinks
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?;
    for s in &sinks {
        s.set_nonblocking(true)?;
    }
    let run = Duration::from_secs(args.duration);
    let start = Instant::now();
    let end = start + run;

    let pps = args.pps.max(1);
    let sender = std::thread::spawn(move || -> std::io::Result<u64> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        let payload = [0x5au8; PACKET];
        let mut sent = 0u64;
        while Instant::now() < end {
            let due = start + Duration::from_secs_f64(sent as f64 / pps as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if sock.send_to(&payload, relay_addr).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    });

    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut got = 0u64;
        let stop = end + Duration::from_millis(300);
        while Instant::now() < stop {
            let mut any = false;
            for s in &sinks {
                while s.recv_from(&mut buf).is_ok() {
                    got += 1;
                    any = true;
                }
            }
            if !any {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        got
    });

    let relay_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut copy = Vec::with_capacity(2048);
        let (mut packets_in, mut out, mut errors) = (0u64, 0u64, 0u64);
        let cpu0 = thread_cpu_secs();
        let stop = end + Duration::from_millis(200);
        while Instant::now() < stop {
            let Ok((n, _)) = relay.recv_from(&mut buf) else {
                continue;
            };
            packets_in += 1;
            copy.clear();
            copy.extend_from_slice(&buf[..n]);
            for to in &sink_addrs {
                match relay.send_to(&copy, to) {
                    Ok(_) => out += 1,
                    Err(_) => errors += 1,
                }
            }
        }
        (packets_in, out, errors, thread_cpu_secs() - cpu0)
    });

    let _sent = sender
        .join()
        .map_err(|_| std::io::Error::other("sender panicked"))??;
    let (packets_in, packets_out, send_errors, cpu) = relay_thread
        .join()
        .map_err(|_| std::io::Error::other("relay panicked"))?;
    let received = drain
        .join()
        .map_err(|_| std::io::Error::other("drain panicked"))?;
    Ok(RelayReport {
        fanout: args.fanout,
        input_pps: args.pps,
        packets_in,
        packets_out,
        send_errors,
        relay_cpu_secs: cpu,
        packets_out_per_cpu_sec: if cpu > 0.0 {
            packets_out as f64 / cpu
        } else {
            0.0
        },
        ns_per_packet_out: if packets_out > 0 {
            cpu * 1e9 / packets_out as f64
        } else {
            0.0
        },
        received_by_sinks: received,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_copies_every_datagram_to_every_receiver() {
        let r = relay_baseline(&RelayArgs {
            fanout: 3,
            pps: 200,
            duration: 1,
        })
        .expect("relay runs");
        assert!(r.packets_in >= 150, "{r:?}");
        assert_eq!(r.packets_out + r.send_errors, r.packets_in * 3);
        assert!(r.received_by_sinks > 0);
    }
}
