#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;

const CG: &str = "/kubepods/pod1/abc";

/// Writes `files` (name, content) into `root` + [`CG`], creating the directories.
fn write_cgroup(root: &Path, files: &[(&str, &str)]) {
    let dir = root.join(CG.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

fn v1(path: &Path, controllers: &[&str]) -> Hierarchy {
    Hierarchy {
        path: path.to_path_buf(),
        v2: false,
        controllers: controllers.iter().map(|c| c.to_string()).collect(),
    }
}

fn v2(path: &Path, enabled: &str) -> Hierarchy {
    std::fs::create_dir_all(path).unwrap();
    std::fs::write(path.join("cgroup.controllers"), enabled).unwrap();
    Hierarchy {
        path: path.to_path_buf(),
        v2: true,
        controllers: Vec::new(),
    }
}

/// A reader with a fixed USER_HZ so tick conversions are predictable.
fn reader(hierarchies: &[Hierarchy]) -> CgroupReader {
    CgroupReader {
        clk_tck: Some(100),
        ..CgroupReader::new(hierarchies)
    }
}

const V1_MEMORY_STAT: &str = "cache 1\nrss 2\ntotal_cache 4096\ntotal_rss 8192\n\
total_inactive_file 1000\ntotal_pgfault 77\ntotal_pgmajfault 3\n";

fn write_v1_tree(root: &Path) -> Vec<Hierarchy> {
    let cpu = root.join("cpu");
    let cpuacct = root.join("cpuacct");
    let memory = root.join("memory");
    let pids = root.join("pids");
    write_cgroup(
        &cpu,
        &[(
            "cpu.stat",
            "nr_periods 10\nnr_throttled 2\nthrottled_time 5000\nnr_bursts 0\n",
        )],
    );
    write_cgroup(
        &cpuacct,
        &[
            ("cpuacct.usage", "123456789\n"),
            ("cpuacct.stat", "user 150\nsystem 25\n"),
        ],
    );
    write_cgroup(
        &memory,
        &[
            ("memory.usage_in_bytes", "50000\n"),
            ("memory.stat", V1_MEMORY_STAT),
            ("memory.memsw.usage_in_bytes", "60000\n"),
            ("memory.limit_in_bytes", "1048576\n"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n",
            ),
        ],
    );
    write_cgroup(&pids, &[("pids.current", "7\n"), ("pids.max", "max\n")]);
    vec![
        v1(&cpu, &["cpu"]),
        v1(&cpuacct, &["cpuacct"]),
        v1(&memory, &["memory"]),
        v1(&pids, &["pids"]),
    ]
}

#[test]
fn test_read_v1_full_tree() {
    let root = tempfile::tempdir().unwrap();
    let stats = reader(&write_v1_tree(root.path())).read(CG);
    let expected = CgroupStats {
        cpu: CpuStats {
            usage_ns: Some(123_456_789),
            user_ns: Some(1_500_000_000),
            system_ns: Some(250_000_000),
            nr_periods: Some(10),
            nr_throttled: Some(2),
            throttled_ns: Some(5000),
        },
        memory: MemoryStats {
            usage_bytes: Some(50_000),
            working_set_bytes: Some(49_000),
            rss_bytes: Some(8192),
            cache_bytes: Some(4096),
            page_faults: Some(77),
            major_page_faults: Some(3),
            swap_bytes: Some(10_000),
            limit_bytes: Some(1_048_576),
            oom_events: Some(4),
            oom_kills: Some(4),
        },
        pids: PidsStats {
            current: Some(7),
            limit: None,
        },
    };
    assert_eq!(stats, expected);
}

#[test]
fn test_read_v1_combined_cpu_cpuacct_mount() {
    let root = tempfile::tempdir().unwrap();
    let combined = root.path().join("cpu,cpuacct");
    write_cgroup(
        &combined,
        &[
            ("cpuacct.usage", "42\n"),
            ("cpuacct.stat", "user 1\nsystem 2\n"),
            (
                "cpu.stat",
                "nr_periods 3\nnr_throttled 1\nthrottled_time 9\n",
            ),
        ],
    );
    let stats = reader(&[v1(&combined, &["cpu", "cpuacct"])]).read(CG);
    assert_eq!(stats.cpu.usage_ns, Some(42));
    assert_eq!(stats.cpu.user_ns, Some(10_000_000));
    assert_eq!(stats.cpu.system_ns, Some(20_000_000));
    assert_eq!(stats.cpu.throttled_ns, Some(9));
    assert_eq!(stats.memory, MemoryStats::default());
}

#[test]
fn test_read_v1_unlimited_limit_is_none() {
    let root = tempfile::tempdir().unwrap();
    let memory = root.path().join("memory");
    write_cgroup(
        &memory,
        &[
            ("memory.usage_in_bytes", "100\n"),
            ("memory.limit_in_bytes", "9223372036854771712\n"),
        ],
    );
    let stats = reader(&[v1(&memory, &["memory"])]).read(CG);
    assert_eq!(stats.memory.usage_bytes, Some(100));
    assert_eq!(stats.memory.limit_bytes, None);
    // No memory.stat: the working set cannot be computed, but usage still comes back.
    assert_eq!(stats.memory.working_set_bytes, None);
    assert_eq!(stats.memory.swap_bytes, None);
}

#[test]
fn test_read_v1_old_kernel_without_oom_kill_line() {
    let root = tempfile::tempdir().unwrap();
    let memory = root.path().join("memory");
    write_cgroup(
        &memory,
        &[("memory.oom_control", "oom_kill_disable 0\nunder_oom 1\n")],
    );
    let stats = reader(&[v1(&memory, &["memory"])]).read(CG);
    assert_eq!(stats.memory.oom_kills, None);
    assert_eq!(stats.memory.oom_events, None);
}

fn write_v2_tree(root: &Path, enabled: &str) -> Vec<Hierarchy> {
    let hierarchy = v2(root, enabled);
    write_cgroup(
        root,
        &[
            (
                "cpu.stat",
                "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\n\
                 nr_periods 8\nnr_throttled 1\nthrottled_usec 30\n",
            ),
            ("memory.current", "90000\n"),
            (
                "memory.stat",
                "anon 4000\nfile 5000\ninactive_file 1000\nactive_file 4000\n\
                 pgfault 12\npgmajfault 1\n",
            ),
            ("memory.swap.current", "256\n"),
            ("memory.max", "max\n"),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\noom_group_kill 0\n",
            ),
            ("pids.current", "3\n"),
            ("pids.max", "100\n"),
        ],
    );
    vec![hierarchy]
}

#[test]
fn test_read_v2_full_tree() {
    let root = tempfile::tempdir().unwrap();
    let stats = reader(&write_v2_tree(root.path(), "cpuset cpu io memory pids\n")).read(CG);
    let expected = CgroupStats {
        cpu: CpuStats {
            usage_ns: Some(2_000_000),
            user_ns: Some(1_500_000),
            system_ns: Some(500_000),
            nr_periods: Some(8),
            nr_throttled: Some(1),
            throttled_ns: Some(30_000),
        },
        memory: MemoryStats {
            usage_bytes: Some(90_000),
            working_set_bytes: Some(89_000),
            rss_bytes: Some(4000),
            cache_bytes: Some(5000),
            page_faults: Some(12),
            major_page_faults: Some(1),
            swap_bytes: Some(256),
            limit_bytes: None,
            oom_events: Some(2),
            oom_kills: Some(1),
        },
        pids: PidsStats {
            current: Some(3),
            limit: Some(100),
        },
    };
    assert_eq!(stats, expected);
}

#[test]
fn test_read_v2_controller_not_listed_is_none() {
    let root = tempfile::tempdir().unwrap();
    // The files are there but the root does not list memory or pids.
    let stats = reader(&write_v2_tree(root.path(), "cpu\n")).read(CG);
    assert_eq!(stats.cpu.usage_ns, Some(2_000_000));
    assert_eq!(stats.memory, MemoryStats::default());
    assert_eq!(stats.pids, PidsStats::default());
}

#[test]
fn test_select_hybrid_prefers_v1() {
    let root = tempfile::tempdir().unwrap();
    let mut hierarchies = write_v1_tree(&root.path().join("v1"));
    // A unified mount listed first that claims every controller: v1 still wins.
    let unified = root.path().join("unified");
    hierarchies.insert(0, v2(&unified, "cpu memory pids\n"));
    let reader = reader(&hierarchies);
    assert_eq!(
        reader.memory,
        Some(Source::V1(root.path().join("v1").join("memory")))
    );
    assert_eq!(
        reader.cpu_usage,
        Some(Source::V1(root.path().join("v1").join("cpuacct")))
    );
    assert_eq!(
        reader.cpu_throttling,
        Some(Source::V1(root.path().join("v1").join("cpu")))
    );
    assert_eq!(reader.read(CG).memory.usage_bytes, Some(50_000));
}

#[test]
fn test_select_hybrid_empty_unified_is_unused() {
    let root = tempfile::tempdir().unwrap();
    let memory = root.path().join("memory");
    write_cgroup(&memory, &[("memory.usage_in_bytes", "1\n")]);
    let unified = root.path().join("unified");
    let mut hierarchies = vec![v1(&memory, &["memory"]), v2(&unified, "")];
    // A v2 pids.current exists, but the unified root enables nothing.
    write_cgroup(&unified, &[("pids.current", "5\n")]);
    hierarchies.push(v1(&root.path().join("systemd"), &["name=systemd"]));
    let reader = reader(&hierarchies);
    assert_eq!(reader.pids, None);
    assert_eq!(reader.cpu_usage, None);
    assert_eq!(reader.read(CG).pids, PidsStats::default());
}

#[test]
fn test_select_v2_fills_what_v1_lacks() {
    let root = tempfile::tempdir().unwrap();
    let memory = root.path().join("memory");
    write_cgroup(&memory, &[("memory.usage_in_bytes", "1\n")]);
    let unified = root.path().join("unified");
    let hierarchies = vec![v1(&memory, &["memory"]), v2(&unified, "pids\n")];
    write_cgroup(&unified, &[("pids.current", "5\n"), ("pids.max", "64\n")]);
    let stats = reader(&hierarchies).read(CG);
    assert_eq!(stats.memory.usage_bytes, Some(1));
    assert_eq!(
        stats.pids,
        PidsStats {
            current: Some(5),
            limit: Some(64)
        }
    );
}

#[test]
fn test_read_unparsable_values_are_none() {
    let root = tempfile::tempdir().unwrap();
    let hierarchies = write_v2_tree(root.path(), "cpu memory pids\n");
    write_cgroup(
        root.path(),
        &[
            ("memory.current", "garbage\n"),
            ("cpu.stat", "usage_usec x\nuser_usec 10\n"),
            ("pids.max", "\n"),
        ],
    );
    let stats = reader(&hierarchies).read(CG);
    assert_eq!(stats.memory.usage_bytes, None);
    assert_eq!(stats.memory.working_set_bytes, None);
    assert_eq!(stats.memory.rss_bytes, Some(4000));
    assert_eq!(stats.cpu.usage_ns, None);
    assert_eq!(stats.cpu.user_ns, Some(10_000));
    assert_eq!(stats.cpu.nr_periods, None);
    assert_eq!(stats.pids.limit, None);
    assert_eq!(stats.pids.current, Some(3));
}

#[test]
fn test_read_working_set_floored_at_zero() {
    let root = tempfile::tempdir().unwrap();
    let hierarchies = write_v2_tree(root.path(), "memory\n");
    write_cgroup(
        root.path(),
        &[
            ("memory.current", "500\n"),
            ("memory.stat", "inactive_file 800\n"),
        ],
    );
    let stats = reader(&hierarchies).read(CG);
    assert_eq!(stats.memory.working_set_bytes, Some(0));
}

#[test]
fn test_read_missing_cgroup_is_all_none() {
    let root = tempfile::tempdir().unwrap();
    let reader = reader(&write_v1_tree(root.path()));
    assert_eq!(reader.read("/kubepods/gone"), CgroupStats::default());
    assert!(!reader.exists("/kubepods/gone"));
    assert!(reader.exists(CG));
    assert!(reader.exists("kubepods/pod1/abc"));
}

#[test]
fn test_read_rejects_parent_components() {
    let root = tempfile::tempdir().unwrap();
    let hierarchies = write_v1_tree(&root.path().join("v1"));
    // A memory file one level above the hierarchy root must stay out of reach.
    write_cgroup(root.path(), &[("memory.usage_in_bytes", "1\n")]);
    let reader = reader(&hierarchies);
    let escaping = "/../../kubepods/pod1/abc";
    assert_eq!(reader.read(escaping), CgroupStats::default());
    assert!(!reader.exists(escaping));
}

#[test]
fn test_relative_path_forms() {
    assert_eq!(relative_path("/a/b"), Some(PathBuf::from("a/b")));
    assert_eq!(relative_path("a/b/"), Some(PathBuf::from("a/b")));
    assert_eq!(relative_path("/"), Some(PathBuf::new()));
    assert_eq!(relative_path("/a/../b"), None);
}

#[test]
fn test_ticks_to_ns_no_overflow() {
    assert_eq!(ticks_to_ns(250, 100), Some(2_500_000_000));
    assert_eq!(ticks_to_ns(1, 0), None);
    // 10^11 ticks at 100 Hz is 10^18 ns: fits, though ticks * 10^9 does not fit in u64.
    assert_eq!(
        ticks_to_ns(100_000_000_000, 100),
        Some(1_000_000_000_000_000_000)
    );
    assert_eq!(ticks_to_ns(u64::MAX, 1), Some(u64::MAX));
}

/// This process's own v1 memory cgroup and the root, read through the real mountinfo.
#[test]
fn test_read_real_host_cgroups() {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let hierarchies = Hierarchy::from_mountinfo(&mountinfo);
    let reader = CgroupReader::new(&hierarchies);
    assert!(reader.clk_tck.is_some_and(|tck| tck > 0));
    let Some(Source::V1(memory_root)) = reader.memory.clone() else {
        return; // Not a v1 memory host: nothing here to compare with.
    };
    if !memory_root.join("memory.usage_in_bytes").exists() {
        return;
    }
    let root = reader.read("/");
    assert!(root.memory.usage_bytes.is_some_and(|bytes| bytes > 0));
    assert!(root.memory.working_set_bytes.is_some());
    if matches!(reader.cpu_usage, Some(Source::V1(_))) {
        assert!(root.cpu.usage_ns.is_some_and(|ns| ns > 0));
        assert!(root.cpu.user_ns.is_some());
    }
    // Our own memory cgroup, from /proc/self/cgroup (`N:memory:/path`).
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let Some(path) = own.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let _ = fields.next();
        let controllers = fields.next()?;
        let path = fields.next()?;
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    }) else {
        return;
    };
    assert!(reader.exists(&path));
    let stats = reader.read(&path);
    // This test process itself is charged to that cgroup.
    assert!(stats.memory.usage_bytes.is_some_and(|bytes| bytes > 0));
}
