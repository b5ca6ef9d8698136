//! The files a pod's containers get from the sandbox: `hostname`, `hosts`, `resolv.conf`.

use std::net::IpAddr;
use std::path::Path;

use crate::Error;

/// DNS settings from the pod's DNSConfig.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsSettings {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Checks a pod hostname (an RFC 1123 label, at most 63 characters: the UTS limit is 64).
pub fn validate_hostname(hostname: &str) -> Result<(), Error> {
    let valid = !hostname.is_empty()
        && hostname.len() <= 63
        && hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !hostname.starts_with('-')
        && !hostname.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid hostname {hostname:?}"
        )))
    }
}

/// The `hosts` file: loopback names, and the pod's own addresses under its hostname.
pub fn hosts_file(hostname: &str, pod_ips: &[IpAddr]) -> String {
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    for ip in pod_ips {
        text.push_str(&format!("{ip}\t{hostname}\n"));
    }
    text
}

/// The `resolv.conf` file: the pod's DNS settings, or the host's file when it has none.
pub fn resolv_conf(dns: &DnsSettings, host_resolv_conf: &Path) -> Result<String, Error> {
    if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        return match std::fs::read_to_string(host_resolv_conf) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(Error::sys("read", host_resolv_conf, e)),
        };
    }
    for value in dns.servers.iter().chain(&dns.searches).chain(&dns.options) {
        if value.is_empty() || value.contains(char::is_whitespace) {
            return Err(Error::InvalidArgument(format!(
                "invalid DNS config value {value:?}"
            )));
        }
    }
    for server in &dns.servers {
        server.parse::<IpAddr>().map_err(|_| {
            Error::InvalidArgument(format!("DNS server {server:?} is not an IP address"))
        })?;
    }
    let mut text = String::new();
    if !dns.searches.is_empty() {
        text.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        text.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Ok(text)
}

/// Writes a file of the sandbox directory (mode 0644: containers read it).
pub fn write_file(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|e| Error::sys("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_hosts_file_names_pod_ips() {
        let hosts = hosts_file("web-0", &["10.88.0.5".parse().unwrap()]);
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(hosts.ends_with("10.88.0.5\tweb-0\n"));
    }

    #[test]
    fn test_resolv_conf_from_dns_config() {
        let dns = DnsSettings {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        let text = resolv_conf(&dns, Path::new("/nonexistent")).unwrap();
        assert_eq!(
            text,
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn test_resolv_conf_falls_back_to_host_file() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("resolv.conf");
        std::fs::write(&host, "nameserver 192.0.2.1\n").unwrap();
        assert_eq!(
            resolv_conf(&DnsSettings::default(), &host).unwrap(),
            "nameserver 192.0.2.1\n"
        );
    }

    #[test]
    fn test_resolv_conf_rejects_bad_values() {
        let dns = DnsSettings {
            servers: vec!["not-an-ip".into()],
            ..DnsSettings::default()
        };
        assert!(resolv_conf(&dns, Path::new("/nonexistent")).is_err());
        let dns = DnsSettings {
            searches: vec!["a b".into()],
            ..DnsSettings::default()
        };
        assert!(resolv_conf(&dns, Path::new("/nonexistent")).is_err());
    }

    #[test]
    fn test_validate_hostname() {
        validate_hostname("web-0").unwrap();
        for bad in ["", "-a", "a b", &"x".repeat(64)] {
            assert!(validate_hostname(bad).is_err(), "{bad:?}");
        }
    }
}
