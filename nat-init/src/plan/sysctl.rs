//! What the sysctl stage writes and says: the conntrack sizing (configured values, else sized
//! from RAM) and the line once the values hold.

use crate::config::Config;

/// Conntrack table size and buckets: configured values win; 0 sizes from RAM, and buckets
/// default to half the size.
pub fn conntrack_sizing(cfg_max: u32, cfg_buckets: u32, mem_total_bytes: u64) -> (u32, u32) {
    let (ram_max, _) = crate::sysctl::conntrack_size_for_ram(mem_total_bytes);
    let max = if cfg_max == 0 { ram_max } else { cfg_max };
    let buckets = if cfg_buckets == 0 {
        (max / 2).max(1)
    } else {
        cfg_buckets
    };
    (max, buckets)
}

/// The info line once the sysctls hold. `conntrack` is the (size, buckets) written, or `None`
/// where the global conntrack size belongs to the host (shown as `host`).
pub fn sysctl_line(cfg: &Config, conntrack: Option<(u32, u32)>) -> String {
    let (max, buckets) = match conntrack {
        Some((m, b)) => (m.to_string(), b.to_string()),
        None => ("host".to_string(), "host".to_string()),
    };
    format!(
        "sysctl ip_forward=1 send_redirects=0 rp_filter={} conntrack_max={max} conntrack_buckets={buckets} tcp_established_timeout={}",
        cfg.rp_filter, cfg.tcp_established_timeout
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_sizing_rules() {
        const MIB: u64 = 1 << 20;
        assert_eq!(conntrack_sizing(0, 0, 512 * MIB), (131072, 65536));
        assert_eq!(conntrack_sizing(100_000, 0, 512 * MIB), (100_000, 50_000));
        assert_eq!(conntrack_sizing(0, 4096, 512 * MIB), (131072, 4096));
        assert_eq!(conntrack_sizing(1, 0, 0), (1, 1));
    }

    #[test]
    fn sysctl_lines() {
        let cfg = Config {
            rp_filter: 2,
            tcp_established_timeout: 7440,
            ..Config::default()
        };
        assert_eq!(
            sysctl_line(&cfg, Some((131072, 65536))),
            "sysctl ip_forward=1 send_redirects=0 rp_filter=2 conntrack_max=131072 conntrack_buckets=65536 tcp_established_timeout=7440"
        );
        assert!(sysctl_line(&cfg, None).contains(" conntrack_max=host conntrack_buckets=host "));
    }
}
