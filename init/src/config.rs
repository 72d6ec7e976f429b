//! The init configuration, /etc/init.toml, rendered into the image by xtask.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// Where the configuration lives unless `init.config=` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/init.toml";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Set with sethostname(2) when present.
    pub hostname: Option<String>,
    /// The ordered module list file (see `modules`).
    pub modules: Option<PathBuf>,
    /// How long services get between SIGTERM and SIGKILL at shutdown.
    #[serde(default = "default_grace")]
    pub shutdown_grace_ms: u64,
    /// Test images only: obey `init-test kill <service>` lines on the console.
    #[serde(default)]
    pub test_console: bool,
    /// Started in this order.
    #[serde(default, rename = "service")]
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub path: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// Added to the minimal environment `PATH=/sbin:/bin`. Sorted, so spawning is deterministic.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_restart_min")]
    pub restart_min_ms: u64,
    #[serde(default = "default_restart_max")]
    pub restart_max_ms: u64,
    /// Liveness: the service must write to the fd named by `INIT_WATCHDOG_FD` at least this
    /// often (from its start on), or init kills and restarts it. 0 turns the watchdog off.
    #[serde(default)]
    pub watchdog_ms: u64,
    /// Written to the child's /proc/self/oom_score_adj before exec. 0 by default: without it
    /// a service would inherit init's -1000 and be the one process the OOM killer never picks.
    #[serde(default)]
    pub oom_score_adj: i32,
}

/// The shortest watchdog interval: the service pings every half of it, and a shorter one
/// would have init killing healthy services that were merely descheduled for a moment.
pub const MIN_WATCHDOG_MS: u64 = 1000;
/// The longest: a day (a longer silence is not "alive" in any useful sense).
pub const MAX_WATCHDOG_MS: u64 = 86_400_000;
/// The longest restart delay: a day. Longer is a typo that would leave a service down for good.
pub const MAX_RESTART_MS: u64 = 86_400_000;

fn default_grace() -> u64 {
    3000
}
fn default_restart_min() -> u64 {
    200
}
fn default_restart_max() -> u64 {
    30_000
}

impl Config {
    /// Parses and validates a configuration text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text).context("parsing TOML")?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(h) = &self.hostname
            && (h.is_empty() || h.len() > 64 || h.contains('\0'))
        {
            bail!("hostname {h:?} must be 1 to 64 bytes without NUL");
        }
        let mut names = BTreeSet::new();
        for s in &self.services {
            if s.name.is_empty() || s.name.contains(char::is_whitespace) {
                bail!("service name {:?} must be non-empty without spaces", s.name);
            }
            if !names.insert(s.name.as_str()) {
                bail!("service {:?} is defined twice", s.name);
            }
            if !s.path.is_absolute() {
                bail!(
                    "service {}: path {} must be absolute",
                    s.name,
                    s.path.display()
                );
            }
            if s.restart_min_ms == 0 || s.restart_min_ms > s.restart_max_ms {
                bail!(
                    "service {}: need 0 < restart_min_ms ({}) <= restart_max_ms ({})",
                    s.name,
                    s.restart_min_ms,
                    s.restart_max_ms
                );
            }
            if s.restart_max_ms > MAX_RESTART_MS {
                bail!(
                    "service {}: restart_max_ms ({}) must be at most {MAX_RESTART_MS} (a day)",
                    s.name,
                    s.restart_max_ms
                );
            }
            if s.watchdog_ms != 0 && !(MIN_WATCHDOG_MS..=MAX_WATCHDOG_MS).contains(&s.watchdog_ms) {
                bail!(
                    "service {}: watchdog_ms ({}) must be 0 (off) or {MIN_WATCHDOG_MS} to {MAX_WATCHDOG_MS}",
                    s.name,
                    s.watchdog_ms
                );
            }
            if !(-1000..=1000).contains(&s.oom_score_adj) {
                bail!(
                    "service {}: oom_score_adj ({}) must be -1000 to 1000",
                    s.name,
                    s.oom_score_adj
                );
            }
            for (k, v) in &s.env {
                if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                    bail!("service {}: bad environment variable {k:?}", s.name);
                }
            }
            if s.args.iter().any(|a| a.contains('\0')) {
                bail!("service {}: an argument contains NUL", s.name);
            }
        }
        Ok(())
    }
}

/// The value of `init.config=` on the kernel command line, if any (last one wins).
pub fn path_from_cmdline(cmdline: &str) -> Option<PathBuf> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("init.config="))
        .rfind(|p| !p.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
hostname = "nat"
modules = "/etc/init/modules.list"
shutdown_grace_ms = 1500
[[service]]
name = "nat-init"
path = "/sbin/nat-init"
args = ["--verbose"]
env = { RUST_BACKTRACE = "1" }
restart_min_ms = 100
restart_max_ms = 5000
watchdog_ms = 30000
oom_score_adj = -900
[[service]]
name = "heartbeat"
path = "/sbin/heartbeat"
"#;

    #[test]
    fn full_config_parses() {
        let c = Config::parse(FULL).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("nat"));
        assert_eq!(c.modules, Some(PathBuf::from("/etc/init/modules.list")));
        assert_eq!(c.shutdown_grace_ms, 1500);
        assert_eq!(c.services.len(), 2);
        let s = &c.services[0];
        assert_eq!(s.name, "nat-init");
        assert_eq!(s.args, vec!["--verbose"]);
        assert_eq!(s.env.get("RUST_BACKTRACE").map(String::as_str), Some("1"));
        assert_eq!((s.restart_min_ms, s.restart_max_ms), (100, 5000));
        assert_eq!((s.watchdog_ms, s.oom_score_adj), (30_000, -900));
    }

    #[test]
    fn defaults_apply() {
        let c = Config::parse(FULL).unwrap();
        let s = &c.services[1];
        assert!(s.args.is_empty() && s.env.is_empty());
        assert_eq!((s.restart_min_ms, s.restart_max_ms), (200, 30_000));
        assert_eq!((s.watchdog_ms, s.oom_score_adj), (0, 0));
        let empty = Config::parse("").unwrap();
        assert_eq!(empty.shutdown_grace_ms, 3000);
        assert!(empty.services.is_empty() && empty.hostname.is_none() && empty.modules.is_none());
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = Config::parse("hostnme = \"x\"").unwrap_err();
        assert!(format!("{err:#}").contains("hostnme"), "{err:#}");
        let err = Config::parse("[[service]]\nname=\"a\"\npath=\"/a\"\nrestart=1\n").unwrap_err();
        assert!(format!("{err:#}").contains("restart"), "{err:#}");
    }

    #[test]
    fn missing_required_service_field_is_rejected() {
        assert!(Config::parse("[[service]]\nname = \"a\"\n").is_err());
    }

    #[test]
    fn invalid_services_are_rejected() {
        let dup = "[[service]]\nname=\"a\"\npath=\"/a\"\n[[service]]\nname=\"a\"\npath=\"/b\"\n";
        assert!(format!("{:#}", Config::parse(dup).unwrap_err()).contains("twice"));
        assert!(Config::parse("[[service]]\nname=\"a\"\npath=\"rel\"\n").is_err());
        let backoff = "[[service]]\nname=\"a\"\npath=\"/a\"\nrestart_min_ms=10\nrestart_max_ms=5\n";
        assert!(Config::parse(backoff).is_err());
        let env = "[[service]]\nname=\"a\"\npath=\"/a\"\nenv={\"A=B\"=\"c\"}\n";
        assert!(Config::parse(env).is_err());
        assert!(Config::parse("hostname = \"\"").is_err());
    }

    #[test]
    fn restart_delays_are_capped_at_a_day() {
        let svc =
            |max: u64| format!("[[service]]\nname=\"a\"\npath=\"/a\"\nrestart_max_ms={max}\n");
        assert!(Config::parse(&svc(MAX_RESTART_MS)).is_ok());
        for bad in [MAX_RESTART_MS + 1, i64::MAX as u64] {
            let err = format!("{:#}", Config::parse(&svc(bad)).unwrap_err());
            assert!(err.contains(&format!("restart_max_ms ({bad})")), "{err}");
        }
    }

    #[test]
    fn watchdog_and_oom_score_adj_are_range_checked() {
        let svc = |extra: &str| format!("[[service]]\nname=\"a\"\npath=\"/a\"\n{extra}\n");
        for ok in [
            "watchdog_ms = 0",
            "watchdog_ms = 1000",
            "watchdog_ms = 86400000",
            "oom_score_adj = -1000",
            "oom_score_adj = 1000",
        ] {
            assert!(Config::parse(&svc(ok)).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("watchdog_ms = 999", "watchdog_ms (999)"),
            ("watchdog_ms = 86400001", "watchdog_ms (86400001)"),
            ("oom_score_adj = -1001", "oom_score_adj (-1001)"),
            ("oom_score_adj = 1001", "oom_score_adj (1001)"),
        ] {
            let err = format!("{:#}", Config::parse(&svc(bad)).unwrap_err());
            assert!(
                err.contains("service a") && err.contains(says),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn cmdline_override() {
        assert_eq!(path_from_cmdline("console=ttyS0 quiet\n"), None);
        assert_eq!(
            path_from_cmdline("console=ttyS0 init.config=/etc/a.toml init.config=/etc/b.toml\n"),
            Some(PathBuf::from("/etc/b.toml"))
        );
        assert_eq!(path_from_cmdline("init.config= x"), None);
    }
}
