//! Where the DHCP client's randomness comes from: transaction ids and retransmission jitter.
//! The machine takes it through [`Random`] so tests can be deterministic; the service uses the
//! kernel's random source ([`KernelRandom`]), so an off-path host cannot guess the next xid
//! and answer first.

use std::io;

/// A source of random numbers for [`Machine`](super::Machine).
pub trait Random {
    fn next_u32(&mut self) -> u32;
}

/// getrandom(2). Never blocks: before the kernel's pool is initialised (early boot without a
/// hardware RNG) it takes the kernel's best effort (`GRND_INSECURE`) rather than delay the
/// first DISCOVER. If the call fails altogether the clock stands in and the failure is kept
/// for the caller to report ([`KernelRandom::take_failure`]).
#[derive(Debug, Default)]
pub struct KernelRandom {
    failure: Option<io::Error>,
}

impl KernelRandom {
    pub fn new() -> KernelRandom {
        KernelRandom::default()
    }

    /// The last failure of getrandom(2) since the previous call, if any.
    pub fn take_failure(&mut self) -> Option<io::Error> {
        self.failure.take()
    }
}

impl Random for KernelRandom {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        match getrandom(&mut b) {
            Ok(()) => u32::from_ne_bytes(b),
            Err(e) => {
                self.failure = Some(e);
                clock_fallback()
            }
        }
    }
}

/// Fills `buf` from the kernel, without blocking.
fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut flags = libc::GRND_NONBLOCK;
    loop {
        // SAFETY: `buf` is valid for writing `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), flags) };
        if n >= 0 {
            // Reads of up to 256 bytes are never short once the call succeeds.
            return if n as usize == buf.len() {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "short getrandom read",
                ))
            };
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) if flags == libc::GRND_NONBLOCK => flags = libc::GRND_INSECURE,
            _ => return Err(e),
        }
    }
}

/// Something that differs between calls when the kernel gave nothing: the boot clock's
/// nanoseconds.
fn clock_fallback() -> u32 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_nsec() as u64 ^ (t.tv_sec() as u64).rotate_left(32))
        .unwrap_or(0);
    (now ^ (now >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_random_differs_between_calls_and_reports_no_failure() {
        let mut r = KernelRandom::new();
        let v: Vec<u32> = (0..8).map(|_| r.next_u32()).collect();
        let mut d = v.clone();
        d.sort_unstable();
        d.dedup();
        // A repeat among eight 32-bit values: about one chance in 150 million.
        assert_eq!(d.len(), v.len(), "{v:?}");
        assert!(r.take_failure().is_none());
    }
}
