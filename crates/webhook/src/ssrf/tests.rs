//! The SSRF predicates, range by range, with the edges of each range and every embedding of the
//! addresses that are never allowed.

use super::*;
use reqwest::dns::Resolve as _;

/// What each rule says about an address: (without allow_private_destinations, with it).
const PUBLIC: (bool, bool) = (true, true);
const PRIVATE: (bool, bool) = (false, true);
const NEVER: (bool, bool) = (false, false);

fn check(cases: &[(&str, (bool, bool))]) {
    for (text, (without, with)) in cases {
        let ip: IpAddr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(allowed(ip, false), *without, "{text} without allow_private_destinations");
        assert_eq!(allowed(ip, true), *with, "{text} with allow_private_destinations");
        assert_eq!(always_refused(ip), !*with, "{text}: always_refused");
        assert_eq!(is_public(ip), *without, "{text}: is_public");
    }
}

#[test]
fn public_addresses_pass() {
    check(&[
        ("8.8.8.8", PUBLIC),
        ("1.1.1.1", PUBLIC),
        ("169.253.255.255", PUBLIC),
        ("169.255.0.0", PUBLIC),
        ("100.63.255.255", PUBLIC),
        ("100.128.0.0", PUBLIC),
        ("2606:4700::1111", PUBLIC),
        ("2a00:1450:4001::200e", PUBLIC),
        ("2001:1::1", PUBLIC),
        ("2001:db9::1", PUBLIC),
        ("2003::1", PUBLIC),
        ("::ffff:8.8.8.8", PUBLIC),
    ]);
}

#[test]
fn private_addresses_pass_only_when_allowed() {
    check(&[
        ("127.0.0.1", PRIVATE),
        ("127.255.255.254", PRIVATE),
        ("10.1.2.3", PRIVATE),
        ("172.16.0.1", PRIVATE),
        ("172.31.255.255", PRIVATE),
        ("192.168.1.1", PRIVATE),
        ("0.0.0.0", PRIVATE),
        ("0.1.2.3", PRIVATE),
        ("100.64.0.1", PRIVATE),
        ("100.100.100.100", PRIVATE),
        ("100.100.100.199", PRIVATE),
        ("100.100.100.201", PRIVATE),
        ("100.127.255.255", PRIVATE),
        ("192.0.0.1", PRIVATE),
        ("192.0.2.1", PRIVATE),
        ("198.18.0.1", PRIVATE),
        ("198.51.100.1", PRIVATE),
        ("203.0.113.1", PRIVATE),
        ("224.0.0.1", PRIVATE),
        ("240.0.0.1", PRIVATE),
        ("255.255.255.255", PRIVATE),
        ("::1", PRIVATE),
        ("::", PRIVATE),
        ("fc00::1", PRIVATE),
        ("fd00::1", PRIVATE),
        ("fd00:ec2::253", PRIVATE),
        ("fd00:ec2::255", PRIVATE),
        ("ff02::1", PRIVATE),
        ("2001:db8::1", PRIVATE),
        ("2001:2::1", PRIVATE),
        ("2001:10::1", PRIVATE),
        ("2001:20::1", PRIVATE),
        ("100::1", PRIVATE),
        // IPv4 embedded in IPv6: refused without the setting (the embedded address may be private),
        // allowed with it unless it is one of the never-allowed addresses.
        ("::ffff:127.0.0.1", PRIVATE),
        ("::ffff:10.0.0.1", PRIVATE),
        ("::127.0.0.1", PRIVATE),
        ("::8.8.8.8", PRIVATE),
        ("::ffff:0:10.0.0.1", PRIVATE),
        ("64:ff9b::10.0.0.1", PRIVATE),
        ("64:ff9b::8.8.8.8", PRIVATE),
        // 6to4 of a public address.
        ("2002:808:808::1", PRIVATE),
    ]);
}

#[test]
fn link_local_metadata_and_transition_addresses_never_pass() {
    check(&[
        // IPv4 link-local, where AWS, GCP, Azure, Oracle (169.254.169.254), Tencent (169.254.0.23)
        // and ECS tasks (169.254.170.2) serve metadata; Alibaba's.
        ("169.254.169.254", NEVER),
        ("169.254.0.23", NEVER),
        ("169.254.170.2", NEVER),
        ("169.254.0.0", NEVER),
        ("169.254.255.255", NEVER),
        ("100.100.100.200", NEVER),
        // IPv6 link-local, site-local, AWS's IPv6 metadata.
        ("fe80::1", NEVER),
        ("fe80::a9fe:a9fe", NEVER),
        ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NEVER),
        ("fec0::1", NEVER),
        ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NEVER),
        ("fd00:ec2::254", NEVER),
        // The metadata addresses embedded: IPv4-mapped, -compatible, -translated, NAT64, 6to4.
        ("::ffff:169.254.169.254", NEVER),
        ("::ffff:100.100.100.200", NEVER),
        ("::169.254.169.254", NEVER),
        ("::ffff:0:169.254.169.254", NEVER),
        ("64:ff9b::169.254.169.254", NEVER),
        ("64:ff9b::100.100.100.200", NEVER),
        ("2002:a9fe:a9fe::1", NEVER),
        // 6to4 of any non-public address.
        ("2002:a00:1::1", NEVER),
        ("2002:7f00:1::1", NEVER),
        ("2002:c0a8:101::", NEVER),
        ("2002::1", NEVER),
        // Teredo and local-use NAT64: the destination cannot be read reliably from the address.
        ("2001::1", NEVER),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", NEVER),
        ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", NEVER),
        ("64:ff9b:1::1", NEVER),
        ("64:ff9b:1::169.254.169.254", NEVER),
    ]);
}

#[test]
fn metadata_names_are_recognised_in_any_case_and_with_a_trailing_dot() {
    for name in METADATA_NAMES {
        assert!(is_metadata_name(name), "{name}");
        assert!(is_metadata_name(&name.to_ascii_uppercase()), "{name}");
        assert!(is_metadata_name(&format!("{name}.")), "{name}.");
    }
    for name in ["example.com", "mymetadata", "metadata.google.internal.example.com", "metadata.google", "instance", "metadata.."] {
        assert!(!is_metadata_name(name), "{name}");
    }
}

#[test]
fn urls_are_checked_before_anything_is_sent() {
    let refused = |u: &str, allow: bool| check_url(&url::Url::parse(u).unwrap(), allow).err();
    // Every spelling of the metadata address that a URL parser turns into it.
    for u in [
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://0xa9.0xfe.0xa9.0xfe/",
        "http://0251.0376.0251.0376/",
        "http://169.254.43518/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.GOOGLE.INTERNAL./",
        "http://metadata/",
        "http://metadata.tencentyun.com/latest/meta-data/",
        "http://instance-data/",
        "http://metadata.azure.com/",
    ] {
        for allow in [false, true] {
            assert!(matches!(refused(u, allow), Some(Refused::Always(_))), "{u} allow_private={allow}");
        }
    }
    assert!(matches!(refused("http://127.0.0.1:9/", false), Some(Refused::Private(_))));
    assert!(matches!(refused("http://[::1]:9/", false), Some(Refused::Private(_))));
    assert!(refused("http://127.0.0.1:9/", true).is_none());
    assert!(refused("http://8.8.8.8/", false).is_none());
    // Names other than the metadata ones are left to the resolver.
    assert!(refused("http://localhost:9/", false).is_none());
    assert!(refused("http://example.com/", false).is_none());
    let text = Refused::Always("x".into()).to_string();
    assert!(text.contains("link-local") && text.contains("metadata"), "{text}");
    assert!(Refused::Private("x".into()).to_string().contains("private"));
}

#[tokio::test]
async fn the_resolver_returns_only_allowed_addresses() {
    let resolve = |allow_private: bool, name: &'static str| async move {
        GuardedResolver { allow_private }.resolve(name.parse().unwrap()).await.map(|a| a.map(|a| a.ip()).collect::<Vec<_>>())
    };
    let err = resolve(false, "localhost").await.unwrap_err();
    assert!(err.is::<Refused>() && err.to_string().contains("private"), "{err}");
    let ok = resolve(true, "localhost").await.unwrap();
    assert!(!ok.is_empty() && ok.iter().all(|ip| ip.is_loopback()), "{ok:?}");
    for allow in [false, true] {
        let err = resolve(allow, "metadata.google.internal").await.unwrap_err();
        assert!(matches!(err.downcast_ref::<Refused>(), Some(Refused::Always(_))), "{err}");
    }
}
