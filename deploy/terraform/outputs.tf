output "security_group_id" {
  description = "The NAT instances' security group."
  value       = aws_security_group.nat.id
}

output "autoscaling_groups" {
  description = "Per NAT (zone and member): its Auto Scaling group (of one)."
  value       = { for k, g in aws_autoscaling_group.nat : k => g.name }
}

output "instance_and_eni_commands" {
  description = "Per NAT: prints its instance id, ENI id and public address (an Auto Scaling group's instance has no id before launch)."
  value = { for k, g in aws_autoscaling_group.nat : k =>
    "aws ec2 describe-instances --filters Name=tag:aws:autoscaling:groupName,Values=${g.name} Name=instance-state-name,Values=running --query 'Reservations[].Instances[].[InstanceId,NetworkInterfaces[0].NetworkInterfaceId,PublicIpAddress]' --output text"
  }
}

output "console_log_commands" {
  description = "Per NAT: reads its serial console (look for nat-init: ready and aws ready)."
  value = { for k, g in aws_autoscaling_group.nat : k =>
    "aws ec2 get-console-output --latest --output text --instance-id $(aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names ${g.name} --query 'AutoScalingGroups[0].Instances[0].InstanceId' --output text)"
  }
}

output "egress_addresses" {
  description = "Per zone with an Elastic IP: the allocation its private subnets leave from."
  value       = { for k, s in local.slots : s.zone => local.eip_ids[k] if s.eip }
}
