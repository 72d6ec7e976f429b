//! Network namespaces for tests: created and torn down by the test, with a guard that removes
//! them (and their veths, bridges and taps) even when the test fails. Commands run in a
//! namespace with `ip netns exec`; in-process servers run on threads that have joined one.

use anyhow::{Context, Result, bail};

/// Runs a command and returns its stdout; the error carries the command and its stderr.
pub fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = duct::cmd(program, args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip` with its arguments split on spaces (only for fixed, space-free words).
pub fn ip(args: &str) -> Result<String> {
    let v: Vec<&str> = args.split_whitespace().collect();
    sh("ip", &v)
}

/// A set of namespaces, deleted on drop. Names carry a prefix unique to this process.
pub struct Namespaces {
    prefix: String,
    names: Vec<String>,
}

impl Namespaces {
    pub fn new(tag: &str) -> Self {
        sweep_stale(tag);
        Self {
            prefix: format!("{tag}{}", std::process::id()),
            names: Vec::new(),
        }
    }

    /// Creates namespace `short` (full name `<prefix>-<short>`) with `lo` up.
    pub fn add(&mut self, short: &str) -> Result<String> {
        let name = self.name(short);
        let _ = sh("ip", &["netns", "del", &name]);
        sh("ip", &["netns", "add", &name])?;
        self.names.push(name.clone());
        self.exec(short, "ip", &["link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// Stops owning the namespaces: drop will not delete them (they are gone, or someone else's).
    pub fn forget(&mut self) {
        self.names.clear();
    }

    /// Whether every namespace of the set still exists.
    pub fn all_exist(&self) -> bool {
        self.names
            .iter()
            .all(|n| std::path::Path::new("/run/netns").join(n).exists())
    }

    pub fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// Runs a program inside namespace `short`.
    pub fn exec(&self, short: &str, program: &str, args: &[&str]) -> Result<String> {
        let name = self.name(short);
        let mut v = vec!["netns", "exec", name.as_str(), program];
        v.extend_from_slice(args);
        sh("ip", &v)
    }

    /// `ip` inside namespace `short`, arguments split on spaces.
    pub fn ip(&self, short: &str, args: &str) -> Result<String> {
        let v: Vec<&str> = args.split_whitespace().collect();
        self.exec(short, "ip", &v)
    }

    pub fn sysctl(&self, short: &str, key: &str, value: &str) -> Result<()> {
        self.exec(short, "sysctl", &["-qw", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Applies an nftables script inside namespace `short`.
    pub fn nft(&self, short: &str, script: &str) -> Result<()> {
        nft_in(&self.name(short), script)
    }

    /// Connects two namespaces with a veth pair.
    pub fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) -> Result<()> {
        let tmp_a = format!("v{}a", std::process::id() % 100000);
        let tmp_b = format!("v{}b", std::process::id() % 100000);
        ip(&format!("link add {tmp_a} type veth peer name {tmp_b}"))?;
        ip(&format!(
            "link set {tmp_a} netns {} name {a_if}",
            self.name(a)
        ))?;
        ip(&format!(
            "link set {tmp_b} netns {} name {b_if}",
            self.name(b)
        ))?;
        Ok(())
    }

    /// Text describing every namespace's addresses, routes and nftables counters.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for n in &self.names {
            s.push_str(&format!("=== netns {n}\n"));
            for args in [
                &["-br", "addr"][..],
                &["route", "show", "table", "all"][..],
                &["rule"][..],
                &["-s", "link"][..],
            ] {
                let mut v = vec!["netns", "exec", n.as_str(), "ip"];
                v.extend_from_slice(args);
                s.push_str(&sh("ip", &v).unwrap_or_else(|e| format!("{e:#}\n")));
            }
            s.push_str(
                &sh("ip", &["netns", "exec", n, "nft", "list", "ruleset"]).unwrap_or_default(),
            );
        }
        s
    }
}

/// Applies an nftables script inside namespace `name` (its full name).
pub fn nft_in(name: &str, script: &str) -> Result<()> {
    let out = duct::cmd("ip", ["netns", "exec", name, "nft", "-f", "-"])
        .stdin_bytes(script.as_bytes().to_vec())
        .stderr_capture()
        .stdout_capture()
        .unchecked()
        .run()?;
    if !out.status.success() {
        bail!(
            "nft in {name} failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Removes namespaces (and the processes in them) that an earlier run with this tag left
/// behind when it was killed before it could clean up.
fn sweep_stale(tag: &str) {
    let Ok(list) = sh("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix(tag)
            .and_then(|r| r.split_once('-'))
            .and_then(|(p, _)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        for p in sh("ip", &["netns", "pids", name])
            .unwrap_or_default()
            .split_whitespace()
        {
            let _ = sh("kill", &["-9", p]);
        }
        let _ = sh("ip", &["netns", "del", name]);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Processes started with `ip netns exec` are the caller's to stop; deleting the
        // namespace destroys its veths, bridges and taps.
        for n in self.names.iter().rev() {
            let _ = sh("ip", &["netns", "del", n]);
        }
    }
}

/// Runs `f` on a new thread that has joined namespace `name` (as in `ip netns add`). Sockets it
/// opens live in that namespace. The thread may run for as long as the closure does.
pub fn spawn_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>> {
    Ok(test_support::netns::spawn_in(name, f)?)
}

/// Runs `f` in namespace `name` and waits for it.
pub fn run_in<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    Ok(test_support::netns::run_in(name, f)?)
}
