//! The command line: `nat-init [--config PATH]`.

/// `--config PATH`; anything else is a usage error.
pub fn parse_args(args: &[String]) -> Result<Option<String>, String> {
    let mut config = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => match it.next() {
                Some(p) if !p.is_empty() => config = Some(p.clone()),
                _ => return Err("--config needs a path".to_string()),
            },
            other => {
                return Err(format!(
                    "unexpected argument {other:?}; usage: nat-init [--config PATH]"
                ));
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&s(&[])), Ok(None));
        assert_eq!(
            parse_args(&s(&["--config", "/tmp/x.toml"])),
            Ok(Some("/tmp/x.toml".into()))
        );
        assert!(parse_args(&s(&["--config"])).is_err());
        assert!(parse_args(&s(&["--bogus"])).is_err());
    }
}
