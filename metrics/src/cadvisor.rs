//! Per-container and per-pod metrics under cAdvisor's names (what kubelet's
//! `/metrics/cadvisor` and dashboards built on it expect), from the stats this crate reads.
//! Labels: `container`, `pod`, `namespace`, `image` and `id` (the cgroup path, as cAdvisor);
//! network families are per pod, on the pod's interfaces, with `container=""` and an
//! `interface` label.

use crate::exposition::{Family, Kind};
use crate::{CgroupStats, DiskUsage, InterfaceStats};

/// Who a container is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerLabels {
    /// The cgroup path (cAdvisor's `id`).
    pub id: String,
    pub container: String,
    pub pod: String,
    pub namespace: String,
    pub image: String,
}

/// The limits a container was given (its spec), when set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSpec {
    pub memory_limit_bytes: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpu_shares: Option<u64>,
}

/// One container's sample.
#[derive(Debug, Clone, Default)]
pub struct ContainerSample {
    pub labels: ContainerLabels,
    pub stats: CgroupStats,
    pub spec: ContainerSpec,
    /// Its writable layer's usage, when measured.
    pub fs_usage: Option<DiskUsage>,
    /// When it started (unix seconds).
    pub start_time_seconds: Option<f64>,
}

/// A pod's network interfaces.
#[derive(Debug, Clone, Default)]
pub struct PodNetworkSample {
    pub pod: String,
    pub namespace: String,
    /// The pod's cgroup parent or sandbox ID (cAdvisor's `id`).
    pub id: String,
    pub interfaces: Vec<InterfaceStats>,
}

type Getter = fn(&ContainerSample) -> Option<f64>;

fn ns_to_s(ns: Option<u64>) -> Option<f64> {
    ns.map(|ns| ns as f64 / 1e9)
}

fn float(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

/// The container families: name, type, help, value.
const CONTAINER_FAMILIES: &[(&str, Kind, &str, Getter)] = &[
    (
        "container_cpu_usage_seconds_total",
        Kind::Counter,
        "Cumulative cpu time consumed in seconds.",
        |s| ns_to_s(s.stats.cpu.usage_ns),
    ),
    (
        "container_cpu_user_seconds_total",
        Kind::Counter,
        "Cumulative user cpu time consumed in seconds.",
        |s| ns_to_s(s.stats.cpu.user_ns),
    ),
    (
        "container_cpu_system_seconds_total",
        Kind::Counter,
        "Cumulative system cpu time consumed in seconds.",
        |s| ns_to_s(s.stats.cpu.system_ns),
    ),
    (
        "container_cpu_cfs_periods_total",
        Kind::Counter,
        "Number of elapsed enforcement period intervals.",
        |s| float(s.stats.cpu.nr_periods),
    ),
    (
        "container_cpu_cfs_throttled_periods_total",
        Kind::Counter,
        "Number of throttled period intervals.",
        |s| float(s.stats.cpu.nr_throttled),
    ),
    (
        "container_cpu_cfs_throttled_seconds_total",
        Kind::Counter,
        "Total time duration the container has been throttled.",
        |s| ns_to_s(s.stats.cpu.throttled_ns),
    ),
    (
        "container_memory_usage_bytes",
        Kind::Gauge,
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        |s| float(s.stats.memory.usage_bytes),
    ),
    (
        "container_memory_working_set_bytes",
        Kind::Gauge,
        "Current working set in bytes.",
        |s| float(s.stats.memory.working_set_bytes),
    ),
    (
        "container_memory_rss",
        Kind::Gauge,
        "Size of RSS in bytes.",
        |s| float(s.stats.memory.rss_bytes),
    ),
    (
        "container_memory_cache",
        Kind::Gauge,
        "Number of bytes of page cache memory.",
        |s| float(s.stats.memory.cache_bytes),
    ),
    (
        "container_memory_swap",
        Kind::Gauge,
        "Container swap usage in bytes.",
        |s| float(s.stats.memory.swap_bytes),
    ),
    (
        "container_oom_events_total",
        Kind::Counter,
        "Count of out of memory events observed for the container.",
        |s| float(s.stats.memory.oom_events),
    ),
    (
        "container_processes",
        Kind::Gauge,
        "Number of processes running inside the container.",
        |s| float(s.stats.pids.current),
    ),
    (
        "container_spec_memory_limit_bytes",
        Kind::Gauge,
        "Memory limit for the container.",
        |s| Some(s.spec.memory_limit_bytes.map_or(0.0, |v| v as f64)),
    ),
    (
        "container_spec_cpu_quota",
        Kind::Gauge,
        "CPU quota of the container.",
        |s| s.spec.cpu_quota.map(|v| v as f64),
    ),
    (
        "container_spec_cpu_period",
        Kind::Gauge,
        "CPU period of the container.",
        |s| float(s.spec.cpu_period),
    ),
    (
        "container_spec_cpu_shares",
        Kind::Gauge,
        "CPU share of the container.",
        |s| float(s.spec.cpu_shares),
    ),
    (
        "container_fs_usage_bytes",
        Kind::Gauge,
        "Number of bytes that are consumed by the container on this filesystem.",
        |s| s.fs_usage.map(|u| u.bytes as f64),
    ),
    (
        "container_fs_inodes_used",
        Kind::Gauge,
        "Number of inodes used by the container's writable layer.",
        |s| s.fs_usage.map(|u| u.inodes as f64),
    ),
    (
        "container_start_time_seconds",
        Kind::Gauge,
        "Start time of the container since unix epoch in seconds.",
        |s| s.start_time_seconds,
    ),
];

type NetGetter = fn(&InterfaceStats) -> u64;

const NETWORK_FAMILIES: &[(&str, &str, NetGetter)] = &[
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
        |i| i.rx_bytes,
    ),
    (
        "container_network_receive_packets_total",
        "Cumulative count of packets received.",
        |i| i.rx_packets,
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving.",
        |i| i.rx_errors,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
        |i| i.tx_bytes,
    ),
    (
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted.",
        |i| i.tx_packets,
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
        |i| i.tx_errors,
    ),
];

/// Writes every family for `containers` and `pods` (families with no value are skipped).
pub fn write_cadvisor(out: &mut String, containers: &[ContainerSample], pods: &[PodNetworkSample]) {
    for (name, kind, help, get) in CONTAINER_FAMILIES {
        let values: Vec<(&ContainerSample, f64)> = containers
            .iter()
            .filter_map(|sample| get(sample).map(|value| (sample, value)))
            .collect();
        if values.is_empty() {
            continue;
        }
        let mut family = Family::start(out, name, *kind, help);
        for (sample, value) in values {
            let l = &sample.labels;
            family.sample(
                &[
                    ("container", &l.container),
                    ("id", &l.id),
                    ("image", &l.image),
                    ("namespace", &l.namespace),
                    ("pod", &l.pod),
                ],
                value,
            );
        }
    }
    if pods.iter().all(|p| p.interfaces.is_empty()) {
        return;
    }
    for (name, help, get) in NETWORK_FAMILIES {
        let mut family = Family::start(out, name, Kind::Counter, help);
        for pod in pods {
            for interface in &pod.interfaces {
                family.sample(
                    &[
                        ("container", ""),
                        ("id", &pod.id),
                        ("interface", &interface.name),
                        ("namespace", &pod.namespace),
                        ("pod", &pod.pod),
                    ],
                    get(interface) as f64,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ContainerSample {
        let mut s = ContainerSample {
            labels: ContainerLabels {
                id: "/kubepods/pod1/abc".into(),
                container: "web".into(),
                pod: "web-0".into(),
                namespace: "default".into(),
                image: "nginx:1".into(),
            },
            ..ContainerSample::default()
        };
        s.stats.cpu.usage_ns = Some(1_500_000_000);
        s.stats.memory.working_set_bytes = Some(4096);
        s.spec.cpu_quota = Some(50_000);
        s
    }

    #[test]
    fn test_write_cadvisor_names_labels_and_units() {
        let mut out = String::new();
        let pods = [PodNetworkSample {
            pod: "web-0".into(),
            namespace: "default".into(),
            id: "/kubepods/pod1".into(),
            interfaces: vec![InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 10,
                tx_bytes: 20,
                ..InterfaceStats::default()
            }],
        }];
        write_cadvisor(&mut out, &[sample()], &pods);
        assert!(out.contains("# TYPE container_cpu_usage_seconds_total counter\n"));
        assert!(out.contains(
            "container_cpu_usage_seconds_total{container=\"web\",id=\"/kubepods/pod1/abc\",\
             image=\"nginx:1\",namespace=\"default\",pod=\"web-0\"} 1.5\n"
        ));
        assert!(out.contains("container_memory_working_set_bytes{"));
        assert!(out.contains("container_spec_cpu_quota{") && out.contains("} 50000\n"));
        // An unset memory limit is 0, as cAdvisor reports it.
        assert!(out.contains("container_spec_memory_limit_bytes{"));
        // Unknown values are left out, not reported as zero.
        assert!(!out.contains("container_memory_rss"));
        assert!(out.contains(
            "container_network_receive_bytes_total{container=\"\",id=\"/kubepods/pod1\",\
             interface=\"eth0\",namespace=\"default\",pod=\"web-0\"} 10\n"
        ));
        // Every family has exactly one HELP and one TYPE line.
        let types = out.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = out.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types, helps);
    }
}
