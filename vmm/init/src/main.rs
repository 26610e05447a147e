//! `kiln-init`: PID 1 of a Kiln microVM (see the library docs).

#![forbid(unsafe_code)]

mod channel;
mod net;

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use channel::Channel;
use kiln_init::{CONFIG_PATH, InitConfig, MODULE_DIR, environment, resolve_user};
use nix::kmod::{ModuleInitFlags, finit_module};
use nix::mount::{MsFlags, mount};
use nix::sys::reboot::{RebootMode, reboot};

type Result<T> = std::result::Result<T, String>;

fn main() {
    let mut channel = Channel::none();
    let result = run(&mut channel);
    // The workload is done: so is everything it left behind (as when a
    // container's main process exits), and nothing else writes now.
    end_other_processes();
    // The workload may have changed the console's settings (flow stopped,
    // output processing): the report needs it raw and flowing.
    raw_console_output();
    let _ = nix::sys::termios::tcflow(std::io::stdout(), nix::sys::termios::FlowArg::TCOON);
    let code = match result {
        Ok(code) => {
            channel.report(&format!("exit={code}"));
            code
        }
        Err(e) => {
            eprintln!("kiln-init: {e}");
            channel.report(&format!("error={e}"));
            255
        }
    };
    let _ = std::io::stdout().flush();
    // Until the UART has sent it all (the report is the last thing out).
    let _ = nix::sys::termios::tcdrain(std::io::stdout());
    // Keep the kernel's "reboot: Power down" off the workload's console.
    let _ = fs::write("/proc/sys/kernel/printk", "0");
    nix::unistd::sync();
    // PID 1 must not exit: power off (QEMU then exits); if that fails the
    // kernel panics, which `panic=-1 -no-reboot` also turns into an exit.
    let _ = reboot(RebootMode::RB_POWER_OFF);
    std::process::exit(code);
}

/// SIGKILLs every process but this one and reaps them (bounded: a process
/// stuck in the kernel is left behind after 2 s).
fn end_other_processes() {
    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let _ = kill(nix::unistd::Pid::from_raw(-1), Signal::SIGKILL);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(2)),
            Ok(_) => {}
            Err(_) => return, // ECHILD: none left
        }
    }
}

fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    let _ = fs::create_dir_all(target);
    mount(Some(source), target, Some(fstype), flags, data)
        .map_err(|e| format!("mount {fstype} on {target}: {e}"))
}

/// Loads the modules in order, except the host channel's driver (when
/// there is a channel): that one is returned, opened, to load later.
fn load_modules(config: &InitConfig) -> Result<Option<File>> {
    let mut deferred = None;
    for name in &config.modules {
        let path = Path::new(MODULE_DIR).join(name);
        let file = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        if !config.channel.is_empty() && name.ends_with(&format!("-{}", channel::DRIVER)) {
            deferred = Some(file);
            continue;
        }
        match finit_module(&file, c"", ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(format!("load module {name}: {e}")),
        }
    }
    Ok(deferred)
}

fn wait_for(path: &Path, deadline: Duration) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > deadline {
            return Err(format!("{} did not appear", path.display()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The console as a pipe would be: no `\n` → `\r\n` translation, so the
/// host sees the workload's bytes.
fn raw_console_output() {
    use nix::sys::termios::{OutputFlags, SetArg, tcgetattr, tcsetattr};
    let stdout = std::io::stdout();
    if let Ok(mut t) = tcgetattr(&stdout) {
        t.output_flags.remove(OutputFlags::OPOST);
        let _ = tcsetattr(&stdout, SetArg::TCSANOW, &t);
    }
}

/// The image's stop signal (`SIGTERM`, `TERM`, `15`; default SIGTERM).
fn stop_signal(name: &str) -> nix::sys::signal::Signal {
    use nix::sys::signal::Signal;
    use std::str::FromStr;
    let name = name.trim();
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).unwrap_or(Signal::SIGTERM);
    }
    let full = if name.starts_with("SIG") {
        name.to_string()
    } else {
        format!("SIG{name}")
    };
    Signal::from_str(&full).unwrap_or(Signal::SIGTERM)
}

/// The ACPI power button's event device, opened (absent without the
/// `button` and `evdev` modules).
fn power_button() -> Option<File> {
    let entries = fs::read_dir("/sys/class/input").ok()?;
    entries.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let label = fs::read_to_string(e.path().join("device/name")).unwrap_or_default();
        if name.starts_with("event") && label.trim() == "Power Button" {
            File::open(Path::new("/dev/input").join(name)).ok()
        } else {
            None
        }
    })
}

/// Sends the workload its stop signal when the power button is pressed
/// (the host's graceful shutdown).
fn forward_power_button(mut input: File, pid: u32, signal: nix::sys::signal::Signal) {
    std::thread::spawn(move || {
        use std::io::Read;
        const EV_KEY: u16 = 1;
        const KEY_POWER: u16 = 116;
        // struct input_event: 16-byte timeval, u16 type, u16 code, i32 value.
        let mut event = [0u8; 24];
        while input.read_exact(&mut event).is_ok() {
            let kind = u16::from_ne_bytes([event[16], event[17]]);
            let code = u16::from_ne_bytes([event[18], event[19]]);
            let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
            if kind == EV_KEY && code == KEY_POWER && value == 1 {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, signal);
            }
        }
    });
}

/// Waits for the workload, reaping every orphan re-parented to PID 1 on
/// the way; returns the workload's status (128 + signal when killed).
fn reap_until(pid: u32) -> Result<i32> {
    use nix::sys::wait::{WaitStatus, wait};
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    loop {
        match wait() {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return Ok(code),
            Ok(WaitStatus::Signaled(p, signal, _)) if p == pid => return Ok(128 + signal as i32),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("wait: {e}")),
        }
    }
}

fn run(channel: &mut Channel) -> Result<i32> {
    raw_console_output();
    mount_fs("devtmpfs", "/dev", "devtmpfs", MsFlags::empty(), None)?;
    mount_fs("proc", "/proc", "proc", MsFlags::empty(), None)?;
    mount_fs("sysfs", "/sys", "sysfs", MsFlags::empty(), None)?;
    let text = fs::read_to_string(CONFIG_PATH).map_err(|e| format!("read {CONFIG_PATH}: {e}"))?;
    let config: InitConfig =
        serde_json::from_str(&text).map_err(|e| format!("parse {CONFIG_PATH}: {e}"))?;
    // It holds the report secret: gone before anything else runs.
    let _ = fs::remove_file(CONFIG_PATH);
    *channel = Channel::new(&config.channel, load_modules(&config)?, &config.report);
    if config.argv.is_empty() {
        return Err("nothing to run: the image has no entrypoint or cmd".into());
    }
    net::configure(config.network.as_ref())?;

    // The image read-only, writes to a tmpfs overlay.
    wait_for(Path::new(&config.root_device), Duration::from_secs(10))?;
    mount_fs(
        &config.root_device,
        "/lower",
        "ext4",
        MsFlags::MS_RDONLY,
        None,
    )?;
    mount_fs("tmpfs", "/rw", "tmpfs", MsFlags::empty(), Some("mode=0755"))?;
    for dir in ["/rw/upper", "/rw/work"] {
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {dir}: {e}"))?;
    }
    mount_fs(
        "overlay",
        "/newroot",
        "overlay",
        MsFlags::empty(),
        Some("lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work"),
    )?;
    mount_fs(
        "devtmpfs",
        "/newroot/dev",
        "devtmpfs",
        MsFlags::empty(),
        None,
    )?;
    mount_fs("proc", "/newroot/proc", "proc", MsFlags::empty(), None)?;
    mount_fs("sysfs", "/newroot/sys", "sysfs", MsFlags::empty(), None)?;
    let _ = mount_fs(
        "tmpfs",
        "/newroot/dev/shm",
        "tmpfs",
        MsFlags::empty(),
        Some("mode=1777"),
    );
    std::os::unix::fs::chroot("/newroot").map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    if let Some(network) = &config.network {
        net::write_resolv_conf(network)?;
    }

    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let (id, home) = resolve_user(&config.user, &passwd, &group).map_err(|e| e.to_string())?;
    let workdir = if config.working_dir.is_empty() {
        "/"
    } else {
        &config.working_dir
    };
    // Docker creates a missing working directory.
    let _ = fs::create_dir_all(workdir);
    // Open the power button before the workload starts, so no press is lost.
    let button = power_button();
    let child = Command::new(&config.argv[0])
        .args(&config.argv[1..])
        .env_clear()
        .envs(environment(&config.env, &home))
        .current_dir(workdir)
        .uid(id.uid)
        .gid(id.gid)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("run {:?}: {e}", config.argv[0]))?;
    // The workload runs: now the channel's driver (probing the port costs
    // boot time the workload need not wait for).
    channel.load_driver();
    if let Some(button) = button {
        forward_power_button(button, child.id(), stop_signal(&config.stop_signal));
    }
    reap_until(child.id())
}
