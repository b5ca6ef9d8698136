//! The `/proc/net/dev` format.

use super::InterfaceStats;

/// Parses `/proc/net/dev` text: two header lines, then one `name: counters...` line per
/// interface (8 receive columns, then transmit columns). Lines that do not parse are
/// skipped (logged at debug).
pub fn parse_proc_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .filter(|line| !line.contains('|')) // The two header lines.
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| {
            let parsed = parse_line(line);
            if parsed.is_none() {
                tracing::debug!(line, "unparsable /proc/net/dev line");
            }
            parsed
        })
        .collect()
}

/// `  eth0: 1 2 3 4 5 6 7 8 9 10 11 12 ...`; the name cannot hold `:` or spaces, and old
/// kernels wrote no space after the colon.
fn parse_line(line: &str) -> Option<InterfaceStats> {
    let (name, counters) = line.split_once(':')?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let mut numbers = [0u64; 12];
    let mut fields = counters.split_ascii_whitespace();
    for slot in &mut numbers {
        *slot = fields.next()?.parse().ok()?;
    }
    let [
        rx_bytes,
        rx_packets,
        rx_errors,
        rx_dropped,
        _rx_fifo,
        _rx_frame,
        _rx_compressed,
        _rx_multicast,
        tx_bytes,
        tx_packets,
        tx_errors,
        tx_dropped,
    ] = numbers;
    Some(InterfaceStats {
        name: name.to_string(),
        rx_bytes,
        rx_packets,
        rx_errors,
        rx_dropped,
        tx_bytes,
        tx_packets,
        tx_errors,
        tx_dropped,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const FIXTURE: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  123456     789    0    0    0     0          0         0   123456     789    0    0    0     0       0          0
  eth0: 98765432  65432    1    2    0     0          0        10 12345678   43210    3    4    0     0       0          0
";

    #[test]
    fn test_parse_proc_net_dev_fixture() {
        let stats = parse_proc_net_dev(FIXTURE);
        assert_eq!(
            stats,
            vec![
                InterfaceStats {
                    name: "lo".into(),
                    rx_bytes: 123_456,
                    rx_packets: 789,
                    rx_errors: 0,
                    rx_dropped: 0,
                    tx_bytes: 123_456,
                    tx_packets: 789,
                    tx_errors: 0,
                    tx_dropped: 0,
                },
                InterfaceStats {
                    name: "eth0".into(),
                    rx_bytes: 98_765_432,
                    rx_packets: 65_432,
                    rx_errors: 1,
                    rx_dropped: 2,
                    tx_bytes: 12_345_678,
                    tx_packets: 43_210,
                    tx_errors: 3,
                    tx_dropped: 4,
                },
            ]
        );
    }

    #[test]
    fn test_parse_proc_net_dev_no_space_after_colon() {
        let stats = parse_proc_net_dev("eth1:5 6 7 8 0 0 0 0 9 10 11 12 0 0 0 0\n");
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].name, "eth1");
        assert_eq!(stats[0].rx_bytes, 5);
        assert_eq!(stats[0].tx_dropped, 12);
    }

    #[test]
    fn test_parse_proc_net_dev_skips_bad_lines() {
        let text = "garbage\n: 1 2 3\neth0: 1 2 3\neth1: 1 2 3 4 5 6 7 8 9 10 11 x\n\
                    ok: 1 2 3 4 5 6 7 8 9 10 11 12\n";
        let names: Vec<_> = parse_proc_net_dev(text)
            .into_iter()
            .map(|stats| stats.name)
            .collect();
        assert_eq!(names, vec!["ok"]);
    }

    /// The host's own `/proc/net/dev` always lists `lo`.
    #[test]
    fn test_parse_proc_net_dev_real_host() {
        let Ok(text) = std::fs::read_to_string("/proc/net/dev") else {
            return;
        };
        let stats = parse_proc_net_dev(&text);
        assert!(stats.iter().any(|stats| stats.name == "lo"), "{stats:?}");
    }
}
