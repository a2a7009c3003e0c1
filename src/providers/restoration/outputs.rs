//! A model's output URL is untrusted input: a prediction (or whoever forged
//! its answer) may point it at the shop's own network, `/metrics` included.
//! Outputs are fetched only over https from the hosts on
//! `replicate.output_hosts`, redirects are followed only within them, and a
//! host name is refused when it resolves only to private, loopback or
//! link-local addresses. An entry written as a whole origin
//! (`http://127.0.0.1:9000`) is trusted exactly as listed, scheme and port
//! included; so is the origin of `replicate.api_base`.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

/// At most this many redirects before an output is refused.
const MAX_REDIRECTS: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// `replicate.delivery`: that host, over https, on public addresses.
    Host(String),
    /// `*.replicate.delivery`: any host under it, as [`Allowed::Host`].
    Under(String),
    /// `http://127.0.0.1:9000`: exactly this origin, trusted as listed.
    Origin {
        scheme: String,
        host: String,
        port: Option<u16>,
    },
}

/// Where outputs may be fetched from.
#[derive(Debug, Clone)]
pub struct OutputPolicy {
    allowed: Vec<Allowed>,
}

impl OutputPolicy {
    /// The policy of `replicate.output_hosts` plus `api_base`'s origin.
    pub fn new(entries: &[String], api_base: &str) -> Result<Self, String> {
        let mut allowed = Vec::new();
        for entry in entries.iter().map(|e| e.trim().to_ascii_lowercase()) {
            if entry.is_empty() {
                continue;
            }
            allowed.push(parse_entry(&entry)?);
        }
        if let Ok(base) = Url::parse(api_base)
            && let Some(origin) = origin_of(&base)
        {
            allowed.push(origin);
        }
        Ok(Self { allowed })
    }

    /// Whether `url` may be fetched; the error says why not.
    pub fn check(&self, url: &Url) -> Result<(), String> {
        if let Some(origin) = origin_of(url)
            && self.allowed.contains(&origin)
        {
            return Ok(());
        }
        if url.scheme() != "https" {
            return Err(format!("the model's output is not https: {}", redacted(url)));
        }
        let host = url.host_str().unwrap_or_default().trim_end_matches('.');
        let listed = self.allowed.iter().any(|a| match a {
            Allowed::Host(h) => h == host,
            Allowed::Under(suffix) => host.ends_with(suffix.as_str()) && host.len() > suffix.len(),
            Allowed::Origin { .. } => false,
        });
        if !listed {
            return Err(format!(
                "the model's output is on a host not in replicate.output_hosts: {}",
                redacted(url)
            ));
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) if !is_public(IpAddr::V4(ip)) => Err(private(url)),
            Some(url::Host::Ipv6(ip)) if !is_public(IpAddr::V6(ip)) => Err(private(url)),
            _ => Ok(()),
        }
    }

    /// Host names trusted as listed (their addresses are not checked).
    fn trusted_names(&self) -> HashSet<String> {
        self.allowed
            .iter()
            .filter_map(|a| match a {
                Allowed::Origin { host, .. } => Some(host.clone()),
                _ => None,
            })
            .collect()
    }

    /// An HTTP client for outputs: redirects only within the policy, names
    /// resolved to public addresses only, with `timeout` per request.
    pub fn client(&self, timeout: std::time::Duration) -> Result<reqwest::Client, reqwest::Error> {
        let policy = self.clone();
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(std::time::Duration::from_secs(10))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error("the model's output redirects too often");
                }
                match policy.check(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(why) => attempt.error(format!("refused redirect: {why}")),
                }
            }))
            .dns_resolver(PublicResolver {
                trusted: Arc::new(self.trusted_names()),
            })
            .build()
    }
}

fn parse_entry(entry: &str) -> Result<Allowed, String> {
    if entry.contains("://") {
        let url = Url::parse(entry).map_err(|e| format!("{entry}: {e}"))?;
        return origin_of(&url).ok_or_else(|| format!("{entry}: not an http(s) origin"));
    }
    if let Some(domain) = entry.strip_prefix("*.") {
        return Ok(Allowed::Under(format!(".{domain}")));
    }
    if entry.contains(['/', ':', '*']) {
        return Err(format!(
            "{entry}: a host, *.domain or a whole origin (https://host:port)"
        ));
    }
    Ok(Allowed::Host(entry.to_owned()))
}

fn origin_of(url: &Url) -> Option<Allowed> {
    matches!(url.scheme(), "http" | "https").then(|| Allowed::Origin {
        scheme: url.scheme().to_owned(),
        host: url.host_str().unwrap_or_default().to_ascii_lowercase(),
        port: url.port_or_known_default(),
    })
}

/// The URL without its path and query (they may carry signed tokens).
fn redacted(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default())
}

fn private(url: &Url) -> String {
    format!("the model's output is on a private address: {}", redacted(url))
}

/// Whether an address is on the public internet: not loopback, private,
/// link-local, shared (CGNAT), documentation, benchmarking, multicast,
/// broadcast, reserved or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        || ip.to_ipv4().is_some_and(|v4| !is_public_v4(v4)))
}

/// A name that resolves only to addresses the shop will not fetch from.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to private addresses")]
pub struct PrivateAddress(String);

/// Whether a fetch failed because the policy refused where it led (a
/// redirect off the list, or a name on private addresses): final, not weather.
pub fn refused(e: &reqwest::Error) -> bool {
    if e.is_redirect() {
        return true;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cause {
        if err.downcast_ref::<PrivateAddress>().is_some() {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Resolves names as the system does, keeping public addresses only
/// (except for names listed as whole origins).
struct PublicResolver {
    trusted: Arc<HashSet<String>>,
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let trusted = self.trusted.clone();
        Box::pin(async move {
            let host = name.as_str().to_ascii_lowercase();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let usable: Vec<SocketAddr> = if trusted.contains(&host) {
                found
            } else {
                found.into_iter().filter(|a| is_public(a.ip())).collect()
            };
            if usable.is_empty() {
                return Err(Box::new(PrivateAddress(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(usable.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OutputPolicy {
        let entries: Vec<String> = entries.iter().map(|e| (*e).to_owned()).collect();
        OutputPolicy::new(&entries, "https://api.replicate.com").expect("policy")
    }

    fn check(p: &OutputPolicy, url: &str) -> Result<(), String> {
        p.check(&Url::parse(url).expect("url"))
    }

    #[test]
    fn only_https_on_listed_hosts_is_fetched() {
        let p = policy(&["replicate.delivery", "*.replicate.delivery"]);
        assert!(check(&p, "https://replicate.delivery/pbxt/out.png").is_ok());
        assert!(check(&p, "https://abc.replicate.delivery/out.png").is_ok());
        assert!(check(&p, "https://api.replicate.com/v1/files/x/content").is_ok());
        assert!(check(&p, "http://replicate.delivery/out.png").is_err());
        assert!(check(&p, "https://evil-replicate.delivery/out.png").is_err());
        assert!(check(&p, "https://replicate.delivery.evil.com/out.png").is_err());
        assert!(check(&p, "https://example.com/out.png").is_err());
        assert!(check(&p, "file:///etc/passwd").is_err());
    }

    #[test]
    fn internal_addresses_are_refused_unless_listed_as_an_origin() {
        let p = policy(&["*.replicate.delivery", "http://127.0.0.1:9000"]);
        assert!(check(&p, "http://127.0.0.1:9090/metrics").is_err());
        assert!(check(&p, "https://127.0.0.1/metrics").is_err());
        assert!(check(&p, "http://169.254.169.254/latest/meta-data").is_err());
        assert!(check(&p, "http://127.0.0.1:9000/delivery/1").is_ok());
        for ip in [
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1"] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        assert!(is_public("8.8.8.8".parse().expect("ip")));
        assert!(is_public("2606:4700::1111".parse().expect("ip")));
    }

    #[test]
    fn bad_entries_are_refused() {
        let bad = vec!["replicate.delivery/x".to_owned()];
        assert!(OutputPolicy::new(&bad, "https://api.replicate.com").is_err());
    }
}
