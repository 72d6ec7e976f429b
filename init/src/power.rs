//! Power: the ACPI power button through evdev, and the shutdown sequence
//! (SIGTERM, grace period, SIGKILL, sync, power off or reboot).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::Signal;

use crate::children::{ExitReason, describe_exit};

pub const EV_KEY: u16 = 1;
pub const KEY_POWER: u16 = 116;

/// `struct input_event`: a timeval (16 bytes on 64-bit) then type, code, value.
pub const INPUT_EVENT_SIZE: usize = std::mem::size_of::<libc::input_event>();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

/// Parses one native-endian `struct input_event`; the timestamp is skipped.
pub fn parse_event(raw: &[u8]) -> Option<InputEvent> {
    if raw.len() != INPUT_EVENT_SIZE {
        return None;
    }
    let t = INPUT_EVENT_SIZE - 8;
    Some(InputEvent {
        kind: u16::from_ne_bytes([raw[t], raw[t + 1]]),
        code: u16::from_ne_bytes([raw[t + 2], raw[t + 3]]),
        value: i32::from_ne_bytes([raw[t + 4], raw[t + 5], raw[t + 6], raw[t + 7]]),
    })
}

/// A press (not release or autorepeat) of the power key.
pub fn is_power_press(ev: &InputEvent) -> bool {
    ev.kind == EV_KEY && ev.code == KEY_POWER && ev.value == 1
}

/// Whether a buffer of whole events holds a power-button press.
pub fn contains_power_press(buf: &[u8]) -> bool {
    buf.chunks_exact(INPUT_EVENT_SIZE)
        .filter_map(parse_event)
        .any(|e| is_power_press(&e))
}

/// Rescans after modules load, in ms: the ACPI button may bind to evdev late.
pub const RESCAN_AFTER_MS: &[u64] = &[0, 250, 1000, 3000, 10_000];

/// The open /dev/input/event* devices.
#[derive(Debug, Default)]
pub struct InputDevices {
    devices: BTreeMap<PathBuf, File>,
}

impl InputDevices {
    /// Opens event devices not open yet; returns the paths newly opened.
    pub fn rescan(&mut self, dir: &Path) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with("event"))
            })
            .map(|e| e.path())
            .filter(|p| !self.devices.contains_key(p))
            .collect();
        paths.sort();
        let mut opened = Vec::new();
        for p in paths {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
                .open(&p);
            if let Ok(f) = file {
                self.devices.insert(p.clone(), f);
                opened.push(p);
            }
        }
        opened
    }

    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.devices.values().map(|f| f.as_fd()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Reads what is pending on the `index`th device (in `fds()` order); returns
    /// whether the power button was pressed. A device that errors is dropped.
    pub fn read_power_press(&mut self, index: usize) -> bool {
        let Some(path) = self.devices.keys().nth(index).cloned() else {
            return false;
        };
        let mut pressed = false;
        let mut buf = [0u8; INPUT_EVENT_SIZE * 16];
        loop {
            let Some(f) = self.devices.get_mut(&path) else {
                return pressed;
            };
            match f.read(&mut buf) {
                Ok(0) => {
                    self.devices.remove(&path);
                    return pressed;
                }
                Ok(n) => pressed |= contains_power_press(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return pressed,
                Err(_) => {
                    self.devices.remove(&path);
                    return pressed;
                }
            }
        }
    }
}

/// What the shutdown ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    PowerOff,
    Reboot,
}

/// The system calls the shutdown sequence needs; the real one is in main, a fake in tests.
pub trait System {
    /// Milliseconds on a monotonic clock.
    fn now_ms(&mut self) -> u64;
    /// kill(2); pid -1 means every process but init.
    fn kill(&mut self, pid: i32, sig: Signal) -> Result<(), Errno>;
    /// Non-blocking reap of every exited child; true in the second field when none are left.
    fn reap(&mut self) -> (Vec<(i32, ExitReason)>, bool);
    /// Waits up to `ms` for a child to exit.
    fn wait(&mut self, ms: u64);
    fn sync(&mut self);
    fn log(&mut self, line: String);
    /// Only returns if the kernel refused.
    fn halt(&mut self, how: Halt) -> Errno;
}

/// After SIGKILL, how long to wait for the kernel to tear processes down.
pub const KILL_WAIT_MS: u64 = 1000;
const WAIT_STEP_MS: u64 = 50;

/// Waits until no children are left or `deadline` passes; true if none are left.
fn wait_children(sys: &mut impl System, services: &mut Vec<(String, i32)>, deadline: u64) -> bool {
    loop {
        let (exited, none_left) = sys.reap();
        for (pid, reason) in exited {
            if let Some(i) = services.iter().position(|(_, p)| *p == pid) {
                let (name, _) = services.remove(i);
                sys.log(describe_exit(&name, reason));
            }
        }
        if none_left {
            return true;
        }
        let now = sys.now_ms();
        if now >= deadline {
            return false;
        }
        sys.wait((deadline - now).min(WAIT_STEP_MS));
    }
}

/// The whole shutdown: log, TERM services then everyone, wait up to `grace_ms`, KILL
/// the rest, sync and halt. Returns only if the kernel refuses to halt.
pub fn shutdown(
    sys: &mut impl System,
    reason: &str,
    mut services: Vec<(String, i32)>,
    grace_ms: u64,
    how: Halt,
) {
    sys.log(format!("shutting down ({reason})"));
    for (name, pid) in &services {
        if let Err(e) = sys.kill(*pid, Signal::SIGTERM) {
            sys.log(format!("SIGTERM to {name} pid={pid}: {}", e.desc()));
        }
    }
    // Anything else (helpers, reparented orphans); ESRCH just means nobody is left.
    let _ = sys.kill(-1, Signal::SIGTERM);
    // A configured grace near u64::MAX means "wait as long as it takes", not "no time".
    let deadline = sys.now_ms().saturating_add(grace_ms);
    if !wait_children(sys, &mut services, deadline) {
        let names: Vec<&str> = services.iter().map(|(n, _)| n.as_str()).collect();
        sys.log(format!(
            "sending SIGKILL to remaining processes ({})",
            names.join(" ")
        ));
        let _ = sys.kill(-1, Signal::SIGKILL);
        let deadline = sys.now_ms().saturating_add(KILL_WAIT_MS);
        wait_children(sys, &mut services, deadline);
    }
    sys.sync();
    sys.log(match how {
        Halt::PowerOff => "powering off".to_string(),
        Halt::Reboot => "rebooting".to_string(),
    });
    let err = sys.halt(how);
    sys.log(format!("reboot(2) failed: {}", err.desc()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut v = vec![0xAAu8; INPUT_EVENT_SIZE - 8];
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&code.to_ne_bytes());
        v.extend_from_slice(&value.to_ne_bytes());
        v
    }

    #[test]
    fn event_size_is_24_on_64_bit() {
        #[cfg(target_pointer_width = "64")]
        assert_eq!(INPUT_EVENT_SIZE, 24);
    }

    #[test]
    fn parses_power_press_and_ignores_others() {
        let press = parse_event(&raw_event(1, 116, 1)).unwrap();
        assert_eq!(
            press,
            InputEvent {
                kind: 1,
                code: 116,
                value: 1
            }
        );
        assert!(is_power_press(&press));
        assert!(
            !is_power_press(&parse_event(&raw_event(1, 116, 0)).unwrap()),
            "release"
        );
        assert!(
            !is_power_press(&parse_event(&raw_event(1, 116, 2)).unwrap()),
            "repeat"
        );
        assert!(
            !is_power_press(&parse_event(&raw_event(1, 30, 1)).unwrap()),
            "other key"
        );
        assert!(
            !is_power_press(&parse_event(&raw_event(0, 116, 1)).unwrap()),
            "EV_SYN"
        );
        assert_eq!(parse_event(&[0u8; 10]), None);
    }

    #[test]
    fn finds_press_in_a_batch() {
        let mut buf = raw_event(4, 4, 0x66); // EV_MSC scan code
        buf.extend(raw_event(1, 116, 1));
        buf.extend(raw_event(0, 0, 0));
        assert!(contains_power_press(&buf));
        assert!(!contains_power_press(&raw_event(1, 116, 0)));
    }

    #[test]
    fn rescan_opens_only_event_devices_once() {
        let dir = std::env::temp_dir().join(format!("init-input-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("event0"), raw_event(1, 116, 1)).unwrap();
        std::fs::write(dir.join("mice"), b"").unwrap();
        let mut devs = InputDevices::default();
        assert_eq!(devs.rescan(&dir), vec![dir.join("event0")]);
        assert!(devs.rescan(&dir).is_empty());
        assert_eq!(devs.fds().len(), 1);
        // A regular file reads its event, then EOF drops it.
        assert!(devs.read_power_press(0));
        assert!(devs.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Children that exit at given times after SIGTERM (None: ignore TERM, die on KILL).
    struct Fake {
        now: u64,
        children: Vec<(i32, Option<u64>)>,
        killed_all: bool,
        calls: Vec<String>,
        term_at: Option<u64>,
    }

    impl System for Fake {
        fn now_ms(&mut self) -> u64 {
            self.now
        }
        fn kill(&mut self, pid: i32, sig: Signal) -> Result<(), Errno> {
            self.calls.push(format!("kill {pid} {}", sig.as_str()));
            if sig == Signal::SIGTERM && self.term_at.is_none() {
                self.term_at = Some(self.now);
            }
            if pid == -1 && sig == Signal::SIGKILL {
                self.killed_all = true;
            }
            Ok(())
        }
        fn reap(&mut self) -> (Vec<(i32, ExitReason)>, bool) {
            let term = self.term_at.unwrap_or(u64::MAX);
            let (now, killed) = (self.now, self.killed_all);
            let mut out = Vec::new();
            self.children.retain(|(pid, after)| match after {
                Some(a) if now >= term.saturating_add(*a) => {
                    out.push((*pid, ExitReason::Status(0)));
                    false
                }
                _ if killed => {
                    out.push((*pid, ExitReason::Signal(9, false)));
                    false
                }
                _ => true,
            });
            (out, self.children.is_empty())
        }
        fn wait(&mut self, ms: u64) {
            assert!(ms > 0 && ms <= WAIT_STEP_MS);
            self.now += ms;
        }
        fn sync(&mut self) {
            self.calls.push("sync".into());
        }
        fn log(&mut self, line: String) {
            self.calls.push(format!("log {line}"));
        }
        fn halt(&mut self, how: Halt) -> Errno {
            self.calls.push(format!("halt {how:?}"));
            Errno::EPERM
        }
    }

    fn fake(children: Vec<(i32, Option<u64>)>) -> Fake {
        Fake {
            now: 1000,
            children,
            killed_all: false,
            calls: vec![],
            term_at: None,
        }
    }

    #[test]
    fn clean_shutdown_when_services_exit_on_term() {
        let mut f = fake(vec![(10, Some(100)), (11, Some(20))]);
        let services = vec![("a".to_string(), 10), ("b".to_string(), 11)];
        shutdown(&mut f, "power button", services, 3000, Halt::PowerOff);
        assert_eq!(
            f.calls,
            vec![
                "log shutting down (power button)",
                "kill 10 SIGTERM",
                "kill 11 SIGTERM",
                "kill -1 SIGTERM",
                "log b exited with status 0",
                "log a exited with status 0",
                "sync",
                "log powering off",
                "halt PowerOff",
                "log reboot(2) failed: Operation not permitted",
            ]
        );
        assert!(
            f.now < 1000 + 200,
            "no waiting for the full grace: {}",
            f.now
        );
    }

    #[test]
    fn huge_grace_saturates_instead_of_wrapping_to_no_grace() {
        let mut f = fake(vec![(10, Some(100))]);
        let services = vec![("a".to_string(), 10)];
        shutdown(&mut f, "SIGTERM", services, u64::MAX, Halt::PowerOff);
        assert!(f.calls.contains(&"log a exited with status 0".to_string()));
        assert!(
            !f.calls.iter().any(|c| c.ends_with("SIGKILL")),
            "{:?}",
            f.calls
        );
        assert!(f.now >= 1000 + 100, "waited for the service: {}", f.now);
    }

    #[test]
    fn stubborn_process_is_killed_after_grace() {
        let mut f = fake(vec![(10, Some(50)), (20, None)]);
        shutdown(
            &mut f,
            "SIGTERM",
            vec![("a".to_string(), 10)],
            3000,
            Halt::Reboot,
        );
        let kill_pos = f.calls.iter().position(|c| c == "kill -1 SIGKILL").unwrap();
        assert!(
            f.calls[kill_pos - 1].starts_with("log sending SIGKILL"),
            "{:?}",
            f.calls
        );
        assert!(f.calls.contains(&"log a exited with status 0".to_string()));
        assert_eq!(f.now, 1000 + 3000, "waited exactly the grace period");
        let tail: Vec<_> = f.calls[kill_pos + 1..].to_vec();
        assert_eq!(
            tail,
            vec![
                "sync",
                "log rebooting",
                "halt Reboot",
                "log reboot(2) failed: Operation not permitted"
            ]
        );
    }

    #[test]
    fn unkillable_process_does_not_block_halt() {
        struct Stuck(Fake);
        impl System for Stuck {
            fn now_ms(&mut self) -> u64 {
                self.0.now_ms()
            }
            fn kill(&mut self, pid: i32, sig: Signal) -> Result<(), Errno> {
                self.0.kill(pid, sig)
            }
            fn reap(&mut self) -> (Vec<(i32, ExitReason)>, bool) {
                (vec![], false)
            }
            fn wait(&mut self, ms: u64) {
                self.0.wait(ms)
            }
            fn sync(&mut self) {
                self.0.sync()
            }
            fn log(&mut self, line: String) {
                self.0.log(line)
            }
            fn halt(&mut self, how: Halt) -> Errno {
                self.0.halt(how)
            }
        }
        let mut s = Stuck(fake(vec![(10, None)]));
        shutdown(&mut s, "SIGPWR", vec![], 500, Halt::PowerOff);
        assert_eq!(s.0.now, 1000 + 500 + KILL_WAIT_MS);
        assert!(s.0.calls.contains(&"halt PowerOff".to_string()));
    }
}
