//! Network interface counters of a pod's network namespace.
//!
//! [`NetnsCounters`] keeps a rtnetlink socket created inside the namespace (a netlink socket
//! stays bound to the namespace it was created in), so each read is one link dump from any
//! thread, with no `setns` per request. [`parse_proc_net_dev`] reads the `/proc/net/dev`
//! format, for callers that have that text instead.

mod netlink;
mod proc_net_dev;
mod socket;

pub use proc_net_dev::parse_proc_net_dev;
pub use socket::NetnsCounters;

/// Cumulative counters of one network interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    /// Interface name, e.g. `eth0` or `lo`.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Packets dropped on send.
    pub tx_dropped: u64,
}
