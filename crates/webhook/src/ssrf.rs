//! Which destinations a webhook may be sent to, decided on the address that is connected to.
//!
//! Two rules. Without `allow_private_destinations`, only public addresses pass: a webhook URL is
//! set by whoever administers an app, and the delivery log (`list_attempts`) shows the first KiB of
//! every answer, so a private destination would let them read the server's own network. With it
//! (a receiver on one's own machine or LAN), private addresses pass, but some never do: link-local
//! addresses and cloud metadata services (where instance credentials live), the names that reach
//! them, the same addresses embedded in IPv6 forms that route to IPv4 (IPv4-mapped and -compatible,
//! NAT64, 6to4), and the IPv6 transition and deprecated ranges whose destination cannot be read from
//! the address (Teredo, site-local, local-use NAT64).
//!
//! A name is checked before any lookup and every address it resolves to is filtered by the
//! [`GuardedResolver`], which is the only resolver the HTTP clients use, so the address checked is
//! the address connected to. IP literals never reach a resolver and are checked by [`check_url`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Host names of cloud metadata services, refused before any lookup (lowercase, no trailing dot).
pub const METADATA_NAMES: [&str; 8] = [
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.tencentyun.com",
    "metadata.azure.com",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.platformequinix.com",
];

/// Alibaba Cloud's metadata service, inside the shared (CGNAT) range that private networks use.
const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
/// AWS's metadata service over IPv6 (inside the unique-local range).
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Why a destination was refused; recognisable in a reqwest error's source chain.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Not public, and the app does not allow private destinations.
    #[error("destination {0} is, or resolves only to, loopback, private, link-local or unspecified addresses")]
    Private(String),
    /// Never allowed.
    #[error(
        "destination {0} is, or resolves only to, link-local, cloud metadata or IPv6 transition addresses (refused even with allow_private_destinations)"
    )]
    Always(String),
}

/// Whether `host` (a name, as in a URL) names a cloud metadata service.
pub fn is_metadata_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    METADATA_NAMES.iter().any(|m| m.eq_ignore_ascii_case(host))
}

/// Whether an address may receive webhooks without `allow_private_destinations`.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
                || (s[0] == 0x2001 && s[1] == 0) // Teredo
                || (s[0] == 0x2001 && s[1] == 2 && s[2] == 0) // benchmarking
                || (s[0] == 0x2001 && (s[1] & 0xffe0) == 0x20) // ORCHID (v2)
                || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x10) // ORCHID
                || (s[..4] == [0x100, 0, 0, 0]) // discard
                // Ranges that embed an IPv4 address (NAT64, 6to4, IPv4-compatible and -translated)
                // could reach a private one: refused outright.
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || s[0] == 0x2002
                || s[..6] == [0; 6]
                || s[..6] == [0, 0, 0, 0, 0xffff, 0])
        }
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || o[0] >= 240)
}

/// Whether an IPv4 address is link-local or a cloud metadata service.
fn is_metadata_v4(v4: Ipv4Addr) -> bool {
    v4.is_link_local() || v4 == ALIBABA_METADATA
}

/// Whether an address is refused whatever the app allows.
pub fn always_refused(ip: IpAddr) -> bool {
    let v6 = match ip.to_canonical() {
        IpAddr::V4(v4) => return is_metadata_v4(v4),
        IpAddr::V6(v6) => v6,
    };
    let s = v6.segments();
    let low32 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local
        || v6 == AWS_METADATA_V6
        || (s[0] == 0x2001 && s[1] == 0) // Teredo: the destination is hidden in the address
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64: where it embeds IPv4 varies
        // 6to4 reaches the IPv4 address in bits 16–48: only a public one may pass.
        || (s[0] == 0x2002 && !is_public_v4(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8)))
        // IPv4-compatible, IPv4-translated and NAT64 (well-known prefix) carry it in the last 32 bits.
        || ((s[..6] == [0; 6] || s[..6] == [0, 0, 0, 0, 0xffff, 0] || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]))
            && is_metadata_v4(low32))
}

/// Whether an address may receive an app's webhooks.
pub fn allowed(ip: IpAddr, allow_private: bool) -> bool {
    !always_refused(ip) && (allow_private || is_public(ip))
}

/// Checks a URL's host before anything is sent: an IP literal by its address (a resolver is not
/// asked for those), a name against the metadata names (the resolver checks its addresses).
pub fn check_url(url: &url::Url, allow_private: bool) -> Result<(), Refused> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(url::Host::Domain(name)) if is_metadata_name(name) => return Err(Refused::Always(name.to_owned())),
        _ => return Ok(()),
    };
    if always_refused(ip) {
        Err(Refused::Always(ip.to_string()))
    } else if !allow_private && !is_public(ip) {
        Err(Refused::Private(ip.to_string()))
    } else {
        Ok(())
    }
}

/// A resolver that returns only the addresses an app may reach, so the address checked is the
/// address connected to. Metadata names are refused without a lookup.
pub struct GuardedResolver {
    /// Whether the app allows private destinations.
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let allow_private = self.allow_private;
        Box::pin(async move {
            if is_metadata_name(&host) {
                return Err(Box::new(Refused::Always(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok: Vec<SocketAddr> = all.iter().copied().filter(|a| allowed(a.ip(), allow_private)).collect();
            if ok.is_empty() {
                // Say "even with allow_private_destinations" only when that is the reason.
                let always = !all.is_empty() && all.iter().all(|a| always_refused(a.ip()));
                let err = if always { Refused::Always(host) } else { Refused::Private(host) };
                return Err(Box::new(err) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests;
