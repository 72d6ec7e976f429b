//! `init`: the generic PID 1 of the appliance image.
//!
//! The kernel runs `/init` (a symlink to `/sbin/init`) from the initramfs, which holds
//! the whole root file system in RAM. init mounts the API file systems, sets the
//! hostname, loads the kernel modules listed by the configuration, starts and
//! supervises the configured services, reaps every process, and powers off cleanly on
//! SIGTERM/SIGPWR, Ctrl-Alt-Del (reboot) or the ACPI power button (EC2 stop/terminate).
//!
//! It knows nothing about NAT: `nat-init` is just a service it runs. `cargo xtask image`
//! builds this crate for aarch64-unknown-linux-musl, places it in the initramfs and
//! renders `/etc/init.toml` (see `config`) and the module list from the image profile.
//!
//! PID 1 must never exit (the kernel would panic), so every step is contained: a failing
//! or panicking step is logged and the boot goes on; a main loop that keeps failing
//! syncs and reboots. `panic=10` on the kernel command line is the last backstop.

mod children;
mod config;
// Unit-tested in every build; only an init built with the feature uses it.
#[cfg(any(test, feature = "test-console"))]
#[cfg_attr(not(feature = "test-console"), allow(dead_code))]
mod console;
mod log;
mod modules;
mod mounts;
mod power;
mod signals;
mod supervise;

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::reboot::{RebootMode, reboot, set_cad_enabled};
use nix::sys::signal::{Signal, kill};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::Pid;

use crate::config::Config;
use crate::power::{Halt, InputDevices};
use crate::signals::{Action, Signals};
use crate::supervise::{Event, Supervisor};

const INPUT_DIR: &str = "/dev/input";
/// The longest the main loop sleeps without a deadline.
const IDLE_POLL_MS: u64 = 60_000;
/// Without a signalfd, children are reaped by polling this often.
const FALLBACK_POLL_MS: u64 = 200;
/// Consecutive failed main-loop iterations before giving up and rebooting.
const MAX_LOOP_FAILURES: u32 = 20;
/// init's own oom_score_adj: the OOM killer never picks PID 1 (its death is a kernel panic).
const INIT_OOM_SCORE_ADJ: &str = "-1000";

/// Milliseconds since the kernel started (CLOCK_BOOTTIME).
fn now_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| (t.tv_sec() as u64) * 1000 + (t.tv_nsec() as u64) / 1_000_000)
        .unwrap_or(0)
}

/// Runs one boot step, logging its error or panic; the boot goes on either way.
fn step<T>(name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            log!("{name} failed: {e:#}");
            None
        }
        // The panic hook has logged the details.
        Err(_) => {
            log!("{name} panicked");
            None
        }
    }
}

/// Everything the main loop works with.
struct Init {
    signals: Option<Signals>,
    #[cfg(feature = "test-console")]
    console: Option<console::Console>,
    /// The read ends of the running services' watchdog pipes, by pid.
    watchdogs: Vec<(i32, OwnedFd)>,
    supervisor: Supervisor,
    inputs: InputDevices,
    /// Absolute times (ms since boot) at which to look for new input devices.
    rescans: VecDeque<u64>,
    grace_ms: u64,
}

fn load_config() -> Config {
    let path = std::fs::read_to_string("/proc/cmdline")
        .ok()
        .and_then(|c| config::path_from_cmdline(&c))
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            log!("bad config, starting no services: {e:#}");
            Config::default()
        }
    }
}

fn load_modules(list: &Path) -> anyhow::Result<()> {
    let start = now_ms();
    let text =
        std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
    let (mods, errors) = modules::parse_list(&text);
    for e in &errors {
        log!("{}:{}: {}", list.display(), e.line, e.message);
    }
    let summary = modules::load_all(&mods, modules::load_one, |l| log!("{l}"));
    log!(
        "loaded {} modules in {} ms ({} failed)",
        summary.loaded,
        now_ms().saturating_sub(start),
        summary.failed + errors.len()
    );
    Ok(())
}

fn boot() -> Init {
    step("mounting file systems", || {
        for f in mounts::mount_all(mounts::MOUNTS, mounts::mount_one, mounts::create_dir) {
            log!("{f}");
        }
        Ok(())
    });
    step("opening /dev/kmsg", log::open_kmsg);
    step("opening /dev/console", || {
        log::reopen_console_if_needed().map(drop)
    });
    step("setting init's oom_score_adj", || {
        std::fs::write("/proc/self/oom_score_adj", INIT_OOM_SCORE_ADJ)
            .context("writing /proc/self/oom_score_adj")
    });
    step("creating /dev links", || {
        for f in mounts::dev_links() {
            log!("{f}");
        }
        Ok(())
    });
    // Ctrl-Alt-Del then arrives as SIGINT instead of an immediate reboot.
    step("disabling Ctrl-Alt-Del", || {
        set_cad_enabled(false).context("reboot(RB_DISABLE_CAD)")
    });
    let signals = step("creating signalfd", || Signals::new().context("signalfd"));

    let config = step("loading config", || Ok(load_config())).unwrap_or_default();
    if let Some(h) = &config.hostname {
        step("setting hostname", || {
            nix::unistd::sethostname(h).with_context(|| format!("sethostname {h}"))
        });
    }
    if let Some(list) = &config.modules {
        step("loading modules", || load_modules(list));
    }

    let after_modules = now_ms();
    let rescans = power::RESCAN_AFTER_MS
        .iter()
        .map(|d| after_modules + d)
        .collect();

    let mut init = Init {
        signals,
        #[cfg(feature = "test-console")]
        console: None,
        watchdogs: Vec::new(),
        supervisor: Supervisor::new(config.services, now_ms()),
        inputs: InputDevices::default(),
        rescans,
        grace_ms: config.shutdown_grace_ms,
    };
    step("starting services", || {
        init.supervise(Event::Timer, now_ms());
        Ok(())
    });
    log!("up in {} ms", now_ms());
    #[cfg(feature = "test-console")]
    if config.test_console {
        init.console = step("opening the test console", || {
            log!(
                "test console enabled: `init-test kill|stop <service>`, `init-test meminfo` and `init-test read <path>` are obeyed"
            );
            console::Console::open().context("opening /dev/console for reading")
        });
    }
    #[cfg(not(feature = "test-console"))]
    if config.test_console {
        log!("test_console = true ignored: this init is built without the test-console feature");
    }
    init
}

impl Init {
    /// Sends `signal` to a running service (`init-test kill` and `init-test stop`).
    #[cfg(feature = "test-console")]
    fn test_signal(&self, name: &str, signal: Signal) {
        match self
            .supervisor
            .running()
            .into_iter()
            .find(|(n, _)| n == name)
        {
            Some((_, pid)) => {
                log!("test console: sending {signal} to {name} pid={pid}");
                if let Err(e) = kill(Pid::from_raw(pid), signal) {
                    log!("test console: {signal} {name}: {e}");
                }
            }
            None => log!("test console: no running service {name:?}"),
        }
    }

    #[cfg(feature = "test-console")]
    fn test_meminfo(&self) {
        let read = |p: String| std::fs::read_to_string(p).unwrap_or_default();
        let rss = |pid: i32| console::kb_field(&read(format!("/proc/{pid}/status")), "VmRSS");
        let mut all = vec![("init".to_string(), rss(1))];
        for (name, pid) in self.supervisor.running() {
            all.push((name, rss(pid)));
        }
        log!(
            "test console: {}",
            console::meminfo_line(&read("/proc/meminfo".into()), &all)
        );
    }

    /// One pass of the main loop: wait for a signal, a key or a deadline, then act.
    fn iterate(&mut self) -> anyhow::Result<()> {
        let now = now_ms();
        let deadline = [self.supervisor.next_due(), self.rescans.front().copied()]
            .into_iter()
            .flatten()
            .min();
        let cap = if self.signals.is_some() {
            IDLE_POLL_MS
        } else {
            FALLBACK_POLL_MS
        };
        let wait = deadline.map_or(cap, |d| d.saturating_sub(now).min(cap));
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);

        #[cfg_attr(not(feature = "test-console"), allow(unused_variables))]
        let (signal_ready, console_ready, watchdog_ready, input_ready) = {
            let mut fds: Vec<PollFd> = Vec::new();
            if let Some(s) = &self.signals {
                fds.push(PollFd::new(s.fd(), PollFlags::POLLIN));
            }
            let signal_at = fds.len().checked_sub(1);
            #[cfg(feature = "test-console")]
            let console_at = self.console.as_ref().map(|c| {
                fds.push(PollFd::new(c.fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            #[cfg(not(feature = "test-console"))]
            let console_at: Option<usize> = None;
            let watchdogs_at = fds.len();
            fds.extend(
                self.watchdogs
                    .iter()
                    .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
            );
            let base = fds.len();
            fds.extend(
                self.inputs
                    .fds()
                    .into_iter()
                    .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
            );
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("poll"),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (
                signal_at.is_some_and(|i| ready(&fds[i])),
                console_at.is_some_and(|i| ready(&fds[i])),
                fds[watchdogs_at..base]
                    .iter()
                    .map(ready)
                    .collect::<Vec<_>>(),
                fds[base..].iter().map(ready).collect::<Vec<_>>(),
            )
        };
        #[cfg(feature = "test-console")]
        if console_ready {
            self.test_console();
        }
        self.read_watchdogs(&watchdog_ready);

        if signal_ready && let Some(s) = &self.signals {
            for signo in s.drain() {
                match signals::classify(signo) {
                    Action::PowerOff => self.shutdown(&signals::name(signo), Halt::PowerOff),
                    Action::Reboot => self.shutdown(&signals::name(signo), Halt::Reboot),
                    Action::Reap | Action::Ignore => {}
                }
            }
        }
        // Indices shift when a device is dropped, so read from the back.
        for (i, ready) in input_ready.iter().enumerate().rev() {
            if *ready && self.inputs.read_power_press(i) {
                self.shutdown("power button", Halt::PowerOff);
            }
        }

        let now = now_ms();
        for (pid, reason) in children::reap_all().exited {
            self.watchdogs.retain(|(p, _)| *p != pid);
            self.supervise(Event::Exited { pid, reason }, now);
        }
        while self.rescans.front().is_some_and(|t| *t <= now) {
            self.rescans.pop_front();
            for p in self.inputs.rescan(Path::new(INPUT_DIR)) {
                log!("watching {} for the power button", p.display());
            }
            if self.rescans.is_empty() && self.inputs.is_empty() {
                log!("no {INPUT_DIR}/event* devices: the power button will not work");
            }
        }
        self.supervise(Event::Timer, now);
        Ok(())
    }

    /// Obeys the commands in what the console has sent.
    #[cfg(feature = "test-console")]
    fn test_console(&mut self) {
        let Some(c) = &mut self.console else {
            return;
        };
        for command in c.read_commands() {
            match command {
                console::Command::Kill(name) => self.test_signal(&name, Signal::SIGKILL),
                console::Command::Stop(name) => self.test_signal(&name, Signal::SIGSTOP),
                console::Command::Meminfo => self.test_meminfo(),
                console::Command::Read(path) => match console::read_first_line(&path) {
                    Ok(line) => log!("test console: read {path} = {line}"),
                    Err(e) => log!("test console: read {path}: {e}"),
                },
            }
        }
    }

    /// Turns what the watchdog pipes that polled ready hold into pings; a closed one is
    /// dropped (its service exited or closed it, and then its deadline catches it).
    fn read_watchdogs(&mut self, ready: &[bool]) {
        let now = now_ms();
        let mut pings = Vec::new();
        let mut closed = Vec::new();
        for ((pid, fd), _) in self.watchdogs.iter().zip(ready).filter(|(_, r)| **r) {
            match children::drain_pings(fd) {
                Some(true) => pings.push(*pid),
                Some(false) => {}
                None => closed.push(*pid),
            }
        }
        self.watchdogs.retain(|(p, _)| !closed.contains(p));
        for pid in pings {
            self.supervise(Event::Ping { pid }, now);
        }
    }

    /// Hands an event to the supervisor, starts and kills what it asks for and logs its lines.
    fn supervise(&mut self, event: Event, now: u64) {
        let watchdogs = &mut self.watchdogs;
        let spawn = |s: &config::Service| {
            children::spawn(s).map(|started| {
                if let Some(fd) = started.watchdog {
                    watchdogs.push((started.pid, fd));
                }
                started.pid
            })
        };
        let kill = |pid: i32| kill(Pid::from_raw(pid), Signal::SIGKILL).map_err(|e| e.to_string());
        for l in supervise::drive(&mut self.supervisor, event, now, spawn, kill) {
            log!("{l}");
        }
    }

    fn shutdown(&mut self, reason: &str, how: Halt) -> ! {
        self.supervise(Event::Shutdown, now_ms());
        let mut sys = RealSystem {
            signals: self.signals.as_ref(),
        };
        power::shutdown(
            &mut sys,
            reason,
            self.supervisor.running(),
            self.grace_ms,
            how,
        );
        last_resort()
    }
}

/// The shutdown sequence's view of the real system.
struct RealSystem<'a> {
    signals: Option<&'a Signals>,
}

impl power::System for RealSystem<'_> {
    fn now_ms(&mut self) -> u64 {
        now_ms()
    }
    fn kill(&mut self, pid: i32, sig: Signal) -> Result<(), Errno> {
        kill(Pid::from_raw(pid), sig)
    }
    fn reap(&mut self) -> (Vec<(i32, children::ExitReason)>, bool) {
        let r = children::reap_all();
        (r.exited, r.no_children)
    }
    fn wait(&mut self, ms: u64) {
        match self.signals {
            Some(s) => {
                let mut fds = [PollFd::new(s.fd(), PollFlags::POLLIN)];
                let _ = poll(
                    &mut fds,
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
                );
                // Further TERMs or button presses change nothing now.
                s.drain();
            }
            None => std::thread::sleep(Duration::from_millis(ms)),
        }
    }
    fn sync(&mut self) {
        nix::unistd::sync();
    }
    fn log(&mut self, line: String) {
        log!("{line}");
    }
    fn halt(&mut self, how: Halt) -> Errno {
        let mode = match how {
            Halt::PowerOff => RebootMode::RB_POWER_OFF,
            Halt::Reboot => RebootMode::RB_AUTOBOOT,
        };
        match reboot(mode) {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }
}

/// Sync and reboot; if even that fails, idle forever rather than exit.
fn last_resort() -> ! {
    nix::unistd::sync();
    log!("rebooting");
    let _ = reboot(RebootMode::RB_AUTOBOOT);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() -> ! {
    // First, so nothing (not even SIGINT from Ctrl-Alt-Del) takes the default action.
    let blocked = signals::block_all();
    std::panic::set_hook(Box::new(|info| log!("panic: {info}")));
    if nix::unistd::getpid().as_raw() != 1 {
        // Mounting over the host and kill(-1) at shutdown would be harmful off PID 1.
        log!("not running as PID 1; exiting");
        std::process::exit(2);
    }
    if let Err(e) = blocked {
        log!("blocking signals failed: {}", e.desc());
    }

    let mut init = match catch_unwind(boot) {
        Ok(init) => init,
        Err(_) => {
            log!("boot panicked");
            last_resort()
        }
    };

    let mut failures = 0u32;
    loop {
        match catch_unwind(AssertUnwindSafe(|| init.iterate())) {
            Ok(Ok(())) => failures = 0,
            Ok(Err(e)) => {
                log!("main loop: {e:#}");
                failures += 1;
            }
            Err(_) => {
                log!("main loop panicked");
                failures += 1;
            }
        }
        if failures >= MAX_LOOP_FAILURES {
            log!("main loop failed {failures} times in a row");
            last_resort();
        }
        if failures > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_contains_errors_and_panics() {
        assert_eq!(step("ok", || Ok(7)), Some(7));
        assert_eq!(
            step("err", || -> anyhow::Result<u8> { anyhow::bail!("boom") }),
            None
        );
        assert_eq!(
            step("panic", || -> anyhow::Result<u8> {
                panic!("step panic (expected in test)")
            }),
            None
        );
    }

    #[test]
    fn boottime_clock_moves_forward() {
        let a = now_ms();
        std::thread::sleep(Duration::from_millis(20));
        let b = now_ms();
        assert!(a > 0 && b >= a + 20, "{a} {b}");
    }
}
