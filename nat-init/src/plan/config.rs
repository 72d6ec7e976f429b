//! Which configuration wins: whether the user-data is a nat-init document, and where the
//! private ranges come from (configuration, then the VPC's CIDRs from IMDS, then defaults);
//! and, when IMDS was not there at boot, how often to ask again and what its late answer changed.

use std::time::Duration;

use super::retry::Backoff;
use crate::cidr::Ipv4Cidr;
use crate::config::Config;
use crate::report;

/// First background retry of an IMDS that did not answer at boot: soon, since a throttled or
/// slow IMDS usually recovers in seconds and the VPC's ranges may be needed for any NAT at all.
pub const IMDS_RETRY_MIN: Duration = Duration::from_secs(1);
/// Cap of that back-off: each retry costs at most the fetch budget of the main loop's time.
pub const IMDS_RETRY_MAX: Duration = Duration::from_secs(60);

/// The back-off of the background IMDS retries.
pub fn imds_backoff() -> Backoff {
    Backoff::new(IMDS_RETRY_MIN, IMDS_RETRY_MAX)
}

/// What a late IMDS answer changed, for its info line: the private ranges (when they moved)
/// and the user-data keys now applied. `None` when it changed nothing.
pub fn late_imds_changes(
    before: (&[Ipv4Cidr], RangesFrom),
    after: (&[Ipv4Cidr], RangesFrom),
    user_data_keys: &[String],
) -> Option<String> {
    let mut parts = Vec::new();
    if before.0 != after.0 {
        parts.push(format!(
            "private={} from {} (was {} from {})",
            report::ranges_text(after.0),
            after.1.as_str(),
            report::ranges_text(before.0),
            before.1.as_str()
        ));
    }
    if !user_data_keys.is_empty() {
        parts.push(format!("user-data keys {}", user_data_keys.join(",")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// What the user-data is, as far as nat-init is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserData<'a> {
    /// None, or only whitespace.
    Absent,
    /// A script or cloud-init document meant for another tool: ignored, said so.
    Foreign(&'static str),
    /// A nat-init TOML document (or an attempt at one: errors are reported).
    Toml(&'a str),
}

/// Sorts user-data: shell scripts (`#!`), cloud-init documents (`#cloud-config`, MIME
/// multipart) and gzip are not meant for nat-init; anything else is parsed as its TOML.
pub fn classify_user_data(text: Option<&str>) -> UserData<'_> {
    let Some(t) = text else {
        return UserData::Absent;
    };
    let head = t.trim_start();
    if head.is_empty() {
        UserData::Absent
    } else if head.starts_with("#!") {
        UserData::Foreign("a script")
    } else if head.starts_with("#cloud-") || head.starts_with("Content-Type: multipart") {
        UserData::Foreign("a cloud-init document")
    } else if t.starts_with('\u{1f}') {
        UserData::Foreign("compressed")
    } else {
        UserData::Toml(t)
    }
}

/// Where the private ranges came from, for the info line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangesFrom {
    Config,
    Imds,
    Defaults,
}

impl RangesFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            RangesFrom::Config => "config",
            RangesFrom::Imds => "imds",
            RangesFrom::Defaults => "defaults",
        }
    }
}

/// The VPC's CIDRs from IMDS (for the primary ENI `mac`), when they can be the private ranges;
/// else why not, naming the IMDS path, for an error line (the caller keeps its ranges). Checked
/// like the configuration's: see [`crate::cidr::check_private`].
pub fn usable_vpc(vpc: Vec<Ipv4Cidr>, mac: &str) -> Result<Vec<Ipv4Cidr>, String> {
    match crate::cidr::check_private(&vpc) {
        Ok(()) => Ok(vpc),
        Err(e) => Err(format!(
            "meta-data/network/interfaces/macs/{mac}/vpc-ipv4-cidr-blocks: {} {e}",
            crate::report::ranges_text(&vpc)
        )),
    }
}

/// The private ranges: configured ones win, then the VPC's CIDRs from IMDS, then RFC 1918 and
/// 100.64.0.0/10. Sorted and deduplicated so the ruleset and the ready line are deterministic.
pub fn private_ranges(cfg: &Config, vpc: Option<&[Ipv4Cidr]>) -> (Vec<Ipv4Cidr>, RangesFrom) {
    let (mut v, from) = match (&cfg.private_ranges, vpc) {
        (Some(r), _) if !r.is_empty() => (r.clone(), RangesFrom::Config),
        (_, Some(v)) if !v.is_empty() => (v.to_vec(), RangesFrom::Imds),
        _ => (Ipv4Cidr::private_defaults(), RangesFrom::Defaults),
    };
    if from != RangesFrom::Defaults {
        v.sort_unstable();
        v.dedup();
    }
    (v, from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn user_data_kinds() {
        assert_eq!(classify_user_data(None), UserData::Absent);
        assert_eq!(classify_user_data(Some(" \n")), UserData::Absent);
        assert!(matches!(
            classify_user_data(Some("#!/bin/sh\necho\n")),
            UserData::Foreign(_)
        ));
        assert!(matches!(
            classify_user_data(Some("#cloud-config\n")),
            UserData::Foreign(_)
        ));
        assert!(matches!(
            classify_user_data(Some("\u{1f}\u{8b}...")),
            UserData::Foreign(_)
        ));
        assert_eq!(
            classify_user_data(Some("# nat-init\nrp_filter = 1\n")),
            UserData::Toml("# nat-init\nrp_filter = 1\n")
        );
    }

    #[test]
    fn late_imds_answer_says_what_it_changed() {
        let defaults = Ipv4Cidr::private_defaults();
        let vpc = [cidr("10.0.0.0/16"), cidr("198.18.0.0/16")];
        assert_eq!(
            late_imds_changes(
                (&defaults, RangesFrom::Defaults),
                (&vpc, RangesFrom::Imds),
                &["health_interval".to_string(), "icmp_rate".to_string()]
            )
            .as_deref(),
            Some(
                "private=10.0.0.0/16,198.18.0.0/16 from imds (was 10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10 from defaults); user-data keys health_interval,icmp_rate"
            )
        );
        assert_eq!(
            late_imds_changes((&vpc, RangesFrom::Config), (&vpc, RangesFrom::Config), &[]),
            None
        );
        let mut b = imds_backoff();
        let d: Vec<u64> = (0..8).map(|_| b.failure().as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn vpc_ranges_from_imds_are_checked() {
        let ok = vec![cidr("10.0.0.0/16")];
        assert_eq!(usable_vpc(ok.clone(), "0a:1b:2c:3d:4e:5f"), Ok(ok));
        let e = usable_vpc(
            vec![cidr("0.0.0.0/1"), cidr("128.0.0.0/1")],
            "0a:1b:2c:3d:4e:5f",
        )
        .unwrap_err();
        assert!(
            e.starts_with("meta-data/network/interfaces/macs/0a:1b:2c:3d:4e:5f/vpc-ipv4-cidr-blocks: 0.0.0.0/1,128.0.0.0/1 cover the whole address space"),
            "{e}"
        );
        let e = usable_vpc(vec![cidr("169.254.0.0/16")], "0a:1b:2c:3d:4e:5f").unwrap_err();
        assert!(e.contains("overlaps 169.254.0.0/16"), "{e}");
    }

    #[test]
    fn private_range_precedence() {
        let vpc = [
            cidr("10.1.0.0/16"),
            cidr("10.0.0.0/16"),
            cidr("10.1.0.0/16"),
        ];
        let cfg = Config::default();
        assert_eq!(
            private_ranges(&cfg, Some(&vpc)),
            (
                vec![cidr("10.0.0.0/16"), cidr("10.1.0.0/16")],
                RangesFrom::Imds
            )
        );
        assert_eq!(
            private_ranges(&cfg, None),
            (Ipv4Cidr::private_defaults(), RangesFrom::Defaults)
        );
        assert_eq!(private_ranges(&cfg, Some(&[])).1, RangesFrom::Defaults);
        let pinned = Config {
            private_ranges: Some(vec![cidr("192.168.0.0/16")]),
            ..Config::default()
        };
        assert_eq!(
            private_ranges(&pinned, Some(&vpc)),
            (vec![cidr("192.168.0.0/16")], RangesFrom::Config)
        );
    }
}
