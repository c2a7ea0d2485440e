//! Mounted filesystems that hold data: what `df` would show an admin, without the kernel's
//! pseudo filesystems, snap loop images, file bind mounts and repeated bind mounts.
//!
//! The list comes from `/proc/self/mountinfo` rather than sysinfo's disk list, because
//! mountinfo says which part of a filesystem each mount shows (so bind mounts can be told
//! apart) and because inventory and health must use exactly the same list. Sizes come from
//! `statvfs`, on a helper thread per mount point under a time budget, because `stat` and
//! `statvfs` on a dead network filesystem block for as long as the server is gone (see
//! [`look_at_mounts`]).
//!
//! Rules, in order:
//! 1. pseudo and virtual filesystem types ([`is_pseudo`]) are dropped; `overlay` is kept only
//!    at `/` (a container's root), since elsewhere it is a container's view of another disk;
//! 2. when several mounts stack on one mount point, only the last (the visible one) is kept;
//! 3. a mount showing a part of a filesystem (a root other than `/`) that is also mounted
//!    whole is a view into that filesystem, not another one, and is dropped: `mount --bind
//!    /srv/x /x`, and the binds systemd's sandbox makes for the agent's own service
//!    (`StateDirectory=`, `PrivateTmp=`, `ProtectHome=read-only` over a `/home` that is a
//!    directory of `/`). A part whose filesystem is not mounted whole (a btrfs subvolume, a
//!    container's volume) is kept;
//! 4. mounts showing the same part of the same filesystem (same device number and root) are
//!    one filesystem: the one with the shortest mount point is kept;
//! 5. mounts whose mount point is not a directory (a file bind-mounted over `/etc/hosts`, as
//!    container runtimes do) are dropped.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::time::Duration;

use census_common::Filesystem;
use tracing::warn;

use super::budget::{self, HungThreads, Outcome};
use super::{FacetError, Root, Warnings, read_optional};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the filesystem.
    pub dev: String,
    /// The part of the filesystem this mount shows (`/` for all of it).
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
}

const PSEUDO_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "fuse.snapfuse",
    "nfsd",
];

/// Whether a filesystem type holds no data of its own (kernel interfaces, memory, images).
pub fn is_pseudo(fs_type: &str, mount_point: &str) -> bool {
    if fs_type == "overlay" {
        return mount_point != "/";
    }
    PSEUDO_TYPES.contains(&fs_type)
}

/// Parses mountinfo, skipping malformed lines.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            // id parent major:minor root mount-point options [optional...] - type source super
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            Some(Mount {
                dev: (*left.get(2)?).to_owned(),
                root: unescape(left.get(3)?),
                mount_point: unescape(left.get(4)?),
                fs_type: right.next()?.to_owned(),
                source: unescape(right.next()?),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Applies the rules in the module doc. `is_dir` tells whether a mount point is a directory.
pub fn real_filesystems(mounts: Vec<Mount>, is_dir: impl Fn(&str) -> bool) -> Vec<Mount> {
    // Rule 2: the last mount at a mount point hides the earlier ones.
    let mut visible: Vec<Mount> = Vec::new();
    for mount in mounts {
        if is_pseudo(&mount.fs_type, &mount.mount_point) {
            continue;
        }
        visible.retain(|m| m.mount_point != mount.mount_point);
        visible.push(mount);
    }
    // Rule 3: a part of a filesystem that is also mounted whole is a view of it.
    let mounted_whole: HashSet<String> = visible
        .iter()
        .filter(|m| m.root == "/")
        .map(|m| m.dev.clone())
        .collect();
    visible.retain(|m| m.root == "/" || !mounted_whole.contains(&m.dev));
    // Rule 4: one entry per (device, root), the shortest mount point.
    let mut by_view: HashMap<(String, String), Mount> = HashMap::new();
    for mount in visible {
        let key = (mount.dev.clone(), mount.root.clone());
        match by_view.get(&key) {
            Some(kept) if kept.mount_point.len() <= mount.mount_point.len() => {}
            _ => {
                by_view.insert(key, mount);
            }
        }
    }
    let mut kept: Vec<Mount> = by_view
        .into_values()
        .filter(|m| is_dir(&m.mount_point))
        .collect();
    kept.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    kept
}

/// Space and inodes of one filesystem, from `statvfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub total_bytes: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    /// Free blocks that users other than root may have.
    pub blocks_available: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// What one look at a mount point found.
#[derive(Debug)]
pub enum Look {
    /// Not a directory: a file bind-mounted over another file (rule 4), not a filesystem.
    NotADirectory,
    Space(Space),
    Failed(io::Error),
}

/// Looks at a mount point: is it a directory, and how full is it. Both calls go to the
/// filesystem, so both block for as long as a dead network filesystem does.
#[cfg(unix)]
pub fn look(path: &Path) -> Look {
    if !path.is_dir() {
        return Look::NotADirectory;
    }
    match rustix::fs::statvfs(path) {
        Ok(st) => Look::Space(Space {
            total_bytes: st.f_blocks.saturating_mul(st.f_frsize),
            blocks: st.f_blocks,
            blocks_free: st.f_bfree,
            blocks_available: st.f_bavail,
            inodes: st.f_files,
            inodes_free: st.f_ffree,
        }),
        Err(e) => Look::Failed(e.into()),
    }
}

/// A mount point's size, as far as it could be learned.
#[derive(Debug)]
pub enum Seen {
    Space(Space),
    /// `statvfs` answered with an error; the reason, readable.
    Failed(String),
    /// The look overran its budget now or is still stuck from an earlier one; the reason,
    /// readable.
    Hung(String),
}

/// This machine's real filesystems (the rules in the module doc), each looked at on a helper
/// thread under `budget`: a dead network mount costs its own size, never the whole list or the
/// caller's thread. A mount whose look is still stuck from an earlier call is not looked at
/// again. Inventory and health share this list and `hung`.
pub fn look_at_mounts<L>(
    root: &Root,
    hung: &mut HungThreads,
    budget: Duration,
    look: L,
) -> Result<Vec<(Mount, Seen)>, FacetError>
where
    L: Fn(&Path) -> Look + Clone + Send + 'static,
{
    let text = read_optional(&root.path("/proc/self/mountinfo"))?.unwrap_or_default();
    // Rule 4 needs to look at the mount point, which may hang: it is applied below, under the
    // budget, rather than here.
    let candidates = real_filesystems(parse_mountinfo(&text), |_| true);
    Ok(candidates
        .into_iter()
        .filter_map(|mount| {
            let path = root.path(&mount.mount_point);
            let look = look.clone();
            let key = format!("mount {}", mount.mount_point);
            let seen = match hung.run(&key, budget, move || look(&path)) {
                Outcome::Finished(Look::NotADirectory) => return None,
                Outcome::Finished(Look::Space(space)) => Seen::Space(space),
                Outcome::Finished(Look::Failed(e)) => Seen::Failed(format!("statvfs failed: {e}")),
                Outcome::Failed(reason) => Seen::Failed(reason),
                Outcome::Overran => Seen::Hung(format!(
                    "did not answer within {}; skipped",
                    budget::Shown(budget)
                )),
                Outcome::StillHung { since } => Seen::Hung(format!(
                    "still hung since {}; skipped",
                    budget::since(since)
                )),
            };
            Some((mount, seen))
        })
        .collect())
}

/// The filesystems facet. A mount whose size could not be learned is still listed, with its
/// size unknown and a warning: it is still configured on this machine.
pub fn collect<L>(
    root: &Root,
    hung: &mut HungThreads,
    budget: Duration,
    look: L,
    warnings: &mut Warnings,
) -> Vec<Filesystem>
where
    L: Fn(&Path) -> Look + Clone + Send + 'static,
{
    let looked = match look_at_mounts(root, hung, budget, look) {
        Ok(looked) => looked,
        Err(e) => {
            warnings.add("filesystems", e);
            return Vec::new();
        }
    };
    looked
        .into_iter()
        .map(|(m, seen)| {
            let total_bytes = match seen {
                Seen::Space(space) => Some(space.total_bytes),
                Seen::Failed(reason) | Seen::Hung(reason) => {
                    warnings.add("filesystems", format!("{}: {reason}", m.mount_point));
                    None
                }
            };
            Filesystem {
                removable: is_removable(root, &m.source),
                device: Some(m.source).filter(|s| !s.is_empty() && s != "none"),
                fs_type: Some(m.fs_type),
                total_bytes,
                mount: m.mount_point,
            }
        })
        .collect()
}

/// Whether the block device behind `source` (a `/dev/...` path) is removable, as the kernel
/// reports it in `/sys/class/block/<disk>/removable`. A partition answers for its disk.
pub fn is_removable(root: &Root, source: &str) -> bool {
    if !source.starts_with("/dev/") {
        return false;
    }
    // /dev/mapper/x and /dev/disk/by-uuid/y are links to the kernel's name (dm-0, sda1).
    let device = std::fs::canonicalize(root.path(source)).unwrap_or_else(|_| root.path(source));
    let Some(name) = device.file_name() else {
        return false;
    };
    let class = root.path("/sys/class/block").join(name);
    let disk = match std::fs::canonicalize(&class) {
        Ok(dir) if dir.join("partition").exists() => dir.parent().map(Path::to_path_buf),
        Ok(dir) => Some(dir),
        Err(_) => None,
    };
    match disk.map(|d| std::fs::read_to_string(d.join("removable"))) {
        Some(Ok(flag)) => flag.trim() == "1",
        Some(Err(e)) => {
            warn!(device = %source, error = %e, "could not tell whether device is removable");
            false
        }
        None => false,
    }
}

/// A machine with a dead NFS mount, for tests: a root whose mountinfo lists `/`, `/home` and
/// `/srv/nfs`, and a look that answers at once for the first two and blocks on `/srv/nfs`
/// until the test sends on `release` (once per look it lets go).
#[cfg(test)]
pub(crate) struct DeadNfs {
    pub dir: tempfile::TempDir,
    pub release: std::sync::mpsc::Sender<()>,
    blocked: std::sync::Arc<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>,
    /// How many looks at `/srv/nfs` started.
    pub nfs_looks: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[cfg(test)]
impl DeadNfs {
    pub const KEY: &str = "mount /srv/nfs";

    pub fn new() -> DeadNfs {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/self")).unwrap();
        std::fs::write(
            dir.path().join("proc/self/mountinfo"),
            "21 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
             22 21 8:2 / /home rw,relatime shared:2 - ext4 /dev/sda2 rw\n\
             23 21 0:50 / /srv/nfs rw,relatime shared:3 - nfs4 filer:/export rw,hard\n",
        )
        .unwrap();
        let (release, blocked) = std::sync::mpsc::channel();
        DeadNfs {
            dir,
            release,
            blocked: std::sync::Arc::new(std::sync::Mutex::new(blocked)),
            nfs_looks: std::sync::Arc::default(),
        }
    }

    pub fn root(&self) -> Root {
        Root::at(self.dir.path())
    }

    /// Half full, like every filesystem of this machine that answers.
    pub fn look(&self) -> impl Fn(&Path) -> Look + Clone + Send + 'static {
        let blocked = std::sync::Arc::clone(&self.blocked);
        let nfs_looks = std::sync::Arc::clone(&self.nfs_looks);
        move |path: &Path| {
            if path.ends_with("srv/nfs") {
                nfs_looks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = blocked.lock().unwrap().recv();
            }
            Look::Space(Space {
                total_bytes: 1000 * 4096,
                blocks: 1000,
                blocks_free: 500,
                blocks_available: 500,
                inodes: 100,
                inodes_free: 50,
            })
        }
    }

    /// Lets the stuck look return, and waits for its thread to end.
    pub fn release(&self, hung: &HungThreads) {
        self.release.send(()).unwrap();
        while hung.is_hung(Self::KEY) {
            std::thread::yield_now();
        }
    }

    pub fn nfs_looks(&self) -> usize {
        self.nfs_looks.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture;

    fn mount_points(mounts: &[Mount]) -> Vec<&str> {
        mounts.iter().map(|m| m.mount_point.as_str()).collect()
    }

    #[test]
    fn parses_mountinfo_with_optional_fields_and_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    garbage line\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].dev, "98:0");
        assert_eq!(mounts[0].root, "/mnt1");
        assert_eq!(mounts[0].mount_point, "/mnt/with space");
        assert_eq!(mounts[0].fs_type, "ext3");
        assert_eq!(mounts[0].source, "/dev/root");
    }

    #[test]
    fn this_vm_keeps_only_its_root_disk() {
        let text = std::fs::read_to_string(fixture("mountinfo/firecracker-vm")).unwrap();
        let kept = real_filesystems(parse_mountinfo(&text), |_| true);
        assert_eq!(mount_points(&kept), vec!["/"]);
        assert_eq!(kept[0].source, "/dev/vda");
        assert_eq!(kept[0].fs_type, "ext4");
    }

    #[test]
    fn desktop_filters_pseudo_snaps_and_bind_mounts() {
        let text = std::fs::read_to_string(fixture("mountinfo/ubuntu-desktop")).unwrap();
        let files = ["/etc/hosts", "/etc/resolv.conf"];
        let kept = real_filesystems(parse_mountinfo(&text), |p| !files.contains(&p));
        assert_eq!(
            mount_points(&kept),
            vec![
                "/",
                "/boot",
                "/boot/efi",
                "/home",
                "/media/anna/USB STICK",
                "/mnt/backup",
                "/srv/nfs",
            ]
        );
        let home = kept.iter().find(|m| m.mount_point == "/home").unwrap();
        assert_eq!(home.fs_type, "btrfs");
        assert_eq!(home.root, "/@home");
    }

    /// The agent's own service: the mounts systemd 252 makes for census-agent.service
    /// (ProtectSystem=strict, StateDirectory=census, PrivateTmp, ProtectHome=read-only,
    /// InaccessiblePaths, PrivateDevices, ProtectKernelTunables), made by hand under
    /// unshare(1) on Debian 12 and trimmed. Only the machine's own filesystems remain: `/`,
    /// `/boot` and a `/home` partition, not the binds of directories of `/`.
    #[test]
    fn the_sandbox_of_the_agent_service_adds_no_filesystem() {
        let text = std::fs::read_to_string(fixture("mountinfo/systemd-sandbox")).unwrap();
        let kept = real_filesystems(parse_mountinfo(&text), |p| p != "/etc/shadow");
        assert_eq!(mount_points(&kept), vec!["/", "/boot", "/home"]);
        assert_eq!(kept[2].source, "/dev/vdb");
    }

    #[test]
    fn a_bind_mount_of_a_directory_of_a_mounted_filesystem_is_not_another_filesystem() {
        let text = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    2 1 8:1 /srv/export /export rw - ext4 /dev/sda1 rw\n\
                    3 1 8:17 /data /data rw - xfs /dev/sdb1 rw\n";
        let kept = real_filesystems(parse_mountinfo(text), |_| true);
        // sdb1 is not mounted whole, so its only mount stands for it.
        assert_eq!(mount_points(&kept), vec!["/", "/data"]);
    }

    #[test]
    fn container_keeps_overlay_root_only() {
        let text = std::fs::read_to_string(fixture("mountinfo/docker-container")).unwrap();
        let files = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];
        let kept = real_filesystems(parse_mountinfo(&text), |p| !files.contains(&p));
        assert_eq!(mount_points(&kept), vec!["/", "/data"]);
        assert_eq!(kept[0].fs_type, "overlay");
    }

    #[test]
    fn pseudo_types() {
        for t in [
            "proc", "sysfs", "tmpfs", "cgroup2", "squashfs", "nsfs", "efivarfs",
        ] {
            assert!(is_pseudo(t, "/x"), "{t}");
        }
        for t in ["ext4", "xfs", "btrfs", "vfat", "nfs4", "zfs", "cifs"] {
            assert!(!is_pseudo(t, "/x"), "{t}");
        }
        assert!(!is_pseudo("overlay", "/"));
        assert!(is_pseudo("overlay", "/var/lib/docker/overlay2/abc/merged"));
    }

    #[test]
    fn removable_flag_of_a_partition_comes_from_its_disk() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let disk = base.join("sys/devices/pci0000:00/usb1/block/sdb");
        std::fs::create_dir_all(disk.join("sdb1")).unwrap();
        std::fs::write(disk.join("removable"), "1\n").unwrap();
        std::fs::write(disk.join("sdb1/partition"), "1\n").unwrap();
        std::fs::create_dir_all(base.join("sys/class/block")).unwrap();
        std::os::unix::fs::symlink(disk.join("sdb1"), base.join("sys/class/block/sdb1")).unwrap();
        std::fs::create_dir_all(base.join("dev")).unwrap();
        std::fs::write(base.join("dev/sdb1"), "").unwrap();
        let root = Root::at(base);
        assert!(is_removable(&root, "/dev/sdb1"));
        assert!(!is_removable(&root, "/dev/nvme0n1p2"));
        assert!(!is_removable(&root, "server:/export"));
    }

    #[test]
    fn a_dead_mount_is_listed_with_its_size_unknown_and_looked_at_once() {
        let nfs = DeadNfs::new();
        let mut hung = HungThreads::default();
        // Long enough for the mounts that answer at once, on a loaded machine.
        let budget = Duration::from_millis(500);
        let mut warnings = Warnings::default();
        let first = collect(&nfs.root(), &mut hung, budget, nfs.look(), &mut warnings);
        let sizes: Vec<(&str, Option<u64>)> = first
            .iter()
            .map(|f| (f.mount.as_str(), f.total_bytes))
            .collect();
        assert_eq!(
            sizes,
            vec![
                ("/", Some(4_096_000)),
                ("/home", Some(4_096_000)),
                ("/srv/nfs", None)
            ]
        );
        assert_eq!(
            warnings.lines(),
            ["filesystems: /srv/nfs: did not answer within 500ms; skipped"]
        );

        let mut warnings = Warnings::default();
        let second = collect(&nfs.root(), &mut hung, budget, nfs.look(), &mut warnings);
        assert_eq!(second.len(), 3);
        assert!(
            warnings.lines()[0].starts_with("filesystems: /srv/nfs: still hung since "),
            "{:?}",
            warnings.lines()
        );
        assert_eq!(nfs.nfs_looks(), 1, "the stuck look was not started again");

        nfs.release(&hung);
        nfs.release.send(()).unwrap();
        let mut warnings = Warnings::default();
        let third = collect(&nfs.root(), &mut hung, budget, nfs.look(), &mut warnings);
        assert_eq!(third[2].total_bytes, Some(4_096_000));
        assert!(warnings.lines().is_empty(), "{:?}", warnings.lines());
        assert_eq!(nfs.nfs_looks(), 2);
    }

    #[test]
    fn this_machine_has_a_root_filesystem_with_a_size() {
        let mut warnings = Warnings::default();
        let filesystems = collect(
            &Root::host(),
            &mut HungThreads::default(),
            Duration::from_secs(60),
            look,
            &mut warnings,
        );
        // Containers and VMs alike mount something real at "/".
        let root = filesystems
            .iter()
            .find(|f| f.mount == "/")
            .expect("a / filesystem");
        assert!(root.total_bytes.unwrap() > 0);
    }
}
