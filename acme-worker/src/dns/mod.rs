//! DNS-01: challenge records published through the configured provider (`acme.dns-provider`),
//! a wait until every authoritative server of the zone answers them, and their removal.
//!
//! - [`lookup`]: zones, name servers and TXT answers (plain DNS);
//! - [`rfc2136`]: dynamic updates signed with TSIG;
//! - [`exec`]: `CMD present|cleanup FQDN VALUE`.

pub mod exec;
pub mod lookup;
pub mod rfc2136;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_client::proto::rr::Name;

use berth_core::config::dns::{DnsConfig, DnsProvider};

use rfc2136::Rfc2136;

/// How often the authoritative servers are asked again while a record propagates.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// The most name server addresses of a zone waited for (a zone rarely lists more than a
/// dozen; one that lists hundreds does not make berth-acme ask hundreds).
pub const MAX_SERVERS: usize = 16;
/// The most propagation questions in flight at once (each is a socket).
pub const IN_FLIGHT: usize = 32;

/// What is done to a challenge record: the exec contract's verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Publish it.
    Present,
    /// Remove it (that value only).
    Cleanup,
}

impl Change {
    /// `present` or `cleanup`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Present => "present",
            Change::Cleanup => "cleanup",
        }
    }
}

/// A challenge record: `_acme-challenge.<name>` TXT `<value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRecord {
    /// `_acme-challenge.example.com.` (a wildcard's record is its base name's).
    pub fqdn: Name,
    /// The key authorization's digest, base64url.
    pub value: String,
}

impl ChallengeRecord {
    /// The record proving `identifier` (`example.com`; for `*.example.com` the CA names the
    /// base too) with `value`.
    ///
    /// # Errors
    /// When the identifier is no DNS name.
    pub fn new(identifier: &str, value: String) -> Result<ChallengeRecord, String> {
        let base = identifier.strip_prefix("*.").unwrap_or(identifier);
        Ok(ChallengeRecord {
            fqdn: lookup::name(&format!("_acme-challenge.{base}"))?,
            value,
        })
    }
}

/// The configured DNS-01 set-up.
pub struct Dns<'a> {
    config: &'a DnsConfig,
}

impl<'a> Dns<'a> {
    /// DNS-01 as configured.
    pub fn new(config: &'a DnsConfig) -> Dns<'a> {
        Dns { config }
    }

    fn resolvers(&self) -> Vec<SocketAddr> {
        if self.config.resolvers.is_empty() {
            lookup::system_resolvers()
        } else {
            self.config.resolvers.clone()
        }
    }

    /// Publishes `record`.
    ///
    /// # Errors
    /// The provider's failure, said plainly.
    pub async fn present(&self, record: &ChallengeRecord) -> Result<(), String> {
        self.change(record, Change::Present).await
    }

    /// Removes `record` (that value only).
    ///
    /// # Errors
    /// As [`Dns::present`].
    pub async fn cleanup(&self, record: &ChallengeRecord) -> Result<(), String> {
        self.change(record, Change::Cleanup).await
    }

    async fn change(&self, record: &ChallengeRecord, change: Change) -> Result<(), String> {
        let p = match &self.config.provider {
            DnsProvider::Exec { command } => {
                let fqdn = record.fqdn.to_string();
                return exec::run(command, change.as_str(), &fqdn, &record.value).await;
            }
            DnsProvider::Rfc2136 {
                server,
                key_name,
                algorithm,
                secret_file,
            } => Rfc2136 {
                server,
                key_name,
                algorithm: *algorithm,
                secret_file,
            },
        };
        let zone = p.zone(&record.fqdn, &self.config.resolvers).await?;
        p.update(&zone, &record.fqdn, &record.value, change).await
    }

    /// The servers that must answer `fqdn`: `acme.dns-nameservers`, else the addresses of the
    /// NS records of its zone (at most [`MAX_SERVERS`], spread over the NS hosts).
    async fn servers_for(&self, fqdn: &Name) -> Result<Vec<SocketAddr>, String> {
        if !self.config.nameservers.is_empty() {
            return Ok(self.config.nameservers.clone());
        }
        let resolvers = self.resolvers();
        let zone = lookup::zone_of(fqdn, &resolvers).await?;
        let servers = lookup::authoritative_servers(&zone, &resolvers).await?;
        if servers.len() > MAX_SERVERS {
            tracing::info!(
                %zone,
                servers = servers.len(),
                "acme: waiting for {MAX_SERVERS} of the zone's name server addresses only"
            );
        }
        Ok(servers.into_iter().take(MAX_SERVERS).collect())
    }

    /// Waits until every authoritative server answers every record, asking them again every
    /// [`POLL_EVERY`] (at most [`IN_FLIGHT`] questions at once), for at most
    /// `acme.dns-propagation-timeout` (no question outlives it). Returns the time it took.
    ///
    /// # Errors
    /// On timeout: which record which server did not answer, and what it answered instead.
    pub async fn wait_for(&self, records: &[ChallengeRecord]) -> Result<Duration, String> {
        let started = Instant::now();
        let deadline = started + self.config.propagation_timeout;
        // (record index, server) → the last answer, until it holds the value. A wildcard and
        // its base share a record name: their servers are found once.
        let mut pending: BTreeMap<(usize, SocketAddr), String> = BTreeMap::new();
        let mut found: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            let key = r.fqdn.to_string();
            if !found.contains_key(&key) {
                let servers = tokio::time::timeout_at(deadline.into(), self.servers_for(&r.fqdn))
                    .await
                    .map_err(|_| format!("finding the name servers of {} took too long", r.fqdn))?
                    .map_err(|e| format!("cannot find the name servers of {}: {e}", r.fqdn))?;
                found.insert(key.clone(), servers);
            }
            for s in found.get(&key).into_iter().flatten() {
                pending.insert((i, *s), "not asked yet".into());
            }
        }
        loop {
            // Every pair stays pending until its answer holds the value: a question that
            // failed in any way (its task panicking too) counts as not answered.
            let mut still = pending.clone();
            let mut asking = tokio::task::JoinSet::new();
            let mut queue = pending.keys().copied();
            loop {
                while asking.len() < IN_FLIGHT {
                    let Some((i, server)) = queue.next() else {
                        break;
                    };
                    let fqdn = records[i].fqdn.clone();
                    asking.spawn(async move {
                        let answer = tokio::time::timeout_at(
                            deadline.into(),
                            lookup::txt_values(server, &fqdn),
                        )
                        .await
                        .unwrap_or_else(|_| Err(format!("{server}: no answer in time")));
                        ((i, server), answer)
                    });
                }
                let Some(done) = asking.join_next().await else {
                    break;
                };
                let Ok((key, answer)) = done else { continue };
                let wanted = &records[key.0].value;
                match answer {
                    Ok(values) if values.contains(wanted) => {
                        still.remove(&key);
                    }
                    Ok(values) if values.is_empty() => {
                        still.insert(key, "no TXT record".to_string());
                    }
                    Ok(values) => {
                        let shown: String = format!("other values {values:?}")
                            .chars()
                            .take(200)
                            .collect();
                        still.insert(key, shown);
                    }
                    Err(e) => {
                        still.insert(key, e);
                    }
                }
            }
            if still.is_empty() {
                return Ok(started.elapsed());
            }
            if Instant::now() + POLL_EVERY > deadline {
                let missing: Vec<String> = still
                    .iter()
                    .map(|((i, server), last)| {
                        format!("{server} for {} (last answer: {last})", records[*i].fqdn)
                    })
                    .collect();
                return Err(format!(
                    "the challenge records did not reach every authoritative server within {}s \
                     (acme.dns-propagation-timeout): {}",
                    self.config.propagation_timeout.as_secs(),
                    missing.join("; ")
                ));
            }
            pending = still;
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_is_proved_at_its_base_name() {
        let plain =
            ChallengeRecord::new("a.example.com", "v".into()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plain.fqdn.to_string(), "_acme-challenge.a.example.com.");
        let wild =
            ChallengeRecord::new("*.example.com", "v".into()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wild.fqdn.to_string(), "_acme-challenge.example.com.");
    }
}
