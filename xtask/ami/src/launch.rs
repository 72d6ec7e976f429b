//! What to do with a fresh AMI: the commands that launch a t4g.nano NAT instance from it with a
//! role and a user-data document, after which the appliance does the rest itself (source/dest
//! check, routes, Elastic IPs: README "The AWS side"), printed after publishing.

use crate::awscli::{Command, expand, lit};

/// The user-data the printed launch passes (`nat.toml`), for the user to write first.
pub const USER_DATA: &str = "disable_source_dest_check = true\nroute_tables = [\"rtb-...\"]\n";

/// The commands, in order; `$PUBLIC_SUBNET`, `$NAT_SG` and `$NAT_PROFILE` are the user's to set.
pub fn commands(ami: &str, region: Option<&str>) -> Vec<Command> {
    let instance = expand("$INSTANCE");
    // In a dry run the id is still a shell variable.
    let ami = if ami.starts_with('$') {
        expand(ami)
    } else {
        lit(ami)
    };
    vec![
        Command::aws("ec2", "run-instances", region)
            .arg("--image-id", ami)
            .arg("--instance-type", lit("t4g.nano"))
            .arg("--subnet-id", expand("$PUBLIC_SUBNET"))
            .arg("--security-group-ids", expand("$NAT_SG"))
            .flag("--associate-public-ip-address")
            .arg("--iam-instance-profile", expand("Name=$NAT_PROFILE"))
            .arg("--user-data", lit("file://nat.toml"))
            .arg(
                "--metadata-options",
                lit("HttpTokens=required,HttpEndpoint=enabled"),
            )
            .arg(
                "--tag-specifications",
                lit("ResourceType=instance,Tags=[{Key=Name,Value=nat}]"),
            )
            .capture("INSTANCE", "Instances[0].InstanceId"),
        Command::ec2_wait("instance-running", region).arg("--instance-ids", instance.clone()),
        Command::aws("ec2", "get-console-output", region)
            .arg("--instance-id", instance)
            .flag("--latest")
            .arg("--output", lit("text")),
    ]
}

/// The printed text: the AMI id, the user-data and role to prepare, then the commands with a
/// comment each.
pub fn render(ami: &str, region: Option<&str>) -> String {
    let notes = [
        "launch a t4g.nano in a public subnet, with a public IP, the role and the user-data",
        "",
        "watch it boot and do its AWS part (serial console; the last 64 KB)",
    ];
    let mut out = format!(
        "AMI: {ami}\n\nNext steps (set PUBLIC_SUBNET, NAT_SG, NAT_PROFILE first):\n\
         \x20 # nat.toml, the user-data (README \"The AWS side\"; NAT_SG lets the VPC's ranges in):\n"
    );
    for line in USER_DATA.lines() {
        out.push_str(&format!("  #   {line}\n"));
    }
    out.push_str(
        "  # NAT_PROFILE: an instance profile whose role has the policy from\n\
         \x20 #   cargo run -p nat-init -- --iam-policy --user-data nat.toml\n",
    );
    for (c, note) in commands(ami, region).iter().zip(notes) {
        if !note.is_empty() {
            out.push_str(&format!("  # {note}\n"));
        }
        out.push_str(&format!("  {}\n", c.render()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_with_role_and_user_data() {
        let text = render("ami-0123", Some("eu-west-1"));
        assert!(text.starts_with("AMI: ami-0123\n"));
        assert!(text.contains(
            "INSTANCE=$(aws ec2 run-instances --region eu-west-1 --image-id ami-0123 --instance-type t4g.nano \
             --subnet-id \"$PUBLIC_SUBNET\" --security-group-ids \"$NAT_SG\" --associate-public-ip-address \
             --iam-instance-profile \"Name=$NAT_PROFILE\" --user-data file://nat.toml"
        ), "{text}");
        assert!(text.contains("#   route_tables = [\"rtb-...\"]"), "{text}");
        assert!(text.contains("--iam-policy --user-data nat.toml"), "{text}");
        // The appliance does these itself now.
        assert!(!text.contains("create-route") && !text.contains("modify-instance-attribute"));
        assert!(render("$AMI", None).contains("--image-id \"$AMI\""));
        assert!(text.contains(
            "get-console-output --region eu-west-1 --instance-id \"$INSTANCE\" --latest"
        ));
    }
}
