//! A network device's driver statistics, as `ethtool -S` shows them, over the `SIOCETHTOOL`
//! ioctl: the number of statistics (`ETHTOOL_GSSET_INFO`), their names (`ETHTOOL_GSTRINGS`) and
//! their values (`ETHTOOL_GSTATS`). Ethtool's netlink interface carries only the standard
//! statistics, not a driver's own such as ENA's allowance counters, so the ioctl it is.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCETHTOOL: libc::Ioctl = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
/// The string set of `ethtool -S`.
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;
/// More statistics than any driver has (ENA: a few dozen plus about 20 a queue pair).
const MAX_STATS: usize = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum EthtoolError {
    #[error("ethtool {what} on {iface}: {source}")]
    Io {
        what: &'static str,
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("ethtool on {iface}: the driver reported {got} statistics, {want} expected")]
    Count {
        iface: String,
        got: usize,
        want: usize,
    },
    #[error("{0:?} is not an interface name")]
    Name(String),
}

/// `struct ethtool_sset_info` asking for one set: the header and room for its count.
#[repr(C)]
struct SsetInfo {
    cmd: u32,
    reserved: u32,
    sset_mask: u64,
    data: [u32; 1],
}

/// One `SIOCETHTOOL` call on `iface`, the command's buffer at `data`.
///
/// # Safety
/// `data` must point to a buffer that starts with the command's header and is large enough
/// for everything the kernel writes for that command.
unsafe fn ethtool_ioctl(
    fd: &OwnedFd,
    iface: &str,
    what: &'static str,
    data: *mut libc::c_char,
) -> Result<(), EthtoolError> {
    // SAFETY: ifreq is plain data (a name array and a union of integers, arrays and a
    // pointer): all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = iface.as_bytes();
    if name.is_empty() || name.len() >= ifr.ifr_name.len() || name.contains(&0) {
        return Err(EthtoolError::Name(iface.to_string()));
    }
    for (d, &s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = data;
    // SAFETY: `ifr` is a valid ifreq naming the device; what the kernel writes through
    // `ifru_data` fits by this function's contract.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL, &raw mut ifr) };
    if r < 0 {
        return Err(EthtoolError::Io {
            what,
            iface: iface.to_string(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The driver statistics of `iface` (in this network namespace): (name, value) in the
/// driver's order. Empty for a device without any (`lo`).
pub fn stats(iface: &str) -> Result<Vec<(String, u64)>, EthtoolError> {
    let io_err = |what, source| EthtoolError::Io {
        what,
        iface: iface.to_string(),
        source,
    };
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io_err("socket", io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };

    let mut info = SsetInfo {
        cmd: ETHTOOL_GSSET_INFO,
        reserved: 0,
        sset_mask: 1 << ETH_SS_STATS,
        data: [0],
    };
    // SAFETY: for one set asked, the kernel writes the header and one u32: `SsetInfo`.
    unsafe { ethtool_ioctl(&fd, iface, "GSSET_INFO", (&raw mut info).cast())? };
    if info.sset_mask & (1 << ETH_SS_STATS) == 0 {
        return Ok(Vec::new());
    }
    let n = info.data[0] as usize;
    if n == 0 {
        return Ok(Vec::new());
    }
    if n > MAX_STATS {
        return Err(EthtoolError::Count {
            iface: iface.to_string(),
            got: n,
            want: MAX_STATS,
        });
    }
    // The kernel writes as many entries as the driver has at the call, not as many as asked
    // for. That count changes only when the device's queues are reconfigured (`ethtool -L`,
    // XDP), which nothing on the appliance does, so the count just read holds, as ethtool(8)
    // itself assumes. Twice the room is a margin on top, and the count reported back is
    // checked.
    let room = 2 * n + 8;

    // struct ethtool_gstrings: cmd, string_set, len (u32 each), then len x 32 bytes.
    let mut strings = vec![0u8; 12 + room * ETH_GSTRING_LEN];
    strings[0..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
    strings[4..8].copy_from_slice(&ETH_SS_STATS.to_ne_bytes());
    strings[8..12].copy_from_slice(&(n as u32).to_ne_bytes());
    // SAFETY: the buffer holds the header and `room` names, at least the driver's count.
    unsafe { ethtool_ioctl(&fd, iface, "GSTRINGS", strings.as_mut_ptr().cast())? };
    let len = u32::from_ne_bytes([strings[8], strings[9], strings[10], strings[11]]) as usize;
    if len != n {
        return Err(EthtoolError::Count {
            iface: iface.to_string(),
            got: len,
            want: n,
        });
    }

    // struct ethtool_stats: cmd, n_stats (u32 each), then n_stats u64s; built of u64s for
    // their alignment.
    let mut values = vec![0u64; 1 + room];
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&ETHTOOL_GSTATS.to_ne_bytes());
    header[4..].copy_from_slice(&(n as u32).to_ne_bytes());
    values[0] = u64::from_ne_bytes(header);
    // SAFETY: the buffer holds the header and `room` values, at least the driver's count.
    unsafe { ethtool_ioctl(&fd, iface, "GSTATS", values.as_mut_ptr().cast())? };
    let header = values[0].to_ne_bytes();
    let got = u32::from_ne_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if got != n {
        return Err(EthtoolError::Count {
            iface: iface.to_string(),
            got,
            want: n,
        });
    }

    let names = strings[12..12 + n * ETH_GSTRING_LEN].chunks(ETH_GSTRING_LEN);
    Ok(names
        .zip(&values[1..=n])
        .map(|(raw, &v)| {
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            (String::from_utf8_lossy(&raw[..end]).into_owned(), v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_call() {
        for bad in ["", "sixteen-bytes-xx", "a\0b"] {
            assert!(matches!(stats(bad), Err(EthtoolError::Name(_))), "{bad:?}");
        }
    }

    #[test]
    fn loopback_has_no_statistics_and_a_missing_device_is_an_error() {
        // Any network namespace has lo; the test needs no privilege.
        assert_eq!(stats("lo").unwrap(), []);
        let e = stats("nosuchdev0").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("ethtool GSSET_INFO on nosuchdev0: "),
            "{e}"
        );
    }
}
