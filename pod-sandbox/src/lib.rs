//! Pod sandboxes: pinned network, IPC and UTS namespaces (and a PID namespace when the pod
//! shares one), the sandbox directory with hostname, hosts, resolv.conf and /dev/shm, and the
//! naming of pod cgroup parents.
//!
//! Empty in the foundation: the pod sandbox issue fills it.
