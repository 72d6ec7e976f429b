# The same inputs as deploy/cloudformation/nat.yaml (the deploy check compares them): its
# per-zone parameters (PublicSubnetA, PrivateRouteTablesA, ElasticIpA, ...) are `zones`.

variable "name" {
  description = "Names everything (the CloudFormation stack name's role): failover groups, NAT names, alarms, the ENI tag."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9-]{0,40}$", var.name))
    error_message = "name: a letter, then letters, digits and hyphens."
  }
}

variable "vpc_id" {
  description = "The VPC of the NAT instances."
  type        = string
}

variable "vpc_cidr" {
  description = "The VPC's CIDR: the only source the NAT security group lets in."
  type        = string
  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr: a CIDR such as 10.0.0.0/16."
  }
}

variable "zones" {
  description = "Per zone (key a, b or c): the public subnet its NAT runs in, the private route tables whose 0.0.0.0/0 its NAT points at itself, and optionally an Elastic IP allocation id."
  type = map(object({
    public_subnet_id         = string
    private_route_table_ids  = list(string)
    elastic_ip_allocation_id = optional(string, "")
  }))
  validation {
    condition     = length(var.zones) >= 1 && alltrue([for k in keys(var.zones) : contains(["a", "b", "c"], k)])
    error_message = "zones: one to three of the keys a, b, c."
  }
}

variable "instance_type" {
  description = "A Graviton (arm64) instance type."
  type        = string
  default     = "t4g.nano"
}

variable "capacity_type" {
  description = "on-demand or spot."
  type        = string
  default     = "on-demand"
  validation {
    condition     = contains(["on-demand", "spot"], var.capacity_type)
    error_message = "capacity_type: on-demand or spot."
  }
}

variable "ami_id" {
  description = "The appliance's AMI id (empty: read ami_ssm_parameter)."
  type        = string
  default     = ""
}

variable "ami_ssm_parameter" {
  description = "An SSM parameter holding the AMI id, read at each apply when ami_id is empty."
  type        = string
  default     = "/nat-appliance/nat-t4g/ami-id"
}

variable "failover" {
  description = "none, across-zones (one group of one NAT per zone) or pair (two NATs per zone, a group per zone)."
  type        = string
  default     = "none"
  validation {
    condition     = contains(["none", "across-zones", "pair"], var.failover)
    error_message = "failover: none, across-zones or pair."
  }
}

variable "create_elastic_ips" {
  description = "Allocate an Elastic IP for each zone without elastic_ip_allocation_id."
  type        = bool
  default     = false
}

variable "metrics_namespace" {
  description = "The CloudWatch namespace of the appliance's metrics."
  type        = string
  default     = "NatInstance"
}

variable "packet_drop_threshold" {
  description = "Dropped packets a minute (3 of 5 minutes) that raise the drop alarm."
  type        = number
  default     = 100
}

variable "alarm_topic_arn" {
  description = "An SNS topic the alarms notify (empty: none)."
  type        = string
  default     = ""
}
