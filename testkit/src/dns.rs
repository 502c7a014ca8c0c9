//! A DNS client for tests: one query over UDP or TCP from a chosen source
//! address in 127.0.0.0/8, with EDNS and client subnet when asked.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use hickory_proto::op::{Message as DnsMessage, ResponseCode};
pub use hickory_proto::rr::{RData, RecordType as DnsType};

/// A query to send.
#[derive(Debug, Clone)]
pub struct DnsQuery {
    pub name: String,
    pub qtype: RecordType,
    /// EDNS with this payload size.
    pub edns: Option<u16>,
    /// EDNS client subnet: address and source prefix length.
    pub subnet: Option<(IpAddr, u8)>,
}

impl DnsQuery {
    pub fn new(name: &str, qtype: RecordType) -> Self {
        Self {
            name: name.to_string(),
            qtype,
            edns: Some(1232),
            subnet: None,
        }
    }

    pub fn without_edns(mut self) -> Self {
        self.edns = None;
        self
    }

    pub fn subnet(mut self, addr: &str, prefix: u8) -> Self {
        self.subnet = Some((addr.parse().expect("an IP address"), prefix));
        self.edns = self.edns.or(Some(1232));
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.recursion_desired = false;
        m.add_query(Query::query(
            Name::from_ascii(&self.name).expect("a DNS name"),
            self.qtype,
        ));
        if let Some(size) = self.edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            if let Some((addr, prefix)) = self.subnet {
                e.options_mut()
                    .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
            }
            m.set_edns(e);
        }
        m.to_vec().expect("encode a query")
    }
}

/// Sends queries to one server from one source address.
#[derive(Debug, Clone)]
pub struct DnsClient {
    server: SocketAddr,
    from: IpAddr,
    timeout: Duration,
}

impl DnsClient {
    pub fn new(server: SocketAddr) -> Self {
        Self {
            server,
            from: server.ip(),
            timeout: Duration::from_secs(2),
        }
    }

    /// Queries come from `ip` (any address of 127.0.0.0/8 works on loopback).
    pub fn from_ip(mut self, ip: &str) -> Self {
        self.from = ip.parse().expect("an IP address");
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends raw bytes over UDP; the raw answer, or `None` if none came in time.
    pub async fn udp_raw(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let sock = tokio::net::UdpSocket::bind(SocketAddr::new(self.from, 0))
            .await
            .expect("bind a UDP socket");
        sock.send_to(packet, self.server).await.expect("send");
        let mut buf = vec![0u8; 65535];
        match tokio::time::timeout(self.timeout, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    /// One query over UDP; `Err` on timeout or an unreadable answer.
    pub async fn udp(&self, q: &DnsQuery) -> Result<Message, String> {
        let raw = self
            .udp_raw(&q.to_bytes())
            .await
            .ok_or_else(|| "no answer (timeout)".to_string())?;
        Message::from_vec(&raw).map_err(|e| format!("bad answer: {e}"))
    }

    /// One query over TCP.
    pub async fn tcp(&self, q: &DnsQuery) -> Result<Message, String> {
        let fut = async {
            let socket = match self.from {
                IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            }
            .map_err(|e| format!("socket: {e}"))?;
            socket
                .bind(SocketAddr::new(self.from, 0))
                .map_err(|e| format!("bind {}: {e}", self.from))?;
            let mut s = socket
                .connect(self.server)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let body = q.to_bytes();
            let mut framed = (body.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&body);
            s.write_all(&framed).await.map_err(|e| e.to_string())?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Message::from_vec(&buf).map_err(|e| format!("bad answer: {e}"))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| "no answer (timeout)".to_string())?
    }
}

/// The addresses in a message's answer section, in order.
pub fn addresses(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// The ECS option of a response: (source prefix, scope prefix).
pub fn subnet_scope(m: &Message) -> Option<(u8, u8)> {
    match m
        .edns
        .as_ref()?
        .option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)?
    {
        EdnsOption::Subnet(s) => Some((s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}
