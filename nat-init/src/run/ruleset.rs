//! [`Stage::Nft`](nat_init::plan::Stage::Nft): the appliance's table. Built from the config (with
//! a flowtable if the kernel can add one), kept when an identical one is already installed (a
//! restart), else installed in one atomic batch and read back. It takes DHCP replies from the
//! lease's server only, so it is rebuilt when that changes or the lease is lost.

use anyhow::{Context, Result};

use nat_init::nft::{self, Nfnl};
use nat_init::plan;

use super::Service;
use super::console::info;

impl Service {
    pub(super) fn install_ruleset(&mut self) -> Result<()> {
        let mut sock = Nfnl::open()?;
        let supported = self.cfg.flowtable && nft::flowtable_supported(&mut sock);
        let server = self.lease.as_ref().map(|l| l.server);
        let spec = plan::ruleset_spec(
            &self.cfg,
            &self.iface.name,
            &self.private,
            supported,
            server,
            &self.snat,
            &self.snat_by_source,
        );
        let r = nft::build(&spec);
        match nft::verify(&mut sock, &r) {
            Ok(()) => info(format_args!(
                "nft table ip {} already installed and verified; kept",
                r.table
            )),
            Err(_) => {
                nft::apply(&mut sock, &r)
                    .with_context(|| format!("installing table ip {}", r.table))?;
                nft::verify(&mut sock, &r)
                    .with_context(|| format!("verifying table ip {} after install", r.table))?;
                // A new table's counters start from 0: the metrics take that as a restart.
                if let Ok(mut m) = self.metrics.lock() {
                    m.table_generation += 1;
                }
                info(format_args!(
                    "nft table ip {} installed and verified",
                    r.table
                ));
            }
        }
        let line = plan::flowtable_line(self.cfg.flowtable, supported, &self.iface.name);
        if self.flowtable_said.as_deref() != Some(line.as_str()) {
            info(&line);
            self.flowtable_said = Some(line);
        }
        self.flowtable_active = supported;
        self.ruleset = Some(r);
        self.table_dhcp_server = server;
        Ok(())
    }
}
