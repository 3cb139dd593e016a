//! Which host names an enrolled worker's certificate may carry
//! (`--enroll-hosts`): exact names, `*.DOMAIN` (any name under DOMAIN, e.g.
//! a Kubernetes headless service's `*.qala-workers.qala.svc.cluster.local`),
//! and IP networks (`10.20.0.0/16`, or one address). Never a coordinator's
//! name: the coordinators' own names, `localhost` and loopback addresses
//! are refused whatever the patterns say.

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// `*.DOMAIN`: the DOMAIN part, lower case.
    Under(String),
    Net(IpAddr, u8),
}

impl Pattern {
    fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim().to_ascii_lowercase();
        let bad = |why: &str| Err(format!("--enroll-hosts {spec:?}: {why}"));
        if let Some((ip, prefix)) = spec.split_once('/') {
            let ip: IpAddr = ip.parse().map_err(|_| format!("--enroll-hosts {spec:?}: not an address/prefix"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            return match prefix.parse::<u8>() {
                Ok(p) if p <= max => Ok(Pattern::Net(ip, p)),
                _ => bad(&format!("the prefix must be 0-{max}")),
            };
        }
        if let Ok(ip) = spec.parse::<IpAddr>() {
            return Ok(Pattern::Net(ip, if ip.is_ipv4() { 32 } else { 128 }));
        }
        let (under, name) = match spec.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, spec.as_str()),
        };
        if !is_dns_name(name) {
            return bad("use a host name, *.DOMAIN, an IP address or a network (10.0.0.0/8)");
        }
        if under && !name.contains('.') {
            return bad("*.DOMAIN needs a domain of two labels or more");
        }
        Ok(if under { Pattern::Under(name.to_string()) } else { Pattern::Exact(name.to_string()) })
    }

    fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (Pattern::Exact(p), Host::Name(n)) => p == n,
            (Pattern::Under(d), Host::Name(n)) => {
                n.len() > d.len() + 1 && n.ends_with(d.as_str()) && n[..n.len() - d.len()].ends_with('.')
            }
            (Pattern::Net(net, prefix), Host::Ip(ip)) => in_network(*ip, *net, *prefix),
            _ => false,
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Exact(n) => f.write_str(n),
            Pattern::Under(d) => write!(f, "*.{d}"),
            Pattern::Net(ip, p) => write!(f, "{ip}/{p}"),
        }
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let bits = |a: IpAddr| -> (u128, u32) {
        match a {
            IpAddr::V4(v) => (u32::from(v) as u128, 32),
            IpAddr::V6(v) => (u128::from(v), 128),
        }
    };
    let ((a, width), (b, net_width)) = (bits(ip), bits(net));
    if width != net_width {
        return false;
    }
    let shift = width - prefix as u32;
    shift >= width || (a >> shift) == (b >> shift)
}

enum Host {
    Name(String),
    Ip(IpAddr),
}

fn host_of(s: &str) -> Result<Host, String> {
    let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let s = s.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    if is_dns_name(s) { Ok(Host::Name(s.to_string())) } else { Err(format!("{s:?} is not a host name or IP address")) }
}

/// The hosts enrolled workers' certificates may name.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    patterns: Vec<Pattern>,
}

impl HostPolicy {
    /// From `--enroll-hosts`; a pattern that covers one of `own` (this
    /// coordinator's names) is an error.
    pub fn parse(specs: &[String], own: &[String]) -> Result<Self, String> {
        let patterns = specs.iter().filter(|s| !s.trim().is_empty()).map(|s| Pattern::parse(s)).collect::<Result<Vec<_>, _>>()?;
        let policy = Self { patterns };
        for name in own {
            if let Ok(host) = host_of(name)
                && let Some(p) = policy.patterns.iter().find(|p| p.matches(&host))
                && !is_loopback(&host)
            {
                return Err(format!("--enroll-hosts {p} covers {name}, a name of this coordinator"));
            }
        }
        Ok(policy)
    }

    /// Whether an enrolled certificate may name `host`; `coordinators` are
    /// the names of the cluster's coordinators (never allowed).
    pub fn check(&self, host: &str, coordinators: &[String]) -> Result<(), String> {
        let h = host_of(host)?;
        if is_loopback(&h) {
            return Err(format!("{host}: a loopback name is every coordinator's; an enrolled certificate never names one"));
        }
        if coordinators.iter().filter_map(|c| host_of(c).ok()).any(|c| same(&c, &h)) {
            return Err(format!("{host} is a coordinator's name; an enrolled certificate never names one"));
        }
        if self.patterns.iter().any(|p| p.matches(&h)) {
            return Ok(());
        }
        Err(if self.patterns.is_empty() {
            format!("{host}: this coordinator allows enrolled certificates no host names (see --enroll-hosts)")
        } else {
            format!("{host} is not among the hosts this coordinator allows ({})", self.describe())
        })
    }

    pub fn describe(&self) -> String {
        self.patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
    }
}

fn is_loopback(h: &Host) -> bool {
    match h {
        Host::Ip(ip) => ip.is_loopback() || ip.is_unspecified(),
        Host::Name(n) => n == "localhost" || n.ends_with(".localhost"),
    }
}

fn same(a: &Host, b: &Host) -> bool {
    match (a, b) {
        (Host::Ip(x), Host::Ip(y)) => x == y,
        (Host::Name(x), Host::Name(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_networks_and_never_a_coordinator() {
        let own = vec!["localhost".to_string(), "127.0.0.1".into(), "scan.example.org".into()];
        let p = HostPolicy::parse(
            &["*.workers.qala.svc.cluster.local".into(), "10.20.0.0/16".into(), "w7.example.org".into(), "fd00::/8".into()],
            &own,
        )
        .unwrap();
        let coordinators = vec!["scan.example.org".to_string(), "10.20.0.1".into()];
        let ok = |h: &str| p.check(h, &coordinators).is_ok();
        assert!(ok("qala-worker-3.workers.qala.svc.cluster.local") && ok("a.b.workers.qala.svc.cluster.local"));
        assert!(!ok("workers.qala.svc.cluster.local"), "the domain itself is not under it");
        assert!(!ok("evilworkers.qala.svc.cluster.local"));
        assert!(ok("10.20.3.4") && !ok("10.21.0.1") && ok("W7.Example.ORG.") && !ok("w8.example.org"));
        assert!(ok("fd12::7") && !ok("fe80::1"));
        assert!(!ok("10.20.0.1"), "a coordinator's address, inside the network");
        assert!(!ok("localhost") && !ok("127.0.0.1") && !ok("::1") && !ok("0.0.0.0"));
        let e = p.check("scan.example.org", &coordinators).unwrap_err();
        assert!(e.contains("coordinator"), "{e}");
        assert!(!ok("bad host") && !ok(""));
        // Nothing allowed: every name refused, with the reason.
        let none = HostPolicy::parse(&[], &own).unwrap();
        assert!(none.check("w1.example.org", &[]).unwrap_err().contains("--enroll-hosts"));
        // A pattern over the coordinator's own name is refused at start.
        let e = HostPolicy::parse(&["*.example.org".into()], &own).unwrap_err();
        assert!(e.contains("scan.example.org"), "{e}");
        for bad in ["*", "*.com", "10.0.0.0/33", "a..b", "-x.org"] {
            assert!(HostPolicy::parse(&[bad.into()], &[]).is_err(), "{bad}");
        }
    }
}
