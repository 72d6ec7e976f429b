//! Tests of the EC2 builders, parsers and classifier. XML bodies marked "moto" are moto 5.2.5's
//! answers, captured once; the others are shaped after the EC2 API reference's examples.

use super::*;
use crate::aws::sigv4::{self, Credentials, Request};

const AWS_NS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

fn aws(root: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"{AWS_NS}\">\n  \
         <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>\n{inner}\n</{root}>"
    )
}

const MOTO_ROUTE_TABLES: &str = r#"<DescribeRouteTablesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><routeTableSet><item><associationSet/><routeTableId>rtb-87669bd5aa1254d58</routeTableId><routeSet><item><destinationCidrBlock>10.0.0.0/16</destinationCidrBlock><gatewayId>local</gatewayId><origin>CreateRouteTable</origin><state>active</state></item><item><destinationCidrBlock>0.0.0.0/0</destinationCidrBlock><networkInterfaceId>eni-a80f9f9f65806ec09</networkInterfaceId><origin>CreateRoute</origin><state>active</state></item></routeSet><tagSet><item><key>nat</key><value>private-a</value></item></tagSet><vpcId>vpc-9dba1f3b9150edbee</vpcId><ownerId>123456789012</ownerId></item></routeTableSet><requestId>request-id</requestId></DescribeRouteTablesResponse>"#;

const MOTO_ENI: &str = r#"<DescribeNetworkInterfacesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><networkInterfaceSet><item><association><allocationId>eipalloc-1c493f9934b4723c3</allocationId><associationId>eipassoc-0611205f73fe6090c</associationId><ipOwnerId>123456789012</ipOwnerId><publicDnsName>ip-127-245-119-94.ec2.internal</publicDnsName><publicIp>127.245.119.94</publicIp></association><availabilityZone>eu-west-1c</availabilityZone><description/><groupSet><item><groupId>sg-7482f6c54856d3b41</groupId><groupName>default</groupName></item></groupSet><interfaceType>interface</interfaceType><ipv6AddressesSet/><macAddress>02:00:00:6a:cc:b6</macAddress><networkInterfaceId>eni-a80f9f9f65806ec09</networkInterfaceId><ownerId>123456789012</ownerId><privateIpAddress>10.0.1.10</privateIpAddress><privateIpAddressesSet><item><primary>true</primary><privateIpAddress>10.0.1.10</privateIpAddress></item><item><primary>false</primary><privateIpAddress>10.0.1.156</privateIpAddress></item></privateIpAddressesSet><requesterId>AIDAIT2UOQQY3AUEMOTO</requesterId><requesterManaged>false</requesterManaged><sourceDestCheck>false</sourceDestCheck><status>available</status><subnetId>subnet-8b58963a09fbc6906</subnetId><tagSet/><vpcId>vpc-9dba1f3b9150edbee</vpcId></item></networkInterfaceSet><requestId>request-id</requestId></DescribeNetworkInterfacesResponse>"#;

const MOTO_ADDRESSES: &str = r#"<DescribeAddressesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><addressesSet><item><allocationId>eipalloc-1c493f9934b4723c3</allocationId><associationId>eipassoc-0611205f73fe6090c</associationId><domain>vpc</domain><networkInterfaceId>eni-a80f9f9f65806ec09</networkInterfaceId><networkInterfaceOwnerId>123456789012</networkInterfaceOwnerId><privateIpAddress>10.0.1.10</privateIpAddress><tagSet/><instanceId/><publicIp>127.245.119.94</publicIp></item></addressesSet><requestId>request-id</requestId></DescribeAddressesResponse>"#;

const MOTO_ASSIGN: &str = r#"<AssignPrivateIpAddressesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><networkInterfaceId>eni-a80f9f9f65806ec09</networkInterfaceId><assignedPrivateIpAddressesSet><item><privateIpAddress>10.0.1.10</privateIpAddress></item><item><privateIpAddress>10.0.1.156</privateIpAddress></item></assignedPrivateIpAddressesSet><requestId>request-id</requestId></AssignPrivateIpAddressesResponse>"#;

const MOTO_ASSOCIATE: &str = r#"<AssociateAddressResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><associationId>eipassoc-0611205f73fe6090c</associationId><requestId>request-id</requestId></AssociateAddressResponse>"#;

const MOTO_MODIFY: &str = r#"<ModifyNetworkInterfaceAttributeResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><requestId>request-id</requestId></ModifyNetworkInterfaceAttributeResponse>"#;

const MOTO_REPLACE: &str = r#"<ReplaceRouteResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><requestId>request-id</requestId></ReplaceRouteResponse>"#;

const MOTO_CREATE: &str = r#"<CreateRouteResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><return>true</return><requestId>request-id</requestId></CreateRouteResponse>"#;

const MOTO_NOT_FOUND: &str = r#"<Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><Errors><Error><Code>InvalidRouteTableID.NotFound</Code><Message>The routeTable ID 'rtb-0000000000000000f' does not exist</Message></Error></Errors><RequestID>request-id</RequestID></Response>"#;

#[test]
fn builders_encode_bodies() {
    assert_eq!(
        disable_source_dest_check("eni-0123456789abcdef0").body(),
        "Action=ModifyNetworkInterfaceAttribute&Version=2016-11-15\
         &NetworkInterfaceId=eni-0123456789abcdef0&SourceDestCheck.Value=false"
    );
    assert_eq!(
        describe_network_interface("eni-1").body(),
        "Action=DescribeNetworkInterfaces&Version=2016-11-15&NetworkInterfaceId.1=eni-1"
    );
    assert_eq!(
        describe_route_tables_by_id(&["rtb-1".into(), "rtb-2".into()]).body(),
        "Action=DescribeRouteTables&Version=2016-11-15&RouteTableId.1=rtb-1&RouteTableId.2=rtb-2"
    );
    assert_eq!(
        describe_route_tables_by_tags(
            &[
                ("nat".into(), "private a".into()),
                ("env".into(), "prod".into())
            ],
            Some("vpc-1")
        )
        .body(),
        "Action=DescribeRouteTables&Version=2016-11-15\
         &Filter.1.Name=tag%3Anat&Filter.1.Value.1=private%20a\
         &Filter.2.Name=tag%3Aenv&Filter.2.Value.1=prod\
         &Filter.3.Name=vpc-id&Filter.3.Value.1=vpc-1"
    );
    assert_eq!(
        replace_route("rtb-1", DEFAULT_ROUTE, "eni-1").body(),
        "Action=ReplaceRoute&Version=2016-11-15&RouteTableId=rtb-1\
         &DestinationCidrBlock=0.0.0.0%2F0&NetworkInterfaceId=eni-1"
    );
    let create = create_route("rtb-1", DEFAULT_ROUTE, "eni-1");
    assert_eq!(create.action, Action::CreateRoute);
    assert!(create.body().starts_with("Action=CreateRoute&"));
    assert_eq!(
        associate_address("eipalloc-1", "eni-1", Some(Ipv4Addr::new(10, 0, 1, 10))).body(),
        "Action=AssociateAddress&Version=2016-11-15&AllocationId=eipalloc-1\
         &NetworkInterfaceId=eni-1&PrivateIpAddress=10.0.1.10&AllowReassociation=true"
    );
    assert_eq!(
        associate_address("eipalloc-1", "eni-1", None).body(),
        "Action=AssociateAddress&Version=2016-11-15&AllocationId=eipalloc-1\
         &NetworkInterfaceId=eni-1&AllowReassociation=true"
    );
    assert_eq!(
        describe_addresses(&["eipalloc-1".into(), "eipalloc-2".into()]).body(),
        "Action=DescribeAddresses&Version=2016-11-15&AllocationId.1=eipalloc-1&AllocationId.2=eipalloc-2"
    );
    assert_eq!(
        assign_private_ip_addresses("eni-1", &SecondaryIps::Count(2), false).body(),
        "Action=AssignPrivateIpAddresses&Version=2016-11-15&NetworkInterfaceId=eni-1\
         &SecondaryPrivateIpAddressCount=2&AllowReassignment=false"
    );
    assert_eq!(
        assign_private_ip_addresses(
            "eni-1",
            &SecondaryIps::Addresses(vec![
                Ipv4Addr::new(10, 0, 1, 11),
                Ipv4Addr::new(10, 0, 1, 12)
            ]),
            true
        )
        .body(),
        "Action=AssignPrivateIpAddresses&Version=2016-11-15&NetworkInterfaceId=eni-1\
         &PrivateIpAddress.1=10.0.1.11&PrivateIpAddress.2=10.0.1.12&AllowReassignment=true"
    );
}

#[test]
fn permissions_name_the_action() {
    assert_eq!(Action::ReplaceRoute.permission(), "ec2:ReplaceRoute");
    assert_eq!(
        Action::ModifyNetworkInterfaceAttribute.permission(),
        "ec2:ModifyNetworkInterfaceAttribute"
    );
}

#[test]
fn signed_ec2_post_matches_botocore() {
    // Cross-checked once against botocore 1.43.11's SigV4Auth (service ec2, eu-west-1,
    // 2026-12-03T18:00:00Z, these credentials and this body).
    let body = disable_source_dest_check("eni-0123456789abcdef0").body();
    let creds = Credentials {
        access_key_id: "ASIAEXAMPLEKEYID1234".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY".into(),
        session_token: Some("IQoJb3JpZ2luX2VjEXAMPLETOKEN==".into()),
        expiration_unix_s: None,
    };
    let req = Request {
        method: "POST",
        host: "ec2.eu-west-1.amazonaws.com",
        path: "/",
        query: &[],
        headers: &[("Content-Type", CONTENT_TYPE)],
        body: body.as_bytes(),
    };
    let headers = sigv4::sign(&req, &creds, "eu-west-1", "ec2", 1_796_320_800);
    assert_eq!(headers[0].1, "20261203T180000Z");
    assert_eq!(headers[1].1, "IQoJb3JpZ2luX2VjEXAMPLETOKEN==");
    assert_eq!(
        headers[2].1,
        "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLEKEYID1234/20261203/eu-west-1/ec2/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, \
         Signature=95949762350a14d29762d47fb4a89133eb5b4a563989d158a7ff8e504dcabd65"
    );
}

#[test]
fn route_tables_from_aws() {
    let body = aws(
        "DescribeRouteTablesResponse",
        "<routeTableSet>
      <item>
         <routeTableId>rtb-0123456789abcdef0</routeTableId>
         <vpcId>vpc-0a1b2c3d4e5f60718</vpcId>
         <ownerId>111122223333</ownerId>
         <routeSet>
            <item>
               <destinationCidrBlock>10.0.0.0/16</destinationCidrBlock>
               <gatewayId>local</gatewayId>
               <state>active</state>
               <origin>CreateRouteTable</origin>
            </item>
            <item>
               <destinationCidrBlock>0.0.0.0/0</destinationCidrBlock>
               <instanceId>i-0fedcba9876543210</instanceId>
               <instanceOwnerId>111122223333</instanceOwnerId>
               <networkInterfaceId>eni-0123456789abcdef0</networkInterfaceId>
               <state>active</state>
               <origin>CreateRoute</origin>
            </item>
            <item>
               <destinationCidrBlock>192.168.0.0/16</destinationCidrBlock>
               <natGatewayId>nat-0123456789abcdef0</natGatewayId>
               <state>blackhole</state>
               <origin>CreateRoute</origin>
            </item>
            <item>
               <destinationPrefixListId>pl-63a5400a</destinationPrefixListId>
               <gatewayId>vpce-0123456789abcdef0</gatewayId>
               <state>active</state>
               <origin>CreateRoute</origin>
            </item>
            <item>
               <destinationIpv6CidrBlock>::/0</destinationIpv6CidrBlock>
               <egressOnlyInternetGatewayId>eigw-0123456789abcdef0</egressOnlyInternetGatewayId>
               <state>active</state>
               <origin>CreateRoute</origin>
            </item>
         </routeSet>
         <associationSet>
            <item>
               <routeTableAssociationId>rtbassoc-0123456789abcdef0</routeTableAssociationId>
               <routeTableId>rtb-0123456789abcdef0</routeTableId>
               <subnetId>subnet-0123456789abcdef0</subnetId>
               <main>false</main>
            </item>
         </associationSet>
         <propagatingVgwSet/>
         <tagSet>
            <item><key>Name</key><value>private-a</value></item>
            <item><key>nat</key><value></value></item>
         </tagSet>
      </item>
      <item>
         <routeTableId>rtb-1</routeTableId>
         <vpcId>vpc-1</vpcId>
         <routeSet/>
         <tagSet/>
      </item>
   </routeTableSet>",
    );
    let tables = parse_describe_route_tables(&body).unwrap();
    assert_eq!(tables.len(), 2);
    let t = &tables[0];
    assert_eq!(t.id, "rtb-0123456789abcdef0");
    assert_eq!(t.vpc_id, "vpc-0a1b2c3d4e5f60718");
    assert_eq!(
        t.tags,
        vec![
            ("Name".into(), "private-a".into()),
            ("nat".into(), String::new())
        ]
    );
    assert_eq!(t.routes.len(), 5);
    assert_eq!(
        t.routes[0].target,
        Some(Target {
            kind: TargetKind::Gateway,
            id: "local".into()
        })
    );
    let default = t.route(DEFAULT_ROUTE).unwrap();
    assert_eq!(
        default,
        &Route {
            destination: "0.0.0.0/0".into(),
            target: Some(Target {
                kind: TargetKind::NetworkInterface,
                id: "eni-0123456789abcdef0".into()
            }),
            instance_id: Some("i-0fedcba9876543210".into()),
            state: RouteState::Active,
        }
    );
    assert_eq!(t.routes[2].state, RouteState::Blackhole);
    assert_eq!(
        t.routes[2].target.as_ref().unwrap().kind,
        TargetKind::NatGateway
    );
    assert_eq!(t.routes[3].destination, "pl-63a5400a");
    assert_eq!(t.routes[4].destination, "::/0");
    assert_eq!(
        t.routes[4].target.as_ref().unwrap().kind,
        TargetKind::EgressOnlyInternetGateway
    );
    assert!(tables[1].routes.is_empty() && tables[1].tags.is_empty());
    assert_eq!(tables[1].route(DEFAULT_ROUTE), None);
}

#[test]
fn route_tables_from_moto() {
    let tables = parse_describe_route_tables(MOTO_ROUTE_TABLES).unwrap();
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].tags, vec![("nat".into(), "private-a".into())]);
    let default = tables[0].route(DEFAULT_ROUTE).unwrap();
    assert_eq!(
        default.target.as_ref().unwrap().kind,
        TargetKind::NetworkInterface
    );
    assert_eq!(default.instance_id, None);
    assert_eq!(default.state, RouteState::Active);
}

#[test]
fn empty_and_bad_route_tables() {
    let empty = aws("DescribeRouteTablesResponse", "<routeTableSet/>");
    assert_eq!(parse_describe_route_tables(&empty).unwrap(), vec![]);
    let no_dest = aws(
        "DescribeRouteTablesResponse",
        "<routeTableSet><item><routeTableId>rtb-1</routeTableId><vpcId>vpc-1</vpcId>\
         <routeSet><item><gatewayId>local</gatewayId></item></routeSet></item></routeTableSet>",
    );
    let err = parse_describe_route_tables(&no_dest).unwrap_err();
    assert_eq!(
        err.to_string(),
        "route table rtb-1: routeSet/item 1: <destinationCidrBlock> is missing or empty"
    );
    assert!(matches!(
        parse_describe_route_tables(MOTO_ENI),
        Err(ParseError::Root { .. })
    ));
    assert!(matches!(
        parse_describe_route_tables("<a>"),
        Err(ParseError::Xml(_))
    ));
    // No DTDs, so no entity expansion.
    let dtd = "<!DOCTYPE r [<!ENTITY a \"aaaa\">]><DescribeRouteTablesResponse/>";
    assert!(matches!(
        parse_describe_route_tables(dtd),
        Err(ParseError::Xml(_))
    ));
}

#[test]
fn network_interface_from_aws() {
    let body = aws(
        "DescribeNetworkInterfacesResponse",
        "<networkInterfaceSet>
    <item>
      <networkInterfaceId>eni-0123456789abcdef0</networkInterfaceId>
      <subnetId>subnet-0123456789abcdef0</subnetId>
      <vpcId>vpc-0a1b2c3d4e5f60718</vpcId>
      <availabilityZone>eu-west-1a</availabilityZone>
      <description/>
      <ownerId>111122223333</ownerId>
      <requesterManaged>false</requesterManaged>
      <status>in-use</status>
      <macAddress>0a:1b:2c:3d:4e:5f</macAddress>
      <privateIpAddress>10.0.1.10</privateIpAddress>
      <sourceDestCheck>true</sourceDestCheck>
      <groupSet><item><groupId>sg-1</groupId><groupName>nat</groupName></item></groupSet>
      <attachment>
        <attachmentId>eni-attach-0123456789abcdef0</attachmentId>
        <instanceId>i-0fedcba9876543210</instanceId>
        <deviceIndex>0</deviceIndex>
        <status>attached</status>
      </attachment>
      <association>
        <publicIp>203.0.113.10</publicIp>
        <ipOwnerId>111122223333</ipOwnerId>
        <allocationId>eipalloc-0123456789abcdef0</allocationId>
        <associationId>eipassoc-0123456789abcdef0</associationId>
      </association>
      <tagSet/>
      <privateIpAddressesSet>
        <item>
          <privateIpAddress>10.0.1.10</privateIpAddress>
          <primary>true</primary>
          <association>
            <publicIp>203.0.113.10</publicIp>
            <ipOwnerId>111122223333</ipOwnerId>
            <allocationId>eipalloc-0123456789abcdef0</allocationId>
            <associationId>eipassoc-0123456789abcdef0</associationId>
          </association>
        </item>
        <item>
          <privateIpAddress>10.0.1.11</privateIpAddress>
          <primary>false</primary>
        </item>
      </privateIpAddressesSet>
      <interfaceType>interface</interfaceType>
    </item>
  </networkInterfaceSet>",
    );
    let enis = parse_describe_network_interfaces(&body).unwrap();
    let eip = Association {
        public_ip: Ipv4Addr::new(203, 0, 113, 10),
        allocation_id: Some("eipalloc-0123456789abcdef0".into()),
        association_id: Some("eipassoc-0123456789abcdef0".into()),
    };
    assert_eq!(
        enis,
        vec![NetworkInterface {
            id: "eni-0123456789abcdef0".into(),
            source_dest_check: true,
            mac: "0a:1b:2c:3d:4e:5f".into(),
            private_ips: vec![
                PrivateIp {
                    address: Ipv4Addr::new(10, 0, 1, 10),
                    primary: true,
                    association: Some(eip.clone()),
                },
                PrivateIp {
                    address: Ipv4Addr::new(10, 0, 1, 11),
                    primary: false,
                    association: None,
                },
            ],
            association: Some(eip),
        }]
    );
}

#[test]
fn network_interface_from_moto() {
    let enis = parse_describe_network_interfaces(MOTO_ENI).unwrap();
    assert_eq!(enis.len(), 1);
    let eni = &enis[0];
    assert!(!eni.source_dest_check);
    assert_eq!(eni.mac, "02:00:00:6a:cc:b6");
    assert_eq!(eni.private_ips.len(), 2);
    assert!(eni.private_ips[0].primary && !eni.private_ips[1].primary);
    // moto puts the association only at the ENI's level.
    assert_eq!(eni.private_ips[0].association, None);
    assert_eq!(
        eni.association.as_ref().unwrap().allocation_id.as_deref(),
        Some("eipalloc-1c493f9934b4723c3")
    );
}

#[test]
fn bad_network_interfaces() {
    let bad_bool = MOTO_ENI.replace(
        "<sourceDestCheck>false</sourceDestCheck>",
        "<sourceDestCheck>no</sourceDestCheck>",
    );
    assert_eq!(
        parse_describe_network_interfaces(&bad_bool)
            .unwrap_err()
            .to_string(),
        "network interface eni-a80f9f9f65806ec09: <sourceDestCheck> is \"no\", not true or false"
    );
    let bad_ip = MOTO_ENI.replace("10.0.1.156", "10.0.1.356");
    assert!(matches!(
        parse_describe_network_interfaces(&bad_ip),
        Err(ParseError::Invalid {
            field: "privateIpAddress",
            ..
        })
    ));
    let empty = aws(
        "DescribeNetworkInterfacesResponse",
        "<networkInterfaceSet/>",
    );
    assert_eq!(parse_describe_network_interfaces(&empty).unwrap(), vec![]);
}

/// moto's answer for one running instance with the group tag.
const MOTO_INSTANCES: &str = r#"<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><reservationSet><item><reservationId>r-3dfb65270e526e065</reservationId><ownerId>123456789012</ownerId><groupSet/><instancesSet><item><architecture>x86_64</architecture><networkInterfaceSet><item><association/><attachment><attachTime>2026-12-03T21:09:58.000Z</attachTime><attachmentId>eni-attach-b00e7894dd218215b</attachmentId><deleteOnTermination>false</deleteOnTermination><deviceIndex>0</deviceIndex><status>attached</status><networkCardIndex>0</networkCardIndex></attachment><description>Primary network interface</description><macAddress>02:00:00:57:d2:da</macAddress><networkInterfaceId>eni-4ee647993c488a24d</networkInterfaceId><ownerId>123456789012</ownerId><privateIpAddress>10.0.0.10</privateIpAddress><privateIpAddressesSet><item><primary>true</primary><privateIpAddress>10.0.0.10</privateIpAddress></item></privateIpAddressesSet><sourceDestCheck>true</sourceDestCheck><status>in-use</status><subnetId>subnet-a1c2c3c88ed154395</subnetId><vpcId>vpc-8951d056a72f97176</vpcId><interfaceType>interface</interfaceType></item></networkInterfaceSet><rootDeviceName>/dev/sda1</rootDeviceName><tagSet><item><key>nat:failover-group</key><value>g</value></item></tagSet><instanceId>i-6157ceda84b788b77</instanceId><imageId>ami-12c6146b</imageId><instanceState><code>16</code><name>running</name></instanceState><privateDnsName>ip-10-0-0-10.ec2.internal</privateDnsName><subnetId>subnet-a1c2c3c88ed154395</subnetId><vpcId>vpc-8951d056a72f97176</vpcId><privateIpAddress>10.0.0.10</privateIpAddress></item></instancesSet></item></reservationSet><requestId>request-id</requestId></DescribeInstancesResponse>"#;

const MOTO_SUBNETS: &str = r#"<DescribeSubnetsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><subnetSet><item><availabilityZoneId>use1-az2</availabilityZoneId><ownerId>123456789012</ownerId><assignIpv6AddressOnCreation>false</assignIpv6AddressOnCreation><ipv6CidrBlockAssociationSet/><tagSet/><subnetArn>arn:aws:ec2:us-east-1:123456789012:subnet/subnet-35bcb6abbe132fa18</subnetArn><ipv6Native>false</ipv6Native><subnetId>subnet-35bcb6abbe132fa18</subnetId><state>available</state><vpcId>vpc-0298cc2b729319c44</vpcId><cidrBlock>10.0.1.0/24</cidrBlock><availableIpAddressCount>251</availableIpAddressCount><availabilityZone>us-east-1c</availabilityZone><defaultForAz>false</defaultForAz><mapPublicIpOnLaunch>false</mapPublicIpOnLaunch></item></subnetSet><requestId>request-id</requestId></DescribeSubnetsResponse>"#;

const MOTO_ASSOCIATED_TABLE: &str = r#"<DescribeRouteTablesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><routeTableSet><item><associationSet><item><main>false</main><routeTableAssociationId>rtbassoc-8a1c7db0a16c181e1</routeTableAssociationId><routeTableId>rtb-4831fc42610bf1c9a</routeTableId><subnetId>subnet-35bcb6abbe132fa18</subnetId><associationState><state>associated</state></associationState></item></associationSet><routeTableId>rtb-4831fc42610bf1c9a</routeTableId><routeSet><item><destinationCidrBlock>10.0.0.0/16</destinationCidrBlock><gatewayId>local</gatewayId><origin>CreateRouteTable</origin><state>active</state></item></routeSet><tagSet/><vpcId>vpc-0298cc2b729319c44</vpcId><ownerId>123456789012</ownerId></item></routeTableSet><requestId>request-id</requestId></DescribeRouteTablesResponse>"#;

#[test]
fn subnets_of_a_table() {
    let t = &parse_describe_route_tables(MOTO_ASSOCIATED_TABLE).unwrap()[0];
    assert_eq!(t.subnets, ["subnet-35bcb6abbe132fa18"]);
    assert!(!t.main);
    let main = MOTO_ASSOCIATED_TABLE.replace("<main>false</main>", "<main>true</main>");
    assert!(parse_describe_route_tables(&main).unwrap()[0].main);
    assert_eq!(
        describe_subnets(&["subnet-1".into(), "subnet-2".into()]).body(),
        "Action=DescribeSubnets&Version=2016-11-15&SubnetId.1=subnet-1&SubnetId.2=subnet-2"
    );
    assert_eq!(
        parse_describe_subnets(MOTO_SUBNETS).unwrap(),
        vec![(
            "subnet-35bcb6abbe132fa18".to_string(),
            "10.0.1.0/24".parse().unwrap()
        )]
    );
    let bad = MOTO_SUBNETS.replace("10.0.1.0/24", "10.0.1.0/33");
    assert!(matches!(
        parse_describe_subnets(&bad),
        Err(ParseError::Invalid {
            field: "cidrBlock",
            ..
        })
    ));
}

#[test]
fn instances() {
    let call = describe_running_instances_by_tag("nat:failover-group", "g");
    assert_eq!(
        call.body(),
        "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag%3Anat%3Afailover-group\
         &Filter.1.Value.1=g&Filter.2.Name=instance-state-name&Filter.2.Value.1=running"
    );
    assert_eq!(
        parse_describe_instances(MOTO_INSTANCES).unwrap(),
        vec![Instance {
            id: "i-6157ceda84b788b77".into(),
            state: "running".into(),
            private_ip: Some(Ipv4Addr::new(10, 0, 0, 10)),
            public_ip: None,
            primary_eni: Some("eni-4ee647993c488a24d".into()),
            subnet_id: Some("subnet-a1c2c3c88ed154395".into()),
        }]
    );
    let public = MOTO_INSTANCES.replace(
        "<privateDnsName>",
        "<ipAddress>198.51.100.12</ipAddress><privateDnsName>",
    );
    assert_eq!(
        parse_describe_instances(&public).unwrap()[0].public_ip,
        Some(Ipv4Addr::new(198, 51, 100, 12))
    );
    let empty = aws("DescribeInstancesResponse", "<reservationSet/>");
    assert_eq!(parse_describe_instances(&empty).unwrap(), vec![]);
    let stateless = MOTO_INSTANCES.replace("<name>running</name>", "");
    assert_eq!(
        parse_describe_instances(&stateless).unwrap_err(),
        ParseError::Missing {
            at: "instance i-6157ceda84b788b77".into(),
            field: "instanceState/name"
        }
    );
}

#[test]
fn addresses() {
    let moto = parse_describe_addresses(MOTO_ADDRESSES).unwrap();
    assert_eq!(
        moto,
        vec![Address {
            allocation_id: "eipalloc-1c493f9934b4723c3".into(),
            public_ip: Ipv4Addr::new(127, 245, 119, 94),
            association_id: Some("eipassoc-0611205f73fe6090c".into()),
            network_interface_id: Some("eni-a80f9f9f65806ec09".into()),
            private_ip: Some(Ipv4Addr::new(10, 0, 1, 10)),
        }]
    );
    let unassociated = aws(
        "DescribeAddressesResponse",
        "<addressesSet><item><publicIp>198.51.100.7</publicIp>\
         <allocationId>eipalloc-2</allocationId><domain>vpc</domain><tagSet/></item></addressesSet>",
    );
    assert_eq!(
        parse_describe_addresses(&unassociated).unwrap(),
        vec![Address {
            allocation_id: "eipalloc-2".into(),
            public_ip: Ipv4Addr::new(198, 51, 100, 7),
            association_id: None,
            network_interface_id: None,
            private_ip: None,
        }]
    );
    let no_ip = unassociated.replace("<publicIp>198.51.100.7</publicIp>", "");
    assert_eq!(
        parse_describe_addresses(&no_ip).unwrap_err(),
        ParseError::Missing {
            at: "address eipalloc-2".into(),
            field: "publicIp"
        }
    );
}

#[test]
fn simple_answers() {
    for (action, body) in [
        (Action::ModifyNetworkInterfaceAttribute, MOTO_MODIFY),
        (Action::ReplaceRoute, MOTO_REPLACE),
        (Action::CreateRoute, MOTO_CREATE),
    ] {
        assert_eq!(parse_ok(action, body), Ok(()), "{action:?}");
    }
    let aws_true = aws("ReplaceRouteResponse", "<return>true</return>");
    assert_eq!(parse_ok(Action::ReplaceRoute, &aws_true), Ok(()));
    let aws_false = aws("ReplaceRouteResponse", "<return>false</return>");
    assert!(matches!(
        parse_ok(Action::ReplaceRoute, &aws_false),
        Err(ParseError::Invalid {
            field: "return",
            ..
        })
    ));
    assert_eq!(
        parse_ok(Action::CreateRoute, MOTO_REPLACE),
        Err(ParseError::Root {
            expected: "CreateRouteResponse".into(),
            found: "ReplaceRouteResponse".into()
        })
    );
    assert_eq!(
        parse_associate_address(MOTO_ASSOCIATE).unwrap(),
        "eipassoc-0611205f73fe6090c"
    );
    let aws_assoc = aws(
        "AssociateAddressResponse",
        "<return>true</return><associationId>eipassoc-1</associationId>",
    );
    assert_eq!(parse_associate_address(&aws_assoc).unwrap(), "eipassoc-1");
    assert_eq!(
        parse_assign_private_ip_addresses(MOTO_ASSIGN).unwrap(),
        vec![Ipv4Addr::new(10, 0, 1, 10), Ipv4Addr::new(10, 0, 1, 156)]
    );
}

#[test]
fn error_documents() {
    assert_eq!(
        parse_error(MOTO_NOT_FOUND).unwrap(),
        ApiError {
            code: "InvalidRouteTableID.NotFound".into(),
            message: "The routeTable ID 'rtb-0000000000000000f' does not exist".into(),
            request_id: Some("request-id".into()),
        }
    );
    // AWS's own: no namespace.
    let denied = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
        <Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this \
        operation. User: arn:aws:sts::111122223333:assumed-role/nat/i-0fedcba9876543210 is not \
        authorized to perform: ec2:ReplaceRoute on resource: arn:aws:ec2:eu-west-1:111122223333:\
        route-table/rtb-1 because no identity-based policy allows the ec2:ReplaceRoute action.\
        </Message></Error></Errors><RequestID>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestID>\
        </Response>";
    let e = parse_error(denied).unwrap();
    assert_eq!(e.code, "UnauthorizedOperation");
    assert!(e.message.contains("ec2:ReplaceRoute"));
    assert_eq!(
        e.request_id.as_deref(),
        Some("7a62c49f-347e-4fc4-9331-6e8eEXAMPLE")
    );
    assert_eq!(classify_error(403, &e), ErrorClass::Denied);
    assert!(matches!(
        parse_error("<Response><Errors/></Response>"),
        Err(ParseError::Missing { field: "Error", .. })
    ));
    assert!(matches!(
        parse_error("<Response><Errors><Error><Message>m</Message></Error></Errors></Response>"),
        Err(ParseError::Missing { field: "Code", .. })
    ));
    assert!(matches!(
        parse_error(MOTO_MODIFY),
        Err(ParseError::Root { .. })
    ));
}

#[test]
fn classes() {
    for code in [
        "Throttling",
        "RequestLimitExceeded",
        "InternalError",
        "ServiceUnavailable",
        "Unavailable",
        "IncorrectState",
    ] {
        assert_eq!(classify(400, Some(code)), ErrorClass::Retry, "{code}");
    }
    assert_eq!(classify(503, None), ErrorClass::Retry);
    assert_eq!(classify(500, Some("SomethingNew")), ErrorClass::Retry);
    assert_eq!(classify(429, None), ErrorClass::Retry);
    for code in ["UnauthorizedOperation", "AccessDenied"] {
        assert_eq!(classify(403, Some(code)), ErrorClass::Denied, "{code}");
    }
    for code in ["AuthFailure", "ExpiredToken", "InvalidClientTokenId"] {
        assert_eq!(classify(401, Some(code)), ErrorClass::Credentials, "{code}");
    }
    for code in ["RequestExpired", "RequestTimeTooSkewed"] {
        assert_eq!(classify(400, Some(code)), ErrorClass::Clock, "{code}");
    }
    for code in [
        "InvalidRouteTableID.NotFound",
        "InvalidParameterValue",
        "RouteAlreadyExists",
        "SignatureDoesNotMatch",
    ] {
        assert_eq!(classify(400, Some(code)), ErrorClass::Fatal, "{code}");
    }
    assert_eq!(classify(400, None), ErrorClass::Fatal);
    let expired = ApiError {
        code: "SignatureDoesNotMatch".into(),
        message: "Signature expired: 20261203T170000Z is now earlier than 20261203T175500Z".into(),
        request_id: None,
    };
    assert_eq!(classify_error(403, &expired), ErrorClass::Clock);
    let wrong = ApiError {
        message: "The request signature we calculated does not match".into(),
        ..expired
    };
    assert_eq!(classify_error(403, &wrong), ErrorClass::Fatal);
}

#[test]
fn an_instance_s_auto_scaling_group_tag() {
    let tagged = aws(
        "DescribeInstancesResponse",
        "<reservationSet><item><instancesSet><item><instanceId>i-1</instanceId><instanceState><name>running</name></instanceState><tagSet><item><key>Name</key><value>nat-a</value></item><item><key>aws:autoscaling:groupName</key><value>prod-nat-a</value></item></tagSet></item></instancesSet></item></reservationSet>",
    );
    assert_eq!(
        parse_instance_tag(&tagged, ASG_TAG).unwrap().as_deref(),
        Some("prod-nat-a")
    );
    assert_eq!(parse_instance_tag(&tagged, "other").unwrap(), None);
    let none = aws("DescribeInstancesResponse", "<reservationSet/>");
    let e = parse_instance_tag(&none, ASG_TAG).unwrap_err();
    assert!(e.to_string().contains("instancesSet"), "{e}");
    assert_eq!(
        describe_instance("i-1").body(),
        "Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-1"
    );
}
