//! The `rfc2136` provider: TXT records added and removed by dynamic update (RFC 2136), signed
//! with TSIG (RFC 8945), sent to the zone's primary server. The secret is read from its file
//! at each use (a rotated secret needs no restart) and never logged.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hickory_client::client::{Client, ClientHandle};
use hickory_client::proto::dnssec::rdata::tsig::TsigAlgorithm as HickoryAlgorithm;
use hickory_client::proto::dnssec::tsig::TSigner;
use hickory_client::proto::op::ResponseCode;
use hickory_client::proto::rr::rdata::TXT;
use hickory_client::proto::rr::{Name, RData, Record, RecordSet};
use hickory_client::proto::runtime::TokioRuntimeProvider;
use hickory_client::proto::udp::UdpClientStream;

use berth_core::config::dns::{read_tsig_secret, TsigAlgorithm};

use super::lookup::{self, QUESTION_TIMEOUT};
use super::Change;

/// Allowed clock difference between berth-acme and the server, seconds (BIND's default).
const FUDGE: u16 = 300;
/// TTL of challenge records: short, so a wrong value does not linger in caches.
const TTL: u32 = 60;

/// Where and how updates are sent.
pub struct Rfc2136<'a> {
    /// Primary server (host, port).
    pub server: &'a (String, u16),
    /// TSIG key name.
    pub key_name: &'a str,
    /// TSIG algorithm.
    pub algorithm: TsigAlgorithm,
    /// File holding the secret.
    pub secret_file: &'a Path,
}

impl Rfc2136<'_> {
    /// The primary's addresses (a host name is resolved by the system).
    async fn addresses(&self) -> Result<Vec<SocketAddr>, String> {
        let (host, port) = self.server;
        let found: Vec<SocketAddr> = tokio::time::timeout(
            QUESTION_TIMEOUT,
            tokio::net::lookup_host((host.as_str(), *port)),
        )
        .await
        .map_err(|_| {
            format!(
                "acme.dns-server {host}: no address within {}s",
                QUESTION_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("acme.dns-server {host}: {e}"))?
        .collect();
        if found.is_empty() {
            return Err(format!("acme.dns-server {host}: no address"));
        }
        Ok(found)
    }

    fn signer(&self) -> Result<TSigner, String> {
        let secret = read_tsig_secret(self.secret_file, self.key_name, self.algorithm)?;
        let algorithm = match self.algorithm {
            TsigAlgorithm::HmacSha256 => HickoryAlgorithm::HmacSha256,
            TsigAlgorithm::HmacSha384 => HickoryAlgorithm::HmacSha384,
            TsigAlgorithm::HmacSha512 => HickoryAlgorithm::HmacSha512,
        };
        let key = lookup::name(self.key_name)?;
        TSigner::new(secret, algorithm, key, FUDGE).map_err(|e| format!("TSIG key: {e}"))
    }

    /// The zone `fqdn` is in, asked of `resolvers` when configured, else of the primary.
    pub async fn zone(&self, fqdn: &Name, resolvers: &[SocketAddr]) -> Result<Name, String> {
        if resolvers.is_empty() {
            lookup::zone_of(fqdn, &self.addresses().await?).await
        } else {
            lookup::zone_of(fqdn, resolvers).await
        }
    }

    /// Adds (`Present`) or removes (`Cleanup`, that value only) the TXT record `fqdn` =
    /// `value` in `zone`.
    ///
    /// # Errors
    /// The server's refusal (with what it likely means) or a transport failure.
    pub async fn update(
        &self,
        zone: &Name,
        fqdn: &Name,
        value: &str,
        change: Change,
    ) -> Result<(), String> {
        let signer = self.signer()?;
        let mut record = Record::from_rdata(
            fqdn.clone(),
            TTL,
            RData::TXT(TXT::new(vec![value.to_string()])),
        );
        record.set_dns_class(hickory_client::proto::rr::DNSClass::IN);
        let rrset = RecordSet::from(record);
        let mut failures = Vec::new();
        for server in self.addresses().await? {
            let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
                .with_timeout(Some(QUESTION_TIMEOUT))
                .with_signer(Some(Arc::new(signer.clone())))
                .build();
            let (mut client, background) = match Client::connect(stream).await {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!("{server}: {e}"));
                    continue;
                }
            };
            let task = tokio::spawn(background);
            let answer = match change {
                Change::Present => client.append(rrset.clone(), zone.clone(), false).await,
                Change::Cleanup => client.delete_by_rdata(rrset.clone(), zone.clone()).await,
            };
            task.abort();
            match answer {
                Ok(a) if a.response_code() == ResponseCode::NoError => return Ok(()),
                Ok(a) => {
                    return Err(format!(
                        "{server} refused the update of {fqdn} in zone {zone}: {}",
                        explain(a.response_code())
                    ))
                }
                Err(e) => failures.push(format!("{server}: {}", explain_error(&e))),
            }
        }
        Err(failures.join("; "))
    }
}

/// What a refusal usually means, for the log line.
fn explain(code: ResponseCode) -> String {
    let hint = match code {
        ResponseCode::NotAuth => {
            " (the TSIG key or secret is not the server's: check acme.dns-tsig-key, \
             acme.dns-tsig-algorithm and acme.dns-tsig-secret-file)"
        }
        ResponseCode::Refused => {
            " (the server does not let this key update that name: check its update-policy / \
             allow-update)"
        }
        ResponseCode::NotZone => " (the name is not in that zone)",
        _ => "",
    };
    format!("{code}{hint}")
}

/// A failed exchange. A server that cannot verify our signature (unknown key, wrong secret
/// or algorithm) answers BADKEY / BADSIG with an empty MAC, which fails verification here:
/// that is said plainly.
fn explain_error(e: &hickory_client::ClientError) -> String {
    let detail = match e.kind() {
        hickory_client::ClientErrorKind::Proto(p) => p.to_string(),
        _ => e.to_string(),
    };
    if detail.to_ascii_lowercase().contains("tsig") || detail.contains("HMAC") {
        "the server did not accept our TSIG signature (BADKEY or BADSIG): check \
         acme.dns-tsig-key, acme.dns-tsig-algorithm and acme.dns-tsig-secret-file"
            .to_string()
    } else {
        detail
    }
}
