//! The command line of `cargo xtask`, declared once with argh: `--help` prints usage generated
//! from these declarations, so it cannot drift from what is parsed. [`parse`] turns the words
//! after `cargo xtask` into a [`Command`] holding each command's own arguments, and checks
//! what the declarations cannot (contradicting flags, paths that must exist).
//!
//! `cargo xtask ami ...` is not parsed here: its words go unchanged to the xtask-ami binary,
//! which declares and parses them itself (the AWS SDK stays out of this crate).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use argh::{FromArgs, SubCommands};

use crate::{bench, image, qemu, testsuite};

/// What `usage:` lines and `--help` call this program.
const PROGRAM: &str = "cargo xtask";
const DEFAULT_PROFILE: &str = "nat-t4g";

/// builds and tests the arm64 NAT appliance image
#[derive(FromArgs, Debug)]
#[argh(help_triggers("-h", "--help", "help"))]
struct Cli {
    #[argh(subcommand)]
    command: Sub,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Sub {
    Image(ImageFlags),
    Qemu(QemuFlags),
    Ami(AmiFlags),
    Test(TestFlags),
    Bench(BenchFlags),
}

/// build target/images/<profile>/ (default profile: nat-t4g)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "image", help_triggers("-h", "--help", "help"))]
struct ImageFlags {
    /// the profile images/NAME.toml (default nat-t4g)
    #[argh(option, arg_name = "NAME", default = "DEFAULT_PROFILE.into()")]
    profile: String,
    /// output directory (default target/images/<profile>/)
    #[argh(option, arg_name = "DIR")]
    out: Option<PathBuf>,
    /// use this local .deb (kernel, boot loader) instead of apt; repeatable
    #[argh(option, arg_name = "FILE")]
    kernel_deb: Vec<PathBuf>,
    /// fail instead of updating the lock file when a locked package is gone
    #[argh(switch)]
    locked: bool,
    /// resolve the packages to their current versions and rewrite the lock file
    #[argh(switch)]
    update: bool,
}

/// boot the built disk under UEFI firmware with the serial console on stdio (Ctrl-A X quits)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "qemu", help_triggers("-h", "--help", "help"))]
struct QemuFlags {
    /// the image profile (default nat-t4g)
    #[argh(option, arg_name = "NAME", default = "DEFAULT_PROFILE.into()")]
    profile: String,
    /// network: user (QEMU's own, the default), tap:IFNAME (an existing tap) or none
    #[argh(
        option,
        arg_name = "user|tap:IFNAME|none",
        from_str_fn(net),
        default = "qemu::Net::User"
    )]
    net: qemu::Net,
    /// guest memory in MiB (default 512)
    #[argh(option, arg_name = "MIB", default = "512")]
    mem: u32,
    /// build the image first (`cargo xtask image --profile NAME`)
    #[argh(switch)]
    build: bool,
}

/// publish target/images/<profile>/disk.raw as an arm64 AMI (`cargo xtask ami --help` lists
/// its options)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "ami", help_triggers("-h", "--help", "help"))]
struct AmiFlags {
    /// the arguments of the xtask-ami binary
    #[argh(positional, greedy)]
    args: Vec<String>,
}

/// run every test: host tests, image checks, boot and end-to-end tests in QEMU, then the
/// bench's smoke test; ends with `xtask: N passed, M failed` (not run counts as failed)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "test", help_triggers("-h", "--help", "help"))]
struct TestFlags {
    /// run only this part: host, deploy, vpc, image, boot, e2e, failover or bench
    #[argh(
        option,
        arg_name = "host|deploy|vpc|image|boot|e2e|failover|bench",
        from_str_fn(test_part)
    )]
    only: Option<testsuite::Part>,
}

/// measure ours against the by-hand baseline; writes report.md and report.json to
/// target/bench/
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "bench", help_triggers("-h", "--help", "help"))]
struct BenchFlags {
    /// one run each, direct kernel boot only, small capacity and throughput targets, no cold
    /// build
    #[argh(switch)]
    quick: bool,
    /// boots per image and boot path (default 3, or 1 with --quick)
    #[argh(option, arg_name = "N", from_str_fn(at_least_one))]
    runs: Option<usize>,
    /// measure only these, comma-separated: sizes,build,boot,memory,capacity,throughput,aws,failover,metrics
    #[argh(option, arg_name = "LIST", from_str_fn(bench_parts))]
    only: Option<Vec<bench::Part>>,
    /// capacity: this many flows for both images instead of the guest's configured maximum
    #[argh(option, arg_name = "N")]
    flows: Option<u64>,
}

/// One parsed `cargo xtask` command line.
#[derive(Debug)]
pub enum Command {
    Image(image::Args),
    Qemu {
        profile: String,
        net: qemu::Net,
        mem_mib: u32,
        build: bool,
    },
    /// The words after `ami`, unchanged, for the xtask-ami binary.
    Ami(Vec<OsString>),
    Test {
        only: Option<testsuite::Part>,
    },
    Bench(bench::Options),
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    Run(Command),
    /// `--help` (or no command at all): print this generated usage and stop.
    Usage(String),
}

/// Parses the words after `cargo xtask`. `root` is the workspace root (the bench's default
/// output directory lives under it).
pub fn parse(root: &Path, args: &[OsString]) -> Result<Parsed> {
    if let Some((first, rest)) = args.split_first()
        && first == "ami"
    {
        return Ok(Parsed::Run(Command::Ami(rest.to_vec())));
    }
    let words = args
        .iter()
        .map(|a| {
            a.to_str()
                .ok_or_else(|| anyhow!("argument {a:?} is not valid UTF-8"))
        })
        .collect::<Result<Vec<&str>>>()?;
    let words = if words.is_empty() {
        vec!["--help"]
    } else {
        words
    };
    let cli = match Cli::from_args(&[PROGRAM], &words) {
        Ok(cli) => cli,
        Err(exit) if exit.status.is_ok() => return Ok(Parsed::Usage(exit.output)),
        Err(exit) => bail!("{}\n{}", exit.output.trim_end(), help_hint(words[0])),
    };
    Ok(Parsed::Run(match cli.command {
        Sub::Image(f) => Command::Image(f.into_args()?),
        Sub::Qemu(f) => Command::Qemu {
            profile: f.profile,
            net: f.net,
            mem_mib: f.mem,
            build: f.build,
        },
        Sub::Ami(f) => Command::Ami(f.args.into_iter().map(OsString::from).collect()),
        Sub::Test(f) => Command::Test { only: f.only },
        Sub::Bench(f) => Command::Bench(f.into_options(root)),
    }))
}

/// Where to read the usage of the command that failed to parse.
fn help_hint(first: &str) -> String {
    if Sub::COMMANDS.iter().any(|c| c.name == first) {
        format!("see `{PROGRAM} {first} --help`")
    } else {
        format!("see `{PROGRAM} --help`")
    }
}

impl ImageFlags {
    fn into_args(self) -> Result<image::Args> {
        if self.locked && self.update {
            bail!("--locked and --update contradict each other");
        }
        // Absolute, so the build may change directory; a missing file fails here, named.
        let kernel_debs = self
            .kernel_deb
            .iter()
            .map(|p| {
                std::fs::canonicalize(p).with_context(|| format!("--kernel-deb {}", p.display()))
            })
            .collect::<Result<_>>()?;
        Ok(image::Args {
            profile: self.profile,
            out: self.out,
            kernel_debs,
            locked: self.locked,
            update: self.update,
        })
    }
}

impl BenchFlags {
    fn into_options(self, root: &Path) -> bench::Options {
        let mut o = bench::Options::new(root, self.quick);
        if let Some(r) = self.runs {
            o.runs = r;
        }
        if let Some(p) = self.only {
            o.parts = p;
        }
        o.flows = self.flows;
        o
    }
}

// Value parsers for `from_str_fn`: argh prefixes their errors with the flag and the value.

fn net(s: &str) -> Result<qemu::Net, String> {
    qemu::Net::parse(s).map_err(|_| "expected user, none or tap:IFNAME".to_string())
}

fn test_part(s: &str) -> Result<testsuite::Part, String> {
    testsuite::Part::parse(s).map_err(|e| e.to_string())
}

fn bench_parts(list: &str) -> Result<Vec<bench::Part>, String> {
    list.split(',')
        .map(bench::Part::parse)
        .collect::<Result<_>>()
        .map_err(|e| e.to_string())
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(s: &str) -> Result<Parsed> {
        let args: Vec<OsString> = s.split_whitespace().map(OsString::from).collect();
        parse(Path::new("/ws"), &args)
    }

    fn command(s: &str) -> Command {
        match parse_words(s) {
            Ok(Parsed::Run(c)) => c,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    fn error(s: &str) -> String {
        match parse_words(s) {
            Err(e) => format!("{e:#}"),
            Ok(p) => panic!("{s:?} parsed: {p:?}"),
        }
    }

    fn usage(s: &str) -> String {
        match parse_words(s) {
            Ok(Parsed::Usage(u)) => u,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn help_is_generated_for_the_program_and_each_command() {
        for top in ["", "--help", "-h", "help"] {
            let u = usage(top);
            assert!(u.starts_with("Usage: cargo xtask <command>"), "{u}");
            for cmd in ["image", "qemu", "ami", "test", "bench"] {
                assert!(u.contains(&format!("  {cmd} ")), "{cmd} missing from {u}");
            }
        }
        let u = usage("image --help");
        assert!(
            u.starts_with("Usage: cargo xtask image [--profile <NAME>]"),
            "{u}"
        );
        assert!(u.contains("--kernel-deb <FILE...>"), "{u}");
        assert_eq!(usage("help bench"), usage("bench --help"));
        assert!(usage("qemu -h").contains("--net <user|tap:IFNAME|none>"));
        assert!(usage("test --help").contains("--only"));
    }

    #[test]
    fn image_defaults_and_flags() {
        let Command::Image(a) = command("image") else {
            panic!("not image")
        };
        assert_eq!(a.profile, "nat-t4g");
        assert_eq!(a.out, None);
        assert!(a.kernel_debs.is_empty() && !a.locked && !a.update);

        let Command::Image(a) = command("image --profile p --out /o --update") else {
            panic!("not image")
        };
        assert_eq!(a.profile, "p");
        assert_eq!(a.out, Some(PathBuf::from("/o")));
        assert!(a.update && !a.locked);
    }

    #[test]
    fn kernel_debs_are_made_absolute_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.deb"), dir.path().join("b.deb"));
        std::fs::write(&a, b"").unwrap();
        std::fs::write(&b, b"").unwrap();
        let line = format!(
            "image --kernel-deb {} --kernel-deb {}",
            a.display(),
            b.display()
        );
        let Command::Image(args) = command(&line) else {
            panic!("not image")
        };
        assert_eq!(
            args.kernel_debs,
            [a.canonicalize().unwrap(), b.canonicalize().unwrap()]
        );
        let missing = dir.path().join("missing.deb");
        let e = error(&format!("image --kernel-deb {}", missing.display()));
        assert!(e.starts_with("--kernel-deb "), "{e}");
        assert!(e.contains("missing.deb"), "{e}");
    }

    #[test]
    fn locked_and_update_contradict() {
        assert_eq!(
            error("image --locked --update"),
            "--locked and --update contradict each other"
        );
    }

    #[test]
    fn qemu_flags() {
        let Command::Qemu {
            profile,
            net,
            mem_mib,
            build,
        } = command("qemu")
        else {
            panic!("not qemu")
        };
        assert_eq!(
            (profile.as_str(), net, mem_mib, build),
            ("nat-t4g", qemu::Net::User, 512, false)
        );
        let Command::Qemu {
            profile,
            net,
            mem_mib,
            build,
        } = command("qemu --profile x --net tap:tap0 --mem 1024 --build")
        else {
            panic!("not qemu")
        };
        assert_eq!(
            (profile.as_str(), net, mem_mib, build),
            ("x", qemu::Net::Tap("tap0".into()), 1024, true)
        );
        assert!(matches!(
            command("qemu --net none"),
            Command::Qemu {
                net: qemu::Net::None,
                ..
            }
        ));
        let e = error("qemu --net bridge");
        assert!(e.contains("--net") && e.contains("bridge"), "{e}");
        assert!(error("qemu --net tap:").contains("--net"));
        assert!(error("qemu --mem lots").contains("--mem"));
    }

    #[test]
    fn test_only() {
        assert!(matches!(command("test"), Command::Test { only: None }));
        assert!(matches!(
            command("test --only boot"),
            Command::Test {
                only: Some(testsuite::Part::Boot)
            }
        ));
        let e = error("test --only all");
        assert!(e.contains("--only") && e.contains("all"), "{e}");
    }

    #[test]
    fn bench_options() {
        let Command::Bench(o) = command("bench") else {
            panic!("not bench")
        };
        assert!(!o.quick);
        assert_eq!(o.runs, 3);
        assert_eq!(o.parts, bench::Part::ALL);
        assert_eq!(o.out, PathBuf::from("/ws/target/bench"));
        assert_eq!(o.flows, None);

        let Command::Bench(o) = command("bench --quick") else {
            panic!("not bench")
        };
        assert!(o.quick);
        assert_eq!(o.runs, 1);

        let Command::Bench(o) = command("bench --quick --runs 5 --only sizes,boot --flows 1000")
        else {
            panic!("not bench")
        };
        assert_eq!(o.runs, 5);
        assert_eq!(o.parts, [bench::Part::Sizes, bench::Part::Boot]);
        assert_eq!(o.flows, Some(1000));
    }

    #[test]
    fn bench_bad_values_name_their_flag() {
        let e = error("bench --runs 0");
        assert!(e.contains("--runs") && e.contains("at least 1"), "{e}");
        assert!(error("bench --runs x").contains("--runs"));
        let e = error("bench --only sizes,speed");
        assert!(e.contains("--only") && e.contains("speed"), "{e}");
        assert!(error("bench --flows -1").contains("--flows"));
    }

    #[test]
    fn ami_words_pass_through_unparsed() {
        let Command::Ami(rest) = command("ami --help --via s3 --frobnicate") else {
            panic!("not ami")
        };
        assert_eq!(rest, ["--help", "--via", "s3", "--frobnicate"]);
        assert!(matches!(command("ami"), Command::Ami(r) if r.is_empty()));
    }

    #[test]
    fn unknown_commands_and_flags_are_refused_with_a_hint() {
        let e = error("frobnicate");
        assert!(
            e.contains("frobnicate") && e.contains("cargo xtask --help"),
            "{e}"
        );
        let e = error("image --frobnicate");
        assert!(
            e.contains("--frobnicate") && e.contains("cargo xtask image --help"),
            "{e}"
        );
        assert!(error("image --profile").contains("--profile"));
        assert!(error("test extra").contains("extra"));
    }
}
