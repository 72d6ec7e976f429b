//! What to do with a fresh AMI: the commands that launch a t4g.nano NAT instance from it and
//! point a private route table at it, printed after publishing.

use crate::awscli::{Command, expand, lit};

/// The commands, in order; `$PUBLIC_SUBNET`, `$NAT_SG` and `$PRIVATE_RT` are the user's to set.
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
        Command::aws("ec2", "modify-instance-attribute", region)
            .arg("--instance-id", instance.clone())
            .flag("--no-source-dest-check"),
        Command::aws("ec2", "describe-instances", region)
            .arg("--instance-ids", instance.clone())
            .capture(
                "ENI",
                "Reservations[0].Instances[0].NetworkInterfaces[0].NetworkInterfaceId",
            ),
        Command::aws("ec2", "create-route", region)
            .arg("--route-table-id", expand("$PRIVATE_RT"))
            .arg("--destination-cidr-block", lit("0.0.0.0/0"))
            .arg("--network-interface-id", expand("$ENI")),
        Command::aws("ec2", "replace-route", region)
            .arg("--route-table-id", expand("$PRIVATE_RT"))
            .arg("--destination-cidr-block", lit("0.0.0.0/0"))
            .arg("--network-interface-id", expand("$ENI")),
        Command::aws("ec2", "get-console-output", region)
            .arg("--instance-id", instance)
            .flag("--latest")
            .arg("--output", lit("text")),
    ]
}

/// The printed text: the AMI id, then the commands with a comment each.
pub fn render(ami: &str, region: Option<&str>) -> String {
    let notes = [
        "launch a t4g.nano in a public subnet, with a public IP (NAT_SG: allow the VPC's ranges in)",
        "",
        "a NAT forwards other hosts' packets: turn the source/destination check off",
        "",
        "send the private subnets' default route to the instance",
        "or, when the route table already has a 0.0.0.0/0 route",
        "watch it boot (serial console; the last 64 KB)",
    ];
    let mut out =
        format!("AMI: {ami}\n\nNext steps (set PUBLIC_SUBNET, NAT_SG, PRIVATE_RT first):\n");
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
    fn launch_and_route_commands() {
        let text = render("ami-0123", Some("eu-west-1"));
        assert!(text.starts_with("AMI: ami-0123\n"));
        assert!(text.contains(
            "INSTANCE=$(aws ec2 run-instances --region eu-west-1 --image-id ami-0123 --instance-type t4g.nano \
             --subnet-id \"$PUBLIC_SUBNET\" --security-group-ids \"$NAT_SG\" --associate-public-ip-address"
        ));
        assert!(text.contains(
            "aws ec2 modify-instance-attribute --region eu-west-1 --instance-id \"$INSTANCE\" --no-source-dest-check"
        ));
        assert!(text.contains(
            "aws ec2 create-route --region eu-west-1 --route-table-id \"$PRIVATE_RT\" \
             --destination-cidr-block 0.0.0.0/0 --network-interface-id \"$ENI\""
        ));
        assert!(text.contains("aws ec2 replace-route"));
        assert!(render("$AMI", None).contains("--image-id \"$AMI\""));
        assert!(text.contains(
            "get-console-output --region eu-west-1 --instance-id \"$INSTANCE\" --latest"
        ));
    }
}
