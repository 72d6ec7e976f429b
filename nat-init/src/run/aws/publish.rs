//! Publishing the metrics sampler's periods to CloudWatch (`PutMetricData`), on the AWS
//! thread's session and credentials. A period that cannot go out stays queued (the newest
//! [`QUEUE`] of them; CloudWatch takes data up to two weeks old) and goes with the next one;
//! why it failed is on the health line. Nothing here touches the NAT.

use nat_init::aws::{cloudwatch, ec2};
use nat_init::config::{MetricDimension, MetricsConfig};
use nat_init::metrics::{self, Dimensions, Sample};
use nat_init::plan::aws::{self as awsplan, ItemState};

use super::{CallError, Inputs, REPEAT_GAP_MS, Worker};
use crate::run::console::{error, info, now_ms};

/// Periods kept while publishing fails: an hour at the default period.
pub(super) const QUEUE: usize = 60;

impl Worker {
    /// Queues a period (dropping the oldest beyond [`QUEUE`]).
    pub(super) fn queue_sample(&mut self, s: Sample) {
        self.metrics_queue.push_back(s);
        while self.metrics_queue.len() > QUEUE {
            self.metrics_queue.pop_front();
            self.metrics_dropped += 1;
        }
    }

    /// Sends what is queued; on failure it stays queued and the status says why.
    pub(super) fn publish_metrics(&mut self, inputs: &Inputs) {
        let Some(cfg) = inputs.cfg.metrics.clone() else {
            self.metrics_queue.clear();
            return;
        };
        match self.try_publish(inputs, &cfg) {
            Ok(sent) => {
                self.metrics_failures = 0;
                let first = self
                    .status
                    .lock()
                    .map(|st| st.metrics_periods == 0)
                    .unwrap_or(false);
                self.with_status(|st| {
                    st.metrics = ItemState::Done;
                    st.metrics_failing = None;
                    st.metrics_periods += sent as u64;
                });
                if first {
                    // What this configuration costs at most: every catalogue series, one per
                    // route table for a failover member's roles.
                    let tables = if inputs.cfg.failover.is_some() {
                        inputs.cfg.route_tables.len().max(1)
                    } else {
                        0
                    };
                    let series = metrics::catalogue::series_per_instance(tables) as u64;
                    let cost = metrics::cost::MonthlyCost::new(
                        series,
                        cloudwatch::MAX_DATUMS as u64,
                        u64::from(cfg.period_s),
                    )
                    .map(|c| c.to_string())
                    .unwrap_or_else(|e| e.to_string());
                    info(format_args!(
                        "metrics published to CloudWatch namespace {} every {} s; at most {cost}",
                        cfg.namespace, cfg.period_s
                    ));
                }
            }
            Err(e) => {
                self.metrics_failures += 1;
                let short = e.short();
                self.with_status(|st| st.metrics_failing = Some(short));
                let line = format!(
                    "publishing metrics: {e}; {} period(s) queued, sent again with the next",
                    self.metrics_queue.len()
                );
                if self.errors.should_print(&line, now_ms(), REPEAT_GAP_MS) {
                    error("metrics", line);
                }
            }
        }
    }

    /// The instance's dimensions, as `metrics_dimensions` asks.
    fn dimensions(&mut self, cfg: &MetricsConfig) -> Result<Dimensions, CallError> {
        let instance_id = self
            .session
            .as_ref()
            .map(|s| s.identity.instance_id.clone())
            .ok_or_else(|| CallError::Other("no session".into()))?;
        let asg = if cfg
            .dimensions
            .contains(&MetricDimension::AutoScalingGroupName)
        {
            if self.asg.is_none() {
                let body = self.call(&ec2::describe_instance(&instance_id))?;
                let tag = ec2::parse_instance_tag(&body, ec2::ASG_TAG)
                    .map_err(|e| CallError::Other(format!("DescribeInstances: {e}")))?;
                info(format_args!(
                    "metrics dimension AutoScalingGroupName={}",
                    tag.as_deref().unwrap_or("- (not in an Auto Scaling group)")
                ));
                self.asg = Some(tag);
            }
            self.asg.clone().flatten()
        } else {
            None
        };
        Ok(Dimensions {
            // InstanceId is always known; a configuration without it leaves it out below.
            instance_id,
            nat_name: cfg
                .nat_name
                .clone()
                .filter(|_| cfg.dimensions.contains(&MetricDimension::NatName)),
            asg,
        })
    }

    fn try_publish(&mut self, inputs: &Inputs, cfg: &MetricsConfig) -> Result<usize, CallError> {
        if !inputs.imds {
            return Err(CallError::Other(
                "metrics need IMDS (region, instance id, credentials), and imds = false".into(),
            ));
        }
        self.ensure_session(inputs)?;
        self.ensure_credentials()?;
        let dims = self.dimensions(cfg)?;
        let with_id = cfg.dimensions.contains(&MetricDimension::InstanceId);
        let mut data = Vec::new();
        for s in &self.metrics_queue {
            let mut d = metrics::datums(s.unix_s, s.period_s, &s.counters, &s.gauges, &dims)
                .map_err(|e| CallError::Other(format!("metrics: {e}")))?;
            if !with_id {
                for datum in &mut d {
                    datum.dimensions.retain(|x| x.name != "InstanceId");
                }
            }
            data.extend(d);
        }
        let periods = self.metrics_queue.len();
        if data.is_empty() {
            // Baselines only (the first period of a counter): nothing to send yet.
            self.metrics_queue.clear();
            return Ok(periods);
        }
        let requests = cloudwatch::batches(&cfg.namespace, &data)
            .map_err(|e| CallError::Other(format!("metrics: {e}")))?;
        let region = self
            .session
            .as_ref()
            .map(|s| s.region.clone())
            .unwrap_or_default();
        let endpoint = match &cfg.endpoint {
            Some(url) => awsplan::parse_endpoint(url).map_err(CallError::Other)?,
            None => awsplan::regional_endpoint(cloudwatch::SERVICE, &region),
        };
        for r in &requests {
            let body = r
                .gzip()
                .map_err(|e| CallError::Other(format!("metrics: {e}")))?;
            self.put(&endpoint, &body)?;
        }
        self.metrics_queue.clear();
        Ok(periods)
    }

    /// One signed PutMetricData of a gzip-compressed body.
    fn put(&mut self, endpoint: &awsplan::Endpoint, body: &[u8]) -> Result<(), CallError> {
        self.send_signed(&super::Signed {
            what: cloudwatch::ACTION,
            endpoint: Some(endpoint),
            request: &|host: &str,
                       region: &str,
                       creds: &nat_init::aws::sigv4::Credentials,
                       now: i64| {
                cloudwatch::signed_request(host, region, creds, body.to_vec(), now)
            },
            classify: |status, err| match err {
                Some(e) => cloudwatch::classify_error(status, e),
                None => cloudwatch::classify(status),
            },
            denied: &|_: &Worker, message: String| CallError::Denied {
                permission: cloudwatch::PERMISSION.to_string(),
                resource: "*".into(),
                message,
            },
        })
        .map(|_| ())
    }
}
