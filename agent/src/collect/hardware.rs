//! Hardware identity from DMI (`/sys/class/dmi/id`), plus the hypervisor the machine runs under
//! and the container the agent runs in.
//!
//! Some DMI files (serials, UUID) are readable only by root; as another user those fields are
//! `None` and one warning lists them. A machine without DMI at all (many ARM boards) is not
//! degraded: it has nothing to report. Values are reported as the firmware gives them, trimmed;
//! recognising placeholders such as "To Be Filled By O.E.M." is the collector's job.
//!
//! Virtualization is recognised, in this order, from DMI vendor strings (as systemd-detect-virt
//! does, with its names: `kvm`, `qemu`, `vmware`, `microsoft`, `oracle`, `xen`, `amazon`,
//! `google`, ...), from `/sys/hypervisor/type`, and last from the `hypervisor` CPU flag, which
//! only says "some hypervisor": that case is reported as `vm-other` (systemd's name for it).
//! Bare metal is `None`.

use std::io;

use census_common::Hardware;

use super::{FacetError, Root, Warnings, filesystems, non_empty, read_optional};

/// DMI values read from sysfs, trimmed, empty as `None`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dmi {
    pub sys_vendor: Option<String>,
    pub product_name: Option<String>,
    pub product_serial: Option<String>,
    pub product_uuid: Option<String>,
    pub board_serial: Option<String>,
    pub board_vendor: Option<String>,
    pub chassis_asset_tag: Option<String>,
    pub bios_vendor: Option<String>,
    pub bios_version: Option<String>,
    pub bios_date: Option<String>,
    pub chassis_type: Option<String>,
}

pub fn collect(root: &Root, warnings: &mut Warnings) -> Hardware {
    let (dmi, unreadable) = read_dmi(root);
    if !unreadable.is_empty() {
        let names: Vec<&str> = unreadable.iter().map(|(name, _)| *name).collect();
        let denied = unreadable
            .iter()
            .all(|(_, e)| e.kind() == io::ErrorKind::PermissionDenied);
        let hint = if denied {
            "permission denied; they are readable only by root".to_owned()
        } else {
            unreadable[0].1.to_string()
        };
        warnings.add(
            "hardware",
            format!("could not read DMI {} ({hint})", names.join(", ")),
        );
    }

    let chassis = dmi.chassis_type.as_deref().and_then(|raw| {
        let name = raw.parse::<u8>().ok().and_then(chassis_name);
        if name.is_none() && raw != "2" {
            warnings.add(
                "hardware",
                format!("DMI chassis type `{raw}` is not one SMBIOS defines"),
            );
        }
        name.map(str::to_owned)
    });

    let hypervisor_type = read_or_warn(root, "/sys/hypervisor/type", warnings);
    let cpuinfo = read_or_warn(root, "/proc/cpuinfo", warnings);
    let virtualization = virtualization(
        &dmi,
        hypervisor_type.as_deref(),
        cpuinfo.as_deref().is_some_and(has_hypervisor_flag),
    );
    let container = container(root, warnings);

    Hardware {
        vendor: dmi.sys_vendor,
        model: dmi.product_name,
        serial: dmi.product_serial,
        uuid: dmi.product_uuid.map(|u| u.to_ascii_lowercase()),
        board_serial: dmi.board_serial,
        asset_tag: dmi.chassis_asset_tag,
        bios_vendor: dmi.bios_vendor,
        bios_version: dmi.bios_version,
        bios_date: dmi.bios_date,
        chassis,
        virtualization,
        container,
    }
}

/// Reads every DMI field; returns the values and the fields that exist but could not be read.
pub fn read_dmi(root: &Root) -> (Dmi, Vec<(&'static str, io::Error)>) {
    let dir = root.path("/sys/class/dmi/id");
    let mut unreadable = Vec::new();
    let mut read = |name: &'static str| -> Option<String> {
        match read_optional(&dir.join(name)) {
            Ok(text) => text.as_deref().and_then(non_empty),
            Err(FacetError::Read { source, .. }) => {
                unreadable.push((name, source));
                None
            }
            Err(_) => None,
        }
    };
    let dmi = Dmi {
        sys_vendor: read("sys_vendor"),
        product_name: read("product_name"),
        product_serial: read("product_serial"),
        product_uuid: read("product_uuid"),
        board_serial: read("board_serial"),
        board_vendor: read("board_vendor"),
        chassis_asset_tag: read("chassis_asset_tag"),
        bios_vendor: read("bios_vendor"),
        bios_version: read("bios_version"),
        bios_date: read("bios_date"),
        chassis_type: read("chassis_type"),
    };
    (dmi, unreadable)
}

/// The SMBIOS chassis type (DSP0134 3.x, table "System Enclosure or Chassis Types") by name.
/// Type 2 is the firmware saying "unknown", which the inventory reports as `None`.
pub fn chassis_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        1 => "other",
        3 => "desktop",
        4 => "low profile desktop",
        5 => "pizza box",
        6 => "mini tower",
        7 => "tower",
        8 => "portable",
        9 => "laptop",
        10 => "notebook",
        11 => "hand held",
        12 => "docking station",
        13 => "all in one",
        14 => "sub notebook",
        15 => "space-saving",
        16 => "lunch box",
        17 => "main server chassis",
        18 => "expansion chassis",
        19 => "sub chassis",
        20 => "bus expansion chassis",
        21 => "peripheral chassis",
        22 => "raid chassis",
        23 => "rack mount chassis",
        24 => "sealed-case pc",
        25 => "multi-system chassis",
        26 => "compact pci",
        27 => "advanced tca",
        28 => "blade",
        29 => "blade enclosure",
        30 => "tablet",
        31 => "convertible",
        32 => "detachable",
        33 => "iot gateway",
        34 => "embedded pc",
        35 => "mini pc",
        36 => "stick pc",
        _ => return None,
    })
}

/// Vendor strings that name a hypervisor, matched as prefixes of DMI product name, system
/// vendor, board vendor and BIOS vendor (systemd-detect-virt's table).
const DMI_HYPERVISORS: &[(&str, &str)] = &[
    ("KVM", "kvm"),
    ("OpenStack", "kvm"),
    ("KubeVirt", "kvm"),
    ("Amazon EC2", "amazon"),
    ("QEMU", "qemu"),
    ("VMware", "vmware"),
    ("VMW", "vmware"),
    ("innotek GmbH", "oracle"),
    ("VirtualBox", "oracle"),
    ("Xen", "xen"),
    ("Bochs", "bochs"),
    ("Parallels", "parallels"),
    ("BHYVE", "bhyve"),
    ("Hyper-V", "microsoft"),
    ("Apple Virtualization", "apple"),
    ("Google Compute Engine", "google"),
];

pub fn virtualization(
    dmi: &Dmi,
    hypervisor_type: Option<&str>,
    cpu_hypervisor_flag: bool,
) -> Option<String> {
    let fields = [
        &dmi.product_name,
        &dmi.sys_vendor,
        &dmi.board_vendor,
        &dmi.bios_vendor,
    ];
    for value in fields.into_iter().flatten() {
        if let Some((_, name)) = DMI_HYPERVISORS
            .iter()
            .find(|(prefix, _)| value.starts_with(prefix))
        {
            return Some((*name).to_owned());
        }
    }
    // Hyper-V names itself only through the pair of vendor and product.
    if dmi.sys_vendor.as_deref() == Some("Microsoft Corporation")
        && dmi.product_name.as_deref() == Some("Virtual Machine")
    {
        return Some("microsoft".to_owned());
    }
    if let Some(kind) = hypervisor_type.and_then(non_empty) {
        return Some(kind);
    }
    cpu_hypervisor_flag.then(|| "vm-other".to_owned())
}

/// Whether the first CPU's flags include `hypervisor` (x86 sets it under any hypervisor).
pub fn has_hypervisor_flag(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .is_some_and(|(_, flags)| flags.split_whitespace().any(|f| f == "hypervisor"))
}

/// The container runtime the agent runs in, from the most explicit sign to the least:
/// systemd's `/run/systemd/container`, `container=` in PID 1's environment, the marker files
/// podman and docker create, then hints in PID 1's cgroup path.
///
/// `/.dockerenv` alone is not trusted: a VM or machine image whose root filesystem was built
/// from a docker image (Firecracker and similar micro-VMs often are) keeps the file while
/// running on its own kernel. It counts only with a sign, in this process's mountinfo, that the
/// root is a container's: an overlay or aufs root mount (docker's storage drivers), or
/// `/etc/hostname`, `/etc/hosts` or `/etc/resolv.conf` mounted over (every docker container
/// gets these three bind mounts, whatever its storage driver or network mode). A booted machine
/// has neither. When mountinfo cannot be read, the marker is taken at its word, as before.
fn container(root: &Root, warnings: &mut Warnings) -> Option<String> {
    let systemd = read_or_warn(root, "/run/systemd/container", warnings);
    // PID 1's environment is readable only by root, and not even then in some sandboxes:
    // not being able to read it is normal and not worth a warning.
    let environ = std::fs::read(root.path("/proc/1/environ")).ok();
    let cgroup = read_or_warn(root, "/proc/1/cgroup", warnings);
    let dockerenv = root.path("/.dockerenv").exists();
    // Read only when it decides something.
    let mountinfo = if dockerenv {
        read_or_warn(root, "/proc/self/mountinfo", warnings)
    } else {
        None
    };
    container_from(
        systemd.as_deref(),
        environ.as_deref(),
        root.path("/run/.containerenv").exists(),
        dockerenv,
        mountinfo.as_deref(),
        cgroup.as_deref(),
    )
}

/// Whether mountinfo shows a container's root: an overlay-style root mount, or the network
/// files container runtimes bind-mount in.
pub fn mounts_look_like_a_container(mountinfo: &str) -> bool {
    const OVERLAY_ROOTS: &[&str] = &["overlay", "aufs", "fuse.fuse-overlayfs"];
    const RUNTIME_FILES: &[&str] = &["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];
    filesystems::parse_mountinfo(mountinfo).iter().any(|m| {
        (m.mount_point == "/" && OVERLAY_ROOTS.contains(&m.fs_type.as_str()))
            || RUNTIME_FILES.contains(&m.mount_point.as_str())
    })
}

pub fn container_from(
    systemd_container: Option<&str>,
    pid1_environ: Option<&[u8]>,
    containerenv: bool,
    dockerenv: bool,
    mountinfo: Option<&str>,
    pid1_cgroup: Option<&str>,
) -> Option<String> {
    if let Some(name) = systemd_container.and_then(non_empty) {
        return Some(name);
    }
    let from_environ = pid1_environ.and_then(|env| {
        env.split(|b| *b == 0)
            .find_map(|var| var.strip_prefix(b"container="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .and_then(|v| non_empty(&v))
    });
    if from_environ.is_some() {
        return from_environ;
    }
    if containerenv {
        return Some("podman".to_owned());
    }
    if dockerenv && mountinfo.is_none_or(mounts_look_like_a_container) {
        return Some("docker".to_owned());
    }
    let cgroup = pid1_cgroup?;
    if cgroup.contains("kubepods") {
        Some("kubernetes".to_owned())
    } else if cgroup.contains("/docker/") || cgroup.contains("/docker-") {
        Some("docker".to_owned())
    } else if cgroup.contains("libpod") {
        Some("podman".to_owned())
    } else if cgroup.contains("/lxc/") || cgroup.contains("lxc.payload") {
        Some("lxc".to_owned())
    } else {
        None
    }
}

fn read_or_warn(root: &Root, path: &str, warnings: &mut Warnings) -> Option<String> {
    match read_optional(&root.path(path)) {
        Ok(text) => text,
        Err(e) => {
            warnings.add("hardware", e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture;

    #[test]
    fn chassis_types_follow_smbios() {
        assert_eq!(chassis_name(1), Some("other"));
        assert_eq!(chassis_name(2), None);
        assert_eq!(chassis_name(3), Some("desktop"));
        assert_eq!(chassis_name(9), Some("laptop"));
        assert_eq!(chassis_name(10), Some("notebook"));
        assert_eq!(chassis_name(17), Some("main server chassis"));
        assert_eq!(chassis_name(23), Some("rack mount chassis"));
        assert_eq!(chassis_name(36), Some("stick pc"));
        assert_eq!(chassis_name(0), None);
        assert_eq!(chassis_name(37), None);
    }

    #[test]
    fn kvm_guest_fixture() {
        let mut warnings = Warnings::default();
        let hw = collect(&Root::at(fixture("roots/kvm-server")), &mut warnings);
        assert_eq!(hw.vendor.as_deref(), Some("QEMU"));
        assert_eq!(hw.model.as_deref(), Some("Standard PC (Q35 + ICH9, 2009)"));
        assert_eq!(
            hw.uuid.as_deref(),
            Some("8c1f4a52-3b6e-4d0a-9f27-1e5d6c7b8a90")
        );
        assert_eq!(hw.serial, None, "empty DMI value must be None");
        assert_eq!(hw.bios_vendor.as_deref(), Some("SeaBIOS"));
        assert_eq!(hw.bios_date.as_deref(), Some("04/01/2014"));
        assert_eq!(hw.chassis.as_deref(), Some("other"));
        assert_eq!(hw.virtualization.as_deref(), Some("qemu"));
        assert_eq!(hw.container, None);
        assert!(warnings.lines().is_empty(), "{:?}", warnings.lines());
    }

    #[test]
    fn bare_metal_laptop_fixture() {
        let mut warnings = Warnings::default();
        let hw = collect(&Root::at(fixture("roots/thinkpad")), &mut warnings);
        assert_eq!(hw.vendor.as_deref(), Some("LENOVO"));
        assert_eq!(hw.model.as_deref(), Some("20XW0026GE"));
        assert_eq!(hw.serial.as_deref(), Some("PF2XK4L7"));
        assert_eq!(hw.board_serial.as_deref(), Some("L1HF16P03VT"));
        assert_eq!(hw.asset_tag.as_deref(), Some("No Asset Information"));
        assert_eq!(hw.chassis.as_deref(), Some("notebook"));
        assert_eq!(hw.virtualization, None);
        assert_eq!(hw.container, None);
    }

    #[test]
    fn container_fixture_without_dmi() {
        let mut warnings = Warnings::default();
        let hw = collect(&Root::at(fixture("roots/alpine-container")), &mut warnings);
        assert_eq!(hw.vendor, None);
        assert_eq!(hw.chassis, None);
        assert_eq!(hw.container.as_deref(), Some("docker"));
        // The fixture's CPU flags include `hypervisor` and nothing names the hypervisor.
        assert_eq!(hw.virtualization.as_deref(), Some("vm-other"));
        assert!(warnings.lines().is_empty(), "{:?}", warnings.lines());
    }

    #[test]
    fn unreadable_dmi_fields_are_none_and_listed_in_one_warning() {
        // Running as root reads any file, so "exists but cannot be read" is made with a
        // directory where the file should be.
        let dir = tempfile::tempdir().unwrap();
        let dmi = dir.path().join("sys/class/dmi/id");
        std::fs::create_dir_all(dmi.join("product_serial")).unwrap();
        std::fs::create_dir_all(dmi.join("product_uuid")).unwrap();
        std::fs::write(dmi.join("sys_vendor"), "Dell Inc.\n").unwrap();
        std::fs::write(dmi.join("chassis_type"), "23\n").unwrap();
        let mut warnings = Warnings::default();
        let hw = collect(&Root::at(dir.path()), &mut warnings);
        assert_eq!(hw.vendor.as_deref(), Some("Dell Inc."));
        assert_eq!(hw.chassis.as_deref(), Some("rack mount chassis"));
        assert_eq!(hw.serial, None);
        assert_eq!(hw.uuid, None);
        assert_eq!(warnings.lines().len(), 1, "{:?}", warnings.lines());
        let line = &warnings.lines()[0];
        assert!(line.contains("product_serial, product_uuid"), "{line}");
    }

    #[test]
    fn unknown_chassis_number_is_none_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let dmi = dir.path().join("sys/class/dmi/id");
        std::fs::create_dir_all(&dmi).unwrap();
        std::fs::write(dmi.join("chassis_type"), "99\n").unwrap();
        let mut warnings = Warnings::default();
        assert_eq!(collect(&Root::at(dir.path()), &mut warnings).chassis, None);
        assert!(warnings.lines()[0].contains("99"));
    }

    #[test]
    fn virtualization_sources_in_order() {
        let dmi = |vendor: &str, product: &str| Dmi {
            sys_vendor: non_empty(vendor),
            product_name: non_empty(product),
            ..Dmi::default()
        };
        let v = |d: &Dmi, hv: Option<&str>, flag| virtualization(d, hv, flag);
        assert_eq!(v(&dmi("QEMU", "KVM"), None, true).as_deref(), Some("kvm"));
        assert_eq!(
            v(&dmi("VMware, Inc.", "VMware7,1"), None, true).as_deref(),
            Some("vmware")
        );
        assert_eq!(
            v(&dmi("Microsoft Corporation", "Virtual Machine"), None, true).as_deref(),
            Some("microsoft")
        );
        assert_eq!(
            v(&dmi("innotek GmbH", "VirtualBox"), None, true).as_deref(),
            Some("oracle")
        );
        assert_eq!(
            v(&dmi("Amazon EC2", "m5.large"), None, true).as_deref(),
            Some("amazon")
        );
        assert_eq!(
            v(&dmi("Google", "Google Compute Engine"), None, true).as_deref(),
            Some("google")
        );
        assert_eq!(v(&dmi("", ""), Some("xen\n"), true).as_deref(), Some("xen"));
        assert_eq!(v(&dmi("", ""), None, true).as_deref(), Some("vm-other"));
        assert_eq!(v(&dmi("Dell Inc.", "PowerEdge R640"), None, false), None);
    }

    #[test]
    fn hypervisor_flag_is_a_whole_word_of_the_flags_line() {
        assert!(has_hypervisor_flag(
            "processor\t: 0\nflags\t\t: fpu vme hypervisor lahf_lm\n"
        ));
        assert!(!has_hypervisor_flag(
            "flags\t\t: fpu vme\nbugs\t\t: hypervisorish\n"
        ));
        assert!(!has_hypervisor_flag(""));
    }

    #[test]
    fn container_sources_in_order() {
        let c = container_from;
        assert_eq!(
            c(Some("systemd-nspawn\n"), None, false, true, None, None).as_deref(),
            Some("systemd-nspawn")
        );
        let environ = b"PATH=/bin\0container=lxc\0HOME=/\0";
        assert_eq!(
            c(None, Some(environ), false, true, None, None).as_deref(),
            Some("lxc")
        );
        assert_eq!(
            c(None, Some(b"PATH=/bin\0"), true, true, None, None).as_deref(),
            Some("podman")
        );
        // Without mountinfo to check, the marker is taken at its word.
        assert_eq!(
            c(None, None, false, true, None, None).as_deref(),
            Some("docker")
        );
        let docker_v1 = "12:memory:/docker/3f2a9c1b7d4e\n0::/docker/3f2a9c1b7d4e\n";
        assert_eq!(
            c(None, None, false, false, None, Some(docker_v1)).as_deref(),
            Some("docker")
        );
        let k8s = "0::/kubepods.slice/kubepods-burstable.slice/cri-containerd-ab12.scope\n";
        assert_eq!(
            c(None, None, false, false, None, Some(k8s)).as_deref(),
            Some("kubernetes")
        );
        assert_eq!(
            c(
                None,
                None,
                false,
                false,
                None,
                Some("0::/lxc.payload.web/\n")
            )
            .as_deref(),
            Some("lxc")
        );
        assert_eq!(
            c(None, None, false, false, None, Some("0::/init.scope\n")),
            None
        );
    }

    #[test]
    fn dockerenv_counts_only_with_a_container_root() {
        let read = |name: &str| std::fs::read_to_string(fixture(name)).unwrap();
        let c = |mountinfo: &str| container_from(None, None, false, true, Some(mountinfo), None);
        // A docker container (overlay2 root, cgroup v2 namespace showing `0::/`).
        assert_eq!(
            c(&read("mountinfo/docker-container")).as_deref(),
            Some("docker")
        );
        // A machine booted from a root filesystem made out of a docker image: ext4 on a disk.
        assert_eq!(c(&read("mountinfo/firecracker-vm")), None);
        assert_eq!(c(&read("mountinfo/ubuntu-desktop")), None);
        // Docker on btrfs (no overlay root) is still recognised by its bind mounts.
        let btrfs = "600 500 0:45 /@/var/lib/docker/btrfs/subvolumes/9c1e / rw - btrfs /dev/sda2 rw\n\
                     601 600 0:45 /@/var/lib/docker/containers/9c1e/hosts /etc/hosts rw - btrfs /dev/sda2 rw\n";
        assert_eq!(c(btrfs).as_deref(), Some("docker"));
        // Rootless docker and podman's fuse-overlayfs.
        let fuse = "700 600 0:50 / / rw - fuse.fuse-overlayfs fuse-overlayfs rw\n";
        assert_eq!(c(fuse).as_deref(), Some("docker"));
        // No /.dockerenv: mounts alone name no runtime.
        assert_eq!(
            container_from(
                None,
                None,
                false,
                false,
                Some(&read("mountinfo/docker-container")),
                Some("0::/\n")
            ),
            None
        );
    }

    #[test]
    fn vm_built_from_a_docker_image_is_not_a_container() {
        let mut warnings = Warnings::default();
        let hw = collect(
            &Root::at(fixture("roots/vm-built-from-docker-image")),
            &mut warnings,
        );
        assert_eq!(hw.container, None);
    }
}
