//! The command line, declared with argh like every other command line in the workspace:
//! `nat-init [--config PATH]`.

use argh::FromArgs;

/// the NAT service that init starts and supervises
#[derive(FromArgs, Debug, PartialEq, Eq)]
pub struct Args {
    /// the configuration file (default: the one baked into the image)
    #[argh(option, arg_name = "PATH")]
    pub config: Option<String>,
}

/// What the command line asks for: a config path (`None`: the baked one), or the text to print
/// (`--help` is `Err` with `ok = true`, a usage error `Err` with `ok = false`).
pub fn parse_args(args: &[String]) -> Result<Option<String>, argh::EarlyExit> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let parsed = Args::from_args(&["nat-init"], &args)?;
    match parsed.config {
        Some(p) if p.is_empty() => Err(argh::EarlyExit {
            output: "--config needs a path".into(),
            status: Err(()),
        }),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&s(&[])).unwrap(), None);
        assert_eq!(
            parse_args(&s(&["--config", "/tmp/x.toml"])).unwrap(),
            Some("/tmp/x.toml".into())
        );
        for bad in [&["--config"][..], &["--config", ""], &["--bogus"]] {
            let e = parse_args(&s(bad)).unwrap_err();
            assert!(e.status.is_err(), "{bad:?} must be a usage error");
            assert!(!e.output.is_empty());
        }
        let help = parse_args(&s(&["--help"])).unwrap_err();
        assert!(help.status.is_ok());
        assert!(help.output.contains("--config"), "{}", help.output);
    }
}
