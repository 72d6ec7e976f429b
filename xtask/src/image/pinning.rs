//! Whether a build may move its pins. `--locked` forbids it, and so does CI (the `CI`
//! environment variable, set by every common CI service) unless `--update` asks for it: a CI
//! build must build what the commit pins (Cargo.lock and the Debian lock), or fail and say how
//! to move the pins.

use std::ffi::OsStr;
use std::sync::Once;

use super::{Args, say};

/// Why a build is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    No,
    /// `--locked`.
    Flag,
    /// `CI` is set and `--update` is not given.
    Ci,
}

impl Locked {
    /// Decides from the arguments and the value of `CI`. An empty `CI`, `0` or `false` is
    /// taken as unset, the way people switch it off by hand.
    pub fn decide(args: &Args, ci: Option<&OsStr>) -> Locked {
        let ci = ci.is_some_and(|v| !v.is_empty() && v != "0" && v != "false");
        if args.locked {
            Locked::Flag
        } else if ci && !args.update {
            Locked::Ci
        } else {
            Locked::No
        }
    }

    pub fn is_locked(self) -> bool {
        self != Locked::No
    }

    /// Says once per process that CI implies `--locked` (a test run builds several images).
    pub fn announce(self) {
        static ONCE: Once = Once::new();
        if self == Locked::Ci {
            ONCE.call_once(|| {
                say("CI is set: building as with --locked (cargo and the Debian lock); pass --update to move the pins")
            });
        }
    }
}

/// The command that moves the Debian lock for this build: the same profile (and local .debs,
/// which would otherwise be resolved with apt instead) with `--update`.
pub fn update_command(args: &Args) -> String {
    let mut cmd = format!(
        "cargo xtask image --profile {} --update",
        shell_word(&args.profile)
    );
    for deb in &args.kernel_debs {
        cmd.push_str(" --kernel-deb ");
        cmd.push_str(&shell_word(&deb.to_string_lossy()));
    }
    cmd
}

/// `s` quoted for a POSIX shell when it needs to be.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:+@%".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn args(locked: bool, update: bool) -> Args {
        Args {
            profile: "nat-t4g".into(),
            locked,
            update,
            ..Default::default()
        }
    }

    #[test]
    fn ci_implies_locked_unless_updating() {
        let ci = Some(OsStr::new("true"));
        assert_eq!(Locked::decide(&args(false, false), None), Locked::No);
        assert_eq!(Locked::decide(&args(true, false), None), Locked::Flag);
        assert_eq!(Locked::decide(&args(false, false), ci), Locked::Ci);
        assert_eq!(Locked::decide(&args(true, false), ci), Locked::Flag);
        assert_eq!(Locked::decide(&args(false, true), ci), Locked::No);
        for off in ["", "0", "false"] {
            assert_eq!(
                Locked::decide(&args(false, false), Some(OsStr::new(off))),
                Locked::No
            );
        }
        assert!(Locked::Ci.is_locked() && Locked::Flag.is_locked() && !Locked::No.is_locked());
    }

    #[test]
    fn update_command_names_profile_and_local_debs() {
        assert_eq!(
            update_command(&args(false, false)),
            "cargo xtask image --profile nat-t4g --update"
        );
        let mut a = args(false, false);
        a.kernel_debs = vec![PathBuf::from("/tmp/my kernel.deb")];
        assert_eq!(
            update_command(&a),
            "cargo xtask image --profile nat-t4g --update --kernel-deb '/tmp/my kernel.deb'"
        );
    }
}
