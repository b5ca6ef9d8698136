//! Metrics: the cgroup stats reader (v1 and v2) and the Prometheus registry and endpoint.
//!
//! Empty in the foundation: the stats and metrics issue fills it.
