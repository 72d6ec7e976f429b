//! Kernel settings a NAT instance needs: forwarding on, redirects off, reverse-path filtering, a
//! conntrack table sized for the machine's memory with timeouts that follow RFC 5382 and
//! RFC 4787, and IPv6 off. The plan is pure; `apply` writes it below a root directory
//! (`/proc/sys` on the appliance, a temp dir in tests) and reads every value back.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where the per-namespace and global sysctls live.
pub const PROC_SYS: &str = "/proc/sys";
/// Where module parameters live; `nf_conntrack`'s hash size is one, not a sysctl.
pub const SYS: &str = "/sys";

const HASHSIZE: &str = "module/nf_conntrack/parameters/hashsize";
const BUCKETS_SYSCTL: &str = "net/netfilter/nf_conntrack_buckets";
const COUNT_SYSCTL: &str = "net/netfilter/nf_conntrack_count";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlSettings {
    /// The outside interface (already renamed), e.g. `ens5`.
    pub iface: String,
    /// 0 off, 1 strict, 2 loose. Loose suits a NAT box whose routes are asymmetric during setup.
    pub rp_filter: u8,
    /// `nf_conntrack_max` (global: writable only from the initial network namespace).
    pub conntrack_max: u32,
    /// Not part of `plan`: a module parameter, written by [`apply_conntrack_buckets`].
    pub conntrack_buckets: u32,
    pub tcp_established_timeout_s: u32,
    /// `SYN_SENT`, `SYN_RECV`, `FIN_WAIT`, `CLOSE_WAIT` and `LAST_ACK`: RFC 5382's
    /// "transitory" (partially open or partially closed) connections.
    pub tcp_transitory_timeout_s: u32,
    pub tcp_time_wait_timeout_s: u32,
    /// `nf_conntrack_udp_timeout`: unanswered UDP, or answered within its first 2 s.
    pub udp_timeout_s: u32,
    /// `nf_conntrack_udp_timeout_stream`: UDP with traffic both ways past its first 2 s.
    pub udp_timeout_stream_s: u32,
    /// The devices under [`IPV6_CONF`] (`lo` and the interfaces), whose IPv6 is turned off
    /// together with `all` and `default`; `None` where the kernel has no IPv6.
    pub ipv6_devices: Option<Vec<String>>,
}

/// Where the kernel lists its IPv6 devices; absent without IPv6 (or with `ipv6.disable=1`).
pub const IPV6_CONF: &str = "net/ipv6/conf";

/// The TCP states RFC 5382 calls transitory, as they are named in the
/// `nf_conntrack_tcp_timeout_*` sysctls.
pub const TCP_TRANSITORY_STATES: [&str; 5] =
    ["syn_sent", "syn_recv", "fin_wait", "close_wait", "last_ack"];

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("reading back {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} reads back {got:?} after writing {want:?}")]
    Mismatch {
        path: PathBuf,
        want: String,
        got: String,
    },
    #[error("{path} is {got:?}, expected {want:?}")]
    Drifted {
        path: PathBuf,
        want: String,
        got: String,
    },
    #[error("{path}: cannot parse {text:?}")]
    Parse { path: PathBuf, text: String },
}

pub type Result<T, E = SysctlError> = std::result::Result<T, E>;

/// Bytes per conntrack entry we budget for: the kernel's struct is about 320 bytes on 64-bit,
/// rounded up for the hash node and slab overhead.
pub const CONNTRACK_ENTRY_BUDGET: u64 = 320;

/// Conntrack table size for a machine with `mem_total_bytes` of RAM.
///
/// `max = RAM / 4096`, rounded to a power of two (up when within 3/4 of the next one, because
/// MemTotal is always somewhat below the instance's nominal size: a 512 MiB t4g.nano reports
/// about 470 MiB) and clamped to 65536..=4194304. A full table then takes about 8% of RAM
/// (320 B x RAM/4096): 131072 entries on 512 MiB, 262144 on 1 GiB, the cap at 16 GiB.
/// `buckets = max / 2`: chains stay at two entries when full, and a bucket costs 8 bytes.
pub fn conntrack_size_for_ram(mem_total_bytes: u64) -> (u32, u32) {
    const MIN: u64 = 1 << 16;
    const MAX: u64 = 1 << 22;
    let raw = (mem_total_bytes / 4096).clamp(MIN, MAX);
    // Largest power of two <= raw (raw >= MIN > 0), or the next one when raw is close to it.
    let floor = 1u64 << (63 - raw.leading_zeros());
    let max = if raw * 4 >= floor * 2 * 3 {
        floor * 2
    } else {
        floor
    };
    let max = max.clamp(MIN, MAX) as u32;
    (max, max / 2)
}

/// The sysctls to write, in order, as paths relative to `/proc/sys`.
pub fn plan(s: &SysctlSettings) -> Vec<(String, String)> {
    let mut p = vec![("net/ipv4/ip_forward".to_string(), "1".to_string())];
    for dev in ["all", "default", s.iface.as_str()] {
        p.push((format!("net/ipv4/conf/{dev}/send_redirects"), "0".into()));
    }
    // The effective value is max(all, iface), so both are set.
    for dev in ["all", s.iface.as_str()] {
        p.push((
            format!("net/ipv4/conf/{dev}/rp_filter"),
            s.rp_filter.to_string(),
        ));
    }
    p.push((
        "net/netfilter/nf_conntrack_max".into(),
        s.conntrack_max.to_string(),
    ));
    // Per-flow byte and packet counters (32 bytes an entry): the metrics count NAT traffic
    // with them, flowtable traffic included. Set before forwarding, since an entry gets its
    // counters only if accounting was on when it was created.
    p.push(("net/netfilter/nf_conntrack_acct".into(), "1".into()));
    let timeout = |p: &mut Vec<(String, String)>, name: &str, v: u32| {
        p.push((format!("net/netfilter/nf_conntrack_{name}"), v.to_string()));
    };
    timeout(
        &mut p,
        "tcp_timeout_established",
        s.tcp_established_timeout_s,
    );
    for state in TCP_TRANSITORY_STATES {
        timeout(
            &mut p,
            &format!("tcp_timeout_{state}"),
            s.tcp_transitory_timeout_s,
        );
    }
    timeout(&mut p, "tcp_timeout_time_wait", s.tcp_time_wait_timeout_s);
    timeout(&mut p, "udp_timeout", s.udp_timeout_s);
    timeout(&mut p, "udp_timeout_stream", s.udp_timeout_stream_s);
    if let Some(devices) = &s.ipv6_devices {
        // Nothing here manages IPv6 (no filter, no addresses, no routes): off everywhere.
        // Writing `all` turns it off on every device and on `default` too (new devices);
        // each is listed so the drift check sees one turned back on.
        let all = ["all", "default"].into_iter();
        for dev in all.clone().chain(devices.iter().map(String::as_str)) {
            p.push((format!("{IPV6_CONF}/{dev}/disable_ipv6"), "1".into()));
        }
        // Belt and braces for the moment between someone turning IPv6 back on and the drift
        // check: no router advertisement is taken (no SLAAC address, no default route).
        // `all` has no effect on accept_ra, so it is not written.
        for dev in std::iter::once("default").chain(devices.iter().map(String::as_str)) {
            p.push((format!("{IPV6_CONF}/{dev}/accept_ra"), "0".into()));
        }
    }
    p
}

/// The devices under [`IPV6_CONF`] below `root` but `all` and `default`, sorted; `None`
/// where the kernel has no IPv6.
pub fn ipv6_devices(root: &Path) -> Result<Option<Vec<String>>> {
    let dir = root.join(IPV6_CONF);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SysctlError::Read { path: dir, source }),
    };
    let mut devices = Vec::new();
    for e in entries {
        let e = e.map_err(|source| SysctlError::Read {
            path: dir.clone(),
            source,
        })?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "all" && name != "default" {
            devices.push(name);
        }
    }
    devices.sort();
    Ok(Some(devices))
}

fn write_verify(path: &Path, value: &str) -> Result<()> {
    fs::write(path, format!("{value}\n")).map_err(|source| SysctlError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })?;
    let got = fs::read_to_string(path).map_err(|source| SysctlError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if got.trim() != value.trim() {
        return Err(SysctlError::Mismatch {
            path: path.to_path_buf(),
            want: value.to_string(),
            got: got.trim().to_string(),
        });
    }
    Ok(())
}

/// Writes each entry below `root`, then reads it back; stops at the first failure, naming the key.
pub fn apply(root: &Path, plan: &[(String, String)]) -> Result<()> {
    for (key, value) in plan {
        write_verify(&root.join(key), value)?;
    }
    Ok(())
}

/// Reads every entry below `root` and compares, without writing: finds settings someone
/// changed after [`apply`]. Stops at the first difference, naming the key.
pub fn check(root: &Path, plan: &[(String, String)]) -> Result<()> {
    for (key, want) in plan {
        let path = root.join(key);
        let got = fs::read_to_string(&path).map_err(|source| SysctlError::Read {
            path: path.clone(),
            source,
        })?;
        if got.trim() != want.trim() {
            return Err(SysctlError::Drifted {
                path,
                want: want.clone(),
                got: got.trim().to_string(),
            });
        }
    }
    Ok(())
}

/// Whether `key` below `root` exists but has no write permission bits. The kernel makes the
/// global conntrack sysctls (`nf_conntrack_max`, `nf_conntrack_buckets`) mode 0444 in every
/// network namespace but the initial one: they belong to the host there, not to us.
pub fn is_read_only(root: &Path, key: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(root.join(key)).is_ok_and(|m| m.permissions().mode() & 0o222 == 0)
}

/// The sysctl holding the conntrack table size: global, see [`is_read_only`].
pub const CONNTRACK_MAX_SYSCTL: &str = "net/netfilter/nf_conntrack_max";

/// Sets the conntrack hash size: the module parameter below `sys_root` (`/sys`), or, when that
/// file is absent, the `nf_conntrack_buckets` sysctl below `proc_sys_root` (writable on newer
/// kernels).
pub fn apply_conntrack_buckets(sys_root: &Path, proc_sys_root: &Path, buckets: u32) -> Result<()> {
    let param = sys_root.join(HASHSIZE);
    let target = if param.exists() {
        param
    } else {
        proc_sys_root.join(BUCKETS_SYSCTL)
    };
    write_verify(&target, &buckets.to_string())
}

fn read_u64(path: &Path) -> Result<u64> {
    let text = fs::read_to_string(path).map_err(|source| SysctlError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.trim().parse().map_err(|_| SysctlError::Parse {
        path: path.to_path_buf(),
        text,
    })
}

/// Current number of conntrack entries.
pub fn conntrack_count(proc_sys_root: &Path) -> Result<u64> {
    read_u64(&proc_sys_root.join(COUNT_SYSCTL))
}

/// `MemTotal` from the text of `/proc/meminfo`, in bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    parse_meminfo(meminfo, "MemTotal")
}

/// The field `name` (`MemTotal`, `MemAvailable`) from the text of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(meminfo: &str, name: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(':')))?;
    let mut words = line[name.len() + 1..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// `MemTotal` of this machine, in bytes.
pub fn mem_total(proc_meminfo: &Path) -> Result<u64> {
    let text = fs::read_to_string(proc_meminfo).map_err(|source| SysctlError::Read {
        path: proc_meminfo.to_path_buf(),
        source,
    })?;
    parse_mem_total(&text).ok_or_else(|| SysctlError::Parse {
        path: proc_meminfo.to_path_buf(),
        text: text.lines().next().unwrap_or_default().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn settings() -> SysctlSettings {
        SysctlSettings {
            iface: "ens5".into(),
            rp_filter: 2,
            conntrack_max: 131072,
            conntrack_buckets: 65536,
            tcp_established_timeout_s: 7440,
            tcp_transitory_timeout_s: 240,
            tcp_time_wait_timeout_s: 120,
            udp_timeout_s: 120,
            udp_timeout_stream_s: 350,
            ipv6_devices: Some(vec!["ens5".into(), "lo".into()]),
        }
    }

    #[test]
    fn conntrack_sizes() {
        assert_eq!(conntrack_size_for_ram(512 * MIB), (131072, 65536));
        assert_eq!(conntrack_size_for_ram(1024 * MIB), (262144, 131072));
        // What a 512 MiB and a 1 GiB guest report as MemTotal still get their class's size.
        assert_eq!(conntrack_size_for_ram(470 * MIB).0, 131072);
        assert_eq!(conntrack_size_for_ram(980 * MIB).0, 262144);
        // Well below a class boundary rounds down.
        assert_eq!(conntrack_size_for_ram(330 * MIB).0, 65536);
        assert_eq!(conntrack_size_for_ram(3000 * MIB).0, 524288);
        assert_eq!(conntrack_size_for_ram(0), (65536, 32768));
        assert_eq!(conntrack_size_for_ram(128 * 1024 * MIB), (1 << 22, 1 << 21));
        assert_eq!(conntrack_size_for_ram(u64::MAX), (1 << 22, 1 << 21));
        for ram in [256 * MIB, 768 * MIB, 3000 * MIB, 8192 * MIB] {
            let (max, buckets) = conntrack_size_for_ram(ram);
            assert!(max.is_power_of_two());
            assert_eq!(buckets * 2, max);
            // The budget: a full table never takes more than about an eighth of RAM.
            assert!(u64::from(max) * CONNTRACK_ENTRY_BUDGET <= ram / 8 || max == 65536);
        }
    }

    #[test]
    fn plan_contents_and_order() {
        let p = plan(&settings());
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "net/ipv4/ip_forward",
                "net/ipv4/conf/all/send_redirects",
                "net/ipv4/conf/default/send_redirects",
                "net/ipv4/conf/ens5/send_redirects",
                "net/ipv4/conf/all/rp_filter",
                "net/ipv4/conf/ens5/rp_filter",
                "net/netfilter/nf_conntrack_max",
                "net/netfilter/nf_conntrack_acct",
                "net/netfilter/nf_conntrack_tcp_timeout_established",
                "net/netfilter/nf_conntrack_tcp_timeout_syn_sent",
                "net/netfilter/nf_conntrack_tcp_timeout_syn_recv",
                "net/netfilter/nf_conntrack_tcp_timeout_fin_wait",
                "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
                "net/netfilter/nf_conntrack_tcp_timeout_last_ack",
                "net/netfilter/nf_conntrack_tcp_timeout_time_wait",
                "net/netfilter/nf_conntrack_udp_timeout",
                "net/netfilter/nf_conntrack_udp_timeout_stream",
                "net/ipv6/conf/all/disable_ipv6",
                "net/ipv6/conf/default/disable_ipv6",
                "net/ipv6/conf/ens5/disable_ipv6",
                "net/ipv6/conf/lo/disable_ipv6",
                "net/ipv6/conf/default/accept_ra",
                "net/ipv6/conf/ens5/accept_ra",
                "net/ipv6/conf/lo/accept_ra",
            ]
        );
        let get = |k: &str| p.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        assert_eq!(get("net/ipv4/ip_forward"), Some("1"));
        assert_eq!(get("net/ipv4/conf/ens5/rp_filter"), Some("2"));
        assert_eq!(get("net/netfilter/nf_conntrack_max"), Some("131072"));
        assert_eq!(
            get("net/netfilter/nf_conntrack_tcp_timeout_syn_sent"),
            Some("240")
        );
        assert_eq!(
            get("net/netfilter/nf_conntrack_tcp_timeout_time_wait"),
            Some("120")
        );
        assert_eq!(get("net/netfilter/nf_conntrack_udp_timeout"), Some("120"));
        assert_eq!(
            get("net/netfilter/nf_conntrack_udp_timeout_stream"),
            Some("350")
        );
        assert_eq!(get("net/ipv6/conf/lo/disable_ipv6"), Some("1"));
        assert_eq!(get("net/ipv6/conf/ens5/accept_ra"), Some("0"));
        assert_eq!(plan(&settings()), p, "deterministic");
    }

    #[test]
    fn without_ipv6_nothing_of_it_is_planned() {
        let s = SysctlSettings {
            ipv6_devices: None,
            ..settings()
        };
        let p = plan(&s);
        assert!(p.iter().all(|(k, _)| !k.contains("ipv6")), "{p:?}");
        assert_eq!(p.len(), plan(&settings()).len() - 7);
    }

    #[test]
    fn ipv6_devices_are_listed_sorted_without_all_and_default() {
        let root = temp_root("ipv6");
        assert_eq!(ipv6_devices(&root).unwrap(), None, "no IPv6 in the kernel");
        for d in ["lo", "all", "wan0", "default", "eth1"] {
            fs::create_dir_all(root.join(IPV6_CONF).join(d)).unwrap();
        }
        assert_eq!(
            ipv6_devices(&root).unwrap(),
            Some(vec!["eth1".into(), "lo".into(), "wan0".into()])
        );
        fs::remove_dir_all(&root).unwrap();
    }

    fn temp_root(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nat-init-sysctl-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn apply_writes_and_verifies() {
        let root = temp_root("ok");
        let p = plan(&settings());
        for (k, _) in &p {
            let f = root.join(k);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(&f, "0\n").unwrap();
        }
        apply(&root, &p).unwrap();
        for (k, v) in &p {
            assert_eq!(fs::read_to_string(root.join(k)).unwrap(), format!("{v}\n"));
        }
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn check_finds_drift_without_writing() {
        let root = temp_root("check");
        let p = plan(&settings());
        for (k, v) in &p {
            let f = root.join(k);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(&f, format!("{v}\n")).unwrap();
        }
        check(&root, &p).unwrap();
        fs::write(root.join("net/ipv4/ip_forward"), "0\n").unwrap();
        let err = check(&root, &p).unwrap_err();
        assert!(
            matches!(&err, SysctlError::Drifted { got, .. } if got == "0"),
            "{err}"
        );
        assert!(
            err.to_string()
                .ends_with("ip_forward is \"0\", expected \"1\""),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(root.join("net/ipv4/ip_forward")).unwrap(),
            "0\n",
            "check does not write"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn read_only_detection() {
        use std::os::unix::fs::PermissionsExt;
        let root = temp_root("ro");
        let f = root.join(CONNTRACK_MAX_SYSCTL);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(&f, "65536\n").unwrap();
        assert!(!is_read_only(&root, CONNTRACK_MAX_SYSCTL));
        fs::set_permissions(&f, fs::Permissions::from_mode(0o444)).unwrap();
        assert!(is_read_only(&root, CONNTRACK_MAX_SYSCTL));
        assert!(
            !is_read_only(&root, "net/missing"),
            "absent is not read-only"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn apply_names_missing_key() {
        let root = temp_root("missing");
        let p = plan(&settings());
        let err = apply(&root, &p).unwrap_err();
        assert!(err.to_string().contains("net/ipv4/ip_forward"), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn buckets_prefer_module_parameter() {
        let sys = temp_root("sys");
        let proc = temp_root("proc");
        let param = sys.join(HASHSIZE);
        fs::create_dir_all(param.parent().unwrap()).unwrap();
        fs::write(&param, "1024\n").unwrap();
        apply_conntrack_buckets(&sys, &proc, 65536).unwrap();
        assert_eq!(fs::read_to_string(&param).unwrap().trim(), "65536");
        fs::remove_file(&param).unwrap();
        let sysctl = proc.join(BUCKETS_SYSCTL);
        fs::create_dir_all(sysctl.parent().unwrap()).unwrap();
        fs::write(&sysctl, "1024\n").unwrap();
        apply_conntrack_buckets(&sys, &proc, 4096).unwrap();
        assert_eq!(fs::read_to_string(&sysctl).unwrap().trim(), "4096");
        fs::write(proc.join(COUNT_SYSCTL), "17\n").unwrap();
        assert_eq!(conntrack_count(&proc).unwrap(), 17);
        fs::remove_dir_all(&sys).unwrap();
        fs::remove_dir_all(&proc).unwrap();
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:         507904 kB\nMemFree:          100 kB\n";
        assert_eq!(parse_mem_total(text), Some(507904 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: x kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: 5 MB\n"), None);
        assert!(parse_mem_total(&fs::read_to_string("/proc/meminfo").unwrap()).unwrap() > 0);
    }
}
