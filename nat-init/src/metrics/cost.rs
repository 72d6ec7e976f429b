//! What publishing costs a month, for the docs and for a line at start-up: PutMetricData
//! requests and custom metrics, in exact integer micro-dollars.
//!
//! Prices (Amazon CloudWatch pricing, us-east-1, as of December 2026): API requests $0.01 per
//! 1,000 (PutMetricData is one request however many datums it carries); custom metrics $0.30
//! per metric per month for the first 10,000 (cheaper tiers above are not modelled, so larger
//! counts are refused), prorated by the hour a metric is published. Not subtracted: the free
//! tier (10 metrics and 1,000,000 API requests a month, shared by the whole account). A month
//! is 30 days, as in AWS's pricing examples.

use super::Error;

/// Seconds in the 30-day month.
pub const SECONDS_PER_MONTH: u64 = 30 * 86_400;
/// $0.01 per 1,000 requests.
pub const MICRO_USD_PER_REQUEST: u64 = 10;
/// $0.30 per metric per month.
pub const MICRO_USD_PER_METRIC_MONTH: u64 = 300_000;
/// The metrics the first price covers.
pub const FIRST_TIER_METRICS: u64 = 10_000;

/// The month's requests and cost of publishing `metrics` series every `period_s` seconds,
/// `datums_per_request` to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthlyCost {
    pub metrics: u64,
    pub requests_per_period: u64,
    pub requests: u64,
    pub api_micro_usd: u64,
    pub metrics_micro_usd: u64,
}

impl MonthlyCost {
    /// `datums_per_request` is 1-1000 (CloudWatch's limit), `period_s` at least 1; a period
    /// that does not divide the month counts its last, partial one in full.
    pub fn new(metrics: u64, datums_per_request: u64, period_s: u64) -> Result<Self, Error> {
        let max = crate::aws::cloudwatch::MAX_DATUMS as u64;
        if !(1..=max).contains(&datums_per_request) {
            return Err(Error::Cost("datums per request must be 1 to 1000"));
        }
        if period_s == 0 {
            return Err(Error::Cost("the period must be at least 1 s"));
        }
        if metrics > FIRST_TIER_METRICS {
            return Err(Error::Cost(
                "over 10,000 metrics: the cheaper tiers are not modelled",
            ));
        }
        let requests_per_period = metrics.div_ceil(datums_per_request);
        let requests = requests_per_period * SECONDS_PER_MONTH.div_ceil(period_s);
        Ok(Self {
            metrics,
            requests_per_period,
            requests,
            api_micro_usd: requests * MICRO_USD_PER_REQUEST,
            metrics_micro_usd: metrics * MICRO_USD_PER_METRIC_MONTH,
        })
    }

    pub fn total_micro_usd(&self) -> u64 {
        self.api_micro_usd + self.metrics_micro_usd
    }
}

impl std::fmt::Display for MonthlyCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} metrics, {} requests a month: {} API + {} metrics = {} a month",
            self.metrics,
            self.requests,
            usd(self.api_micro_usd),
            usd(self.metrics_micro_usd),
            usd(self.total_micro_usd())
        )
    }
}

/// Micro-dollars as dollars to the cent, rounded half up: `$7.93`.
pub fn usd(micro: u64) -> String {
    let cents = micro.saturating_add(5_000) / 10_000;
    format!("${}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::catalogue::series_per_instance;

    #[test]
    fn the_default_a_minute_all_in_one_request() {
        // One route table: 25 series, one request a minute.
        let metrics = series_per_instance(1) as u64;
        let c = MonthlyCost::new(metrics, 1000, 60).unwrap();
        assert_eq!(c.requests_per_period, 1);
        assert_eq!(c.requests, 43_200);
        assert_eq!(c.api_micro_usd, 432_000);
        assert_eq!(c.metrics_micro_usd, 7_500_000);
        assert_eq!(c.total_micro_usd(), 7_932_000);
        assert_eq!(
            c.to_string(),
            "25 metrics, 43200 requests a month: $0.43 API + $7.50 metrics = $7.93 a month"
        );
    }

    #[test]
    fn smaller_requests_and_shorter_periods_cost_requests() {
        // The old limit of 20 datums a request: two requests a minute.
        let c = MonthlyCost::new(25, 20, 60).unwrap();
        assert_eq!((c.requests_per_period, c.requests), (2, 86_400));
        assert_eq!(c.api_micro_usd, 864_000);
        // High resolution every 10 s: six times the requests, the same metrics.
        let c = MonthlyCost::new(25, 1000, 10).unwrap();
        assert_eq!(c.requests, 259_200);
        assert_eq!(c.api_micro_usd, 2_592_000);
        assert_eq!(c.metrics_micro_usd, 7_500_000);
        // Every 5 minutes.
        let c = MonthlyCost::new(25, 1000, 300).unwrap();
        assert_eq!(c.requests, 8_640);
        // A period that does not divide the month: the partial one counts.
        assert_eq!(MonthlyCost::new(1, 1, 7).unwrap().requests, 370_286);
        assert_eq!(MonthlyCost::new(0, 1000, 60).unwrap().total_micro_usd(), 0);
        // Exactly a full request, and one over.
        assert_eq!(
            MonthlyCost::new(1000, 1000, 60)
                .unwrap()
                .requests_per_period,
            1
        );
        assert_eq!(
            MonthlyCost::new(1001, 1000, 60)
                .unwrap()
                .requests_per_period,
            2
        );
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(MonthlyCost::new(25, 0, 60).is_err());
        assert!(MonthlyCost::new(25, 1001, 60).is_err());
        assert!(MonthlyCost::new(25, 1000, 0).is_err());
        assert!(MonthlyCost::new(10_000, 1000, 60).is_ok());
        assert!(MonthlyCost::new(10_001, 1000, 60).is_err());
    }

    #[test]
    fn dollars_round_half_up_to_the_cent() {
        assert_eq!(usd(0), "$0.00");
        assert_eq!(usd(4_999), "$0.00");
        assert_eq!(usd(5_000), "$0.01");
        assert_eq!(usd(432_000), "$0.43");
        assert_eq!(usd(7_935_000), "$7.94");
        assert_eq!(usd(3_000_000_000), "$3000.00");
    }
}
