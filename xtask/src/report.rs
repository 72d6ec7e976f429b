//! Console output of xtask and the record of named checks. `say` is how every command talks
//! to the user (stderr, `[xtask]` prefix); `Report` collects the outcomes of `cargo xtask
//! test`'s checks and prints the `xtask: N passed, M failed` line CI reads.
//!
//! Every check is planned before its module runs, so none can vanish from the count: a check
//! ends passed, failed, or not run (because an earlier check or its module's setup failed),
//! and not run counts as failed.

use std::time::Instant;

use anyhow::{Result, bail};

/// One line of progress on stderr.
pub fn say(msg: &str) {
    eprintln!("[xtask] {msg}");
}

/// What became of one check.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Passed,
    Failed(String),
    /// Never run, for this reason; counted as failed.
    NotRun(String),
}

#[derive(Debug)]
struct Entry {
    name: String,
    /// None while planned and not yet run.
    outcome: Option<Outcome>,
}

/// Named checks with their outcomes, in plan order.
#[derive(Debug, Default)]
pub struct Report {
    entries: Vec<Entry>,
}

impl Report {
    /// Declares checks that are to run; each must end with an outcome, or counts as not run.
    pub fn plan(&mut self, names: &[&str]) {
        self.entries.extend(names.iter().map(|n| Entry {
            name: (*n).to_string(),
            outcome: None,
        }));
    }

    /// Runs check `name` and records whether it passed.
    pub fn check(&mut self, name: &str, f: impl FnOnce() -> Result<()>) -> bool {
        say(&format!("test {name} ..."));
        let t = Instant::now();
        let r = f();
        let secs = t.elapsed().as_secs_f64();
        let outcome = match r {
            Ok(()) => {
                say(&format!("test {name} ... ok ({secs:.1} s)"));
                Outcome::Passed
            }
            Err(e) => {
                let e = format!("{e:#}");
                say(&format!("test {name} ... FAILED ({secs:.1} s)\n{e}"));
                Outcome::Failed(e)
            }
        };
        let ok = outcome == Outcome::Passed;
        self.record(name, outcome);
        ok
    }

    /// Runs check `name` if check `after` passed; otherwise records `name` as not run.
    pub fn check_after(&mut self, after: &str, name: &str, f: impl FnOnce() -> Result<()>) -> bool {
        match self.outcome(after) {
            Some(Outcome::Passed) => self.check(name, f),
            Some(Outcome::Failed(_)) => {
                self.skip(name, &format!("because {after} failed"));
                false
            }
            Some(Outcome::NotRun(_)) | None => {
                self.skip(name, &format!("because {after} was not run"));
                false
            }
        }
    }

    /// Records every check of `names` that has no outcome yet as not run, for `reason`.
    pub fn not_run(&mut self, names: &[&str], reason: &str) {
        for name in names {
            if self.pending(name).is_some() {
                self.skip(name, reason);
            }
        }
    }

    /// Runs one check module: plans its `checks`, runs it, and reports as not run whatever it
    /// did not reach. A setup error (an image that does not build, a VM that does not start)
    /// is printed once and is the reason for each of them; the caller goes on to the next
    /// module.
    pub fn module(
        &mut self,
        module: &str,
        checks: &[&str],
        run: impl FnOnce(&mut Self) -> Result<()>,
    ) {
        self.plan(checks);
        if let Err(e) = run(self) {
            let e = format!("{e:#}");
            say(&format!("{module}: setup failed:\n{e}"));
            let first = e.lines().next().unwrap_or_default();
            self.not_run(
                checks,
                &format!("because the {module} setup failed: {first}"),
            );
        }
        self.not_run(checks, &format!("{module} ended without running it"));
    }

    /// Passed, and failed (not run included).
    pub fn counts(&self) -> (usize, usize) {
        let passed = self
            .entries
            .iter()
            .filter(|e| e.outcome == Some(Outcome::Passed))
            .count();
        (passed, self.entries.len() - passed)
    }

    /// The last line of `cargo xtask test`; CI parses it.
    pub fn final_line(&self) -> String {
        let (passed, failed) = self.counts();
        format!("xtask: {passed} passed, {failed} failed")
    }

    /// One line per check that did not pass, in plan order.
    fn failures(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|e| match &e.outcome {
                Some(Outcome::Passed) => None,
                Some(Outcome::Failed(_)) => Some(format!("FAILED: {}", e.name)),
                Some(Outcome::NotRun(why)) => Some(format!("NOT RUN: {} ({why})", e.name)),
                None => Some(format!("NOT RUN: {} (never reached)", e.name)),
            })
            .collect()
    }

    pub fn finish(&self) -> Result<()> {
        for f in self.failures() {
            say(&f);
        }
        println!("{}", self.final_line());
        let (_, failed) = self.counts();
        if failed == 0 {
            Ok(())
        } else {
            bail!("{failed} xtask test(s) failed")
        }
    }

    fn skip(&mut self, name: &str, reason: &str) {
        say(&format!("test {name} ... not run ({reason})"));
        self.record(name, Outcome::NotRun(reason.to_string()));
    }

    /// Fills in the first planned entry of that name; an unplanned check is added.
    fn record(&mut self, name: &str, outcome: Outcome) {
        match self.pending(name) {
            Some(i) => self.entries[i].outcome = Some(outcome),
            None => self.entries.push(Entry {
                name: name.to_string(),
                outcome: Some(outcome),
            }),
        }
    }

    fn pending(&self, name: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.name == name && e.outcome.is_none())
    }

    /// The latest recorded outcome of `name`.
    fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.name == name)
            .and_then(|e| e.outcome.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail() -> Result<()> {
        bail!("no")
    }

    #[test]
    fn final_line_counts_passed_and_failed() {
        let mut r = Report::default();
        r.plan(&["a", "b", "c"]);
        assert!(r.check("a", || Ok(())));
        assert!(!r.check("b", fail));
        assert!(r.check("c", || Ok(())));
        assert_eq!(r.final_line(), "xtask: 2 passed, 1 failed");
        assert!(r.finish().is_err());
        assert_eq!(Report::default().final_line(), "xtask: 0 passed, 0 failed");
        assert!(Report::default().finish().is_ok());
    }

    #[test]
    fn planned_but_never_run_counts_as_failed() {
        let mut r = Report::default();
        r.plan(&["a", "b"]);
        r.check("a", || Ok(()));
        assert_eq!(r.final_line(), "xtask: 1 passed, 1 failed");
        assert_eq!(r.failures(), ["NOT RUN: b (never reached)"]);
        assert!(r.finish().is_err());
    }

    #[test]
    fn a_check_after_a_failed_one_is_not_run_and_fails() {
        let mut r = Report::default();
        r.plan(&["boot", "service", "power"]);
        r.check("boot", fail);
        let mut ran = false;
        assert!(!r.check_after("boot", "service", || {
            ran = true;
            Ok(())
        }));
        assert!(!ran);
        r.check_after("service", "power", || Ok(()));
        assert_eq!(r.final_line(), "xtask: 0 passed, 3 failed");
        assert_eq!(
            r.failures(),
            [
                "FAILED: boot",
                "NOT RUN: service (because boot failed)",
                "NOT RUN: power (because service was not run)",
            ]
        );
        let mut r = Report::default();
        r.check("boot", || Ok(()));
        assert!(r.check_after("boot", "service", || Ok(())));
        assert_eq!(r.final_line(), "xtask: 2 passed, 0 failed");
    }

    #[test]
    fn setup_failure_marks_the_rest_of_the_module_not_run_and_the_next_module_runs() {
        let mut r = Report::default();
        r.module("image", &["i1", "i2", "i3"], |r| {
            r.check("i1", || Ok(()));
            bail!("building the image\nlong build output")
        });
        r.module("boot", &["b1"], |r| {
            r.check("b1", || Ok(()));
            Ok(())
        });
        assert_eq!(r.final_line(), "xtask: 2 passed, 2 failed");
        assert_eq!(
            r.failures(),
            [
                "NOT RUN: i2 (because the image setup failed: building the image)",
                "NOT RUN: i3 (because the image setup failed: building the image)",
            ]
        );
    }

    #[test]
    fn a_module_that_skips_a_planned_check_is_caught() {
        let mut r = Report::default();
        r.module("e2e", &["e1", "e2"], |r| {
            r.check("e1", || Ok(()));
            Ok(())
        });
        assert_eq!(r.final_line(), "xtask: 1 passed, 1 failed");
        assert_eq!(r.failures(), ["NOT RUN: e2 (e2e ended without running it)"]);
    }

    #[test]
    fn an_unplanned_check_is_still_counted() {
        let mut r = Report::default();
        r.plan(&["a"]);
        r.check("a", || Ok(()));
        r.check("extra", fail);
        assert_eq!(r.final_line(), "xtask: 1 passed, 1 failed");
    }
}
