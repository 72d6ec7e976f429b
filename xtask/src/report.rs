//! Console output of xtask and the record of named checks. `say` is how every command talks
//! to the user (stderr, `[xtask]` prefix); `Report` collects the outcomes of `cargo xtask
//! test`'s checks and prints the `xtask: N passed, M failed` line CI reads.

use std::time::Instant;

use anyhow::{Result, bail};

/// One line of progress on stderr.
pub fn say(msg: &str) {
    eprintln!("[xtask] {msg}");
}

/// Named checks with their outcomes.
#[derive(Default)]
pub struct Report {
    results: Vec<(String, Result<(), String>, f64)>,
}

impl Report {
    pub fn check(&mut self, name: &str, f: impl FnOnce() -> Result<()>) -> bool {
        say(&format!("test {name} ..."));
        let t = Instant::now();
        let r = f().map_err(|e| format!("{e:#}"));
        let secs = t.elapsed().as_secs_f64();
        match &r {
            Ok(()) => say(&format!("test {name} ... ok ({secs:.1} s)")),
            Err(e) => say(&format!("test {name} ... FAILED ({secs:.1} s)\n{e}")),
        }
        let ok = r.is_ok();
        self.results.push((name.to_string(), r, secs));
        ok
    }

    pub fn finish(&self) -> Result<()> {
        let failed: Vec<_> = self.results.iter().filter(|r| r.1.is_err()).collect();
        let passed = self.results.len() - failed.len();
        for f in &failed {
            say(&format!("FAILED: {}", f.0));
        }
        println!("xtask: {passed} passed, {} failed", failed.len());
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("{} xtask test(s) failed", failed.len())
        }
    }
}
