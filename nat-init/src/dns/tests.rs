//! The resolver against a tiny DNS server on loopback whose answers each test scripts.

use super::*;
use hickory_proto::rr::Record;
use hickory_proto::rr::rdata::{A, CNAME};
use std::sync::mpsc;
use std::time::Duration;

/// Ids handed out in order, so a test knows the next one.
struct Ids(Vec<u32>);
impl Random for Ids {
    fn next_u32(&mut self) -> u32 {
        self.0.remove(0)
    }
}

fn fqdn(s: &str) -> Name {
    let mut n = Name::from_ascii(s).unwrap();
    n.set_fqdn(true);
    n
}

fn a(name: &str, addr: [u8; 4]) -> Record {
    Record::from_rdata(fqdn(name), 60, RData::A(A(Ipv4Addr::from(addr))))
}

fn cname(name: &str, to: &str) -> Record {
    Record::from_rdata(fqdn(name), 60, RData::CNAME(CNAME(fqdn(to))))
}

/// The reply to `query` with `rcode` and `answers`.
fn reply(query: &Message, rcode: ResponseCode, answers: Vec<Record>) -> Vec<u8> {
    let mut m = Message::response(query.metadata.id, OpCode::Query);
    m.metadata.response_code = rcode;
    m.metadata.recursion_available = true;
    m.queries = query.queries.clone();
    m.answers = answers;
    m.to_vec().unwrap()
}

/// A server on 127.0.0.1: `answer(n, query)` gives the datagrams to send for the n-th query.
fn server(
    answer: impl Fn(usize, &Message) -> Vec<Vec<u8>> + Send + 'static,
) -> (SocketAddr, mpsc::Receiver<Message>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let mut n = 0;
        while let Ok((len, peer)) = sock.recv_from(&mut buf) {
            let q = Message::from_vec(&buf[..len]).unwrap();
            for d in answer(n, &q) {
                let _ = sock.send_to(&d, peer);
            }
            n += 1;
            let _ = tx.send(q);
        }
    });
    (addr, rx)
}

const HOST: &str = "ec2.eu-west-1.amazonaws.com";

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(2)
}

#[test]
fn answers_follow_cname_chains_and_take_only_the_chains_a_records() {
    let (addr, queries) = server(|_, q| {
        vec![reply(
            q,
            ResponseCode::NoError,
            vec![
                // Case differs from the question: names compare case-insensitively.
                cname("EC2.eu-west-1.amazonaws.com", "a.example.internal"),
                a("unrelated.example", [192, 0, 2, 99]),
                cname("a.example.internal", "b.example.internal"),
                a("b.example.internal", [203, 0, 113, 10]),
                a("b.example.internal", [203, 0, 113, 11]),
            ],
        )]
    });
    let got = resolve_ipv4(addr, HOST, soon(), 3, &mut Ids(vec![0x1_2345])).unwrap();
    assert_eq!(
        got,
        [
            Ipv4Addr::new(203, 0, 113, 10),
            Ipv4Addr::new(203, 0, 113, 11)
        ]
    );
    let q = queries.recv().unwrap();
    assert_eq!(q.metadata.id, 0x2345);
    assert!(q.metadata.recursion_desired);
    assert_eq!(q.queries.len(), 1);
    assert_eq!(q.queries[0].query_type(), RecordType::A);
    assert_eq!(q.queries[0].name(), &fqdn(HOST));
}

#[test]
fn nxdomain_is_final() {
    let (addr, queries) = server(|_, q| vec![reply(q, ResponseCode::NXDomain, vec![])]);
    let e = resolve_ipv4(addr, HOST, soon(), 3, &mut Ids(vec![1, 2, 3])).unwrap_err();
    assert!(matches!(e, DnsError::NoSuchName { .. }), "{e}");
    assert!(e.to_string().contains(HOST), "{e}");
    // Asked once only.
    queries.recv().unwrap();
    assert!(queries.recv_timeout(Duration::from_millis(100)).is_err());
}

#[test]
fn no_a_record_and_cname_loops_are_final() {
    let (addr, _q) = server(|_, q| {
        vec![reply(
            q,
            ResponseCode::NoError,
            vec![a("other.example", [192, 0, 2, 1])],
        )]
    });
    let e = resolve_ipv4(addr, HOST, soon(), 3, &mut Ids(vec![1])).unwrap_err();
    assert!(matches!(e, DnsError::NoAddress { .. }), "{e}");

    let (addr, _q) = server(|_, q| {
        vec![reply(
            q,
            ResponseCode::NoError,
            vec![cname(HOST, "x.example"), cname("x.example", HOST)],
        )]
    });
    let e = resolve_ipv4(addr, HOST, soon(), 3, &mut Ids(vec![1])).unwrap_err();
    assert!(matches!(e, DnsError::CnameChain { .. }), "{e}");
}

#[test]
fn wrong_id_wrong_question_and_garbage_are_ignored() {
    let (addr, _q) = server(|_, q| {
        let mut wrong_id = q.clone();
        wrong_id.metadata.id ^= 1;
        let mut wrong_q = q.clone();
        wrong_q.queries = vec![Query::query(fqdn("evil.example"), RecordType::A)];
        vec![
            b"not dns".to_vec(),
            reply(
                &wrong_id,
                ResponseCode::NoError,
                vec![a(HOST, [6, 6, 6, 6])],
            ),
            reply(&wrong_q, ResponseCode::NoError, vec![a(HOST, [6, 6, 6, 6])]),
            // Our own query echoed back (not a response).
            q.to_vec().unwrap(),
            reply(q, ResponseCode::NoError, vec![a(HOST, [10, 0, 0, 7])]),
        ]
    });
    let got = resolve_ipv4(addr, HOST, soon(), 1, &mut Ids(vec![77])).unwrap();
    assert_eq!(got, [Ipv4Addr::new(10, 0, 0, 7)]);
}

#[test]
fn silence_and_server_failures_are_retried_with_new_ids() {
    // First query unanswered, second SERVFAIL, third answered.
    let (addr, queries) = server(|n, q| match n {
        0 => vec![],
        1 => vec![reply(q, ResponseCode::ServFail, vec![])],
        _ => vec![reply(
            q,
            ResponseCode::NoError,
            vec![a(HOST, [10, 0, 0, 9])],
        )],
    });
    let start = Instant::now();
    let got = resolve_ipv4(
        addr,
        HOST,
        start + Duration::from_secs(3),
        3,
        &mut Ids(vec![1, 2, 3]),
    )
    .unwrap();
    assert_eq!(got, [Ipv4Addr::new(10, 0, 0, 9)]);
    let ids: Vec<u16> = (0..3)
        .map(|_| queries.recv().unwrap().metadata.id)
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    // The silent first attempt cost its share (a third of 3 s), not the whole deadline.
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn timeout_within_the_deadline() {
    let (addr, queries) = server(|_, _| vec![]);
    let start = Instant::now();
    let e = resolve_ipv4(
        addr,
        HOST,
        start + Duration::from_millis(600),
        2,
        &mut Ids(vec![1, 2]),
    )
    .unwrap_err();
    let took = start.elapsed();
    assert!(matches!(e, DnsError::Timeout { .. }), "{e}");
    assert!(
        took >= Duration::from_millis(590) && took < Duration::from_secs(1),
        "{took:?}"
    );
    assert_eq!(queries.iter().take(2).count(), 2);
    // Persistent server failure is reported as such.
    let (addr, _q) = server(|_, q| vec![reply(q, ResponseCode::Refused, vec![])]);
    let e = resolve_ipv4(addr, HOST, soon(), 2, &mut Ids(vec![1, 2])).unwrap_err();
    match e {
        DnsError::Server { rcode, .. } => assert!(rcode.contains("Refused"), "{rcode}"),
        other => panic!("{other}"),
    }
}

#[test]
fn truncated_answers_and_bad_names() {
    let (addr, _q) = server(|_, q| {
        let mut m = Message::from_vec(&reply(q, ResponseCode::NoError, vec![])).unwrap();
        m.metadata.truncation = true;
        vec![m.to_vec().unwrap()]
    });
    let e = resolve_ipv4(addr, HOST, soon(), 2, &mut Ids(vec![1])).unwrap_err();
    assert!(matches!(e, DnsError::Truncated { .. }), "{e}");
    for bad in ["", "a..b", &"x".repeat(64)] {
        let e = resolve_ipv4(addr, bad, soon(), 1, &mut Ids(vec![1])).unwrap_err();
        assert!(matches!(e, DnsError::Name { .. }), "{bad}: {e}");
    }
}
