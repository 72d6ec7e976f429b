//! Which regions `cargo xtask ami` publishes to: `--regions R1,R2,...` or `all` (every region
//! enabled for the account), the home region that registers the AMI, and the others that copy
//! it. Pure: DescribeRegions' answer comes in as data, so a typo or a region the account has
//! not opted in to is refused before anything is uploaded.

/// `--regions`: a list, or every enabled region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regions {
    All,
    /// In the order given, without duplicates.
    List(Vec<String>),
}

/// Parses `--regions`: `all`, or comma-separated region names.
pub fn parse_regions(s: &str) -> Result<Regions, String> {
    let s = s.trim();
    if s == "all" {
        return Ok(Regions::All);
    }
    let mut out: Vec<String> = Vec::new();
    for w in s.split(',').map(str::trim) {
        if w == "all" {
            return Err("`all` cannot be combined with region names".into());
        }
        if !looks_like_region(w) {
            return Err(format!("{w:?} is not a region name (like eu-west-1)"));
        }
        if !out.iter().any(|r| r == w) {
            out.push(w.to_string());
        }
    }
    Ok(Regions::List(out))
}

/// `eu-west-1`, `us-gov-west-1`, `ap-southeast-7`: lowercase words and digits joined by dashes.
/// Only a shape check; DescribeRegions decides whether the region exists.
fn looks_like_region(s: &str) -> bool {
    s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.contains('-')
        && !s.contains("--")
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// One row of DescribeRegions (AllRegions=true): the name and its OptInStatus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub name: String,
    pub opt_in: String,
}

/// Whether the account can use a region: those that need no opt-in, and those opted in to.
pub fn is_enabled(opt_in: &str) -> bool {
    matches!(opt_in, "opt-in-not-required" | "opted-in")
}

/// The region the AMI is registered in: `--region`, else the first of `--regions`, else none
/// (the AWS config chain's, known only once it is loaded).
pub fn home_region(flag: Option<&str>, regions: Option<&Regions>) -> Option<String> {
    flag.map(str::to_string).or_else(|| match regions {
        Some(Regions::List(l)) => l.first().cloned(),
        _ => None,
    })
}

/// Where the AMI goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Registers the AMI from the snapshot.
    pub home: String,
    /// CopyImage from `home`, in parallel.
    pub copies: Vec<String>,
    /// Asked for but not usable: (region, why). They count as failed regions.
    pub refused: Vec<(String, String)>,
}

/// Decides the plan. `described` is DescribeRegions' answer, needed only when `requested` is
/// given (without `--regions` nothing is asked and only the home region is published).
/// An unusable home region is an error: nothing could be registered there.
pub fn plan(
    home: &str,
    requested: Option<&Regions>,
    described: &[Described],
) -> Result<Plan, String> {
    let Some(requested) = requested else {
        return Ok(Plan {
            home: home.to_string(),
            copies: Vec::new(),
            refused: Vec::new(),
        });
    };
    if let Some(why) = unusable(home, described) {
        return Err(format!("the home region {home} {why}"));
    }
    let mut copies = Vec::new();
    let mut refused = Vec::new();
    match requested {
        Regions::All => {
            copies = described
                .iter()
                .filter(|d| d.name != home && is_enabled(&d.opt_in))
                .map(|d| d.name.clone())
                .collect();
            copies.sort();
            copies.dedup();
        }
        Regions::List(list) => {
            for r in list.iter().filter(|r| *r != home) {
                match unusable(r, described) {
                    None => copies.push(r.clone()),
                    Some(why) => refused.push((r.clone(), why)),
                }
            }
        }
    }
    Ok(Plan {
        home: home.to_string(),
        copies,
        refused,
    })
}

/// Why a region cannot be published to, if it cannot.
fn unusable(region: &str, described: &[Described]) -> Option<String> {
    match described.iter().find(|d| d.name == region) {
        None => Some("is not a region of this partition (DescribeRegions does not list it)".into()),
        Some(d) if !is_enabled(&d.opt_in) => Some(format!(
            "is not enabled for this account (opt-in status {}): enable it under the account's \
             AWS Regions settings, or leave it out",
            d.opt_in
        )),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described() -> Vec<Described> {
        [
            ("us-east-1", "opt-in-not-required"),
            ("eu-west-1", "opt-in-not-required"),
            ("ap-east-1", "not-opted-in"),
            ("me-south-1", "opted-in"),
            ("eu-central-1", "opt-in-not-required"),
        ]
        .iter()
        .map(|(n, o)| Described {
            name: n.to_string(),
            opt_in: o.to_string(),
        })
        .collect()
    }

    fn list(v: &[&str]) -> Regions {
        Regions::List(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn parses_lists_and_all() {
        assert_eq!(parse_regions("all"), Ok(Regions::All));
        assert_eq!(
            parse_regions("eu-west-1, us-east-1,eu-west-1"),
            Ok(list(&["eu-west-1", "us-east-1"]))
        );
        assert_eq!(parse_regions("us-gov-west-1"), Ok(list(&["us-gov-west-1"])));
        for bad in [
            "",
            "eu-west-1,",
            "EU-WEST-1",
            "eu_west_1",
            "west",
            "all,eu-west-1",
            "-a-1",
        ] {
            assert!(parse_regions(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_regions("eu west").unwrap_err().contains("eu west"));
    }

    #[test]
    fn home_is_the_flag_else_the_first_listed() {
        let l = list(&["eu-west-1", "us-east-1"]);
        assert_eq!(
            home_region(Some("us-west-2"), Some(&l)).as_deref(),
            Some("us-west-2")
        );
        assert_eq!(home_region(None, Some(&l)).as_deref(), Some("eu-west-1"));
        assert_eq!(home_region(None, Some(&Regions::All)), None);
        assert_eq!(home_region(None, None), None);
    }

    #[test]
    fn without_regions_only_home_and_no_lookup() {
        let p = plan("eu-west-1", None, &[]).unwrap();
        assert_eq!(p.home, "eu-west-1");
        assert!(p.copies.is_empty() && p.refused.is_empty());
    }

    #[test]
    fn all_means_every_enabled_region_but_home() {
        let p = plan("eu-west-1", Some(&Regions::All), &described()).unwrap();
        assert_eq!(p.copies, ["eu-central-1", "me-south-1", "us-east-1"]);
        assert!(p.refused.is_empty());
    }

    #[test]
    fn listed_regions_are_checked_and_refusals_kept() {
        let r = list(&[
            "us-east-1",
            "eu-west-1",
            "ap-east-1",
            "xx-nowhere-1",
            "me-south-1",
        ]);
        let p = plan("us-east-1", Some(&r), &described()).unwrap();
        assert_eq!(p.home, "us-east-1");
        assert_eq!(p.copies, ["eu-west-1", "me-south-1"]);
        assert_eq!(p.refused.len(), 2);
        assert_eq!(p.refused[0].0, "ap-east-1");
        assert!(p.refused[0].1.contains("not enabled"), "{:?}", p.refused);
        assert_eq!(p.refused[1].0, "xx-nowhere-1");
        assert!(p.refused[1].1.contains("not a region"), "{:?}", p.refused);
    }

    #[test]
    fn an_unusable_home_is_an_error() {
        let e = plan("ap-east-1", Some(&Regions::All), &described()).unwrap_err();
        assert!(
            e.contains("home region ap-east-1") && e.contains("not enabled"),
            "{e}"
        );
        assert!(plan("xx-1", Some(&list(&["xx-1"])), &described()).is_err());
    }
}
