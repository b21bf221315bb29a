//! Plain DNS questions berth-acme asks: which zone a name is in, which servers are
//! authoritative for it, and what TXT records a server answers for a name. UDP, with TCP
//! when an answer is truncated; 5 s per question.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_client::client::{Client, ClientHandle};
use hickory_client::proto::op::ResponseCode;
use hickory_client::proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_client::proto::runtime::TokioRuntimeProvider;
use hickory_client::proto::tcp::TcpClientStream;
use hickory_client::proto::udp::UdpClientStream;
use hickory_client::proto::xfer::DnsResponse;

/// Time allowed for one answer.
pub const QUESTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Parses a DNS name given as text (with or without the final dot).
///
/// # Errors
/// A message naming the text.
pub fn name(text: &str) -> Result<Name, String> {
    let mut n = Name::from_ascii(text).map_err(|e| format!("invalid DNS name \"{text}\": {e}"))?;
    n.set_fqdn(true);
    Ok(n)
}

/// Asks one question on a connected client, its exchange running meanwhile.
async fn ask_on<B>(
    mut client: Client,
    background: B,
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
) -> Result<DnsResponse, String>
where
    B: std::future::Future + Send + 'static,
    B::Output: Send + 'static,
{
    let task = tokio::spawn(background);
    let answer = client.query(name.clone(), DNSClass::IN, rtype).await;
    task.abort();
    answer.map_err(|e| format!("{server}: {e}"))
}

async fn ask_udp(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
) -> Result<DnsResponse, String> {
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_timeout(Some(QUESTION_TIMEOUT))
        .build();
    let (client, background) = Client::connect(stream)
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    ask_on(client, background, server, name, rtype).await
}

async fn ask_tcp(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
) -> Result<DnsResponse, String> {
    let (stream, handle) = TcpClientStream::new(
        server,
        None,
        Some(QUESTION_TIMEOUT),
        TokioRuntimeProvider::default(),
    );
    let (client, background) = Client::with_timeout(stream, handle, QUESTION_TIMEOUT, None)
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    ask_on(client, background, server, name, rtype).await
}

/// Asks `server` one question; a truncated answer is asked again over TCP.
///
/// # Errors
/// No answer in time, or a transport failure, naming the server.
pub async fn ask(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
) -> Result<DnsResponse, String> {
    let answer = ask_udp(server, name, rtype).await?;
    if answer.truncated() {
        return ask_tcp(server, name, rtype).await;
    }
    Ok(answer)
}

/// Asks the servers in turn until one answers (NOERROR or NXDOMAIN).
async fn ask_any(
    servers: &[SocketAddr],
    name: &Name,
    rtype: RecordType,
) -> Result<DnsResponse, String> {
    let mut failures = Vec::new();
    for server in servers {
        match ask(*server, name, rtype).await {
            Ok(a)
                if matches!(
                    a.response_code(),
                    ResponseCode::NoError | ResponseCode::NXDomain
                ) =>
            {
                return Ok(a)
            }
            Ok(a) => failures.push(format!("{server}: {}", a.response_code())),
            Err(e) => failures.push(e),
        }
    }
    Err(if failures.is_empty() {
        "no DNS server to ask".to_string()
    } else {
        failures.join("; ")
    })
}

/// The zone `fqdn` belongs to: the owner of the SOA record an answer for it carries (in the
/// answer when `fqdn` is the apex, else in the authority section).
///
/// # Errors
/// When no server answers or the answers name no zone.
pub async fn zone_of(fqdn: &Name, servers: &[SocketAddr]) -> Result<Name, String> {
    let answer = ask_any(servers, fqdn, RecordType::SOA).await?;
    answer
        .answers()
        .iter()
        .chain(answer.name_servers())
        .find(|r| r.record_type() == RecordType::SOA && r.name().zone_of(fqdn))
        .map(|r| r.name().clone())
        .ok_or_else(|| format!("no SOA record for {fqdn} or a parent of it"))
}

/// The addresses (port 53) of the servers named by `zone`'s NS records, each host's first
/// address before any host's second.
///
/// # Errors
/// When the NS records or their addresses cannot be found.
pub async fn authoritative_servers(
    zone: &Name,
    resolvers: &[SocketAddr],
) -> Result<Vec<SocketAddr>, String> {
    let answer = ask_any(resolvers, zone, RecordType::NS).await?;
    let hosts: Vec<Name> = answer
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::NS(ns) => Some(ns.0.clone()),
            _ => None,
        })
        .collect();
    if hosts.is_empty() {
        return Err(format!("no NS records for {zone}"));
    }
    let mut per_host = Vec::new();
    for host in &hosts {
        let mut found = Vec::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            let Ok(a) = ask_any(resolvers, host, rtype).await else {
                continue;
            };
            found.extend(a.answers().iter().filter_map(|r| match r.data() {
                RData::A(ip) => Some(IpAddr::V4(ip.0)),
                RData::AAAA(ip) => Some(IpAddr::V6(ip.0)),
                _ => None,
            }));
        }
        if found.is_empty() {
            return Err(format!("no address for {host}, a name server of {zone}"));
        }
        per_host.push(found);
    }
    // Each host's first address, then each one's second, ...: a cut after the first few
    // still covers every host.
    let mut servers: Vec<SocketAddr> = Vec::new();
    let deepest = per_host.iter().map(Vec::len).max().unwrap_or(0);
    for n in 0..deepest {
        for found in &per_host {
            if let Some(ip) = found.get(n) {
                let addr = SocketAddr::new(*ip, 53);
                if !servers.contains(&addr) {
                    servers.push(addr);
                }
            }
        }
    }
    Ok(servers)
}

/// The TXT values `server` answers for `fqdn` (each record's strings joined).
///
/// # Errors
/// No answer, or an answer other than NOERROR / NXDOMAIN.
pub async fn txt_values(server: SocketAddr, fqdn: &Name) -> Result<Vec<String>, String> {
    let answer = ask(server, fqdn, RecordType::TXT).await?;
    match answer.response_code() {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        other => return Err(format!("{server}: {other}")),
    }
    Ok(answer
        .answers()
        .iter()
        .filter(|r| r.name() == fqdn)
        .filter_map(|r| match r.data() {
            RData::TXT(txt) => Some(
                txt.txt_data()
                    .iter()
                    .map(|part| String::from_utf8_lossy(part).to_string())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect())
}

/// The name servers of `/etc/resolv.conf` (port 53).
pub fn system_resolvers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    parse_resolv_conf(&text)
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let text =
            "# comment\nsearch example.com\nnameserver 192.0.2.53\nnameserver  2001:db8::1\n\
                    nameserver fe80::1%eth0\nnameserver bogus\noptions edns0\n";
        let got = parse_resolv_conf(text);
        assert_eq!(
            got,
            vec![
                "192.0.2.53:53".parse().unwrap_or_else(|e| panic!("{e}")),
                "[2001:db8::1]:53".parse().unwrap_or_else(|e| panic!("{e}")),
                "[fe80::1]:53".parse().unwrap_or_else(|e| panic!("{e}")),
            ]
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_given_up_on_in_time() {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = silent.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let started = std::time::Instant::now();
        let asked = txt_values(
            addr,
            &name("_acme-challenge.a.test").unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert!(asked.is_err(), "{asked:?}");
        assert!(
            started.elapsed() < QUESTION_TIMEOUT + Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        drop(silent);
    }

    #[test]
    fn names() {
        assert_eq!(
            name("_acme-challenge.example.com").map(|n| n.to_string()),
            Ok("_acme-challenge.example.com.".to_string())
        );
        assert!(name("a..b").is_err());
    }
}
