//! IAM policies `cargo xtask ami` needs: the caller's, per route, and the `vmimport` service
//! role that ImportSnapshot (`--via s3`) assumes. Printed by `--print-policy`; README.md ("Publishing an AMI")
//! shows the same text.

/// Caller permissions for the default route (EBS direct APIs).
pub const CALLER_EBS_DIRECT: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "SnapshotThroughEbsDirectApis",
      "Effect": "Allow",
      "Action": ["ebs:StartSnapshot", "ebs:PutSnapshotBlock", "ebs:CompleteSnapshot"],
      "Resource": "*"
    },
    {
      "Sid": "RegisterTheAmi",
      "Effect": "Allow",
      "Action": [
        "ec2:DescribeSnapshots",
        "ec2:DeleteSnapshot",
        "ec2:RegisterImage",
        "ec2:DescribeImages",
        "ec2:CreateTags",
        "ec2:ModifyImageAttribute",
        "ec2:EnableImageDeprecation",
        "ec2:DescribeRegions",
        "ec2:CopyImage"
      ],
      "Resource": "*"
    },
    {
      "Sid": "SsmParameterPerRegion",
      "Effect": "Allow",
      "Action": ["ssm:PutParameter"],
      "Resource": "arn:aws:ssm:*:*:parameter/*"
    }
  ]
}"#;

/// Caller permissions for `--via s3` (BUCKET replaced by the bucket's name).
pub const CALLER_S3: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "UploadTheDisk",
      "Effect": "Allow",
      "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
      "Resource": "arn:aws:s3:::BUCKET/*"
    },
    {
      "Sid": "ImportAndRegister",
      "Effect": "Allow",
      "Action": [
        "ec2:ImportSnapshot",
        "ec2:DescribeImportSnapshotTasks",
        "ec2:CancelImportTask",
        "ec2:DescribeSnapshots",
        "ec2:DeleteSnapshot",
        "ec2:RegisterImage",
        "ec2:DescribeImages",
        "ec2:CreateTags",
        "ec2:ModifyImageAttribute",
        "ec2:EnableImageDeprecation",
        "ec2:DescribeRegions",
        "ec2:CopyImage"
      ],
      "Resource": "*"
    },
    {
      "Sid": "SsmParameterPerRegion",
      "Effect": "Allow",
      "Action": ["ssm:PutParameter"],
      "Resource": "arn:aws:ssm:*:*:parameter/*"
    },
    {
      "Sid": "LetVmImportUseItsRole",
      "Effect": "Allow",
      "Action": ["iam:PassRole"],
      "Resource": "arn:aws:iam::*:role/vmimport"
    }
  ]
}"#;

/// Trust policy of the `vmimport` role: VM Import/Export assumes it.
pub const VMIMPORT_TRUST: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Principal": { "Service": "vmie.amazonaws.com" },
      "Action": "sts:AssumeRole",
      "Condition": { "StringEquals": { "sts:Externalid": "vmimport" } }
    }
  ]
}"#;

/// Permission policy of the `vmimport` role (BUCKET replaced by the bucket's name).
pub const VMIMPORT_ROLE: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"],
      "Resource": ["arn:aws:s3:::BUCKET", "arn:aws:s3:::BUCKET/*"]
    },
    {
      "Effect": "Allow",
      "Action": [
        "ec2:ModifySnapshotAttribute",
        "ec2:CopySnapshot",
        "ec2:RegisterImage",
        "ec2:Describe*"
      ],
      "Resource": "*"
    }
  ]
}"#;

/// The IAM action an API operation needs, for error messages that name the missing permission.
pub fn action_for(operation: &str) -> String {
    let service = match operation {
        "StartSnapshot" | "PutSnapshotBlock" | "CompleteSnapshot" => "ebs",
        "PutObject" => "s3",
        "PutParameter" => "ssm",
        _ => "ec2",
    };
    format!("{service}:{operation}")
}

/// All policies, for `--print-policy`.
pub fn render_all(bucket: Option<&str>) -> String {
    let b = bucket.unwrap_or("BUCKET");
    format!(
        "# Caller policy, default route (EBS direct APIs):\n{CALLER_EBS_DIRECT}\n\n\
         # Caller policy, --via s3:\n{}\n\n\
         # Role `vmimport` (--via s3 only), trust policy:\n{VMIMPORT_TRUST}\n\n\
         # Role `vmimport`, permission policy:\n{}\n\n\
         # Create it with:\n\
         #   aws iam create-role --role-name vmimport --assume-role-policy-document file://trust.json\n\
         #   aws iam put-role-policy --role-name vmimport --policy-name vmimport --policy-document file://role.json\n",
        CALLER_S3.replace("BUCKET", b),
        VMIMPORT_ROLE.replace("BUCKET", b),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_valid_json_and_name_the_calls() {
        for p in [CALLER_EBS_DIRECT, CALLER_S3, VMIMPORT_TRUST, VMIMPORT_ROLE] {
            let _: serde_json::Value = serde_json::from_str(p).unwrap();
        }
        for op in [
            "StartSnapshot",
            "PutSnapshotBlock",
            "CompleteSnapshot",
            "DescribeSnapshots",
            "RegisterImage",
            "DescribeImages",
        ] {
            assert!(CALLER_EBS_DIRECT.contains(&action_for(op)), "{op}");
        }
        // --regions, --public, --deprecate-in, --ssm-parameter: either route.
        for op in [
            "DescribeRegions",
            "CopyImage",
            "CreateTags",
            "ModifyImageAttribute",
            "EnableImageDeprecation",
            "PutParameter",
        ] {
            assert!(CALLER_EBS_DIRECT.contains(&action_for(op)), "{op}");
            assert!(CALLER_S3.contains(&action_for(op)), "{op}");
        }
        for op in [
            "PutObject",
            "ImportSnapshot",
            "DescribeImportSnapshotTasks",
            "RegisterImage",
        ] {
            assert!(CALLER_S3.contains(&action_for(op)), "{op}");
        }
        assert!(VMIMPORT_TRUST.contains("vmie.amazonaws.com"));
    }

    #[test]
    fn bucket_is_filled_in() {
        let all = render_all(Some("my-bucket"));
        assert!(all.contains("arn:aws:s3:::my-bucket/*"));
        assert!(!all.contains("BUCKET"));
    }
}
