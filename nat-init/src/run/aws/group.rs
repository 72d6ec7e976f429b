//! The AWS side of a failover group member (`failover_group`): the group's running members
//! (DescribeInstances by the group tag), this member's own Elastic IPs on movable secondary
//! addresses and its own route tables, each claimed only when no live member holds it, and
//! the takeovers and releases the failover thread (`run::failover`) commands. What is held is
//! published in [`Facts`] for the heartbeats; `nat_init::failover` decides, this file moves.

use std::net::{Ipv4Addr, SocketAddr};

use nat_init::aws::ec2;
use nat_init::config::{AwsConfig, FAILOVER_TAG, FailoverConfig};
use nat_init::failover::{Egress, Holding};
use nat_init::plan::aws::{DefaultRoute, ItemState};

use super::{CallError, Event, Worker, default_route};
use crate::run::console::{error, info, now_ms};

/// What the worker knows of this member and its group, for the failover thread.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// This instance (found among the members by its primary ENI).
    pub instance: Option<String>,
    pub eni: Option<String>,
    /// The primary address's public address (the heartbeats' hairpin path to this member).
    pub public: Option<Ipv4Addr>,
    /// The EC2 endpoint's address: the default egress probe.
    pub endpoint: Option<SocketAddr>,
    /// The group's running members, this one included.
    pub members: Vec<ec2::Instance>,
    /// This member's own route tables (by id and by tag) and Elastic IPs.
    pub owns: Vec<String>,
    pub owns_egress: Vec<String>,
    /// Route tables and egress addresses pointed at this member, verified, since (unix ms).
    pub holds: Vec<Holding<String>>,
    pub holds_egress: Vec<Holding<Egress>>,
}

/// What the failover thread asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Move these to this member: the addresses first (the return path), then the routes.
    Take {
        from: String,
        tables: Vec<String>,
        egress: Vec<Egress>,
    },
    /// A peer holds these now: stop holding them here.
    Release {
        tables: Vec<String>,
        egress: Vec<Egress>,
    },
    /// Ask EC2 for the group's members now (a heartbeat came from an address not known yet).
    Refresh,
}

fn unix_ms() -> u64 {
    u64::try_from(Worker::unix_now()).unwrap_or(0) * 1000
        + u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_millis()),
        )
}

impl Worker {
    /// One reconciliation of a group member.
    pub(super) fn group_pass(
        &mut self,
        cfg: &AwsConfig,
        group: &FailoverConfig,
    ) -> Result<(), CallError> {
        let mut first_error: Option<CallError> = None;
        let mut note = |r: Result<(), CallError>| {
            if let Err(e) = r
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        };
        if cfg.disable_source_dest_check {
            let r = self.source_dest_check();
            note(r);
        }
        let r = self.members(group);
        note(r);
        if !cfg.elastic_ips.is_empty() || !self.facts().holds_egress.is_empty() {
            let r = self.group_egress(cfg);
            note(r);
        }
        let r = self.group_routes(cfg);
        note(r);
        self.publish_egress(cfg);
        self.say_complete();
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(super) fn facts(&self) -> Facts {
        self.facts.lock().map(|f| f.clone()).unwrap_or_default()
    }

    fn with_facts(&self, f: impl FnOnce(&mut Facts)) {
        if let Ok(mut x) = self.facts.lock() {
            f(&mut x);
        }
    }

    fn members(&mut self, group: &FailoverConfig) -> Result<(), CallError> {
        let body = self.call(&ec2::describe_running_instances_by_tag(
            FAILOVER_TAG,
            &group.group,
        ))?;
        let members = ec2::parse_describe_instances(&body)
            .map_err(|e| CallError::Other(format!("DescribeInstances: {e}")))?;
        let eni = self.eni_id()?;
        let me = members
            .iter()
            .find(|m| m.primary_eni.as_deref() == Some(eni.as_str()))
            .cloned();
        let before = self.facts().members;
        if before
            .iter()
            .map(|m| &m.id)
            .ne(members.iter().map(|m| &m.id))
        {
            info(format_args!(
                "failover group {} members: {}",
                group.group,
                members
                    .iter()
                    .map(|m| format!(
                        "{}@{}",
                        m.id,
                        m.private_ip.map(|a| a.to_string()).unwrap_or_default()
                    ))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        let endpoint = self.addr.map(|(a, _)| a);
        self.with_facts(|f| {
            f.instance = me.as_ref().map(|m| m.id.clone());
            f.public = me.as_ref().and_then(|m| m.public_ip);
            f.eni = Some(eni.clone());
            f.endpoint = endpoint;
            f.members = members;
        });
        if me.is_none() {
            return Err(CallError::Other(format!(
                "this instance ({eni}) is not among the running instances tagged {FAILOVER_TAG}={}; peers cannot find it",
                group.group
            )));
        }
        Ok(())
    }

    /// The live member other than this one whose primary ENI is `eni`.
    fn member_by_eni(&self, eni: &str) -> Option<String> {
        let f = self.facts();
        f.members
            .iter()
            .find(|m| m.primary_eni.as_deref() == Some(eni) && f.eni.as_deref() != Some(eni))
            .map(|m| m.id.clone())
    }

    fn hold_table(&self, id: &str) -> bool {
        let mut new = false;
        self.with_facts(|f| {
            if !f.holds.iter().any(|h| h.item == id) {
                new = true;
                f.holds.push(Holding {
                    item: id.to_string(),
                    since_ms: unix_ms(),
                });
            }
        });
        new
    }

    fn hold_egress(&self, e: &Egress) {
        self.with_facts(|f| {
            f.holds_egress
                .retain(|h| h.item.alloc != e.alloc || h.item == *e);
            if !f.holds_egress.iter().any(|h| h.item == *e) {
                f.holds_egress.push(Holding {
                    item: e.clone(),
                    since_ms: unix_ms(),
                });
            }
        });
    }

    fn unhold(&self, tables: &[String], allocs: &[String]) {
        self.with_facts(|f| {
            f.holds.retain(|h| !tables.contains(&h.item));
            f.holds_egress.retain(|h| !allocs.contains(&h.item.alloc));
        });
    }

    /// A secondary address of this ENI for an Elastic IP: `want` (moved here from wherever it
    /// is, when it is in this subnet), else a free secondary, else a new one.
    fn claim_address(
        &mut self,
        eni: &str,
        want: Option<Ipv4Addr>,
        taken: &[Ipv4Addr],
    ) -> Result<Ipv4Addr, CallError> {
        let nic = self.describe_eni()?;
        if let Some(ip) = want {
            if nic
                .private_ips
                .iter()
                .any(|p| p.address == ip && !p.primary)
            {
                return Ok(ip);
            }
            let moved = self
                .call(&ec2::assign_private_ip_addresses(
                    eni,
                    &ec2::SecondaryIps::Addresses(vec![ip]),
                    true,
                ))
                .and_then(|b| {
                    ec2::parse_assign_private_ip_addresses(&b)
                        .map_err(|e| CallError::Other(format!("AssignPrivateIpAddresses: {e}")))
                });
            match moved {
                Ok(_) => return Ok(ip),
                Err(e) => error(
                    "failover",
                    format_args!("{ip} cannot move to {eni} ({e}); a new address instead"),
                ),
            }
        }
        if let Some(p) = nic
            .private_ips
            .iter()
            .find(|p| !p.primary && p.association.is_none() && !taken.contains(&p.address))
        {
            return Ok(p.address);
        }
        let got = self
            .call(&ec2::assign_private_ip_addresses(
                eni,
                &ec2::SecondaryIps::Count(1),
                false,
            ))
            .and_then(|b| {
                ec2::parse_assign_private_ip_addresses(&b)
                    .map_err(|e| CallError::Other(format!("AssignPrivateIpAddresses: {e}")))
            })?;
        let primary: Vec<Ipv4Addr> = nic
            .private_ips
            .iter()
            .map(|p| p.address)
            .chain(taken.iter().copied())
            .collect();
        got.into_iter()
            .find(|a| !primary.contains(a))
            .ok_or_else(|| CallError::Other("AssignPrivateIpAddresses gave no new address".into()))
    }

    /// Associates `alloc` with `ip` on this ENI and reads it back.
    fn associate_verified(
        &mut self,
        alloc: &str,
        eni: &str,
        ip: Ipv4Addr,
    ) -> Result<Ipv4Addr, CallError> {
        let body = self.call(&ec2::associate_address(alloc, eni, Some(ip)))?;
        ec2::parse_associate_address(&body)
            .map_err(|e| CallError::Other(format!("AssociateAddress: {e}")))?;
        let body = self.call(&ec2::describe_addresses(&[alloc.to_string()]))?;
        let a = ec2::parse_describe_addresses(&body)
            .map_err(|e| CallError::Other(format!("DescribeAddresses: {e}")))?;
        match a.iter().find(|x| x.allocation_id == alloc) {
            Some(x)
                if x.network_interface_id.as_deref() == Some(eni) && x.private_ip == Some(ip) =>
            {
                Ok(x.public_ip)
            }
            _ => Err(CallError::Other(format!(
                "{alloc} not on {eni} {ip} after AssociateAddress"
            ))),
        }
    }

    /// This member's own Elastic IPs, each on a secondary address (so that it can move with
    /// its connections), claimed unless a live member holds it; and the taken-over ones
    /// let go when a live member has them now.
    fn group_egress(&mut self, cfg: &AwsConfig) -> Result<(), CallError> {
        let eni = self.eni_id()?;
        let held: Vec<Egress> = self
            .facts()
            .holds_egress
            .iter()
            .map(|h| h.item.clone())
            .collect();
        let mut allocs = cfg.elastic_ips.clone();
        allocs.extend(
            held.iter()
                .map(|e| e.alloc.clone())
                .filter(|a| !cfg.elastic_ips.contains(a)),
        );
        let body = self.call(&ec2::describe_addresses(&allocs))?;
        let addrs = ec2::parse_describe_addresses(&body)
            .map_err(|e| CallError::Other(format!("DescribeAddresses: {e}")))?;
        let nic = self.describe_eni()?;
        let secondary: Vec<Ipv4Addr> = nic
            .private_ips
            .iter()
            .filter(|p| !p.primary)
            .map(|p| p.address)
            .collect();
        let mut first_error = None;
        let mut used: Vec<Ipv4Addr> = Vec::new();
        for alloc in &allocs {
            let own = cfg.elastic_ips.contains(alloc);
            let Some(a) = addrs.iter().find(|a| &a.allocation_id == alloc) else {
                if own {
                    self.set_eip(alloc, ItemState::Pending("not found".into()), None);
                }
                continue;
            };
            let holder = a
                .network_interface_id
                .as_deref()
                .filter(|n| *n != eni)
                .and_then(|n| self.member_by_eni(n));
            match (a.network_interface_id.as_deref(), a.private_ip, holder) {
                (Some(n), Some(ip), _) if n == eni && secondary.contains(&ip) => {
                    used.push(ip);
                    let e = Egress {
                        alloc: alloc.clone(),
                        ip,
                    };
                    let was = self.facts().holds_egress.iter().any(|h| h.item == e);
                    self.hold_egress(&e);
                    if own {
                        let line = (!was).then(|| {
                            format!(
                                "aws eip {alloc} {} -> {eni} {ip} (already; verified)",
                                a.public_ip
                            )
                        });
                        self.set_eip(alloc, ItemState::Done, line);
                    }
                }
                (_, _, Some(holder)) => {
                    if held.iter().any(|e| &e.alloc == alloc) {
                        info(format_args!(
                            "failover eip {alloc} {} now on {holder}: released here",
                            a.public_ip
                        ));
                        self.unhold(&[], std::slice::from_ref(alloc));
                    }
                    if own {
                        self.set_eip(alloc, ItemState::Lent(holder), None);
                    }
                }
                _ if !own => {}
                (n, ip, None) => {
                    // Free, or on an instance that is not a running member: claim it, on the
                    // same address when that can move here (its connections may follow).
                    let want = ip.filter(|_| n.is_some());
                    let r = self.claim_address(&eni, want, &used).and_then(|ip| {
                        self.associate_verified(alloc, &eni, ip)
                            .map(|public| (ip, public))
                    });
                    match r {
                        Ok((ip, public)) => {
                            used.push(ip);
                            self.hold_egress(&Egress {
                                alloc: alloc.clone(),
                                ip,
                            });
                            self.set_eip(
                                alloc,
                                ItemState::Done,
                                Some(format!(
                                    "aws eip {alloc} {public} -> {eni} {ip} (associated, verified)"
                                )),
                            );
                        }
                        Err(e) => {
                            self.set_eip(alloc, ItemState::Pending(e.short()), None);
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// This member's own tables (claimed unless a live member holds them) and the ones it
    /// took over (let go when a live member has them now).
    fn group_routes(&mut self, cfg: &AwsConfig) -> Result<(), CallError> {
        let eni = self.eni_id()?;
        let mut tables = if cfg.route_tables.is_empty() && cfg.route_table_tag.is_none() {
            Vec::new()
        } else {
            self.tables(cfg)?
        };
        let own: Vec<String> = tables.iter().map(|t| t.id.clone()).collect();
        self.with_facts(|f| {
            f.owns.clone_from(&own);
            f.owns_egress.clone_from(&cfg.elastic_ips);
        });
        let taken: Vec<String> = self
            .facts()
            .holds
            .iter()
            .map(|h| h.item.clone())
            .filter(|t| !own.contains(t))
            .collect();
        if !taken.is_empty() {
            let body = self.call(&ec2::describe_route_tables_by_id(&taken))?;
            tables.extend(
                ec2::parse_describe_route_tables(&body)
                    .map_err(|e| CallError::Other(format!("DescribeRouteTables: {e}")))?,
            );
        }
        let mut first_error = None;
        for t in tables {
            let is_own = own.contains(&t.id);
            let current = default_route(&t);
            let holder = match &current {
                DefaultRoute::Eni(e) if *e != eni => self.member_by_eni(e),
                _ => None,
            };
            if current == DefaultRoute::Eni(eni.clone()) {
                if self.hold_table(&t.id) && is_own {
                    info(format_args!(
                        "aws route {} 0.0.0.0/0 -> {eni} (already; verified)",
                        t.id
                    ));
                }
                if is_own {
                    self.set_route(&t.id, ItemState::Done);
                }
            } else if let Some(holder) = holder {
                if self.facts().holds.iter().any(|h| h.item == t.id) {
                    info(format_args!(
                        "failover route {} now -> {holder}: released here",
                        t.id
                    ));
                    self.unhold(std::slice::from_ref(&t.id), &[]);
                }
                if is_own {
                    self.set_route(&t.id, ItemState::Lent(holder));
                }
            } else {
                match self.point_route(&t.id, &current, &eni) {
                    Ok(()) => {
                        self.hold_table(&t.id);
                        info(format_args!(
                            "aws route {} 0.0.0.0/0 -> {eni} (claimed, was {current}; verified)",
                            t.id
                        ));
                        if is_own {
                            self.set_route(&t.id, ItemState::Done);
                        }
                    }
                    Err(e) => {
                        if is_own {
                            self.set_route(&t.id, ItemState::Pending(e.short()));
                        }
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Creates or replaces a table's `0.0.0.0/0` to this ENI and reads it back.
    fn point_route(
        &mut self,
        table: &str,
        current: &DefaultRoute,
        eni: &str,
    ) -> Result<(), CallError> {
        let (call, action) = if *current == DefaultRoute::None {
            (
                ec2::create_route(table, ec2::DEFAULT_ROUTE, eni),
                ec2::Action::CreateRoute,
            )
        } else {
            (
                ec2::replace_route(table, ec2::DEFAULT_ROUTE, eni),
                ec2::Action::ReplaceRoute,
            )
        };
        let body = self.call(&call)?;
        ec2::parse_ok(action, &body)
            .map_err(|e| CallError::Other(format!("{}: {e}", action.name())))?;
        let body = self.call(&ec2::describe_route_tables_by_id(&[table.to_string()]))?;
        let now = ec2::parse_describe_route_tables(&body)
            .map_err(|e| CallError::Other(format!("DescribeRouteTables: {e}")))?
            .iter()
            .find(|x| x.id == table)
            .map(default_route)
            .unwrap_or(DefaultRoute::None);
        if now == DefaultRoute::Eni(eni.to_string()) {
            Ok(())
        } else {
            Err(CallError::Other(format!(
                "route table {table}: {now} after the change, not {eni}"
            )))
        }
    }

    /// The failover thread's commands, oldest first; a failed one is said and dropped (the
    /// failover thread asks again while the state it sees calls for it).
    pub(super) fn run_commands(&mut self, inputs: &super::Inputs) {
        let cmds = std::mem::take(&mut self.commands);
        if let Err(e) = self
            .ensure_session(inputs)
            .and_then(|()| self.ensure_credentials())
        {
            error("failover", format_args!("cannot act: {e}"));
            return;
        }
        for cmd in cmds {
            match cmd {
                Command::Take {
                    from,
                    tables,
                    egress,
                } => self.take_over(&inputs.cfg, &from, &tables, &egress),
                Command::Refresh => {
                    if let Some(group) = &inputs.cfg.failover
                        && let Err(e) = self.members(group)
                    {
                        error("failover", format_args!("members: {e}"));
                    }
                }
                Command::Release { tables, egress } => {
                    let allocs: Vec<String> = egress.iter().map(|e| e.alloc.clone()).collect();
                    self.unhold(&tables, &allocs);
                    for t in &tables {
                        if inputs.cfg.route_tables.contains(t) {
                            self.set_route(t, ItemState::Lent("a peer".into()));
                        }
                    }
                    for a in &allocs {
                        if inputs.cfg.elastic_ips.contains(a) {
                            self.set_eip(a, ItemState::Lent("a peer".into()), None);
                        }
                    }
                    info(format_args!(
                        "failover released {} to a peer's later claim",
                        tables
                            .iter()
                            .cloned()
                            .chain(egress.iter().map(|e| format!("{}({})", e.alloc, e.ip)))
                            .collect::<Vec<_>>()
                            .join(",")
                    ));
                    self.publish_egress(&inputs.cfg);
                }
            }
        }
    }

    /// The addresses first (the return path of the moved connections), then the routes,
    /// then the Elastic IPs' associations; everything read back.
    fn take_over(&mut self, cfg: &AwsConfig, from: &str, tables: &[String], egress: &[Egress]) {
        let started = now_ms();
        let Ok(eni) = self.eni_id() else {
            error("failover", "no ENI id yet; cannot take over");
            return;
        };
        let mut moved: Vec<Egress> = Vec::new();
        if !egress.is_empty() {
            let ips: Vec<Ipv4Addr> = egress.iter().map(|e| e.ip).collect();
            let r = self
                .call(&ec2::assign_private_ip_addresses(
                    &eni,
                    &ec2::SecondaryIps::Addresses(ips.clone()),
                    true,
                ))
                .and_then(|b| {
                    ec2::parse_assign_private_ip_addresses(&b)
                        .map_err(|e| CallError::Other(format!("AssignPrivateIpAddresses: {e}")))
                });
            match r {
                Ok(_) => moved = egress.to_vec(),
                Err(e) => {
                    // Another subnet (another zone): the Elastic IPs move to new addresses
                    // here and the connections through the old ones are lost.
                    error(
                        "failover",
                        format_args!(
                            "{ips:?} cannot move to {eni} ({e}); new addresses for their Elastic IPs, their connections are lost"
                        ),
                    );
                    let mut used = Vec::new();
                    for e in egress {
                        match self.claim_address(&eni, None, &used) {
                            Ok(ip) => {
                                used.push(ip);
                                moved.push(Egress {
                                    alloc: e.alloc.clone(),
                                    ip,
                                });
                            }
                            Err(err) => error("failover", format_args!("{}: {err}", e.alloc)),
                        }
                    }
                }
            }
            for e in &moved {
                self.hold_egress(e);
            }
            self.publish_egress(cfg);
        }
        let mut done = Vec::new();
        for t in tables {
            // A failed peer's table has a route; ReplaceRoute is the one call.
            let r = self.point_route(t, &DefaultRoute::Other(String::new()), &eni);
            match r {
                Ok(()) => {
                    self.hold_table(t);
                    done.push(t.clone());
                    if cfg.route_tables.contains(t) {
                        self.set_route(t, ItemState::Done);
                    }
                }
                Err(e) => error("failover", format_args!("route table {t}: {e}")),
            }
        }
        let routes_ms = now_ms().saturating_sub(started);
        if let Some(first) = moved.first() {
            self.learn_peer_subnets(cfg, &done, first.ip);
        }
        for e in &moved {
            match self.associate_verified(&e.alloc, &eni, e.ip) {
                Ok(public) => {
                    done.push(format!("{}({public} on {})", e.alloc, e.ip));
                    if cfg.elastic_ips.contains(&e.alloc) {
                        self.set_eip(&e.alloc, ItemState::Done, None);
                    }
                }
                Err(err) => error("failover", format_args!("{}: {err}", e.alloc)),
            }
        }
        info(format_args!(
            "failover took {} from {from}: addresses and routes in {routes_ms} ms, all verified in {} ms",
            done.join(","),
            now_ms().saturating_sub(started)
        ));
    }

    /// The subnets of a peer's `tables` just taken over, so that their new flows leave
    /// through the peer's address `ip` (and move back with it when the peer reclaims). A main
    /// table's implicit subnets cannot be listed: their flows take this member's addresses.
    fn learn_peer_subnets(&mut self, cfg: &AwsConfig, tables: &[String], ip: Ipv4Addr) {
        let peer_tables: Vec<String> = tables
            .iter()
            .filter(|t| !cfg.route_tables.contains(t))
            .cloned()
            .collect();
        if peer_tables.is_empty() {
            return;
        }
        let r = self
            .call(&ec2::describe_route_tables_by_id(&peer_tables))
            .and_then(|b| {
                ec2::parse_describe_route_tables(&b)
                    .map_err(|e| CallError::Other(format!("DescribeRouteTables: {e}")))
            })
            .and_then(|ts| {
                let ids: Vec<String> = ts.iter().flat_map(|t| t.subnets.clone()).collect();
                let cidrs = if ids.is_empty() {
                    Vec::new()
                } else {
                    let b = self.call(&ec2::describe_subnets(&ids))?;
                    ec2::parse_describe_subnets(&b)
                        .map_err(|e| CallError::Other(format!("DescribeSubnets: {e}")))?
                };
                Ok((ts, cidrs))
            });
        match r {
            Ok((ts, cidrs)) => {
                for t in ts {
                    let v: Vec<_> = cidrs
                        .iter()
                        .filter(|(id, _)| t.subnets.contains(id))
                        .map(|(_, c)| (*c, ip))
                        .collect();
                    if t.main {
                        error(
                            "failover",
                            format_args!(
                                "{} is the main table: its implicit subnets' new flows leave through this member's addresses",
                                t.id
                            ),
                        );
                    }
                    self.peer_subnets.insert(t.id, v);
                }
            }
            Err(e) => error(
                "failover",
                format_args!(
                    "the subnets of {peer_tables:?}: {e}; their new flows leave through this member's addresses"
                ),
            ),
        }
    }

    /// The addresses on the interface (every held one) and the SNAT sources (this member's
    /// own held ones; new flows never go out through a peer's address).
    fn publish_egress(&mut self, cfg: &AwsConfig) {
        let f = self.facts();
        let mut secondary: Vec<Ipv4Addr> = f.holds_egress.iter().map(|h| h.item.ip).collect();
        secondary.sort();
        secondary.dedup();
        let mut snat: Vec<Ipv4Addr> = f
            .holds_egress
            .iter()
            .filter(|h| cfg.elastic_ips.contains(&h.item.alloc))
            .map(|h| h.item.ip)
            .collect();
        snat.sort();
        let held: Vec<&String> = f.holds.iter().map(|h| &h.item).collect();
        let by_source: Vec<(nat_init::cidr::Ipv4Cidr, Ipv4Addr)> = self
            .peer_subnets
            .iter()
            .filter(|(t, _)| held.contains(t))
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|(_, ip)| secondary.contains(ip))
            .collect();
        let event = Event::Egress {
            secondary,
            snat,
            by_source,
        };
        if self.egress_sent.as_ref() != Some(&event) {
            let _ = self.events.send(event.clone());
            self.egress_sent = Some(event);
        }
    }
}
