//! What one DescribeImages poll means while waiting for an AMI (registered or copied) to
//! become `available`: done, failed for good, timed out, or wait on. Pure, so the timeout and
//! the terminal states are tested without a clock or a service.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    Done,
    Wait,
    /// The message for that region.
    Failed(String),
}

/// `state` is DescribeImages' State (`None`: the id is not visible yet, as just after CopyImage).
pub fn judge(
    region: &str,
    ami: &str,
    state: Option<&str>,
    reason: Option<&str>,
    elapsed: Duration,
    timeout: Duration,
) -> Poll {
    match state {
        Some("available") => Poll::Done,
        Some(s @ ("failed" | "error" | "invalid" | "deregistered" | "disabled")) => Poll::Failed(
            format!("AMI {ami} is {s}: {}", reason.unwrap_or("no reason given")),
        ),
        _ if elapsed > timeout => Poll::Failed(format!(
            "AMI {ami} not available after {} minutes (still {}); it may yet finish: \
             aws ec2 wait image-available --region {region} --image-ids {ami}",
            timeout.as_secs() / 60,
            state.unwrap_or("not visible")
        )),
        _ => Poll::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn states() {
        let j = |s, e| judge("eu-west-1", "ami-1", s, None, e, 10 * MIN);
        assert_eq!(j(Some("available"), MIN), Poll::Done);
        // Even after the deadline an available AMI counts.
        assert_eq!(j(Some("available"), 20 * MIN), Poll::Done);
        assert_eq!(j(Some("pending"), MIN), Poll::Wait);
        assert_eq!(j(None, MIN), Poll::Wait);
        assert_eq!(
            j(Some("failed"), MIN),
            Poll::Failed("AMI ami-1 is failed: no reason given".into())
        );
        assert_eq!(
            judge("r", "ami-2", Some("error"), Some("copy failed"), MIN, MIN),
            Poll::Failed("AMI ami-2 is error: copy failed".into())
        );
    }

    #[test]
    fn timeout_names_the_region_and_the_wait_command() {
        let Poll::Failed(m) = judge(
            "eu-west-1",
            "ami-1",
            Some("pending"),
            None,
            11 * MIN,
            10 * MIN,
        ) else {
            panic!("no timeout")
        };
        assert!(
            m.contains("not available after 10 minutes (still pending)"),
            "{m}"
        );
        assert!(
            m.contains("aws ec2 wait image-available --region eu-west-1 --image-ids ami-1"),
            "{m}"
        );
    }
}
