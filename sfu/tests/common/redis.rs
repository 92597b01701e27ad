//! A real `redis-server` for cluster tests (Debian's package), without
//! persistence, on a loopback port of its own; killed on drop. Also what
//! cluster tests need to start server processes beside it.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START: Duration = Duration::from_secs(15);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn log_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cluster-logs")
        .join(format!("{name}.log"))
}

pub fn log_file(name: &str) -> Stdio {
    let path = log_path(name);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::File::create(path)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// The lines of server `name`'s log (see [`log_file`]) that contain any
/// of `needles`: for a failing assertion to show what the server decided
/// (CI keeps only the test's output). A server logging into a file writes
/// plain text (colour only at a terminal).
pub fn log_lines(name: &str, needles: &[&str]) -> String {
    let text = std::fs::read_to_string(log_path(name)).unwrap_or_default();
    text.lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
        .map(|l| format!("{name}: {l}\n"))
        .collect()
}

/// Wait (bounded by `within`) until a server process started on `base`
/// answers HTTP; false if it never did.
pub async fn wait_answering(base: &str, within: Duration) -> bool {
    let http = reqwest::Client::new();
    let end = Instant::now() + within;
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// `redis-server` without persistence on a port of its own; killed on drop.
pub struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(log_file(&format!("redis-{}", self.port)))
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/install-test-deps.sh installs it)");
        self.child = Some(child);
        let end = Instant::now() + START;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < end, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
