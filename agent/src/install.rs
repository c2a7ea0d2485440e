//! `census-agent install` and `census-agent uninstall`: the agent as a systemd service, for a
//! machine that does not use the census-agent package. Linux only; on other systems both
//! commands say so and point at the package or the OS's service manager.
//!
//! `install` (as root, on a machine booted with systemd), each step idempotent so that running
//! it again repairs or upgrades an installation:
//! 1. The binary. The unit is sandboxed (`ProtectHome=read-only`, `PrivateTmp=yes`,
//!    `ProtectSystem=strict`), so it must run a binary every user can read that stays put: the
//!    running binary itself when it lives under `/usr` or `/opt`, otherwise a copy in
//!    `/usr/local/bin/census-agent` (replaced atomically; a running service keeps its old
//!    inode).
//! 2. The system user `census-agent`: `/etc/sysusers.d/census-agent.conf` (the packaged
//!    sysusers file), applied with `systemd-sysusers`.
//! 3. `/etc/census/agent.toml`, the documented default file, only when there is none.
//! 4. `/etc/census/agent.env` (mode 0600, the unit's `EnvironmentFile`), only for what this
//!    command was given: `--server` as `CENSUS_SERVER`, `--ca-file` as `CENSUS_CA_FILE`, and
//!    `--secret` or `CENSUS_ENROLL_SECRET` as `CENSUS_ENROLL_SECRET`. Other lines are kept.
//! 5. `/etc/systemd/system/census-agent.service`: the packaged unit
//!    (`packaging/systemd/census-agent.service`) with `ExecStart` pointing at the binary and a
//!    header comment saying so; nothing else differs.
//! 6. `systemctl daemon-reload`, `systemctl try-restart` when an installed service changed
//!    (new binary, unit or environment), then `systemctl enable --now`.
//!
//! `uninstall` runs `systemctl disable --now`, removes the unit, the sysusers file and the
//! binary copy (only one `install` made, as the unit's header records), and reloads systemd.
//! It keeps `/var/lib/census` (the agent id: installed again, the machine stays the same CI),
//! `/etc/census/agent.toml`, `/etc/census/agent.env` and the user. `uninstall --purge` also
//! removes those.
//!
//! Both refuse, changing nothing, when not run as root, when systemd is not running (no
//! `/run/systemd/system`, the test sd_booted(3) makes), and when the census-agent package
//! provides the service. Every fact about the machine comes from [`System`], so tests run the
//! real code on a temporary root with a recording `systemctl`.

use std::path::PathBuf;

use crate::auth::Secret;
use crate::cli::Cli;
use crate::config::Config;

/// The packaged unit, which `install` writes with only `ExecStart` changed.
pub const UNIT: &str = include_str!("../../packaging/systemd/census-agent.service");
/// The packaged sysusers file that declares the `census-agent` user.
pub const SYSUSERS: &str = include_str!("../../packaging/sysusers/census-agent.conf");
/// The default configuration file, written when there is none.
pub const DEFAULT_CONFIG: &str = include_str!("../../packaging/agent.toml");

pub const UNIT_NAME: &str = "census-agent.service";
pub const SERVICE_USER: &str = "census-agent";
/// The `ExecStart` line of the packaged unit; `install` replaces its binary path.
pub const PACKAGED_EXEC_START: &str = "ExecStart=/usr/bin/census-agent run";
/// Where `install` copies a binary that lives outside `/usr` and `/opt`.
pub const COPIED_BINARY: &str = "/usr/local/bin/census-agent";
/// Where `install` writes the unit (the admin's unit directory, which wins over packages').
pub const UNIT_PATH: &str = "/etc/systemd/system/census-agent.service";
/// Where the census-agent package puts its unit (merged and split `/usr`).
pub const PACKAGED_UNIT_PATHS: [&str; 2] = [
    "/usr/lib/systemd/system/census-agent.service",
    "/lib/systemd/system/census-agent.service",
];
pub const SYSUSERS_PATH: &str = "/etc/sysusers.d/census-agent.conf";
pub const CONFIG_PATH: &str = crate::config::DEFAULT_CONFIG_PATH;
pub const ENV_PATH: &str = "/etc/census/agent.env";
/// The unit's `StateDirectory=census`.
pub const STATE_DIR: &str = crate::config::DEFAULT_STATE_DIR;

/// Line of the unit's header that records a binary copied by `install`, so that `uninstall`
/// removes that copy and never a binary it did not put there.
const COPIED_MARKER: &str = "# census-agent install copied the binary to ";

/// What `install` was given for the service's environment file.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `--server`, validated: `CENSUS_SERVER`.
    pub server: Option<String>,
    /// `--ca-file`: `CENSUS_CA_FILE`.
    pub ca_file: Option<PathBuf>,
    /// `install --secret` or `CENSUS_ENROLL_SECRET`: `CENSUS_ENROLL_SECRET`.
    pub enroll_secret: Option<Secret>,
    /// Whether a collector URL is configured anywhere the service will look (this command's
    /// settings, the config file, the environment file); without one, `install` says what to
    /// set.
    pub server_configured: bool,
}

/// Why `install` or `uninstall` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "`census-agent {command}` is not supported on this OS: install the census-agent package, \
         or register `census-agent run` with the OS's service manager (see README, Installing \
         as a service)"
    )]
    Unsupported { command: &'static str },
    #[error(
        "`census-agent {command}` must run as root (it writes /etc/systemd/system and manages \
         the census-agent system user): run `sudo census-agent {command}`"
    )]
    NotRoot { command: &'static str },
    #[error("systemd is not running on this machine (no /run/systemd/system): {hint}")]
    SystemdNotRunning { hint: &'static str },
    #[error(
        "the census-agent package provides the service ({path}): manage it with `systemctl \
         enable --now|disable --now census-agent` and remove it with the package manager"
    )]
    Packaged { path: String },
    #[error(
        "{flag} does not apply to `census-agent install`: the service always reads \
         {CONFIG_PATH} and /etc/census/agent.env and keeps its state in {STATE_DIR}"
    )]
    ServiceFlag { flag: &'static str },
    #[error(
        "the configuration sets state_dir = {configured}, but the service can only write \
         {STATE_DIR} (its StateDirectory=); remove state_dir from {CONFIG_PATH} and install \
         again"
    )]
    StateDir { configured: String },
}

/// `census-agent install`: checks the command line, then installs on this machine.
#[cfg(target_os = "linux")]
pub fn install_command(cli: &Cli, config: &Config, secret: Option<&Secret>) -> anyhow::Result<()> {
    if cli.config.is_some() {
        return Err(Refusal::ServiceFlag {
            flag: "--config (or CENSUS_AGENT_CONFIG)",
        }
        .into());
    }
    if cli.state_dir.is_some() {
        return Err(Refusal::ServiceFlag {
            flag: "--state-dir",
        }
        .into());
    }
    // What the service itself will read: the config file alone (this shell's CENSUS_*
    // variables do not reach it; the environment file is checked by `install`).
    let file_only = Config::load_with_env(&crate::config::Flags::default(), |_| None)?;
    if file_only.state_dir != std::path::Path::new(STATE_DIR) {
        return Err(Refusal::StateDir {
            configured: file_only.state_dir.display().to_string(),
        }
        .into());
    }
    let from_env = std::env::var_os("CENSUS_ENROLL_SECRET").is_some_and(|v| !v.is_empty());
    let settings = Settings {
        // Config::load validated these; the flags say whether this command was given them.
        server: cli.server.as_ref().and(config.server.clone()),
        ca_file: cli.ca_file.as_ref().and(config.ca_file.clone()),
        enroll_secret: (secret.is_some() || from_env)
            .then(|| config.enroll_secret.clone())
            .flatten(),
        server_configured: cli.server.is_some() || file_only.server.is_some(),
    };
    let system = System::real()?;
    install(&system, &settings, &mut std::io::stdout().lock())
}

/// `census-agent install` where it is not supported.
#[cfg(not(target_os = "linux"))]
pub fn install_command(cli: &Cli, config: &Config, secret: Option<&Secret>) -> anyhow::Result<()> {
    let _ = (cli, config, secret);
    Err(Refusal::Unsupported { command: "install" }.into())
}

/// `census-agent uninstall [--purge]`.
#[cfg(target_os = "linux")]
pub fn uninstall_command(purge: bool) -> anyhow::Result<()> {
    let system = System::real()?;
    uninstall(&system, purge, &mut std::io::stdout().lock())
}

/// `census-agent uninstall` where it is not supported.
#[cfg(not(target_os = "linux"))]
pub fn uninstall_command(purge: bool) -> anyhow::Result<()> {
    let _ = purge;
    Err(Refusal::Unsupported {
        command: "uninstall",
    }
    .into())
}

/// The unit `install` writes: the packaged one with `ExecStart` running `binary`, under a
/// header that says where it came from (and, when `copied`, that `uninstall` removes the
/// binary).
pub fn render_unit(binary: &str, copied: bool) -> String {
    let mut header = format!(
        "# Written by `census-agent install` (census-agent {}): the packaged unit with ExecStart\n\
         # running {binary}. `census-agent uninstall` removes it.\n",
        env!("CARGO_PKG_VERSION"),
    );
    if copied {
        header.push_str(&format!("{COPIED_MARKER}{binary}\n"));
    }
    let body = UNIT.replacen(PACKAGED_EXEC_START, &format!("ExecStart={binary} run"), 1);
    header + &body
}

/// The binary a unit written by `install` says it copied, if any.
pub fn copied_binary(unit: &str) -> Option<&str> {
    unit.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(COPIED_MARKER))
}

/// Whether a path can stand in a unit file's `ExecStart` as is: no quoting, no `%` specifier,
/// no variable.
pub fn plain_unit_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._+-@".contains(&b))
}

/// `existing` (an environment file) with each of `values` set: a line assigning the key is
/// replaced in place, a missing key is appended; other lines, comments included, are kept.
/// Values are single-quoted, which both systemd and sh read literally; a value that cannot be
/// written that way (a quote, a backslash, a control character) is refused, naming the key
/// only (the value may be a secret).
pub fn merge_env_file(existing: &str, values: &[(&str, &str)]) -> Result<String, String> {
    let mut lines: Vec<String> = existing.lines().map(str::to_owned).collect();
    for (key, value) in values {
        if value
            .chars()
            .any(|c| c == '\'' || c == '\\' || c.is_control())
        {
            return Err(format!(
                "{key} holds a quote, a backslash or a control character, which {ENV_PATH} \
                 cannot carry; set it in {CONFIG_PATH} instead"
            ));
        }
        let line = format!("{key}='{value}'");
        let assigns = |l: &String| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        };
        match lines.iter().position(assigns) {
            Some(i) => {
                lines[i] = line;
                // systemd takes a key's last assignment: drop the later ones so that this one counts.
                let mut j = i + 1;
                while j < lines.len() {
                    if assigns(&lines[j]) {
                        lines.remove(j);
                    } else {
                        j += 1;
                    }
                }
            }
            None => lines.push(line),
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Ok(text)
}

#[cfg(target_os = "linux")]
pub use linux::{System, install, uninstall};

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::OsStr;
    use std::fs::{self, File, OpenOptions};
    use std::io::{self, Write};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    use anyhow::{Context, bail};

    use super::*;

    /// The facts `install` and `uninstall` act on. [`System::real`] is this machine; tests
    /// point `root` at a temporary directory and `systemctl` at a script that records its
    /// arguments.
    #[derive(Debug, Clone)]
    pub struct System {
        /// Effective user id of the command.
        pub euid: u32,
        /// Every path the commands read or write is under this directory (`/` on the real
        /// machine); systemd runs when `<root>/run/systemd/system` is a directory.
        pub root: PathBuf,
        /// The binary being installed (the running one).
        pub current_exe: PathBuf,
        /// The `systemctl` program.
        pub systemctl: PathBuf,
    }

    impl System {
        pub fn real() -> anyhow::Result<System> {
            Ok(System {
                euid: rustix::process::geteuid().as_raw(),
                root: PathBuf::from("/"),
                current_exe: std::env::current_exe()
                    .context("could not find the running census-agent binary")?,
                systemctl: PathBuf::from("systemctl"),
            })
        }

        /// `absolute` (a path on the target system) under the root.
        fn path(&self, absolute: &str) -> PathBuf {
            self.root.join(absolute.trim_start_matches('/'))
        }

        fn is_real_root(&self) -> bool {
            self.root == Path::new("/")
        }

        fn systemd_running(&self) -> bool {
            self.path("/run/systemd/system").is_dir()
        }

        /// `path` as the target system names it, if it is under the root.
        fn in_root(&self, path: &Path) -> Option<String> {
            let rest = path.strip_prefix(&self.root).ok()?;
            Some(format!("/{}", rest.to_str()?))
        }

        fn check(&self, command: &'static str, hint: &'static str) -> Result<(), Refusal> {
            if self.euid != 0 {
                return Err(Refusal::NotRoot { command });
            }
            if !self.systemd_running() {
                return Err(Refusal::SystemdNotRunning { hint });
            }
            if let Some(path) = PACKAGED_UNIT_PATHS
                .into_iter()
                .find(|p| self.path(p).exists())
            {
                return Err(Refusal::Packaged {
                    path: path.to_owned(),
                });
            }
            Ok(())
        }

        fn systemctl(&self, args: &[&str]) -> anyhow::Result<()> {
            run(Command::new(&self.systemctl).args(args))
        }

        /// A user-management tool (systemd-sysusers, userdel, groupdel), pointed at the root
        /// when it is not `/`.
        fn account_tool(&self, program: &str, root_flag: &str) -> Command {
            let mut command = Command::new(program);
            if !self.is_real_root() {
                command.arg(format!("{root_flag}{}", self.root.display()));
            }
            command
        }
    }

    /// See the module documentation. Writes what it did to `out`, never a secret.
    pub fn install(
        system: &System,
        settings: &Settings,
        out: &mut dyn Write,
    ) -> anyhow::Result<()> {
        system.check(
            "install",
            "there is no service manager to install the service with; run `census-agent run` \
             under the init system in use, or install the census-agent package, whose unit \
             systemd uses once it runs",
        )?;
        let unit_path = system.path(UNIT_PATH);
        let was_installed = unit_path.exists();
        let mut changed = false;

        // 1. The binary.
        let running = system.in_root(&system.current_exe);
        let in_place = running
            .as_deref()
            .filter(|p| (p.starts_with("/usr/") || p.starts_with("/opt/")) && plain_unit_path(p));
        let (binary, copied) = match in_place {
            Some(path) => (path.to_owned(), false),
            None => {
                let bytes = fs::read(&system.current_exe)
                    .with_context(|| format!("could not read {}", system.current_exe.display()))?;
                let target = system.path(COPIED_BINARY);
                if write_if_changed(&target, &bytes, 0o755)? {
                    changed = true;
                    writeln!(
                        out,
                        "copied {} to {COPIED_BINARY} (the service cannot run a binary from a \
                         home directory or /tmp)",
                        system.current_exe.display()
                    )?;
                }
                (COPIED_BINARY.to_owned(), true)
            }
        };

        // 2. The system user.
        let sysusers = system.path(SYSUSERS_PATH);
        write_if_changed(&sysusers, SYSUSERS.as_bytes(), 0o644)?;
        run(system
            .account_tool("systemd-sysusers", "--root=")
            .arg(&sysusers))
        .context("could not create the census-agent system user")?;

        // 3. The config file, never replaced.
        let config = system.path(CONFIG_PATH);
        if !config.exists() {
            write_if_changed(&config, DEFAULT_CONFIG.as_bytes(), 0o644)?;
            writeln!(
                out,
                "wrote {CONFIG_PATH} (the defaults, every key documented)"
            )?;
        }

        // 4. The environment file, for what this command was given.
        let mut values: Vec<(&str, &str)> = Vec::new();
        if let Some(server) = &settings.server {
            values.push(("CENSUS_SERVER", server));
        }
        let ca_file = settings.ca_file.as_ref().map(|p| p.to_string_lossy());
        if let Some(ca_file) = &ca_file {
            values.push(("CENSUS_CA_FILE", ca_file.as_ref()));
        }
        if let Some(secret) = &settings.enroll_secret {
            values.push(("CENSUS_ENROLL_SECRET", secret.expose()));
        }
        let env_path = system.path(ENV_PATH);
        let env_text = match fs::read_to_string(&env_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("could not read {ENV_PATH}")),
        };
        if !values.is_empty() {
            let merged = merge_env_file(env_text.as_deref().unwrap_or(""), &values)
                .map_err(anyhow::Error::msg)?;
            if write_if_changed(&env_path, merged.as_bytes(), 0o600)? {
                changed = true;
                let keys: Vec<&str> = values.iter().map(|(k, _)| *k).collect();
                writeln!(out, "wrote {} to {ENV_PATH} (mode 0600)", keys.join(", "))?;
            }
        }
        let server_in_env = env_text.as_deref().is_some_and(|t| {
            t.lines()
                .any(|l| l.trim_start().starts_with("CENSUS_SERVER="))
        });

        // 5. The unit.
        if write_if_changed(&unit_path, render_unit(&binary, copied).as_bytes(), 0o644)? {
            changed = true;
            writeln!(out, "wrote {UNIT_PATH} (ExecStart={binary} run)")?;
        }

        // 6. systemd.
        system.systemctl(&["daemon-reload"])?;
        if was_installed && changed {
            system.systemctl(&["try-restart", UNIT_NAME])?;
        }
        system.systemctl(&["enable", "--now", UNIT_NAME])?;
        writeln!(
            out,
            "{UNIT_NAME} is enabled and running as user {SERVICE_USER}; follow it with \
             `journalctl -u census-agent -f`"
        )?;
        if !(settings.server_configured || server_in_env) {
            writeln!(
                out,
                "note: no collector URL is configured, so the service stops at once (exit \
                 status 2): set `server` in {CONFIG_PATH}, or run `census-agent install \
                 --server URL` again"
            )?;
        }
        Ok(())
    }

    /// See the module documentation.
    pub fn uninstall(system: &System, purge: bool, out: &mut dyn Write) -> anyhow::Result<()> {
        system.check(
            "uninstall",
            "`census-agent install` cannot have installed a service here, so there is none to \
             remove (a service of another init system is removed with that system's tools)",
        )?;
        let unit_path = system.path(UNIT_PATH);
        match fs::read_to_string(&unit_path) {
            Ok(unit) => {
                system.systemctl(&["disable", "--now", UNIT_NAME])?;
                remove_file(&unit_path)?;
                writeln!(out, "stopped and disabled {UNIT_NAME}, removed {UNIT_PATH}")?;
                if let Some(binary) = copied_binary(&unit)
                    && remove_file(&system.path(binary))?
                {
                    writeln!(out, "removed {binary}")?;
                }
                system.systemctl(&["daemon-reload"])?;
                // Forget a failed state, if any; not being loaded is not an error here.
                let _ = system.systemctl(&["reset-failed", UNIT_NAME]);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                writeln!(out, "{UNIT_NAME} is not installed (no {UNIT_PATH})")?;
            }
            Err(e) => return Err(e).with_context(|| format!("could not read {UNIT_PATH}")),
        }
        remove_file(&system.path(SYSUSERS_PATH))?;

        if !purge {
            writeln!(
                out,
                "kept {STATE_DIR} (this agent's id and token), {CONFIG_PATH}, {ENV_PATH} and \
                 the {SERVICE_USER} user; `census-agent uninstall --purge` removes them"
            )?;
            return Ok(());
        }
        let state = system.path(STATE_DIR);
        match fs::remove_dir_all(&state) {
            Ok(()) => writeln!(out, "removed {STATE_DIR}")?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("could not remove {STATE_DIR}")),
        }
        for path in [CONFIG_PATH, ENV_PATH] {
            if remove_file(&system.path(path))? {
                writeln!(out, "removed {path}")?;
            }
        }
        // Only when nothing else (the collector's config) is left in it.
        let _ = fs::remove_dir(system.path("/etc/census"));
        if has_entry(&system.path("/etc/passwd"), SERVICE_USER)? {
            run(system
                .account_tool("userdel", "--prefix=")
                .arg(SERVICE_USER))
            .context("could not remove the census-agent user")?;
            writeln!(out, "removed the {SERVICE_USER} user")?;
        }
        // userdel leaves the group when USERGROUPS_ENAB is off.
        if has_entry(&system.path("/etc/group"), SERVICE_USER)? {
            run(system
                .account_tool("groupdel", "--prefix=")
                .arg(SERVICE_USER))
            .context("could not remove the census-agent group")?;
        }
        Ok(())
    }

    /// Runs a command to its end; a failure carries its standard error.
    fn run(command: &mut Command) -> anyhow::Result<()> {
        let line = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(OsStr::to_string_lossy)
            .collect::<Vec<_>>()
            .join(" ");
        let output = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("could not run `{line}`"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!("`{line}` failed ({}): {}", output.status, stderr.trim());
        }
        Ok(())
    }

    /// Replaces `path` atomically with `contents` and `mode` unless it already holds exactly
    /// that; creates the parent directories. Returns whether it wrote.
    fn write_if_changed(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<bool> {
        let same_content = fs::read(path).is_ok_and(|old| old == contents);
        let same_mode = fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode);
        if same_content && same_mode {
            return Ok(false);
        }
        let parent = path.parent().expect("an absolute path has a parent");
        fs::create_dir_all(parent)
            .with_context(|| format!("could not create {}", parent.display()))?;
        let name = path.file_name().expect("a file path").to_string_lossy();
        let tmp = parent.join(format!(".{name}.census-install"));
        let write = || -> io::Result<()> {
            let _ = fs::remove_file(&tmp);
            // Created with its final mode before a byte is written: the environment file
            // holds a secret.
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?;
            // The mode given to open() is reduced by the umask.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            file.write_all(contents)?;
            file.sync_all()?;
            drop(file);
            // A rename, not a write in place: a running binary cannot be written to, and
            // readers see the old or the new file, never half of one.
            fs::rename(&tmp, path)?;
            File::open(parent)?.sync_all()
        };
        write().with_context(|| format!("could not write {}", path.display()))?;
        Ok(true)
    }

    /// Removes a file; returns whether there was one.
    fn remove_file(path: &Path) -> anyhow::Result<bool> {
        match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("could not remove {}", path.display())),
        }
    }

    /// Whether a passwd- or group-format file has an entry named `name`.
    fn has_entry(file: &Path, name: &str) -> anyhow::Result<bool> {
        match fs::read_to_string(file) {
            Ok(text) => Ok(text.lines().any(|l| l.split(':').next() == Some(name))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("could not read {}", file.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_differs_from_the_packaged_one_only_in_exec_start_and_its_header() {
        assert_eq!(UNIT.matches(PACKAGED_EXEC_START).count(), 1);
        let unit = render_unit("/opt/census/bin/census-agent", false);
        let body: String = unit
            .lines()
            .skip_while(|l| l.starts_with("# Written by") || l.starts_with("# running"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            body,
            UNIT.replace(
                PACKAGED_EXEC_START,
                "ExecStart=/opt/census/bin/census-agent run"
            )
        );
        assert_eq!(copied_binary(&unit), None);
        let unit = render_unit(COPIED_BINARY, true);
        assert!(unit.contains("\nExecStart=/usr/local/bin/census-agent run\n"));
        assert_eq!(copied_binary(&unit), Some(COPIED_BINARY));
        // A packaged unit (no header) never makes uninstall remove a binary.
        assert_eq!(copied_binary(UNIT), None);
    }

    #[test]
    fn only_plain_absolute_paths_go_into_exec_start() {
        assert!(plain_unit_path("/usr/local/bin/census-agent"));
        assert!(plain_unit_path("/opt/census-1.2_x86+64/census-agent"));
        for path in [
            "relative/census-agent",
            "/opt/my census/census-agent",
            "/opt/100%/census-agent",
            "/opt/$HOME/census-agent",
            "/opt/\"q\"/census-agent",
            "/opt/caf\u{e9}/census-agent",
        ] {
            assert!(!plain_unit_path(path), "{path}");
        }
    }

    #[test]
    fn the_environment_file_keeps_other_lines_and_quotes_values() {
        let existing = "# admin's note\nCENSUS_LOG_LEVEL=debug\nCENSUS_SERVER=https://old\n\
                        CENSUS_SERVER = https://older\n";
        let merged = merge_env_file(
            existing,
            &[
                ("CENSUS_SERVER", "https://census.example.org:8443"),
                ("CENSUS_ENROLL_SECRET", "ces_1_abc"),
            ],
        )
        .unwrap();
        assert_eq!(
            merged,
            "# admin's note\nCENSUS_LOG_LEVEL=debug\n\
             CENSUS_SERVER='https://census.example.org:8443'\n\
             CENSUS_ENROLL_SECRET='ces_1_abc'\n"
        );
        // Merging the same values again changes nothing.
        let again = merge_env_file(
            &merged,
            &[
                ("CENSUS_SERVER", "https://census.example.org:8443"),
                ("CENSUS_ENROLL_SECRET", "ces_1_abc"),
            ],
        )
        .unwrap();
        assert_eq!(again, merged);
        // A key that is a prefix of another is not confused with it.
        let merged = merge_env_file("CENSUS_SERVER_OLD=x\n", &[("CENSUS_SERVER", "y")]).unwrap();
        assert_eq!(merged, "CENSUS_SERVER_OLD=x\nCENSUS_SERVER='y'\n");
        for bad in ["it's", "a\\b", "a\nb"] {
            let err = merge_env_file("", &[("CENSUS_ENROLL_SECRET", bad)]).unwrap_err();
            assert!(err.contains("CENSUS_ENROLL_SECRET"), "{err}");
            assert!(!err.contains(bad), "{err}");
        }
    }
}

/// Tests that run `install` and `uninstall` for real on a temporary root: real files, the real
/// `systemd-sysusers`, `userdel` and `groupdel` pointed at that root, and a `systemctl` script
/// that records its arguments (systemd itself cannot run here).
#[cfg(all(test, target_os = "linux"))]
mod system_tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use super::*;

    struct TestSystem {
        _dir: tempfile::TempDir,
        system: System,
        log: PathBuf,
    }

    fn on_path(program: &str) -> bool {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
    }

    impl TestSystem {
        /// A root with systemd "running", a build of the agent in /root/build, and a
        /// `systemctl` that records its arguments and fails when told to.
        fn new() -> TestSystem {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            fs::create_dir_all(root.join("run/systemd/system")).unwrap();
            // Outside the root, like a build in someone's home directory.
            let exe = dir.path().join("build/census-agent");
            fs::create_dir_all(exe.parent().unwrap()).unwrap();
            fs::write(&exe, b"census-agent build 1").unwrap();
            let log = dir.path().join("systemctl.log");
            let systemctl = dir.path().join("systemctl");
            fs::write(
                &systemctl,
                format!(
                    "#!/bin/sh\necho \"$*\" >> '{}'\n\
                     if [ -e '{}' ]; then echo \"Failed to $1: Access denied\" >&2; exit 1; fi\n",
                    log.display(),
                    dir.path().join("systemctl.fail").display()
                ),
            )
            .unwrap();
            fs::set_permissions(&systemctl, fs::Permissions::from_mode(0o755)).unwrap();
            TestSystem {
                system: System {
                    euid: 0,
                    root,
                    current_exe: exe,
                    systemctl,
                },
                log,
                _dir: dir,
            }
        }

        fn path(&self, absolute: &str) -> PathBuf {
            self.system.root.join(absolute.trim_start_matches('/'))
        }

        fn read(&self, absolute: &str) -> String {
            fs::read_to_string(self.path(absolute)).unwrap()
        }

        fn mode(&self, absolute: &str) -> u32 {
            fs::metadata(self.path(absolute))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        }

        /// The systemctl calls since the last look.
        fn systemctl_calls(&self) -> Vec<String> {
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            let _ = fs::remove_file(&self.log);
            text.lines().map(str::to_owned).collect()
        }

        fn install(&self, settings: &Settings) -> anyhow::Result<String> {
            let mut out = Vec::new();
            let result = install(&self.system, settings, &mut out);
            result.map(|()| String::from_utf8(out).unwrap())
        }

        fn uninstall(&self, purge: bool) -> anyhow::Result<String> {
            let mut out = Vec::new();
            uninstall(&self.system, purge, &mut out).map(|()| String::from_utf8(out).unwrap())
        }

        /// Every file under the root, as paths on the target system.
        fn files(&self) -> Vec<String> {
            fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
                for entry in fs::read_dir(dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        walk(&path, root, out);
                    } else {
                        let rel = path.strip_prefix(root).unwrap();
                        out.push(format!("/{}", rel.display()));
                    }
                }
            }
            let mut out = Vec::new();
            walk(&self.system.root, &self.system.root, &mut out);
            out.sort();
            out
        }
    }

    /// The tests that create a user need the real systemd-sysusers.
    fn sysusers_available() -> bool {
        let found = on_path("systemd-sysusers");
        if !found {
            eprintln!("skipped: systemd-sysusers is not installed on this machine");
        }
        found
    }

    fn refusal(error: &anyhow::Error) -> &Refusal {
        error.downcast_ref::<Refusal>().expect("a refusal")
    }

    #[test]
    fn both_refuse_without_root_and_change_nothing() {
        let mut t = TestSystem::new();
        t.system.euid = 1000;
        let before = t.files();
        let err = t.install(&Settings::default()).unwrap_err();
        assert!(matches!(refusal(&err), Refusal::NotRoot { .. }), "{err}");
        assert!(
            err.to_string().contains("sudo census-agent install"),
            "{err}"
        );
        let err = t.uninstall(true).unwrap_err();
        assert!(matches!(refusal(&err), Refusal::NotRoot { .. }), "{err}");
        assert!(
            err.to_string().contains("sudo census-agent uninstall"),
            "{err}"
        );
        assert_eq!(t.files(), before);
        assert!(t.systemctl_calls().is_empty());
    }

    #[test]
    fn both_refuse_when_systemd_is_not_running_and_change_nothing() {
        let t = TestSystem::new();
        fs::remove_dir(t.path("/run/systemd/system")).unwrap();
        let before = t.files();
        for err in [
            t.install(&Settings::default()).unwrap_err(),
            t.uninstall(true).unwrap_err(),
        ] {
            assert!(
                matches!(refusal(&err), Refusal::SystemdNotRunning { .. }),
                "{err}"
            );
            assert!(err.to_string().contains("/run/systemd/system"), "{err}");
        }
        assert_eq!(t.files(), before);
        assert!(t.systemctl_calls().is_empty());
    }

    #[test]
    fn both_refuse_when_the_package_provides_the_service() {
        let t = TestSystem::new();
        let packaged = t.path("/usr/lib/systemd/system/census-agent.service");
        fs::create_dir_all(packaged.parent().unwrap()).unwrap();
        fs::write(&packaged, UNIT).unwrap();
        let before = t.files();
        for err in [
            t.install(&Settings::default()).unwrap_err(),
            t.uninstall(false).unwrap_err(),
        ] {
            assert!(matches!(refusal(&err), Refusal::Packaged { .. }), "{err}");
            assert!(err.to_string().contains("package manager"), "{err}");
        }
        assert_eq!(t.files(), before);
        assert!(t.systemctl_calls().is_empty());
    }

    #[test]
    fn install_copies_the_binary_creates_the_user_writes_the_unit_and_starts_it() {
        if !sysusers_available() {
            return;
        }
        let t = TestSystem::new();
        let out = t.install(&Settings::default()).unwrap();

        assert_eq!(t.read(COPIED_BINARY), "census-agent build 1");
        assert_eq!(t.mode(COPIED_BINARY), 0o755);
        let unit = t.read(UNIT_PATH);
        assert_eq!(unit, render_unit(COPIED_BINARY, true));
        assert!(unit.contains("\nExecStart=/usr/local/bin/census-agent run\n"));
        assert_eq!(t.mode(UNIT_PATH), 0o644);
        assert_eq!(t.read(SYSUSERS_PATH), SYSUSERS);
        let passwd = t.read("/etc/passwd");
        assert!(
            passwd
                .lines()
                .any(|l| l.starts_with("census-agent:") && l.contains(":/var/lib/census:")),
            "{passwd}"
        );
        assert_eq!(t.read(CONFIG_PATH), DEFAULT_CONFIG);
        // Nothing was given for the environment file.
        assert!(!t.path(ENV_PATH).exists());
        assert_eq!(
            t.systemctl_calls(),
            ["daemon-reload", "enable --now census-agent.service"]
        );
        assert!(out.contains("copied") && out.contains(UNIT_PATH), "{out}");
        assert!(out.contains("no collector URL is configured"), "{out}");
    }

    #[test]
    fn install_twice_changes_nothing_and_restarts_only_for_a_new_binary() {
        if !sysusers_available() {
            return;
        }
        let t = TestSystem::new();
        let settings = Settings {
            server: Some("https://census.example.org".to_owned()),
            server_configured: true,
            ..Settings::default()
        };
        t.install(&settings).unwrap();
        t.systemctl_calls();
        let files = t.files();
        let contents = |t: &TestSystem| -> Vec<Option<Vec<u8>>> {
            files.iter().map(|f| fs::read(t.path(f)).ok()).collect()
        };
        let before = contents(&t);

        let out = t.install(&settings).unwrap();
        assert_eq!(t.files(), files);
        assert_eq!(contents(&t), before);
        assert_eq!(
            t.systemctl_calls(),
            ["daemon-reload", "enable --now census-agent.service"]
        );
        assert!(!out.contains("wrote") && !out.contains("copied"), "{out}");
        assert!(!out.contains("no collector URL"), "{out}");

        // A rebuilt binary is copied again, and the running service restarted onto it.
        fs::write(&t.system.current_exe, b"census-agent build 2").unwrap();
        t.install(&settings).unwrap();
        assert_eq!(t.read(COPIED_BINARY), "census-agent build 2");
        assert_eq!(
            t.systemctl_calls(),
            [
                "daemon-reload",
                "try-restart census-agent.service",
                "enable --now census-agent.service"
            ]
        );
    }

    #[test]
    fn a_binary_under_opt_runs_in_place_and_uninstall_leaves_it() {
        if !sysusers_available() {
            return;
        }
        let mut t = TestSystem::new();
        let exe = t.path("/opt/census/bin/census-agent");
        fs::create_dir_all(exe.parent().unwrap()).unwrap();
        fs::write(&exe, b"packaged by hand").unwrap();
        t.system.current_exe = exe.clone();
        t.install(&Settings::default()).unwrap();
        assert!(!t.path(COPIED_BINARY).exists());
        assert_eq!(
            t.read(UNIT_PATH),
            render_unit("/opt/census/bin/census-agent", false)
        );
        t.uninstall(false).unwrap();
        assert!(exe.exists());
    }

    #[test]
    fn the_environment_file_gets_what_install_was_given_mode_0600_and_no_secret_is_printed() {
        if !sysusers_available() {
            return;
        }
        let t = TestSystem::new();
        let env = t.path(ENV_PATH);
        fs::create_dir_all(env.parent().unwrap()).unwrap();
        fs::write(&env, "CENSUS_LOG_LEVEL=debug\n").unwrap();
        fs::set_permissions(&env, fs::Permissions::from_mode(0o644)).unwrap();
        let out = t
            .install(&Settings {
                server: Some("https://census.example.org".to_owned()),
                ca_file: Some(PathBuf::from("/etc/census/ca.pem")),
                enroll_secret: Some(Secret::new("ces_7_s3cret")),
                server_configured: true,
            })
            .unwrap();
        assert_eq!(
            t.read(ENV_PATH),
            "CENSUS_LOG_LEVEL=debug\nCENSUS_SERVER='https://census.example.org'\n\
             CENSUS_CA_FILE='/etc/census/ca.pem'\nCENSUS_ENROLL_SECRET='ces_7_s3cret'\n"
        );
        assert_eq!(t.mode(ENV_PATH), 0o600);
        assert!(out.contains("CENSUS_ENROLL_SECRET"), "{out}");
        assert!(!out.contains("s3cret"), "{out}");
        // The service read its URL from the file before: no note about a missing one.
        let out = t
            .install(&Settings {
                server_configured: false,
                ..Settings::default()
            })
            .unwrap();
        assert!(!out.contains("no collector URL"), "{out}");
    }

    #[test]
    fn uninstall_stops_and_removes_the_service_and_keeps_state_and_config() {
        if !sysusers_available() {
            return;
        }
        let t = TestSystem::new();
        t.install(&Settings {
            enroll_secret: Some(Secret::new("ces_7_s3cret")),
            ..Settings::default()
        })
        .unwrap();
        fs::create_dir_all(t.path(STATE_DIR)).unwrap();
        fs::write(t.path("/var/lib/census/agent_id"), "id\n").unwrap();
        t.systemctl_calls();

        let out = t.uninstall(false).unwrap();
        assert_eq!(
            t.systemctl_calls(),
            [
                "disable --now census-agent.service",
                "daemon-reload",
                "reset-failed census-agent.service"
            ]
        );
        for gone in [UNIT_PATH, COPIED_BINARY, SYSUSERS_PATH] {
            assert!(!t.path(gone).exists(), "{gone} is still there");
        }
        for kept in ["/var/lib/census/agent_id", CONFIG_PATH, ENV_PATH] {
            assert!(t.path(kept).exists(), "{kept} was removed");
        }
        assert!(t.read("/etc/passwd").contains("census-agent:"));
        assert!(out.contains("--purge"), "{out}");

        // Uninstalling again is not an error.
        let out = t.uninstall(false).unwrap();
        assert!(out.contains("not installed"), "{out}");
        assert!(t.systemctl_calls().is_empty());
    }

    #[test]
    fn uninstall_purge_leaves_nothing_behind() {
        if !sysusers_available() {
            return;
        }
        // userdel and groupdel open the root's shadow files, which systemd-sysusers makes
        // readable by root only.
        if rustix::process::geteuid().as_raw() != 0 {
            eprintln!("skipped: removing a user from the test root needs root");
            return;
        }
        let t = TestSystem::new();
        t.install(&Settings {
            enroll_secret: Some(Secret::new("ces_7_s3cret")),
            ..Settings::default()
        })
        .unwrap();
        fs::create_dir_all(t.path(STATE_DIR)).unwrap();
        fs::write(t.path("/var/lib/census/token"), "cag_x\n").unwrap();
        t.systemctl_calls();

        let out = t.uninstall(true).unwrap();
        for gone in [
            UNIT_PATH,
            COPIED_BINARY,
            SYSUSERS_PATH,
            STATE_DIR,
            CONFIG_PATH,
            ENV_PATH,
            "/etc/census",
        ] {
            assert!(!t.path(gone).exists(), "{gone} is still there");
        }
        for file in ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"] {
            let text = t.read(file);
            assert!(!text.contains("census-agent"), "{file}: {text}");
        }
        assert!(out.contains("removed the census-agent user"), "{out}");
        // What is left is what the account tools keep (emptied account files, their
        // backups) and the test's own run/systemd/system.
        for file in t.files() {
            assert!(
                file.starts_with("/etc/") && !file.contains("census"),
                "{file} was left behind"
            );
        }
    }

    #[test]
    fn a_failing_systemctl_is_an_error_that_carries_its_message() {
        if !sysusers_available() {
            return;
        }
        let t = TestSystem::new();
        fs::write(t.log.with_file_name("systemctl.fail"), "").unwrap();
        let err = t.install(&Settings::default()).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("daemon-reload") && text.contains("Access denied"),
            "{text}"
        );
    }
}
