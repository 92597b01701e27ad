//! CPU time and memory of a process from `/proc/<pid>` (the server's with
//! `--server-pid`, and the generator's own), and counters scraped from the
//! server's Prometheus `/metrics`.

use std::time::Duration;

/// Linux reports CPU time in clock ticks of 1/100 s (USER_HZ on every
/// architecture the kernel supports today).
const TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcSample {
    /// User plus system CPU seconds since the process started.
    pub cpu_secs: f64,
    pub rss_bytes: u64,
    /// Peak resident set size (VmHWM).
    pub peak_rss_bytes: u64,
    pub threads: u64,
}

/// The `/proc` directory of `pid`; None: this process.
pub fn proc_dir(pid: Option<u32>) -> String {
    pid.map_or_else(|| "/proc/self".to_string(), |p| format!("/proc/{p}"))
}

/// `pid` None: this process.
pub fn sample(pid: Option<u32>) -> Option<ProcSample> {
    let dir = proc_dir(pid);
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    Some(ProcSample {
        cpu_secs: parse_cpu(&stat)?,
        rss_bytes: status_kib(&status, "VmRSS:")? * 1024,
        peak_rss_bytes: status_kib(&status, "VmHWM:")? * 1024,
        threads: status_kib(&status, "Threads:").unwrap_or(0),
    })
}

/// utime + stime from a `/proc/<pid>/stat` line (fields 14 and 15; the
/// command name in field 2 may contain spaces, so count from its `)`).
fn parse_cpu(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ")": field 3 is at index 0, so utime (14) is at 11, stime at 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The sample lines of series `name` (any labels) in a Prometheus text
/// exposition; not those of names it is a prefix of.
fn series_lines<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(move |l| l.split(['{', ' ']).next() == Some(name))
}

/// Sum of one metric over its labels in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = false;
    let sum = series_lines(text, name)
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .inspect(|_| found = true)
        .sum();
    found.then_some(sum)
}

/// Cumulative bucket counts of a Prometheus histogram, summed over its
/// other labels: (upper bound `le`, count), in increasing order of bound.
pub fn histogram_buckets(text: &str, name: &str) -> Option<Vec<(f64, f64)>> {
    let series = format!("{name}_bucket");
    let mut buckets: Vec<(f64, f64)> = vec![];
    for line in series_lines(text, &series) {
        let le = line.split("le=\"").nth(1)?.split('"').next()?;
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().ok()?
        };
        let count: f64 = line.rsplit(' ').next()?.parse().ok()?;
        match buckets.iter_mut().find(|(bound, _)| *bound == le) {
            Some((_, c)) => *c += count,
            None => buckets.push((le, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    (!buckets.is_empty()).then_some(buckets)
}

/// The upper bound of the bucket holding quantile `q` of what a histogram
/// counted between two readings, and how many observations that was; None
/// when nothing was observed.
pub fn quantile_bound(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<(f64, f64)> {
    let counted = |bound: f64| -> f64 {
        let of = |b: &[(f64, f64)]| b.iter().find(|(le, _)| *le == bound).map_or(0.0, |x| x.1);
        of(after) - of(before)
    };
    let total = counted(f64::INFINITY);
    if total <= 0.0 {
        return None;
    }
    after
        .iter()
        .find(|(le, _)| counted(*le) >= q * total)
        .map(|(le, _)| (*le, total))
}

/// The server's `/metrics` text.
pub async fn scrape(http: &reqwest::Client, base: &str) -> Option<String> {
    let resp = http
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    resp.text().await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_of_this_process_are_read() {
        let s = sample(None).expect("/proc/self");
        assert!(s.rss_bytes > 0 && s.peak_rss_bytes >= s.rss_bytes);
        assert!(s.threads >= 1);
    }

    #[test]
    fn stat_with_spaces_in_the_name_parses() {
        let stat = "42 (my (odd) proc) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu(stat), Some(3.0));
    }

    #[test]
    fn histogram_quantiles_come_from_the_counts_between_two_readings() {
        let at = |counts: [u64; 3]| {
            format!(
                "h_bucket{{node=\"a\",le=\"0.001\"}} {}\nh_bucket{{node=\"a\",le=\"0.01\"}} {}\n\
                 h_bucket{{node=\"a\",le=\"+Inf\"}} {}\nh_count{{node=\"a\"}} {}\n",
                counts[0], counts[1], counts[2], counts[2]
            )
        };
        let before = histogram_buckets(&at([90, 100, 100]), "h").expect("buckets");
        // Since then: 10 within 1 ms, 80 within 10 ms, 10 above.
        let after = histogram_buckets(&at([100, 180, 200]), "h").expect("buckets");
        assert_eq!(quantile_bound(&before, &after, 0.5), Some((0.01, 100.0)));
        assert_eq!(
            quantile_bound(&before, &after, 0.99),
            Some((f64::INFINITY, 100.0))
        );
        assert_eq!(quantile_bound(&after, &after, 0.5), None);
        assert_eq!(histogram_buckets("x 1\n", "h"), None);
    }

    #[test]
    fn metric_sums_over_labels_and_ignores_prefixes() {
        let text = "# HELP x\nsfu_packets_sent_total 10\nsfu_packets_sent_total_x 5\nsfu_frames{kind=\"a\"} 2\nsfu_frames{kind=\"b\"} 3\n";
        assert_eq!(metric_sum(text, "sfu_packets_sent_total"), Some(10.0));
        assert_eq!(metric_sum(text, "sfu_frames"), Some(5.0));
        assert_eq!(metric_sum(text, "missing"), None);
    }
}
