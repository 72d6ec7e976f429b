//! What the sysctl stage writes and says: the conntrack sizing (configured values that fit in
//! RAM, else sized from RAM) and the line once the values hold.

use crate::config::Config;
use crate::sysctl::CONNTRACK_ENTRY_BUDGET;

/// Bytes of one conntrack hash bucket (a pointer).
pub const CONNTRACK_BUCKET_BYTES: u64 = 8;

/// The share of `MemTotal` a full conntrack table and its hash may take: a quarter, so a full
/// table cannot push out what the kernel and nat-init need (the default takes about 8%).
pub const CONNTRACK_RAM_SHARE: u64 = 4;

/// The conntrack size and buckets to write, and an error text for each configured value that
/// was refused because it does not fit in RAM (the key, the value, the RAM and the limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackSizing {
    pub max: u32,
    pub buckets: u32,
    pub refused: Vec<String>,
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// Conntrack table size and buckets: configured values win when they fit in RAM; 0 sizes from
/// RAM, and buckets default to half the size.
///
/// The bound: a full table (`conntrack_max` x 320 bytes) plus its hash (`conntrack_buckets` x
/// 8 bytes) within a quarter of `MemTotal`. `conntrack_max` is checked with its default half
/// bucket an entry (324 bytes), so the default buckets always fit beside an accepted size;
/// `conntrack_buckets` against what the accepted size leaves. A refused value falls back to
/// its default: sized from RAM, half the size.
pub fn conntrack_sizing(cfg_max: u32, cfg_buckets: u32, mem_total_bytes: u64) -> ConntrackSizing {
    let (ram_max, _) = crate::sysctl::conntrack_size_for_ram(mem_total_bytes);
    let budget = mem_total_bytes / CONNTRACK_RAM_SHARE;
    let mut refused = Vec::new();
    let per_entry = CONNTRACK_ENTRY_BUDGET + CONNTRACK_BUCKET_BYTES / 2;
    let max_limit = budget / per_entry;
    let max = if cfg_max == 0 {
        ram_max
    } else if u64::from(cfg_max) > max_limit {
        refused.push(format!(
            "conntrack_max={cfg_max} does not fit in RAM: a full table takes {} ({per_entry} bytes an entry with its share of the hash), more than a quarter of MemTotal {} ({}: at most {max_limit} entries); using {ram_max}, sized from RAM",
            mib(u64::from(cfg_max) * per_entry),
            mib(mem_total_bytes),
            mib(budget),
        ));
        ram_max
    } else {
        cfg_max
    };
    let default_buckets = (max / 2).max(1);
    let left = budget.saturating_sub(u64::from(max) * CONNTRACK_ENTRY_BUDGET);
    let buckets_limit = left / CONNTRACK_BUCKET_BYTES;
    let buckets = if cfg_buckets == 0 {
        default_buckets
    } else if u64::from(cfg_buckets) > buckets_limit {
        refused.push(format!(
            "conntrack_buckets={cfg_buckets} does not fit in RAM: the hash takes {} ({CONNTRACK_BUCKET_BYTES} bytes a bucket), more than the {} a quarter of MemTotal {} leaves beside a full table of {max} entries (at most {buckets_limit} buckets); using {default_buckets}, half the size",
            mib(u64::from(cfg_buckets) * CONNTRACK_BUCKET_BYTES),
            mib(left),
            mib(mem_total_bytes),
        ));
        default_buckets
    } else {
        cfg_buckets
    };
    ConntrackSizing {
        max,
        buckets,
        refused,
    }
}

/// The info line once the sysctls hold. `conntrack` is the (size, buckets) written, or `None`
/// where the global conntrack size belongs to the host (shown as `host`); `ipv6` whether the
/// kernel has IPv6 (then turned off: `off`) or not (`absent`).
pub fn sysctl_line(cfg: &Config, conntrack: Option<(u32, u32)>, ipv6: bool) -> String {
    let (max, buckets) = match conntrack {
        Some((m, b)) => (m.to_string(), b.to_string()),
        None => ("host".to_string(), "host".to_string()),
    };
    format!(
        "sysctl ip_forward=1 send_redirects=0 rp_filter={} conntrack_max={max} conntrack_buckets={buckets} tcp_established_timeout={} tcp_transitory_timeout={} tcp_time_wait_timeout={} udp_timeout={} udp_timeout_stream={} ipv6={}",
        cfg.rp_filter,
        cfg.tcp_established_timeout,
        cfg.tcp_transitory_timeout,
        cfg.tcp_time_wait_timeout,
        cfg.udp_timeout,
        cfg.udp_timeout_stream,
        if ipv6 { "off" } else { "absent" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn sizes(s: &ConntrackSizing) -> (u32, u32) {
        (s.max, s.buckets)
    }

    #[test]
    fn conntrack_sizing_rules() {
        let s = conntrack_sizing(0, 0, 512 * MIB);
        assert_eq!((sizes(&s), s.refused.len()), ((131072, 65536), 0));
        assert_eq!(
            sizes(&conntrack_sizing(100_000, 0, 512 * MIB)),
            (100_000, 50_000)
        );
        assert_eq!(sizes(&conntrack_sizing(0, 4096, 512 * MIB)), (131072, 4096));
        assert_eq!(sizes(&conntrack_sizing(1, 0, 0)), (65536, 32768));
        assert_eq!(sizes(&conntrack_sizing(1, 0, 512 * MIB)), (1, 1));
    }

    #[test]
    fn conntrack_max_beyond_a_quarter_of_ram_is_refused() {
        // A quarter of 512 MiB is 128 MiB: 414252 entries of 324 bytes.
        let ram = 512 * MIB;
        let s = conntrack_sizing(414_252, 0, ram);
        assert_eq!((sizes(&s), s.refused.len()), ((414_252, 207_126), 0));
        let s = conntrack_sizing(414_253, 0, ram);
        assert_eq!(sizes(&s), (131072, 65536), "sized from RAM instead");
        assert_eq!(
            s.refused,
            [
                "conntrack_max=414253 does not fit in RAM: a full table takes 128 MiB (324 bytes an entry with its share of the hash), more than a quarter of MemTotal 512 MiB (128 MiB: at most 414252 entries); using 131072, sized from RAM"
            ]
        );
        // The sizes a 512 MiB t4g.nano's user-data might ask for.
        let s = conntrack_sizing(4_000_000, 0, 470 * MIB);
        assert_eq!(sizes(&s), (131072, 65536));
        assert!(s.refused[0].starts_with("conntrack_max=4000000 "), "{s:?}");
        assert!(s.refused[0].contains(" MemTotal 470 MiB "), "{s:?}");
    }

    #[test]
    fn conntrack_buckets_beyond_what_the_table_leaves_are_refused() {
        let ram = 512 * MIB;
        // 131072 entries take 40 MiB of the 128: 88 MiB left, 11534336 buckets.
        let s = conntrack_sizing(0, 11_534_336, ram);
        assert_eq!((sizes(&s), s.refused.len()), ((131072, 11_534_336), 0));
        let s = conntrack_sizing(0, 11_534_337, ram);
        assert_eq!(sizes(&s), (131072, 65536));
        assert_eq!(
            s.refused,
            [
                "conntrack_buckets=11534337 does not fit in RAM: the hash takes 88 MiB (8 bytes a bucket), more than the 88 MiB a quarter of MemTotal 512 MiB leaves beside a full table of 131072 entries (at most 11534336 buckets); using 65536, half the size"
            ]
        );
        // Both refused: each named, both defaults used.
        let s = conntrack_sizing(u32::MAX, u32::MAX, ram);
        assert_eq!(sizes(&s), (131072, 65536));
        assert_eq!(s.refused.len(), 2, "{s:?}");
        // An accepted size at the limit still leaves room for its default buckets.
        let s = conntrack_sizing(414_252, 207_126, ram);
        assert!(s.refused.is_empty(), "{s:?}");
    }

    #[test]
    fn sysctl_lines() {
        let cfg = Config {
            rp_filter: 2,
            tcp_established_timeout: 7440,
            ..Config::default()
        };
        assert_eq!(
            sysctl_line(&cfg, Some((131072, 65536)), true),
            "sysctl ip_forward=1 send_redirects=0 rp_filter=2 conntrack_max=131072 conntrack_buckets=65536 tcp_established_timeout=7440 tcp_transitory_timeout=240 tcp_time_wait_timeout=120 udp_timeout=120 udp_timeout_stream=350 ipv6=off"
        );
        assert!(
            sysctl_line(&cfg, None, true).contains(" conntrack_max=host conntrack_buckets=host ")
        );
        assert!(sysctl_line(&cfg, None, false).ends_with(" ipv6=absent"));
    }
}
