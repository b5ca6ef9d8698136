//! Resources, oom_score_adj and the cgroup path of whole specs.

use k8s_cri::v1::HugepageLimit;

use super::*;

#[test]
fn test_build_resources_mapping() {
    let mut f = Fixture::new();
    let resources = LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 256 << 20,
        cpuset_cpus: "0-1".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }],
        ..Default::default()
    };
    let spec = f.spec(&with_resources(resources.clone()));
    let r = linux(&spec).resources().clone().unwrap();
    let cpu = r.cpu().clone().unwrap();
    assert_eq!(
        (cpu.period(), cpu.quota(), cpu.shares()),
        (Some(100_000), Some(50_000), Some(512))
    );
    assert_eq!(
        (cpu.cpus().as_deref(), cpu.mems().as_deref()),
        (Some("0-1"), Some("0"))
    );
    let memory = r.memory().unwrap();
    assert_eq!(memory.limit(), Some(256 << 20));
    assert_eq!(memory.swap(), Some(256 << 20), "no swapping by default");
    assert_eq!(r.hugepage_limits().as_ref().unwrap()[0].limit(), 4 << 20);
    assert_eq!(r.pids(), &None);

    // No swap controller, no hugetlb: no swap limit, hugepages skipped with a warning.
    f.host.swap = false;
    f.host.hugetlb = false;
    let built = f.build(&with_resources(resources.clone())).unwrap();
    let r = linux(&built.spec).resources().clone().unwrap();
    assert_eq!(r.memory().unwrap().swap(), None);
    assert!(r.hugepage_limits().is_none());
    assert!(built.warnings.iter().any(|w| w.contains("hugetlb")));

    // An explicit swap limit.
    f.host.swap = true;
    let spec = f.spec(&with_resources(LinuxContainerResources {
        memory_limit_in_bytes: 100,
        memory_swap_limit_in_bytes: 300,
        ..Default::default()
    }));
    let r = linux(&spec).resources().clone().unwrap();
    assert_eq!(r.memory().unwrap().swap(), Some(300));

    // unified needs cgroup v2.
    let unified = LinuxContainerResources {
        unified: [("memory.high".to_string(), "1000000".to_string())].into(),
        ..Default::default()
    };
    assert!(f.build(&with_resources(unified.clone())).is_err());
    f.host.cgroup_v2 = true;
    let spec = f.spec(&with_resources(unified));
    let r = linux(&spec).resources().clone().unwrap();
    assert_eq!(r.unified().as_ref().unwrap()["memory.high"], "1000000");
}

#[test]
fn test_build_oom_score_adj_clamped() {
    let f = Fixture::new();
    let built = f
        .build(&with_resources(LinuxContainerResources {
            oom_score_adj: -997,
            ..Default::default()
        }))
        .unwrap();
    let process = built.spec.process().as_ref().unwrap();
    assert_eq!(process.oom_score_adj(), Some(0));
    assert_eq!(
        built.spec.annotations().as_ref().unwrap()[annotations::OOM_SCORE_ADJ_REQUESTED],
        "-997"
    );
    assert_eq!(built.warnings.len(), 1);

    let spec = f.spec(&with_resources(LinuxContainerResources {
        oom_score_adj: 1000,
        ..Default::default()
    }));
    assert_eq!(spec.process().as_ref().unwrap().oom_score_adj(), Some(1000));
    assert!(
        !spec
            .annotations()
            .as_ref()
            .unwrap()
            .contains_key(annotations::OOM_SCORE_ADJ_REQUESTED)
    );
}

#[test]
fn test_cgroups_path_cgroupfs() {
    assert_eq!(
        cgroups_path("/kubepods/burstable/pod1", "abc"),
        "/kubepods/burstable/pod1/corral-abc"
    );
    assert_eq!(cgroups_path("/kubepods/", "abc"), "/kubepods/corral-abc");
    assert_eq!(cgroups_path("", "abc"), "/corral/corral-abc");
}
