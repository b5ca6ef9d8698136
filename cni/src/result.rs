//! The result of a CNI ADD: interfaces, IP configurations, routes and DNS, in the shape of
//! spec versions 0.3.0 to 1.1.0 (0.1.0/0.2.0 `ip4`/`ip6` results are read too). The raw JSON
//! is kept, because it is what the next plugin gets as `prevResult` and what DEL and CHECK
//! send back.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;
use serde_json::Value;

use crate::Error;

/// An address with a prefix length, as written in CIDR notation ("10.88.0.5/16").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl FromStr for IpPrefix {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidResult(format!("{s:?} is not an address in CIDR notation"));
        let (addr, len) = s.split_once('/').ok_or_else(invalid)?;
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let prefix_len: u8 = len.parse().map_err(|_| invalid())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(invalid());
        }
        Ok(IpPrefix { addr, prefix_len })
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// An interface the attachment created (`interfaces[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// The network namespace the interface is in; `None` (or empty) for a host interface.
    pub sandbox: Option<String>,
}

impl Interface {
    /// Whether the interface is inside the container (has a `sandbox`).
    pub fn in_sandbox(&self) -> bool {
        self.sandbox.as_deref().is_some_and(|s| !s.is_empty())
    }
}

/// An IP configuration (`ips[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpPrefix,
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    pub interface: Option<usize>,
}

/// A route (`routes[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpPrefix,
    pub gw: Option<IpAddr>,
}

/// DNS settings (`dns`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: String,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// A parsed CNI result, with the JSON it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct CniResult {
    /// The spec version of the result (`cniVersion`).
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    raw: Value,
}

/// The wire shape; unknown fields are ignored, as plugins add their own.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawResult {
    cni_version: String,
    interfaces: Vec<RawInterface>,
    ips: Vec<RawIp>,
    routes: Vec<RawRoute>,
    dns: Option<Dns>,
    // 0.1.0 / 0.2.0.
    ip4: Option<RawLegacyIp>,
    ip6: Option<RawLegacyIp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawInterface {
    name: String,
    mac: Option<String>,
    mtu: Option<u32>,
    sandbox: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawIp {
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct RawRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawLegacyIp {
    ip: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

impl CniResult {
    /// Parses a result from a plugin's JSON.
    pub fn from_json(raw: Value) -> Result<CniResult, Error> {
        let parsed: RawResult =
            serde_json::from_value(raw.clone()).map_err(|e| Error::InvalidResult(e.to_string()))?;
        let mut ips = Vec::with_capacity(parsed.ips.len());
        for ip in &parsed.ips {
            ips.push(IpConfig {
                address: ip.address.parse()?,
                gateway: parse_addr(ip.gateway.as_deref())?,
                interface: ip.interface,
            });
        }
        let mut routes = parse_routes(&parsed.routes)?;
        for legacy in [&parsed.ip4, &parsed.ip6].into_iter().flatten() {
            ips.push(IpConfig {
                address: legacy.ip.parse()?,
                gateway: parse_addr(legacy.gateway.as_deref())?,
                interface: None,
            });
            routes.extend(parse_routes(&legacy.routes)?);
        }
        if let Some(bad) = ips
            .iter()
            .filter_map(|ip| ip.interface)
            .find(|&i| i >= parsed.interfaces.len())
        {
            return Err(Error::InvalidResult(format!(
                "ip refers to interface {bad}, but the result has {} interfaces",
                parsed.interfaces.len()
            )));
        }
        Ok(CniResult {
            cni_version: parsed.cni_version,
            interfaces: parsed
                .interfaces
                .into_iter()
                .map(|i| Interface {
                    name: i.name,
                    mac: i.mac,
                    mtu: i.mtu,
                    sandbox: i.sandbox,
                })
                .collect(),
            ips,
            routes,
            dns: parsed.dns.unwrap_or_default(),
            raw,
        })
    }

    /// Parses a result from the bytes a plugin printed.
    pub fn from_slice(bytes: &[u8]) -> Result<CniResult, Error> {
        let raw: Value =
            serde_json::from_slice(bytes).map_err(|e| Error::InvalidResult(e.to_string()))?;
        CniResult::from_json(raw)
    }

    /// The JSON the plugin printed, unchanged: what goes into `prevResult`.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// The pod's addresses: those on an interface inside the container (one with `sandbox`
    /// set), IPv4 first, then IPv6, each in result order. When the result says nothing about
    /// interfaces (no `interfaces`, or no `ips` entry names one), every address counts.
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        let knows_interfaces =
            !self.interfaces.is_empty() && self.ips.iter().any(|ip| ip.interface.is_some());
        let on_pod = |ip: &&IpConfig| {
            !knows_interfaces
                || ip
                    .interface
                    .and_then(|i| self.interfaces.get(i))
                    .is_some_and(Interface::in_sandbox)
        };
        let addrs: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(on_pod)
            .map(|ip| ip.address.addr)
            .collect();
        let mut ordered: Vec<IpAddr> = Vec::with_capacity(addrs.len());
        for addr in addrs
            .iter()
            .filter(|a| a.is_ipv4())
            .chain(addrs.iter().filter(|a| a.is_ipv6()))
        {
            if !ordered.contains(addr) {
                ordered.push(*addr);
            }
        }
        ordered
    }
}

fn parse_addr(addr: Option<&str>) -> Result<Option<IpAddr>, Error> {
    match addr {
        None | Some("") => Ok(None),
        Some(a) => a
            .parse()
            .map(Some)
            .map_err(|_| Error::InvalidResult(format!("{a:?} is not an ip address"))),
    }
}

fn parse_routes(raw: &[RawRoute]) -> Result<Vec<Route>, Error> {
    raw.iter()
        .map(|r| {
            Ok(Route {
                dst: r.dst.parse()?,
                gw: parse_addr(r.gw.as_deref())?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V040: &str = r#"{
        "cniVersion": "0.4.0",
        "interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
            {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
            {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/var/run/netns/pod1"}
        ],
        "ips": [
            {"version": "6", "address": "fd00:10:88::5/64", "gateway": "fd00:10:88::1", "interface": 2},
            {"version": "4", "address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2},
            {"version": "4", "address": "10.88.0.1/16", "interface": 0}
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:10:88::1"}],
        "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
    }"#;

    const V100: &str = r#"{
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "mtu": 1450, "sandbox": "/run/netns/p"},
            {"name": "veth9", "mac": "aa:bb:cc:dd:ee:02"}
        ],
        "ips": [
            {"address": "2001:db8::7/64", "interface": 0},
            {"address": "192.168.1.7/24", "gateway": "192.168.1.1", "interface": 0}
        ],
        "routes": [{"dst": "192.168.0.0/16", "gw": "192.168.1.1"}],
        "dns": {},
        "custom": {"kept": true}
    }"#;

    #[test]
    fn test_result_v040_pod_ips_on_sandbox_interface_ipv4_first() {
        let result = CniResult::from_slice(V040.as_bytes()).unwrap();
        assert_eq!(result.cni_version, "0.4.0");
        assert_eq!(result.interfaces.len(), 3);
        assert!(result.interfaces[2].in_sandbox());
        assert!(!result.interfaces[0].in_sandbox());
        assert_eq!(
            result.pod_ips(),
            vec![
                "10.88.0.5".parse::<IpAddr>().unwrap(),
                "fd00:10:88::5".parse().unwrap()
            ]
        );
        assert_eq!(result.ips[1].address.prefix_len, 16);
        assert_eq!(result.ips[1].gateway, Some("10.88.0.1".parse().unwrap()));
        assert_eq!(result.routes[1].gw, Some("fd00:10:88::1".parse().unwrap()));
        assert_eq!(result.routes[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(result.dns.nameservers, vec!["10.96.0.10"]);
    }

    #[test]
    fn test_result_v100_ipv6_and_raw_kept() {
        let result = CniResult::from_slice(V100.as_bytes()).unwrap();
        assert_eq!(result.interfaces[0].mtu, Some(1450));
        assert_eq!(
            result.pod_ips(),
            vec![
                "192.168.1.7".parse::<IpAddr>().unwrap(),
                "2001:db8::7".parse().unwrap()
            ]
        );
        assert_eq!(result.ips[0].address.prefix_len, 64);
        assert_eq!(result.raw()["custom"]["kept"], Value::Bool(true));
        assert_eq!(result.dns, Dns::default());
    }

    #[test]
    fn test_result_without_interfaces_all_ips() {
        let result = CniResult::from_slice(
            br#"{"cniVersion":"1.0.0","ips":[{"address":"fe80::1/64"},{"address":"10.1.0.2/24"}]}"#,
        )
        .unwrap();
        assert_eq!(
            result.pod_ips(),
            vec![
                "10.1.0.2".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn test_result_legacy_v020_ip4() {
        let result = CniResult::from_slice(
            br#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.5/16","gateway":"10.1.0.1","routes":[{"dst":"0.0.0.0/0"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            result.pod_ips(),
            vec!["10.1.0.5".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(result.routes.len(), 1);
    }

    #[test]
    fn test_result_invalid_address_rejected() {
        let err =
            CniResult::from_slice(br#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5"}]}"#)
                .unwrap_err();
        assert!(err.to_string().contains("CIDR"), "{err}");
        let err = CniResult::from_slice(
            br#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/16","interface":3}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("interface 3"), "{err}");
        assert!("10.0.0.1/33".parse::<IpPrefix>().is_err());
    }
}
