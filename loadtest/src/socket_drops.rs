//! Datagrams the kernel dropped because a process's UDP receive buffer was
//! full: the `drops` column of `/proc/<pid>/net/udp{,6}` for the sockets the
//! process holds (its `/proc/<pid>/fd` links `socket:[inode]`). Read for the
//! server and for the generator itself, so a run says where its loss
//! happened: in the server, or in a generator too busy to read its sockets.

use std::collections::{HashMap, HashSet};

use crate::process::proc_dir;

/// Drop counters of a process's UDP sockets, by socket inode.
#[derive(Debug, Clone, Default)]
pub struct SocketDrops(HashMap<u64, u64>);

impl SocketDrops {
    /// The counters of `pid`'s sockets now (None: this process); None when
    /// `/proc` cannot be read.
    pub fn read(pid: Option<u32>) -> Option<SocketDrops> {
        let dir = proc_dir(pid);
        let inodes = socket_inodes(&dir)?;
        let mut drops = HashMap::new();
        for table in ["udp", "udp6"] {
            let Ok(text) = std::fs::read_to_string(format!("{dir}/net/{table}")) else {
                continue;
            };
            drops.extend(parse_table(&text).filter(|(inode, _)| inodes.contains(inode)));
        }
        Some(SocketDrops(drops))
    }

    /// Drops since `before` over the sockets open now; a socket opened since
    /// counts from zero.
    pub fn since(&self, before: &SocketDrops) -> u64 {
        self.0
            .iter()
            .map(|(inode, n)| n.saturating_sub(before.0.get(inode).copied().unwrap_or(0)))
            .sum()
    }
}

/// Inodes of the sockets among a process's open files.
fn socket_inodes(dir: &str) -> Option<HashSet<u64>> {
    let entries = std::fs::read_dir(format!("{dir}/fd")).ok()?;
    Some(
        entries
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter_map(|target| {
                let s = target.to_str()?;
                s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
            })
            .collect(),
    )
}

/// (inode, drops) of every socket row of a `/proc/net/udp` table: after the
/// header, fields 9 and 12 (0-based) of each row.
fn parse_table(text: &str) -> impl Iterator<Item = (u64, u64)> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        Some((fields.get(9)?.parse().ok()?, fields.get(12)?.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_give_inode_and_drops() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
          123: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
          124: 0100007F:1F91 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 0\n";
        assert_eq!(
            parse_table(text).collect::<Vec<_>>(),
            vec![(4242, 17), (4243, 0)]
        );
    }

    #[test]
    fn drops_count_from_the_first_reading_and_new_sockets_from_zero() {
        let before = SocketDrops(HashMap::from([(1, 5), (2, 7)]));
        let after = SocketDrops(HashMap::from([(1, 9), (3, 4)]));
        assert_eq!(after.since(&before), 4 + 4);
    }

    #[test]
    fn a_full_socket_of_this_process_is_counted() -> std::io::Result<()> {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let tx = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let before = SocketDrops::read(None).expect("/proc/self");
        // Nobody reads `rx`: past its buffer (208 KiB by default, capped by
        // rmem_max) every datagram is dropped.
        let datagram = [0u8; 1200];
        for _ in 0..20_000 {
            tx.send_to(&datagram, rx.local_addr()?)?;
        }
        let after = SocketDrops::read(None).expect("/proc/self");
        assert!(
            after.since(&before) > 0,
            "no drops counted for a full socket"
        );
        Ok(())
    }
}
