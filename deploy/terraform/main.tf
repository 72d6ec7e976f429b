# The NAT appliance on AWS, as deploy/cloudformation/nat.yaml (the deploy check keeps the two
# alike): per zone a NAT instance in an Auto Scaling group of one (two with failover = "pair"),
# each with its launch template (user-data: a nat-init TOML document), its instance role (the
# policy `nat-init --iam-policy --eni-tag nat:appliance=<name>` prints for that user-data), and
# the CloudWatch alarms of a NAT Gateway on its metrics; one security group (the VPC in, nothing
# from the internet); optional Elastic IPs.
#
# Routes: no aws_route here. An Auto Scaling group's instance has no id at apply time, so the
# private route tables' ids go into user-data (route_tables) and the appliance points their
# 0.0.0.0/0 at its own ENI when it is ready, and again after every replacement.
#
# IAM eventual consistency: a new role's policy takes a while to reach EC2; the appliance
# retries AccessDenied (2 s doubling to 5 minutes) and says so on its console, so the first
# apply needs no second one.
#
# Failover: tag the group's route tables (and Elastic IPs you pass) nat:failover-group=<group>
# (name, or <name>-<zone> for a pair); the roles' failover statements require it. Elastic IPs
# this module allocates carry it. The hairpin heartbeat path stays closed (nothing from the
# internet); members hear each other directly.

locals {
  eni_tag      = "nat:appliance"
  failover_tag = "nat:failover-group"
  failover_on  = var.failover != "none"
  members      = var.failover == "pair" ? [1, 2] : [1]

  # One NAT per zone and member: "a1", "a2", "b1", ...
  slots = merge([
    for zone, z in var.zones : {
      for m in local.members : "${zone}${m}" => {
        zone         = zone
        member       = m
        subnet       = z.public_subnet_id
        route_tables = m == 1 ? z.private_route_table_ids : []
        given_eip    = z.elastic_ip_allocation_id
        eip          = m == 1 && (z.elastic_ip_allocation_id != "" || var.create_elastic_ips)
        group        = var.failover == "pair" ? "${var.name}-${zone}" : (local.failover_on ? var.name : "")
        nat_name     = m == 1 ? "${var.name}-${zone}" : "${var.name}-${zone}-2"
      }
    }
  ]...)

  new_eips = { for zone, z in var.zones : zone => z if z.elastic_ip_allocation_id == "" && var.create_elastic_ips }
  eip_ids  = { for k, s in local.slots : k => s.given_eip != "" ? s.given_eip : (s.eip ? aws_eip.nat[s.zone].allocation_id : "") }

  image_id = var.ami_id != "" ? var.ami_id : data.aws_ssm_parameter.ami[0].value

  # The alarms of a NAT Gateway, on the appliance's metrics of the same names (issue 13); the
  # same as the CloudFormation template's.
  alarms = {
    "port-allocation"     = { metric = "ErrorPortAllocation", statistic = "Sum", comparison = "GreaterThanThreshold", threshold = 0, periods = 1, datapoints = 1, missing = "notBreaching" }
    "packet-drops"        = { metric = "PacketsDropCount", statistic = "Sum", comparison = "GreaterThanThreshold", threshold = var.packet_drop_threshold, periods = 5, datapoints = 3, missing = "notBreaching" }
    "bw-in-allowance"     = { metric = "BwInAllowanceExceeded", statistic = "Sum", comparison = "GreaterThanThreshold", threshold = 0, periods = 5, datapoints = 3, missing = "notBreaching" }
    "bw-out-allowance"    = { metric = "BwOutAllowanceExceeded", statistic = "Sum", comparison = "GreaterThanThreshold", threshold = 0, periods = 5, datapoints = 3, missing = "notBreaching" }
    "pps-allowance"       = { metric = "PpsAllowanceExceeded", statistic = "Sum", comparison = "GreaterThanThreshold", threshold = 0, periods = 5, datapoints = 3, missing = "notBreaching" }
    "conntrack-allowance" = { metric = "ConntrackAllowanceExceeded", statistic = "Sum", comparison = "GreaterThanThreshold", threshold = 0, periods = 1, datapoints = 1, missing = "notBreaching" }
    "linklocal-allowance" = { metric = "LinklocalAllowanceExceeded", statistic = "Sum", comparison = "GreaterThanThreshold", threshold = 0, periods = 5, datapoints = 3, missing = "notBreaching" }
    # No data: ConntrackMax comes every period from a live appliance.
    "no-data" = { metric = "ConntrackMax", statistic = "SampleCount", comparison = "LessThanThreshold", threshold = 1, periods = 3, datapoints = 3, missing = "breaching" }
  }
  slot_alarms = merge([
    for k, s in local.slots : { for a, spec in local.alarms : "${k}-${a}" => merge(spec, { slot = k, key = a }) }
  ]...)

  # What nat-init/src/aws/iam.rs prints for each slot's user-data (ARNs with * region and
  # account, as without --region and --account).
  policies = {
    for k, s in local.slots : k => {
      Version = "2012-10-17"
      Statement = concat(
        [{
          Sid    = "NatDescribe"
          Effect = "Allow"
          Action = concat(
            ["ec2:DescribeNetworkInterfaces", "ec2:DescribeRouteTables"],
            s.eip || s.group != "" ? ["ec2:DescribeAddresses"] : [],
            s.group != "" ? ["ec2:DescribeInstances", "ec2:DescribeSubnets"] : [],
          )
          Resource = ["*"]
        }],
        s.member == 1 ? [{
          Sid      = "NatRoutesById"
          Effect   = "Allow"
          Action   = ["ec2:CreateRoute", "ec2:ReplaceRoute"]
          Resource = [for t in s.route_tables : "arn:aws:ec2:*:*:route-table/${t}"]
        }] : [],
        s.group != "" ? [{
          Sid       = "NatFailoverRoutes"
          Effect    = "Allow"
          Action    = ["ec2:CreateRoute", "ec2:ReplaceRoute"]
          Resource  = ["arn:aws:ec2:*:*:route-table/*"]
          Condition = { StringEquals = { "ec2:ResourceTag/nat:failover-group" = s.group } }
          }, {
          Sid       = "NatFailoverElasticIps"
          Effect    = "Allow"
          Action    = ["ec2:AssociateAddress"]
          Resource  = ["arn:aws:ec2:*:*:elastic-ip/*"]
          Condition = { StringEquals = { "ec2:ResourceTag/nat:failover-group" = s.group } }
        }] : [],
        [{
          Sid    = "NatOwnInterface"
          Effect = "Allow"
          Action = concat(
            ["ec2:ModifyNetworkInterfaceAttribute"],
            s.eip || s.group != "" ? ["ec2:AssociateAddress"] : [],
            s.group != "" ? ["ec2:AssignPrivateIpAddresses"] : [],
          )
          Resource  = ["arn:aws:ec2:*:*:network-interface/*"]
          Condition = { StringEquals = { "ec2:ResourceTag/nat:appliance" = var.name } }
        }],
        s.eip ? [{
          Sid      = "NatElasticIps"
          Effect   = "Allow"
          Action   = ["ec2:AssociateAddress"]
          Resource = ["arn:aws:ec2:*:*:elastic-ip/${local.eip_ids[k]}"]
        }] : [],
        [{
          Sid       = "NatPublishMetrics"
          Effect    = "Allow"
          Action    = ["cloudwatch:PutMetricData"]
          Resource  = ["*"]
          Condition = { StringEquals = { "cloudwatch:namespace" = var.metrics_namespace } }
        }],
      )
    }
  }
}

data "aws_ssm_parameter" "ami" {
  count = var.ami_id == "" ? 1 : 0
  name  = var.ami_ssm_parameter
}

resource "aws_security_group" "nat" {
  #checkov:skip=CKV_AWS_382:egress to anywhere is a NAT's whole job
  name_prefix = "${var.name}-nat-"
  description = "NAT appliance: the VPC in, nothing from the internet"
  vpc_id      = var.vpc_id
  tags        = { Name = "${var.name}-nat" }

  # TCP, UDP and ICMP: all the NAT forwards; the VPC's range only (failover heartbeats UDP 7471
  # and conntrack sync TCP 7472 between members are within it).
  dynamic "ingress" {
    for_each = [["tcp", 0, 65535], ["udp", 0, 65535], ["icmp", -1, -1]]
    content {
      description = "${ingress.value[0]} from the VPC"
      protocol    = ingress.value[0]
      from_port   = ingress.value[1]
      to_port     = ingress.value[2]
      cidr_blocks = [var.vpc_cidr]
    }
  }
  dynamic "egress" {
    for_each = [["tcp", 0, 65535], ["udp", 0, 65535], ["icmp", -1, -1]]
    content {
      description = "${egress.value[0]}: forwarded traffic and the appliance's AWS calls"
      protocol    = egress.value[0]
      from_port   = egress.value[1]
      to_port     = egress.value[2]
      cidr_blocks = ["0.0.0.0/0"] # a NAT's whole job
    }
  }
}

resource "aws_eip" "nat" {
  #checkov:skip=CKV2_AWS_19:the appliance associates its Elastic IP itself at boot (elastic_ips in user-data), not Terraform
  for_each = local.new_eips
  domain   = "vpc"
  tags = {
    Name = "${var.name}-${each.key}"
    # A failover peer may take it over only with this tag (iam.rs).
    "nat:failover-group" = var.failover == "pair" ? "${var.name}-${each.key}" : var.name
  }
}

resource "aws_iam_role" "nat" {
  for_each    = local.slots
  name_prefix = "${var.name}-${each.key}-"
  description = "NAT appliance ${each.key} of ${var.name}: its own EC2 side and metrics"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "ec2.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
}

resource "aws_iam_role_policy" "nat" {
  for_each = local.slots
  name     = "nat-appliance"
  role     = aws_iam_role.nat[each.key].id
  policy   = jsonencode(local.policies[each.key])
}

resource "aws_iam_instance_profile" "nat" {
  for_each    = local.slots
  name_prefix = "${var.name}-${each.key}-"
  role        = aws_iam_role.nat[each.key].name
}

resource "aws_launch_template" "nat" {
  #checkov:skip=CKV_AWS_88:the public address carries the appliance's own EC2 calls and heartbeats; the security group lets nothing in from the internet
  for_each      = local.slots
  name_prefix   = "${var.name}-${each.key}-"
  image_id      = local.image_id
  instance_type = var.instance_type
  user_data = base64encode(templatefile("${path.module}/user_data.toml.tftpl", {
    name              = var.name
    zone              = each.value.zone
    member            = each.value.member
    route_tables      = each.value.route_tables
    elastic_ip        = local.eip_ids[each.key]
    failover_group    = each.value.group
    metrics_namespace = var.metrics_namespace
    nat_name          = each.value.nat_name
  }))
  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.nat[each.key].arn
  }
  metadata_options {
    http_tokens                 = "required"
    http_endpoint               = "enabled"
    http_put_response_hop_limit = 1
  }
  monitoring {
    enabled = false
  }
  network_interfaces {
    device_index = 0
    # The hairpin heartbeats and the appliance's own EC2 calls leave from it.
    associate_public_ip_address = true
    security_groups             = [aws_security_group.nat.id]
    delete_on_termination       = true
  }
  dynamic "instance_market_options" {
    for_each = var.capacity_type == "spot" ? [1] : []
    content {
      market_type = "spot"
      spot_options {
        spot_instance_type = "one-time"
      }
    }
  }
  tag_specifications {
    resource_type = "instance"
    tags = merge(
      { Name = each.value.nat_name, "nat:appliance" = var.name },
      each.value.group != "" ? { "nat:failover-group" = each.value.group } : {},
    )
  }
  # The role's ENI statement is scoped by this tag.
  tag_specifications {
    resource_type = "network-interface"
    tags          = { Name = each.value.nat_name, "nat:appliance" = var.name }
  }
}

resource "aws_autoscaling_group" "nat" {
  for_each            = local.slots
  name_prefix         = "${var.name}-${each.key}-"
  min_size            = 1
  max_size            = 2
  desired_capacity    = 1
  vpc_zone_identifier = [each.value.subnet]
  health_check_type   = "EC2"
  # 120 s: the appliance is ready in seconds; EC2 status checks take longer.
  health_check_grace_period = 120

  launch_template {
    id      = aws_launch_template.nat[each.key].id
    version = aws_launch_template.nat[each.key].latest_version
  }
  # A new AMI or user-data: the new instance comes up first (max_size 2) and claims the routes
  # and addresses at boot; the old one is then terminated.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 100
      max_healthy_percentage = 200
      instance_warmup        = 180
    }
  }
  tag {
    key                 = "Name"
    value               = each.value.nat_name
    propagate_at_launch = true
  }
}

resource "aws_cloudwatch_metric_alarm" "nat" {
  for_each            = local.slot_alarms
  alarm_name          = "${local.slots[each.value.slot].nat_name}-${each.value.key}"
  alarm_description   = "NAT ${each.value.slot} of ${var.name}: ${each.value.metric} (${each.value.key})"
  namespace           = var.metrics_namespace
  metric_name         = each.value.metric
  dimensions          = { NatName = local.slots[each.value.slot].nat_name }
  statistic           = each.value.statistic
  period              = 60
  evaluation_periods  = each.value.periods
  datapoints_to_alarm = each.value.datapoints
  threshold           = each.value.threshold
  comparison_operator = each.value.comparison
  treat_missing_data  = each.value.missing
  alarm_actions       = var.alarm_topic_arn != "" ? [var.alarm_topic_arn] : []
  ok_actions          = var.alarm_topic_arn != "" ? [var.alarm_topic_arn] : []
}
