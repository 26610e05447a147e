//! `kiln vm run`: run an image's entrypoint in a fresh microVM.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kiln_ext4::{Image, OciLayout, Options, RunConfig, Selector, convert};
use kiln_vmm::{
    Accel, GuestKernel, InitConfig, Machine, MemorySize, Network, RunSpec, accel_canary, run,
    split_report, streamable,
};

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Boot a microVM from an image, print the workload's output, exit with
    /// its status.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The root file system, as written by `kiln ext4 convert`.
    #[arg(long, requires = "metadata", conflicts_with = "image")]
    ext4: Option<PathBuf>,
    /// The run config JSON written beside it.
    #[arg(long, requires = "ext4")]
    metadata: Option<PathBuf>,
    /// Or an image to convert first: `oci:DIR[:TAG|@DIGEST]`, or
    /// `docker://HOST/REPOSITORY[:TAG|@DIGEST]` pulled from a registry.
    #[arg(long, required_unless_present = "ext4")]
    image: Option<String>,
    /// Pull a `docker://` image over plain HTTP.
    #[arg(long, requires = "image")]
    insecure: bool,
    /// Credentials for a `docker://` image (default: the Docker config's).
    #[arg(long, value_name = "USER:PASSWORD", requires = "image")]
    creds: Option<String>,
    /// Kernel (`.../boot/vmlinuz-VERSION`, modules in `.../lib/modules/VERSION`);
    /// default `$KILN_KERNEL`.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The static `kiln-init` binary; default `$KILN_INIT`, else `kiln-init`
    /// beside this program.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Guest memory.
    #[arg(long, default_value = "256M")]
    memory: String,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// `kvm`, `tcg`, or `auto`: KVM if a short canary guest boots under it
    /// (decided once, cached in the temp directory), else TCG.
    #[arg(long, default_value = "auto", value_parser = ["auto", "kvm", "tcg"])]
    accel: String,
    /// Machine type: `microvm` (virtio-mmio, fastest to boot) or `q35`
    /// (virtio-pci).
    #[arg(long, default_value = "microvm", value_parser = ["microvm", "q35"])]
    machine: String,
    /// Guest network: `none`, or `user` (QEMU's user-mode NAT: outgoing
    /// connections; the host's 127.0.0.1 is 10.0.2.2 in the guest).
    #[arg(long, default_value = "none", value_parser = ["none", "user"])]
    network: String,
    /// Give up (and kill the VM) after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Replaces the image's `Cmd` (the entrypoint stays), as `docker run`.
    #[arg(last = true)]
    cmd: Vec<String>,
}

pub(crate) fn run_cmd(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Run(args) => {
            let code = vm_run(args)?;
            std::process::exit(code & 0xff);
        }
    }
}

fn from_env_or(explicit: Option<PathBuf>, var: &str) -> Option<PathBuf> {
    explicit.or_else(|| std::env::var_os(var).map(PathBuf::from))
}

/// The workload: entrypoint + (override or cmd), env, workdir, user.
fn workload(config: &RunConfig, cmd: &[String]) -> InitConfig {
    let mut argv = config.entrypoint.clone();
    argv.extend(if cmd.is_empty() {
        config.cmd.clone()
    } else {
        cmd.to_vec()
    });
    InitConfig {
        argv,
        env: config.env.clone(),
        working_dir: config.working_dir.clone(),
        user: config.user.clone(),
        stop_signal: config.stop_signal.clone().unwrap_or_default(),
        ..InitConfig::default()
    }
}

fn convert_image(source: &str, work: &Path) -> anyhow::Result<(PathBuf, RunConfig)> {
    let (dir, reference) = crate::cli::ext4::parse_source(source)?;
    let layout = OciLayout::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let selector = Selector {
        reference,
        ..Selector::default()
    };
    let image = Image::resolve(&layout, &selector).context("resolving the image")?;
    let disk = work.join("rootfs.ext4");
    let file = std::io::BufWriter::new(std::fs::File::create(&disk)?);
    convert(&layout, &image, file, Options::default(), &mut |_| {})
        .context("converting the image")?;
    Ok((disk, image.run_config().clone()))
}

/// Pulls `reference` into a registry of this process's own (a directory in
/// `work`, served on a loopback port for the copy) and converts it from
/// there, as `kiln serve` converts what is pushed to it.
fn pull_image(
    reference: &str,
    insecure: bool,
    creds: &Option<String>,
    work: &Path,
) -> anyhow::Result<(PathBuf, RunConfig)> {
    use kiln_oci_mirror::{CopyOptions, ImageLocation, RegistryClient, RegistryConfig, copy};
    use kiln_registry::{Limits, Reference, Registry, Storage as _, api};
    let source: ImageLocation = reference
        .parse()
        .with_context(|| format!("image reference {reference:?}"))?;
    let store = work.join("pulled");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (registry, digest, media_type) = runtime.block_on(async {
        let registry = std::sync::Arc::new(Registry::new(
            crate::serve::Store::open(None, &store)?,
            Limits::default(),
        ));
        let app = api::router(
            registry.clone(),
            std::sync::Arc::new(api::Open),
            api::ApiOptions::default(),
        );
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let host = listener.local_addr()?.to_string();
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
        });
        let mut src = RegistryConfig::new(source.registry());
        src.insecure = insecure;
        src.credentials = super::mirror::creds(creds, source.registry(), &None)?;
        let mut dst = RegistryConfig::new(&host);
        dst.insecure = true;
        let target: ImageLocation = format!("{host}/pulled:image").parse()?;
        let copied = copy(
            &RegistryClient::new(src)?,
            &source,
            &RegistryClient::new(dst)?,
            &target,
            &CopyOptions::default(),
        )
        .await
        .with_context(|| format!("pulling {reference}"));
        server.abort();
        copied?;
        let info = registry
            .manifest_info(&"pulled".parse()?, &Reference::Tag("image".parse()?))
            .await?;
        anyhow::Ok((registry, info.digest, info.media_type))
    })?;
    let size = runtime
        .block_on(registry.storage().blob_size(&digest))?
        .context("the pulled manifest is not stored")?;
    let descriptor = oci_spec::image::Descriptor::new(
        media_type.as_str().into(),
        size,
        digest.to_string().parse::<oci_spec::image::Digest>()?,
    );
    let blobs = crate::serve::StoreBlobs {
        store: registry.storage(),
        handle: runtime.handle().clone(),
    };
    let image = Image::load(
        &blobs,
        &descriptor,
        &crate::serve::host_platform(),
        &kiln_ext4::Limits::default(),
    )
    .context("resolving the image")?;
    let disk = work.join("rootfs.ext4");
    let file = std::io::BufWriter::new(std::fs::File::create(&disk)?);
    convert(&blobs, &image, file, Options::default(), &mut |_| {})
        .context("converting the image")?;
    let _ = std::fs::remove_dir_all(&store);
    Ok((disk, image.run_config().clone()))
}

/// The accelerator for `--accel`; `auto` runs the KVM canary once and
/// caches its verdict.
fn choose_accel(
    choice: &str,
    kernel: &GuestKernel,
    init: &Path,
    work: &Path,
    runtime: &tokio::runtime::Runtime,
) -> Accel {
    runtime.block_on(accel_for(choice, kernel, init, work))
}

/// `kvm`, `tcg`, or for `auto` the verdict of a short KVM canary boot,
/// decided once per machine (cached in the temp directory's
/// `kiln-accel-canary`, shared by `kiln vm run` and `kiln serve`).
pub(crate) async fn accel_for(
    choice: &str,
    kernel: &GuestKernel,
    init: &Path,
    work: &Path,
) -> Accel {
    match choice {
        "kvm" => return Accel::Kvm,
        "tcg" => return Accel::Tcg,
        _ => {}
    }
    let cache = std::env::temp_dir().join("kiln-accel-canary");
    if let Ok(text) = std::fs::read_to_string(&cache) {
        return if text.starts_with("kvm") {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
    }
    let (accel, why) =
        accel_canary(kernel, init, &work.join("canary"), Duration::from_secs(5)).await;
    let name = if accel == Accel::Kvm { "kvm" } else { "tcg" };
    eprintln!("kiln: using {name}: {why}");
    let _ = std::fs::write(&cache, format!("{name} {why}\n"));
    accel
}

fn vm_run(args: RunArgs) -> anyhow::Result<i32> {
    let Some(kernel) = from_env_or(args.kernel, "KILN_KERNEL") else {
        bail!(
            "no kernel: pass --kernel (e.g. an unpacked linux-image-*-cloud-amd64) or set KILN_KERNEL"
        );
    };
    let init = from_env_or(args.init, "KILN_INIT")
        .or_else(|| {
            std::env::current_exe()
                .ok()?
                .parent()
                .map(|d| d.join("kiln-init"))
        })
        .context("no kiln-init")?;
    let work = std::env::temp_dir().join(format!("kiln-vm-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = (|| -> anyhow::Result<i32> {
        let (disk, config) = match (args.ext4, args.metadata, args.image) {
            (Some(disk), Some(meta), _) => {
                let text = std::fs::read_to_string(&meta)
                    .with_context(|| format!("reading {}", meta.display()))?;
                (
                    disk,
                    serde_json::from_str(&text).context("parsing the run config")?,
                )
            }
            (_, _, Some(image)) => match image.strip_prefix("docker://") {
                Some(reference) => pull_image(reference, args.insecure, &args.creds, &work)?,
                None => convert_image(&image, &work)?,
            },
            _ => bail!("give --ext4 and --metadata, or --image"),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let guest_kernel = GuestKernel::from_image(&kernel)?;
        let accel = choose_accel(&args.accel, &guest_kernel, &init, &work, &runtime);
        let spec = RunSpec {
            qemu: "qemu-system-x86_64".into(),
            kernel: guest_kernel,
            init,
            disk,
            workload: workload(&config, &args.cmd),
            memory: args.memory.parse::<MemorySize>()?,
            cpus: args.cpus,
            machine: if args.machine == "q35" {
                Machine::Q35
            } else {
                Machine::Microvm
            },
            network: if args.network == "user" {
                Network::User
            } else {
                Network::None
            },
            accel,
            work_dir: work.clone(),
            timeout: Duration::from_secs(args.timeout),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Stream the console while the workload runs (a server's output
        // should not wait for it to exit); the rest is printed at the end.
        let console = work.join("console.log");
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tail = {
            let (console, done) = (console.clone(), done.clone());
            // Reads only what the guest appended since the last poll;
            // returns how much it printed.
            std::thread::spawn(move || {
                use std::io::{Read, Seek, SeekFrom};
                let mut printed = 0;
                let mut fresh = Vec::new();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    fresh.clear();
                    let read = std::fs::File::open(&console).and_then(|mut f| {
                        f.seek(SeekFrom::Start(printed as u64))?;
                        f.read_to_end(&mut fresh)
                    });
                    let upto = if read.is_ok() { streamable(&fresh) } else { 0 };
                    if upto > 0 {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&fresh[..upto]);
                        let _ = out.flush();
                        printed += upto;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                printed
            })
        };
        let result = runtime.block_on(run(&spec));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let printed = tail.join().unwrap_or(0);
        // What the tail held back, from the raw console (byte for byte),
        // the guest's report cut out; printed on failures too.
        let raw = std::fs::read(&console).unwrap_or_default();
        let nonce = std::fs::read_to_string(work.join("report.nonce")).unwrap_or_default();
        let output = split_report(&raw, &nonce).map_or(raw, |(output, _)| output);
        std::io::stdout().write_all(output.get(printed..).unwrap_or_default())?;
        Ok(result?.exit_code)
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}
