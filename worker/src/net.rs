//! The SSRF guard for every outbound connection a connector makes.
//!
//! A URL must be `http`/`https`; its host is resolved and every address is checked
//! against the policy (loopback, private, link-local, site-local, cloud metadata,
//! unspecified, multicast, benchmarking, documentation and reserved ranges are refused,
//! including their IPv4-mapped / translated / embedded IPv6 forms); the HTTP client connects only to the addresses that passed (its DNS
//! resolver is this guard), and every redirect is checked again. An allow-list
//! (`SYNCFLEET_ALLOW_PRIVATE_NETWORKS`, or CIDRs) opens private ranges for tests and
//! on-premise sources.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("scheme `{0}` is not allowed")]
    Scheme(String),
    #[error("the URL has no host")]
    NoHost,
    #[error(
        "{host} is refused: {why} address {ip} (allow it with SYNCFLEET_ALLOW_PRIVATE_NETWORKS)"
    )]
    Forbidden {
        host: String,
        ip: IpAddr,
        why: &'static str,
    },
    #[error("{0} does not resolve")]
    Resolve(String),
}

/// What outbound connections may reach.
#[derive(Debug, Clone, Default)]
pub struct NetPolicy {
    /// Allow every address (tests, trusted on-premise networks).
    pub allow_private: bool,
    /// Allow these ranges even though they are private.
    pub allowed: Vec<IpNet>,
}

/// Why an address is not a public destination, if it is not.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return v4_reason(v4).map(|_| "IPv4-embedding IPv6 of a non-public");
            }
            let seg = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some("unique-local (incl. cloud metadata fd00:ec2::254)")
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if seg[0] & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if seg[0] == 0x0100 && seg[1..4].iter().all(|&x| x == 0) {
                Some("discard-only")
            } else if seg[0] == 0x2001 && seg[1] == 0 {
                // Teredo tunnels carry an (obfuscated) IPv4 address of any kind.
                Some("Teredo")
            } else if seg[0] == 0x2001 && seg[1] == 0x0002 && seg[2] == 0 {
                Some("benchmarking")
            } else if seg[0] == 0x2001 && (seg[1] & 0xfff0 == 0x0010 || seg[1] & 0xfff0 == 0x0020) {
                Some("ORCHID")
            } else if seg[0] & 0xff00 == 0xff00 {
                Some("multicast")
            } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

fn v4_reason(v4: Ipv4Addr) -> Option<&'static str> {
    let o = v4.octets();
    if v4.is_loopback() {
        Some("loopback")
    } else if v4.is_private() {
        Some("private")
    } else if v4.is_link_local() {
        Some("link-local / cloud metadata")
    } else if v4.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if v4.is_broadcast() || o[0] >= 240 {
        Some("reserved")
    } else if v4.is_multicast() {
        Some("multicast")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("carrier-grade NAT")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol assignment")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("benchmarking")
    } else if (o[0] == 192 && o[1] == 0 && o[2] == 2)
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113)
    {
        Some("documentation")
    } else if o[0] == 192 && o[1] == 88 && o[2] == 99 {
        Some("6to4 relay anycast")
    } else {
        None
    }
}

/// The IPv4 address inside IPv4-mapped (`::ffff:a.b.c.d`), IPv4-translated
/// (`::ffff:0:a.b.c.d`, SIIT), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`,
/// and the local-use `64:ff9b:1::/48`, whose last 32 bits are the address) and 6to4
/// (`2002::/16`) addresses.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..4].iter().all(|&x| x == 0) && s[4] == 0xffff && s[5] == 0 {
        return Some(tail);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        return Some(tail);
    }
    if s[..6].iter().all(|&x| x == 0) && !(s[6] == 0 && s[7] <= 1) {
        return Some(tail);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0) {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

impl NetPolicy {
    /// Parses `SYNCFLEET_ALLOW_PRIVATE_NETWORKS`: `true`/`false`, or a comma-separated
    /// list of CIDRs to allow.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("" | "false" | "0" | "no") => Ok(Self::default()),
            Some("true" | "1" | "yes") => Ok(Self {
                allow_private: true,
                allowed: Vec::new(),
            }),
            Some(list) => {
                let allowed = list
                    .split(',')
                    .map(|c| {
                        c.trim()
                            .parse::<IpNet>()
                            .map_err(|_| format!("`{c}` is not true, false or a CIDR"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Self {
                    allow_private: false,
                    allowed,
                })
            }
        }
    }

    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), NetError> {
        if self.allow_private || self.allowed.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        match forbidden_reason(ip) {
            Some(why) => Err(NetError::Forbidden {
                host: host.to_owned(),
                ip,
                why,
            }),
            None => Ok(()),
        }
    }

    /// Checks a URL's scheme and, for an IP literal, its address (the HTTP client does
    /// not resolve literals, so they are checked here).
    pub fn check_url(&self, url: &Url) -> Result<(), NetError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(NetError::Scheme(url.scheme().to_owned()));
        }
        self.check_literal_host(url)
    }

    /// Checks the host of `url` if it is an IP literal.
    fn check_literal_host(&self, url: &Url) -> Result<(), NetError> {
        match url.host() {
            None => Err(NetError::NoHost),
            Some(url::Host::Ipv4(ip)) => self.check_ip(&ip.to_string(), IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(&ip.to_string(), IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
        }
    }

    /// Resolves `host` and returns only the permitted addresses (an error if none).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, NetError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| NetError::Resolve(host.to_owned()))?
            .collect();
        if addrs.is_empty() {
            return Err(NetError::Resolve(host.to_owned()));
        }
        let mut ok = Vec::with_capacity(addrs.len());
        let mut first_err = None;
        for a in addrs {
            match self.check_ip(host, a.ip()) {
                Ok(()) => ok.push(a),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        // A name with any forbidden address is refused whole: DNS answers can be mixed
        // on purpose (rebinding), and the client might pick either.
        match first_err {
            Some(e) => Err(e),
            None => Ok(ok),
        }
    }

    /// Checks a URL completely (scheme, literal or resolved addresses): what the API
    /// runs when a config is saved. Besides http(s), it takes the `postgres://` and
    /// `mysql://` endpoints of the `sql` connector (which connects to the address it
    /// resolves through [`NetPolicy::resolve`] itself, never over HTTP).
    pub async fn check_url_resolving(&self, url: &Url) -> Result<(), NetError> {
        let port = match url.scheme() {
            "http" | "https" => url.port_or_known_default().unwrap_or(443),
            "postgres" => url.port().unwrap_or(5432),
            "mysql" => url.port().unwrap_or(3306),
            other => return Err(NetError::Scheme(other.to_owned())),
        };
        self.check_literal_host(url)?;
        if let Some(url::Host::Domain(d)) = url.host() {
            self.resolve(d, port).await?;
        }
        Ok(())
    }

    /// An HTTP client that can only reach what this policy permits.
    pub fn http_client(&self, timeout: Duration) -> reqwest::Client {
        let resolver = Arc::new(GuardedResolver {
            policy: self.clone(),
        });
        let redirects = self.clone();
        reqwest::Client::builder()
            .dns_resolver(resolver)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    return attempt.error("too many redirects");
                }
                match redirects.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => attempt.error(e),
                }
            }))
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("syncfleet/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default()
    }
}

struct GuardedResolver {
    policy: NetPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let addrs = policy.resolve(name.as_str(), 0).await?;
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_non_public_form_is_refused() {
        let p = NetPolicy::default();
        for host in [
            "http://127.0.0.1/",
            "http://127.1.2.3/",
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::]/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://100.64.0.1/",
            "http://224.0.0.1/",
        ] {
            let url = Url::parse(host).unwrap();
            assert!(
                matches!(p.check_url(&url), Err(NetError::Forbidden { .. })),
                "{host} allowed"
            );
        }
        for bad in ["file:///etc/passwd", "ftp://example.com/", "gopher://x/"] {
            assert!(
                matches!(
                    p.check_url(&Url::parse(bad).unwrap()),
                    Err(NetError::Scheme(_))
                ),
                "{bad}"
            );
        }
        assert!(
            p.check_url(&Url::parse("https://93.184.215.14/").unwrap())
                .is_ok()
        );
        assert!(
            p.check_url(&Url::parse("https://[2606:4700::1111]/").unwrap())
                .is_ok()
        );
    }

    #[test]
    fn translated_site_local_benchmarking_and_documentation_ranges_are_refused() {
        let p = NetPolicy::default();
        for host in [
            // SIIT IPv4-translated (::ffff:0:a.b.c.d) of loopback and metadata.
            "http://[::ffff:0:7f00:1]/",
            "http://[::ffff:0:a9fe:a9fe]/",
            // Deprecated site-local fec0::/10.
            "http://[fec0::1]/",
            "http://[feff::1]/",
            // Benchmarking 198.18.0.0/15 and 2001:2::/48.
            "http://198.18.0.1/",
            "http://198.19.255.254/",
            "http://[2001:2::1]/",
            // Documentation (TEST-NET-1..3).
            "http://192.0.2.1/",
            "http://198.51.100.7/",
            "http://203.0.113.9/",
            // 6to4 relay anycast, discard-only, ORCHIDv2, local-use NAT64, Teredo.
            "http://192.88.99.1/",
            "http://[100::1]/",
            "http://[2001:20::1]/",
            "http://[64:ff9b:1::7f00:1]/",
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        ] {
            let url = Url::parse(host).unwrap();
            assert!(
                matches!(p.check_url(&url), Err(NetError::Forbidden { .. })),
                "{host} allowed"
            );
        }
        for ok in [
            "http://198.20.0.1/",
            "http://198.17.255.1/",
            "http://[2001:4860::8888]/",
        ] {
            assert!(
                p.check_url(&Url::parse(ok).unwrap()).is_ok(),
                "{ok} refused"
            );
        }
    }

    #[test]
    fn allow_lists_open_what_they_name() {
        let all = NetPolicy::parse(Some("true")).unwrap();
        assert!(
            all.check_url(&Url::parse("http://127.0.0.1/").unwrap())
                .is_ok()
        );
        let some = NetPolicy::parse(Some("127.0.0.2/32, 10.0.0.0/8")).unwrap();
        assert!(
            some.check_url(&Url::parse("http://127.0.0.2/").unwrap())
                .is_ok()
        );
        assert!(
            some.check_url(&Url::parse("http://10.9.9.9/").unwrap())
                .is_ok()
        );
        assert!(
            some.check_url(&Url::parse("http://127.0.0.1/").unwrap())
                .is_err()
        );
        assert!(NetPolicy::parse(Some("maybe")).is_err());
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        let p = NetPolicy::default();
        assert!(matches!(
            p.resolve("localhost", 80).await,
            Err(NetError::Forbidden { .. })
        ));
    }
}
