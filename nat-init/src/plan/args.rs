//! The command line, declared with argh like every other command line in the workspace:
//! `nat-init [--config PATH]` runs the service; `nat-init --iam-policy [--config PATH]
//! [--user-data FILE] [--region R] [--account N] [--vpc ID] [--eni-tag K=V]` prints the
//! least-privilege IAM policy the configuration needs, and exits (on a workstation: the image
//! has no shell to run it from).

use argh::FromArgs;

/// the NAT service that init starts and supervises
#[derive(FromArgs, Debug, PartialEq, Eq)]
pub struct Args {
    /// the configuration file (default: the one baked into the image)
    #[argh(option, arg_name = "PATH")]
    pub config: Option<String>,
    /// print the IAM policy the instance role needs for this configuration, then exit
    #[argh(switch)]
    pub iam_policy: bool,
    /// with --iam-policy: a user-data document layered over the configuration, as at boot
    #[argh(option, arg_name = "FILE")]
    pub user_data: Option<String>,
    /// with --iam-policy: the region in the policy's ARNs (default `*`)
    #[argh(option, arg_name = "REGION")]
    pub region: Option<String>,
    /// with --iam-policy: the account id in the policy's ARNs (default `*`)
    #[argh(option, arg_name = "ID")]
    pub account: Option<String>,
    /// with --iam-policy: scope the ENI statement to this VPC
    #[argh(option, arg_name = "VPC_ID")]
    pub vpc: Option<String>,
    /// with --iam-policy: scope the ENI statement to ENIs with this tag (Key=Value)
    #[argh(option, arg_name = "KEY=VALUE")]
    pub eni_tag: Option<String>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the service on this config path (`None`: the baked one).
    Run(Option<String>),
    /// Print the IAM policy.
    IamPolicy(PolicyArgs),
}

/// `--iam-policy`'s inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyArgs {
    pub config: Option<String>,
    pub user_data: Option<String>,
    pub region: Option<String>,
    pub account: Option<String>,
    pub vpc: Option<String>,
    pub eni_tag: Option<(String, String)>,
}

fn usage(output: String) -> argh::EarlyExit {
    argh::EarlyExit {
        output,
        status: Err(()),
    }
}

/// What the command line asks for, or the text to print (`--help` is `Err` with `ok = true`, a
/// usage error `Err` with `ok = false`).
pub fn parse_args(args: &[String]) -> Result<Command, argh::EarlyExit> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = Args::from_args(&["nat-init"], &args)?;
    if p.config.as_deref() == Some("") {
        return Err(usage("--config needs a path".into()));
    }
    if !p.iam_policy {
        if p.user_data.is_some()
            || p.region.is_some()
            || p.account.is_some()
            || p.vpc.is_some()
            || p.eni_tag.is_some()
        {
            return Err(usage(
                "--user-data, --region, --account, --vpc and --eni-tag go with --iam-policy".into(),
            ));
        }
        return Ok(Command::Run(p.config));
    }
    let eni_tag = match p.eni_tag.as_deref().map(|t| t.split_once('=')) {
        None => None,
        Some(Some((k, v))) if !k.is_empty() && !v.is_empty() => {
            Some((k.to_string(), v.to_string()))
        }
        Some(_) => return Err(usage("--eni-tag takes KEY=VALUE".into())),
    };
    Ok(Command::IamPolicy(PolicyArgs {
        config: p.config,
        user_data: p.user_data,
        region: p.region,
        account: p.account,
        vpc: p.vpc,
        eni_tag,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn args() {
        assert_eq!(parse_args(&s(&[])).unwrap(), Command::Run(None));
        assert_eq!(
            parse_args(&s(&["--config", "/tmp/x.toml"])).unwrap(),
            Command::Run(Some("/tmp/x.toml".into()))
        );
        for bad in [
            &["--config"][..],
            &["--config", ""],
            &["--bogus"],
            &["--region", "eu-west-1"],
            &["--iam-policy", "--eni-tag", "novalue"],
        ] {
            let e = parse_args(&s(bad)).unwrap_err();
            assert!(e.status.is_err(), "{bad:?} must be a usage error");
            assert!(!e.output.is_empty());
        }
        let help = parse_args(&s(&["--help"])).unwrap_err();
        assert!(help.status.is_ok());
        assert!(help.output.contains("--config"), "{}", help.output);
        assert!(help.output.contains("--iam-policy"), "{}", help.output);
    }

    #[test]
    fn iam_policy_args() {
        let c = parse_args(&s(&[
            "--iam-policy",
            "--config",
            "nat.toml",
            "--user-data",
            "ud.toml",
            "--region",
            "eu-west-1",
            "--account",
            "123456789012",
            "--eni-tag",
            "nat:role=egress",
        ]))
        .unwrap();
        assert_eq!(
            c,
            Command::IamPolicy(PolicyArgs {
                config: Some("nat.toml".into()),
                user_data: Some("ud.toml".into()),
                region: Some("eu-west-1".into()),
                account: Some("123456789012".into()),
                vpc: None,
                eni_tag: Some(("nat:role".into(), "egress".into())),
            })
        );
    }
}
