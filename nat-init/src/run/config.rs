//! [`Stage::Config`]: the configuration in force. The baked file is read once at start; this
//! stage asks IMDS (unless the baked file says not to) for the VPC's ranges and the user-data,
//! layers a nat-init user-data document over the baked file, and settles the private ranges.
//! An IMDS that does not answer (down, slow, throttled) does not hold the NAT back: the stage
//! settles on the baked file and the default ranges, and IMDS is asked again in the background
//! on a back-off until it answers; its answer then rebuilds the table and says what changed.

use std::path::Path;

use anyhow::Result;

use nat_init::cidr::Ipv4Cidr;
use nat_init::config::{self, Config};
use nat_init::imds;
use nat_init::plan::{self, RangesFrom, Stage, UserData};
use nat_init::report;

use super::Service;
use super::console::{error, info, ms, now_ms};

/// Reads the baked configuration; a missing file means the defaults, an unreadable one is
/// reported and also means the defaults.
pub fn read_baked(path: &str) -> Option<String> {
    match config::read_baked(Path::new(path)) {
        Ok(Some(t)) => Some(t),
        Ok(None) => {
            info(format_args!("config {path} absent; using the defaults"));
            None
        }
        Err(e) => {
            error(
                "config",
                format_args!("reading {path}: {e}; using the defaults"),
            );
            None
        }
    }
}

/// What IMDS said, as far as the configuration goes.
enum Answer {
    /// Turned off in the baked file.
    Off,
    /// No usable answer (the error, for the console).
    Unavailable(String),
    Answered {
        vpc: Vec<Ipv4Cidr>,
        user_data: Option<String>,
    },
}

impl Service {
    /// [`Stage::Config`]: IMDS (VPC ranges, user-data), layered configuration, private ranges.
    pub(super) fn load_config(&mut self) -> Result<()> {
        let answer = self.ask_imds()?;
        if self.switch_to.is_some() {
            // The rest is for the primary, once nat-init drives it.
            return Ok(());
        }
        if let Answer::Unavailable(why) = &answer {
            let d = self.imds_backoff.failure();
            self.imds_retry_ms = Some(now_ms().saturating_add(ms(d)));
            let (ranges, from) = self.settle_config(None);
            info(format_args!(
                "imds unavailable ({why}); using private={} from {}; asking again in the background, first in {}",
                report::ranges_text(&ranges),
                from.as_str(),
                report::seconds(d)
            ));
            return Ok(());
        }
        let user_data = match &answer {
            Answer::Answered { vpc, user_data } => Some((vpc.clone(), user_data.clone())),
            _ => None,
        };
        let (ranges, from) = self.settle_config(user_data);
        info(format_args!(
            "config private={} from {}",
            report::ranges_text(&ranges),
            from.as_str()
        ));
        Ok(())
    }

    /// The background retry of an IMDS that did not answer at boot, when it is due: again later
    /// if it still does not, else the late answer applied (the table rebuilt in one transaction,
    /// the sysctls and the address redone) and what it changed said.
    pub(super) fn retry_imds(&mut self, now: u64) {
        if self.imds_retry_ms.is_none_or(|at| at > now) {
            return;
        }
        let answer = match self.ask_imds() {
            Ok(a) => a,
            Err(e) => Answer::Unavailable(format!("{e:#}")),
        };
        if self.switch_to.is_some() {
            return;
        }
        let (vpc, user_data) = match answer {
            Answer::Answered { vpc, user_data } => (vpc, user_data),
            Answer::Off => {
                self.imds_retry_ms = None;
                return;
            }
            Answer::Unavailable(why) => {
                let d = self.imds_backoff.failure();
                self.imds_retry_ms = Some(now_ms().saturating_add(ms(d)));
                info(format_args!(
                    "imds still unavailable ({why}); asking again in {}",
                    report::seconds(d)
                ));
                return;
            }
        };
        self.imds_retry_ms = None;
        self.imds_backoff.success();
        let before = (self.private.clone(), self.private_from);
        let keys = user_data
            .as_deref()
            .map(config::document_keys)
            .unwrap_or_default();
        let (ranges, from) = self.settle_config(Some((vpc, user_data)));
        match plan::late_imds_changes((&before.0, before.1), (&ranges, from), &keys) {
            None => info("imds answered; nothing changed"),
            Some(what) => {
                info(format_args!(
                    "imds answered; applying {what}; rebuilding the table"
                ));
                let now = now_ms();
                self.stages.invalidate(Stage::Nft, now);
                self.stages.invalidate(Stage::Sysctl, now);
            }
        }
    }

    /// Asks IMDS, and checks the interface against the primary ENI it names (which may leave a
    /// switch in `switch_to`). An error only when that check fails: the stage is retried.
    fn ask_imds(&mut self) -> Result<Answer> {
        let baked = self
            .baked
            .as_deref()
            .map(|t| (t, self.config_path.as_str()));
        if !Config::layered(baked, None).config.imds {
            info("imds disabled by config");
            return Ok(Answer::Off);
        }
        let d = match imds::fetch(&imds::Endpoint::default()) {
            Ok(d) => d,
            Err(e) => return Ok(Answer::Unavailable(format!("{e:#}"))),
        };
        info(format_args!(
            "imds instance={} mac={} vpc={}",
            d.instance_id,
            d.mac,
            report::ranges_text(&d.vpc_cidrs)
        ));
        self.check_primary(&d.mac)?;
        // Ranges that fail the private-range check are an error line and not used.
        let vpc = plan::usable_vpc(d.vpc_cidrs, &d.mac).unwrap_or_else(|why| {
            error("imds", format_args!("{why}; the VPC's ranges are not used"));
            Vec::new()
        });
        let user_data = match plan::classify_user_data(d.user_data.as_deref()) {
            UserData::Absent => None,
            UserData::Foreign(kind) => {
                info(format_args!(
                    "user-data is {kind}, not a nat-init document; ignored"
                ));
                None
            }
            UserData::Toml(t) => Some(t.to_string()),
        };
        Ok(Answer::Answered { vpc, user_data })
    }

    /// Layers the user-data of IMDS's answer (`(vpc, user_data)`, none when it did not answer)
    /// over the baked file, and puts the result and its private ranges in force.
    fn settle_config(
        &mut self,
        answer: Option<(Vec<Ipv4Cidr>, Option<String>)>,
    ) -> (Vec<Ipv4Cidr>, RangesFrom) {
        let (vpc, user_data) = match answer {
            Some((v, u)) => (Some(v), u),
            None => (None, None),
        };
        let baked = self
            .baked
            .as_deref()
            .map(|t| (t, self.config_path.as_str()));
        let layered = Config::layered(baked, user_data.as_deref());
        for e in layered
            .errors
            .iter()
            .filter(|e| e.source_name == "user-data")
        {
            error(
                "config",
                format_args!("{e}; continuing on {}", self.config_path),
            );
        }
        if user_data.is_some() && layered.errors.iter().all(|e| e.source_name != "user-data") {
            info("config user-data applied over the baked configuration");
        }
        let new = layered.config;
        if (&new.interface, new.rename, &new.name)
            != (&self.cfg.interface, self.cfg.rename, &self.cfg.name)
        {
            info("config interface, rename and name from user-data apply from the next boot only");
        }
        let (ranges, from) = plan::private_ranges(&new, vpc.as_deref());
        let route_mtu_changed = new.default_route_mtu != self.cfg.default_route_mtu;
        self.private = ranges.clone();
        self.private_from = from;
        self.cfg = new;
        if route_mtu_changed {
            self.stages.invalidate(Stage::Address, 0);
        }
        (ranges, from)
    }
}
