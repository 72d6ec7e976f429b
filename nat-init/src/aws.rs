//! The appliance's own AWS calls, as pure logic: SigV4 signing ([`sigv4`]), the instance role's
//! credentials and their refresh schedule ([`credentials`]), the EC2 Query API's requests,
//! answers and error classes ([`ec2`]), CloudWatch's PutMetricData ([`cloudwatch`]), and the
//! least-privilege IAM policy for a configuration ([`iam`]). No I/O and no clock here: the HTTPS
//! transport and the worker that drives these live elsewhere and pass the time in.

pub mod cloudwatch;
pub mod credentials;
pub mod ec2;
pub mod iam;
pub mod sigv4;
pub mod utc;
