//! The CRI streaming server's building blocks (Exec, Attach and PortForward for kubelet and
//! crictl). So far: the SPDY/3.1 session layer those requests ride on.

pub mod spdy;
