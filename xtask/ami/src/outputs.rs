//! What a multi-region publication leaves behind: the region → AMI table printed at the end,
//! the JSON map the deploy templates read (`amis.json`), and the SSM parameter name checks.
//! Pure: results come in as data.
//!
//! The map's `regions` object has the shape of a CloudFormation `Mappings` entry
//! (`Fn::FindInMap: [Amis, !Ref "AWS::Region", ImageId]`); the same ids are in the SSM
//! parameter `--ssm-parameter` names (one per region, type String, data type `aws:ec2:image`),
//! which `AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>` template parameters resolve.

use std::collections::BTreeMap;

use serde::Serialize;

/// The parameter name README suggests: one name, a value per region.
pub fn suggested_parameter(profile: &str) -> String {
    format!("/nat-appliance/{profile}/latest/arm64")
}

/// Checks `--ssm-parameter` against SSM's naming rules, so a bad name fails before the upload:
/// letters, digits and `_.-/`, at most 1011 characters, `/`-separated names start with `/`,
/// at most 15 levels, and no `aws`/`ssm` prefix (reserved).
pub fn parse_parameter_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 1011 {
        return Err("must be 1 to 1011 characters".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-/".contains(*c)))
    {
        return Err(format!(
            "{c:?} is not allowed (letters, digits and _.-/ only)"
        ));
    }
    if s.contains('/') && !s.starts_with('/') {
        return Err(
            "a hierarchical name starts with / (like /nat-appliance/nat-t4g/latest/arm64)".into(),
        );
    }
    if s.ends_with('/') || s.contains("//") {
        return Err("empty path segment".into());
    }
    if s.matches('/').count() > 15 {
        return Err("at most 15 levels".into());
    }
    let first = s.trim_start_matches('/').to_ascii_lowercase();
    if first.starts_with("aws") || first.starts_with("ssm") {
        return Err("names starting with aws or ssm are reserved".into());
    }
    Ok(s.to_string())
}

/// How one region ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionResult {
    pub region: String,
    /// The AMI there, once one exists (also when a later step failed).
    pub ami: Option<String>,
    /// Registered here (the home region), rather than copied.
    pub home: bool,
    /// The full message when a step failed.
    pub error: Option<String>,
}

impl RegionResult {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.ami.is_some()
    }

    pub fn failed(region: &str, error: String) -> RegionResult {
        RegionResult {
            region: region.to_string(),
            ami: None,
            home: false,
            error: Some(error),
        }
    }
}

/// The regions that failed, in table order.
pub fn failed_regions(results: &[RegionResult]) -> Vec<&str> {
    results
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.region.as_str())
        .collect()
}

/// The table printed at the end: region, AMI id, state (the first line of an error).
pub fn table(results: &[RegionResult]) -> String {
    let rows: Vec<[String; 3]> = results
        .iter()
        .map(|r| {
            let state = match &r.error {
                None if r.home => "available (registered)".to_string(),
                None => "available (copied)".to_string(),
                Some(e) => format!("FAILED: {}", e.lines().next().unwrap_or_default()),
            };
            [
                r.region.clone(),
                r.ami.clone().unwrap_or_else(|| "-".into()),
                state,
            ]
        })
        .collect();
    let head = ["REGION".to_string(), "AMI".to_string(), "STATE".to_string()];
    let w0 = rows
        .iter()
        .chain([&head])
        .map(|r| r[0].len())
        .max()
        .unwrap_or(0);
    let w1 = rows
        .iter()
        .chain([&head])
        .map(|r| r[1].len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for r in std::iter::once(&head).chain(&rows) {
        out.push_str(&format!("{:w0$}  {:w1$}  {}\n", r[0], r[1], r[2]));
    }
    out
}

/// What the map says about the publication besides the ids.
#[derive(Debug, Clone)]
pub struct MapInfo<'a> {
    pub name: &'a str,
    pub profile: &'a str,
    pub version: &'a str,
    pub commit: &'a str,
    pub home_region: &'a str,
    pub public: bool,
    pub deprecation_time: Option<String>,
    pub ssm_parameter: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct Map<'a> {
    name: &'a str,
    profile: &'a str,
    version: &'a str,
    commit: &'a str,
    architecture: &'static str,
    home_region: &'a str,
    public: bool,
    deprecation_time: Option<&'a str>,
    ssm_parameter: Option<&'a str>,
    /// Only regions where every step succeeded.
    regions: BTreeMap<&'a str, Entry<'a>>,
    /// Region → the error's first line.
    failed: BTreeMap<&'a str, &'a str>,
}

#[derive(Debug, Serialize)]
struct Entry<'a> {
    #[serde(rename = "ImageId")]
    image_id: &'a str,
}

/// `amis.json`: sorted keys, so the same results give the same bytes.
pub fn map_json(info: &MapInfo, results: &[RegionResult]) -> String {
    let map = Map {
        name: info.name,
        profile: info.profile,
        version: info.version,
        commit: info.commit,
        architecture: "arm64",
        home_region: info.home_region,
        public: info.public,
        deprecation_time: info.deprecation_time.as_deref(),
        ssm_parameter: info.ssm_parameter,
        regions: results
            .iter()
            .filter(|r| r.ok())
            .filter_map(|r| {
                Some((
                    r.region.as_str(),
                    Entry {
                        image_id: r.ami.as_deref()?,
                    },
                ))
            })
            .collect(),
        failed: results
            .iter()
            .filter(|r| !r.ok())
            .map(|r| {
                let first = r.error.as_deref().and_then(|e| e.lines().next());
                (r.region.as_str(), first.unwrap_or("no AMI"))
            })
            .collect(),
    };
    // A struct of strings, bools and maps with string keys always serializes.
    let mut text =
        serde_json::to_string_pretty(&map).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results() -> Vec<RegionResult> {
        vec![
            RegionResult {
                region: "us-east-1".into(),
                ami: Some("ami-0home".into()),
                home: true,
                error: None,
            },
            RegionResult {
                region: "eu-west-1".into(),
                ami: Some("ami-0copy1".into()),
                home: false,
                error: None,
            },
            RegionResult {
                region: "ap-south-1".into(),
                ami: Some("ami-0copy2".into()),
                home: false,
                error: Some("AMI ami-0copy2 is failed: no reason given\n  detail: x".into()),
            },
            RegionResult::failed("xx-nowhere-1", "xx-nowhere-1 is not a region".into()),
        ]
    }

    #[test]
    fn table_lines_up_and_names_failures() {
        let t = table(&results());
        assert_eq!(
            t,
            "REGION        AMI         STATE\n\
             us-east-1     ami-0home   available (registered)\n\
             eu-west-1     ami-0copy1  available (copied)\n\
             ap-south-1    ami-0copy2  FAILED: AMI ami-0copy2 is failed: no reason given\n\
             xx-nowhere-1  -           FAILED: xx-nowhere-1 is not a region\n"
        );
        assert_eq!(failed_regions(&results()), ["ap-south-1", "xx-nowhere-1"]);
    }

    #[test]
    fn map_holds_only_the_good_regions() {
        let info = MapInfo {
            name: "n",
            profile: "p",
            version: "0.1.0",
            commit: "abc",
            home_region: "us-east-1",
            public: true,
            deprecation_time: Some("2027-01-01T00:00:00Z".into()),
            ssm_parameter: Some("/nat-appliance/p/latest/arm64"),
        };
        let text = map_json(&info, &results());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["regions"]["us-east-1"]["ImageId"], "ami-0home");
        assert_eq!(v["regions"]["eu-west-1"]["ImageId"], "ami-0copy1");
        assert_eq!(v["regions"].as_object().unwrap().len(), 2);
        assert_eq!(v["failed"]["xx-nowhere-1"], "xx-nowhere-1 is not a region");
        assert_eq!(
            v["failed"]["ap-south-1"],
            "AMI ami-0copy2 is failed: no reason given"
        );
        assert_eq!(v["ssm_parameter"], "/nat-appliance/p/latest/arm64");
        assert_eq!(v["deprecation_time"], "2027-01-01T00:00:00Z");
        assert_eq!(v["architecture"], "arm64");
        assert_eq!(v["public"], true);
        // Sorted: eu-west-1 before us-east-1, and the same bytes every time.
        assert!(text.find("eu-west-1").unwrap() < text.find("\"us-east-1\": {").unwrap());
        assert_eq!(text, map_json(&info, &results()));
    }

    #[test]
    fn parameter_names_follow_ssm_rules() {
        let ok = suggested_parameter("nat-t4g");
        assert_eq!(ok, "/nat-appliance/nat-t4g/latest/arm64");
        assert_eq!(parse_parameter_name(&ok), Ok(ok.clone()));
        assert!(parse_parameter_name("plain_name.1").is_ok());
        for bad in [
            "", "a/b", "/a b", "/a/", "/a//b", "/aws/x", "/SSM-x", "awsy", "/a?b",
        ] {
            assert!(parse_parameter_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            parse_parameter_name(&"/a".repeat(16))
                .unwrap_err()
                .contains("15 levels")
        );
    }
}
