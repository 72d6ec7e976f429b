//! Turning AWS failures into messages that name the fix: missing credentials, a missing
//! permission (named), a quota, a duplicate name; and classifying them for the retry policy.

use aws_sdk_ebs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::policy::action_for;
use crate::retry::{self, Class};

/// What went wrong with one call, stripped of SDK types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// API operation, e.g. `PutSnapshotBlock`.
    pub operation: String,
    pub kind: Kind,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// The full error chain, for the end of the message.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The service answered with an error.
    Service,
    /// No usable answer: connection failure, timeout, unparsable response.
    NoAnswer,
    /// The request could not even be built (a bug or a bad local setting).
    Local,
}

impl Failure {
    pub fn of<E>(operation: &str, e: &SdkError<E>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let kind = match e {
            SdkError::ServiceError(_) => Kind::Service,
            SdkError::ConstructionFailure(_) => Kind::Local,
            // An answer whose error body did not parse still has a status worth judging by.
            _ if status.is_some() => Kind::Service,
            _ => Kind::NoAnswer,
        };
        Failure {
            operation: operation.to_string(),
            kind,
            status,
            code: e.code().map(str::to_string),
            message: e.message().map(str::to_string),
            detail: DisplayErrorContext(e).to_string(),
        }
    }

    pub fn class(&self) -> Class {
        match self.kind {
            Kind::Local => Class::Permanent,
            Kind::NoAnswer => Class::Transient,
            Kind::Service => retry::classify(self.status, self.code.as_deref()),
        }
    }

    /// The message for the user: what failed, why, and what to do.
    pub fn explain(&self) -> String {
        let code = self.code.as_deref().unwrap_or("");
        let what = format!(
            "{} failed{}{}",
            self.operation,
            if code.is_empty() {
                String::new()
            } else {
                format!(": {code}")
            },
            self.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
        let fix = if is_denied(code, self.status) {
            let action = action_for(&self.operation);
            format!(
                "missing permission {action}: add it to the caller's IAM policy \
                 (`cargo xtask ami --print-policy` prints the whole policy)"
            )
        } else if is_bad_credentials(code) {
            "the AWS credentials were rejected or have expired: refresh them \
             (`aws sso login`, `aws configure`, or new AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN)"
                .to_string()
        } else if is_quota(code) {
            "a quota is reached: delete unused snapshots/AMIs, or ask for more in the Service Quotas console \
             (EBS direct API request rates, snapshots per region, AMIs per region)"
                .to_string()
        } else if code == "InvalidAMIName.Duplicate" {
            "an AMI with this name exists in the region: pass --name NAME, or deregister the old one \
             (`aws ec2 describe-images --owners self --filters Name=name,Values=NAME`)"
                .to_string()
        } else if code == "NoSuchBucket" {
            "the bucket does not exist in this region: create it (`aws s3 mb s3://BUCKET --region R`) \
             or pass another --bucket"
                .to_string()
        } else if self.operation == "ImportSnapshot" {
            "ImportSnapshot runs as the `vmimport` service role: check that it exists with the trust and \
             permission policies `cargo xtask ami --print-policy --bucket BUCKET` prints"
                .to_string()
        } else if self.kind == Kind::NoAnswer {
            "no answer from AWS: check the network, the region and the endpoint".to_string()
        } else {
            String::new()
        };
        let mut out = what;
        if !fix.is_empty() {
            out.push_str("\n  fix: ");
            out.push_str(&fix);
        }
        out.push_str("\n  detail: ");
        out.push_str(&self.detail);
        out
    }
}

fn is_denied(code: &str, status: Option<u16>) -> bool {
    matches!(
        code,
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "Forbidden"
    ) || (code.is_empty() && status == Some(403))
}

fn is_bad_credentials(code: &str) -> bool {
    matches!(
        code,
        "AuthFailure"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidAccessKeyId"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
    )
}

fn is_quota(code: &str) -> bool {
    code == "ServiceQuotaExceededException"
        || code.ends_with("LimitExceeded") && code != "RequestLimitExceeded"
        || code.contains("QuotaExceeded")
}

/// The message when the credential chain finds nothing.
pub fn no_credentials(detail: &str) -> String {
    format!(
        "no AWS credentials found (the chain tried: environment, shared config/credentials profile, SSO, \
         web identity, container and instance role)\n  fix: one of\n    \
         export AWS_PROFILE=NAME (or pass --aws-profile NAME) for a profile in ~/.aws/config\n    \
         aws sso login --profile NAME\n    \
         aws configure\n    \
         export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... [AWS_SESSION_TOKEN=...]\n  \
         or use --dry-run, which needs none\n  detail: {detail}"
    )
}

pub const NO_REGION: &str = "no AWS region: pass --region R, or set AWS_REGION, or `region = R` in the profile \
     of ~/.aws/config";

#[cfg(test)]
mod tests {
    use super::*;

    fn f(op: &str, status: u16, code: &str) -> Failure {
        Failure {
            operation: op.into(),
            kind: Kind::Service,
            status: Some(status),
            code: Some(code.into()),
            message: Some("msg".into()),
            detail: "chain".into(),
        }
    }

    #[test]
    fn denied_names_the_permission() {
        let m = f("PutSnapshotBlock", 403, "AccessDeniedException").explain();
        assert!(m.contains("missing permission ebs:PutSnapshotBlock"), "{m}");
        let m = f("RegisterImage", 403, "UnauthorizedOperation").explain();
        assert!(m.contains("missing permission ec2:RegisterImage"), "{m}");
        assert_eq!(
            f("RegisterImage", 403, "UnauthorizedOperation").class(),
            Class::Permanent
        );
    }

    #[test]
    fn quota_credentials_and_duplicate_name_have_fixes() {
        let m = f("StartSnapshot", 402, "ServiceQuotaExceededException").explain();
        assert!(m.contains("quota"), "{m}");
        let m = f("RegisterImage", 400, "SnapshotLimitExceeded").explain();
        assert!(m.contains("quota"), "{m}");
        let m = f("DescribeImages", 401, "AuthFailure").explain();
        assert!(m.contains("credentials were rejected"), "{m}");
        let m = f("PutObject", 404, "NoSuchBucket").explain();
        assert!(m.contains("aws s3 mb"), "{m}");
        let m = f("ImportSnapshot", 400, "InvalidParameter").explain();
        assert!(m.contains("vmimport"), "{m}");
        let m = f("RegisterImage", 400, "InvalidAMIName.Duplicate").explain();
        assert!(m.contains("--name"), "{m}");
        // Throttling is not a quota problem: it is retried.
        assert!(
            !f("DescribeImages", 503, "RequestLimitExceeded")
                .explain()
                .contains("quota")
        );
        assert_eq!(
            f("DescribeImages", 503, "RequestLimitExceeded").class(),
            Class::Transient
        );
    }

    #[test]
    fn kinds_decide_the_class() {
        let mut x = f("PutSnapshotBlock", 500, "InternalServerException");
        assert_eq!(x.class(), Class::Transient);
        x.kind = Kind::NoAnswer;
        x.status = None;
        assert_eq!(x.class(), Class::Transient);
        x.kind = Kind::Local;
        assert_eq!(x.class(), Class::Permanent);
    }
}
