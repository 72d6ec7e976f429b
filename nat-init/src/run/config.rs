//! [`Stage::Config`]: the configuration in force. The baked file is read once at start; this
//! stage asks IMDS (unless the baked file says not to) for the VPC's ranges and the user-data,
//! layers a nat-init user-data document over the baked file, and settles the private ranges.

use std::path::Path;

use anyhow::Result;

use nat_init::cidr::Ipv4Cidr;
use nat_init::config::{self, Config};
use nat_init::imds;
use nat_init::plan::{self, Stage, UserData};
use nat_init::report;

use super::Service;
use super::console::{error, info};

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

impl Service {
    /// [`Stage::Config`]: IMDS (VPC ranges, user-data), layered configuration, private ranges.
    pub(super) fn load_config(&mut self) -> Result<()> {
        // Owned: the primary-ENI check below needs `self` mutably.
        let (baked_text, config_path) = (self.baked.clone(), self.config_path.clone());
        let baked = baked_text.as_deref().map(|t| (t, config_path.as_str()));
        let imds_on = Config::layered(baked, None).config.imds;
        let mut vpc: Option<Vec<Ipv4Cidr>> = None;
        let mut user_data: Option<String> = None;
        let mut unavailable: Option<String> = None;
        let mut vpc_refused: Option<String> = None;
        if !imds_on {
            info("imds disabled by config");
        } else {
            match imds::fetch(&imds::Endpoint::default()) {
                Ok(d) => {
                    info(format_args!(
                        "imds instance={} mac={} vpc={}",
                        d.instance_id,
                        d.mac,
                        report::ranges_text(&d.vpc_cidrs)
                    ));
                    self.check_primary(&d.mac)?;
                    if self.switch_to.is_some() {
                        // The rest is for the primary, once nat-init drives it.
                        return Ok(());
                    }
                    // Bad ones are an error line, and the ranges stay the defaults.
                    match plan::usable_vpc(d.vpc_cidrs, &d.mac) {
                        Ok(v) => vpc = Some(v),
                        Err(why) => vpc_refused = Some(why),
                    }
                    match plan::classify_user_data(d.user_data.as_deref()) {
                        UserData::Absent => {}
                        UserData::Foreign(kind) => {
                            info(format_args!(
                                "user-data is {kind}, not a nat-init document; ignored"
                            ));
                        }
                        UserData::Toml(t) => user_data = Some(t.to_string()),
                    }
                }
                Err(e) => unavailable = Some(format!("{e:#}")),
            }
        }
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
        if let Some(why) = vpc_refused {
            error(
                "imds",
                format_args!(
                    "{why}; keeping private={} from {}",
                    report::ranges_text(&ranges),
                    from.as_str()
                ),
            );
        }
        match unavailable {
            Some(why) => info(format_args!(
                "imds unavailable ({why}); using private={} from {}",
                report::ranges_text(&ranges),
                from.as_str()
            )),
            None => info(format_args!(
                "config private={} from {}",
                report::ranges_text(&ranges),
                from.as_str()
            )),
        }
        let route_mtu_changed = new.default_route_mtu != self.cfg.default_route_mtu;
        self.private = ranges;
        self.cfg = new;
        if route_mtu_changed {
            self.stages.invalidate(Stage::Address, 0);
        }
        Ok(())
    }
}
