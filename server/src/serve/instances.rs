//! Instances: converted images booted as microVMs through `kiln-vmm`
//! (`POST /kiln/v1/instances`), their state and exit status, their console
//! (streamed while they run) and a stop. A principal runs only images it
//! may pull, and sees only its own instances (the admin sees all).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use kiln_registry::{Error, Reference, Registry};
use kiln_registry_token::{Action, RepositoryName};
use kiln_vmm::{Accel, GuestKernel, GuestVm, InitConfig, Machine, MemorySize, Network, RunSpec};
use serde::{Deserialize, Serialize};

use super::auth::{Auth, Principal, basic_refusal};
use super::config::VmSettings;
use super::convert::{Conversions, State as ConversionState};
use super::store::Store;
use super::{json, problem};

/// Where an instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum InstanceState {
    Starting,
    Running,
    Exited,
    Failed,
    Stopped,
}

/// One instance, as `GET /kiln/v1/instances/<id>` reports it.
#[derive(Debug, Clone, Serialize)]
struct Record {
    id: String,
    image: String,
    digest: String,
    state: InstanceState,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<u64>,
    #[serde(skip)]
    owner: String,
}

struct Instance {
    record: Record,
    work_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

pub(crate) struct Instances {
    settings: Option<VmSettings>,
    auth: Arc<Auth>,
    registry: Arc<Registry<Store>>,
    conversions: Arc<Conversions>,
    /// Console outputs of finished instances.
    output_dir: PathBuf,
    map: Mutex<HashMap<String, Instance>>,
    accel: tokio::sync::OnceCell<Accel>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `repo:tag`, `repo@digest` or `repo:tag@digest` (the digest wins) as
/// registry names; a bare `repo` is `repo:latest`.
pub(super) fn parse_image(image: &str) -> Option<(RepositoryName, Reference)> {
    if let Some((named, digest)) = image.rsplit_once('@') {
        let slash = named.rfind('/').map_or(0, |i| i + 1);
        let repo = named[slash..]
            .rfind(':')
            .map_or(named, |i| &named[..slash + i]);
        return Some((repo.parse().ok()?, Reference::Digest(digest.parse().ok()?)));
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match image[slash..].rfind(':') {
        Some(i) => (&image[..slash + i], &image[slash + i + 1..]),
        None => (image, "latest"),
    };
    Some((repo.parse().ok()?, tag.parse().ok()?))
}

/// What a client asks to run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Launch {
    /// `repo:tag` or `repo@digest` in this registry.
    image: String,
    /// Replaces the image's `Cmd` (the entrypoint stays).
    #[serde(default)]
    cmd: Vec<String>,
    /// `NAME=value` added to the image's environment.
    #[serde(default)]
    env: Vec<String>,
    /// Guest memory, e.g. `256M` (default 256M).
    #[serde(default)]
    memory: Option<String>,
    /// vCPUs (default 1).
    #[serde(default)]
    cpus: Option<u8>,
    /// Seconds the instance may run (default and most: the server's).
    #[serde(default)]
    timeout: Option<u64>,
}

impl Instances {
    pub(crate) fn new(
        settings: Option<VmSettings>,
        auth: Arc<Auth>,
        registry: Arc<Registry<Store>>,
        conversions: Arc<Conversions>,
        output_dir: PathBuf,
    ) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(&output_dir)?;
        Ok(Arc::new(Self {
            settings,
            auth,
            registry,
            conversions,
            output_dir,
            map: Mutex::new(HashMap::new()),
            accel: tokio::sync::OnceCell::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instance>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Instance)) {
        if let Some(i) = self.lock().get_mut(id) {
            f(i);
        }
    }

    /// The record of `id` if `principal` may see it.
    fn visible(&self, id: &str, principal: &Principal) -> Option<(Record, PathBuf)> {
        let map = self.lock();
        let i = map.get(id)?;
        (*principal == Principal::Admin || i.record.owner == principal.subject())
            .then(|| (i.record.clone(), i.work_dir.clone()))
    }

    async fn launch(self: &Arc<Self>, principal: &Principal, req: Launch) -> Response {
        let Some(settings) = self.settings.clone() else {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "no [vm] configured: instances are off",
            );
        };
        let Some((repo, reference)) = parse_image(&req.image) else {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("invalid image {:?}", req.image),
            );
        };
        let unknown = || problem(StatusCode::NOT_FOUND, format!("no image {}", req.image));
        if !self.auth.policy_allows(principal, &repo, Action::Pull) {
            return unknown();
        }
        let Ok(info) = self.registry.manifest_info(&repo, &reference).await else {
            return unknown();
        };
        let digest = info.digest.to_string();
        match self.conversions.get(&digest).await.map(|r| r.state) {
            Some(ConversionState::Ready) => {}
            state => {
                return problem(
                    StatusCode::CONFLICT,
                    format!(
                        "the image's conversion is {}",
                        state.map_or("absent".into(), |s| format!("{s:?}").to_lowercase())
                    ),
                );
            }
        }
        let (disk, run_json) = match self.conversions.outputs(&digest).await {
            Ok(paths) => paths,
            Err(e) => {
                return problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the image's disk: {e}"),
                );
            }
        };
        let run_config: kiln_ext4::RunConfig = match std::fs::read(&run_json)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(c) => c,
            None => {
                return problem(
                    StatusCode::CONFLICT,
                    "the image's run configuration is unreadable",
                );
            }
        };
        let memory = match req
            .memory
            .as_deref()
            .unwrap_or("256M")
            .parse::<MemorySize>()
        {
            Ok(m) if m.mib() <= settings.max_memory_mib => m,
            Ok(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    format!("memory over {} MiB", settings.max_memory_mib),
                );
            }
            Err(e) => return problem(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let cpus = req.cpus.unwrap_or(1).clamp(1, settings.max_cpus);
        let timeout = Duration::from_secs(
            req.timeout
                .unwrap_or(settings.max_timeout_secs)
                .min(settings.max_timeout_secs),
        );
        let mut argv = run_config.entrypoint.clone();
        argv.extend(if req.cmd.is_empty() {
            run_config.cmd.clone()
        } else {
            req.cmd
        });
        let mut env = run_config.env.clone();
        env.extend(req.env);
        let workload = InitConfig {
            argv,
            env,
            working_dir: run_config.working_dir.clone(),
            user: run_config.user.clone(),
            stop_signal: run_config.stop_signal.clone().unwrap_or_default(),
            ..InitConfig::default()
        };
        let kernel = match GuestKernel::from_image(&settings.kernel) {
            Ok(k) => k,
            Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, format!("kernel: {e}")),
        };
        let id = match super::auth::random_bytes::<8>() {
            Ok(b) => b.iter().map(|x| format!("{x:02x}")).collect::<String>(),
            Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        // Socket paths live in the work dir: keep it short.
        let work_dir = std::env::temp_dir().join(format!("kiln-i-{id}"));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let record = Record {
            id: id.clone(),
            image: req.image.clone(),
            digest,
            state: InstanceState::Starting,
            exit_code: None,
            error: None,
            created_at: now(),
            finished_at: None,
            owner: principal.subject(),
        };
        {
            let mut map = self.lock();
            let live = map
                .values()
                .filter(|i| {
                    matches!(
                        i.record.state,
                        InstanceState::Starting | InstanceState::Running
                    )
                })
                .count();
            if live >= settings.max_instances {
                return problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "{live} instances running (at most {})",
                        settings.max_instances
                    ),
                );
            }
            map.insert(
                id.clone(),
                Instance {
                    record: record.clone(),
                    work_dir: work_dir.clone(),
                    stop: Some(stop_tx),
                },
            );
        }
        let this = self.clone();
        tokio::spawn(async move {
            let accel = *this
                .accel
                .get_or_init(|| async {
                    let work = std::env::temp_dir().join("kiln-serve-canary");
                    let accel =
                        crate::cli::vm::accel_for(&settings.accel, &kernel, &settings.init, &work)
                            .await;
                    let _ = std::fs::remove_dir_all(&work);
                    tracing::info!(?accel, "instances' accelerator");
                    accel
                })
                .await;
            let spec = RunSpec {
                qemu: settings.qemu.clone(),
                kernel,
                init: settings.init.clone(),
                disk,
                workload,
                memory,
                cpus,
                machine: Machine::Microvm,
                network: Network::None,
                accel,
                work_dir: work_dir.clone(),
                timeout,
            };
            this.run(&id, &spec, stop_rx).await;
        });
        json(StatusCode::CREATED, &record)
    }

    /// Boots, waits for the workload or a stop, records the outcome and
    /// keeps the console output.
    async fn run(&self, id: &str, spec: &RunSpec, stop: tokio::sync::oneshot::Receiver<()>) {
        let _ = std::fs::create_dir_all(&spec.work_dir);
        let outcome = match GuestVm::start(spec).await {
            Err(e) => Err(e.to_string()),
            Ok(vm) => {
                self.update(id, |i| i.record.state = InstanceState::Running);
                tokio::select! {
                    r = vm.finish(spec.timeout) => r.map(Some).map_err(|e| e.to_string()),
                    // Dropping the guest kills QEMU.
                    _ = stop => Ok(None),
                }
            }
        };
        let raw = std::fs::read(spec.work_dir.join("console.log")).unwrap_or_default();
        let nonce = std::fs::read_to_string(spec.work_dir.join("report.nonce")).unwrap_or_default();
        let output = kiln_vmm::split_report(&raw, &nonce).map_or(raw, |(o, _)| o);
        let _ = std::fs::write(self.output_dir.join(format!("{id}.console")), &output);
        self.update(id, |i| {
            i.stop = None;
            i.record.finished_at = Some(now());
            match outcome {
                Ok(Some(o)) => {
                    i.record.state = InstanceState::Exited;
                    i.record.exit_code = Some(o.exit_code);
                }
                Ok(None) => i.record.state = InstanceState::Stopped,
                Err(e) => {
                    i.record.state = InstanceState::Failed;
                    i.record.error = Some(e);
                }
            }
        });
        let _ = std::fs::remove_dir_all(&spec.work_dir);
        tracing::info!(%id, "instance ended");
    }

    /// The console: what the guest printed so far, then (streamed) the rest
    /// until the instance ends.
    fn console(self: &Arc<Self>, id: &str, work_dir: PathBuf) -> Body {
        let (this, id) = (self.clone(), id.to_owned());
        let stream = futures_util::stream::unfold((0usize, false), move |(sent, done)| {
            let (this, id, work_dir) = (this.clone(), id.clone(), work_dir.clone());
            async move {
                if done {
                    return None;
                }
                loop {
                    let finished = this
                        .lock()
                        .get(&id)
                        .is_none_or(|i| i.record.finished_at.is_some());
                    if finished {
                        let out = std::fs::read(this.output_dir.join(format!("{id}.console")))
                            .unwrap_or_default();
                        let rest = out.get(sent..).unwrap_or_default().to_vec();
                        return Some((Ok::<_, std::io::Error>(rest), (sent, true)));
                    }
                    let raw = std::fs::read(work_dir.join("console.log")).unwrap_or_default();
                    let upto = kiln_vmm::streamable(&raw);
                    if upto > sent {
                        return Some((Ok(raw[sent..upto].to_vec()), (upto, false)));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Body::from_stream(stream)
    }
}

pub(super) fn router(instances: Arc<Instances>) -> Router {
    Router::new()
        .route("/kiln/v1/instances", axum::routing::post(create))
        .route("/kiln/v1/instances/{id}", axum::routing::get(status))
        .route(
            "/kiln/v1/instances/{id}/console",
            axum::routing::get(console),
        )
        .route("/kiln/v1/instances/{id}/stop", axum::routing::post(stop))
        .with_state(instances)
}

/// The caller, who must be someone (not anonymous).
fn principal(i: &Instances, headers: &HeaderMap, peer: SocketAddr) -> Result<Principal, Error> {
    match i.auth.principal(headers, Some(peer.ip()))? {
        Principal::Anonymous => Err(Error::Unauthorized),
        Principal::Build { .. } => Err(Error::Denied),
        p => Ok(p),
    }
}

async fn create(
    State(i): State<Arc<Instances>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let p = match principal(&i, &headers, peer) {
        Ok(p) => p,
        Err(e) => return basic_refusal(&e),
    };
    match serde_json::from_slice::<Launch>(&body) {
        Ok(req) => i.launch(&p, req).await,
        Err(e) => problem(StatusCode::BAD_REQUEST, format!("invalid request: {e}")),
    }
}

/// The caller's instance `id` (or any, for the admin): its record and work
/// directory; otherwise the refusal or 404 to send.
fn owned(
    i: &Instances,
    id: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<(Record, PathBuf), Box<Response>> {
    let p = principal(i, headers, peer).map_err(|e| Box::new(basic_refusal(&e)))?;
    i.visible(id, &p)
        .ok_or_else(|| Box::new(problem(StatusCode::NOT_FOUND, "no such instance")))
}

async fn status(
    State(i): State<Arc<Instances>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match owned(&i, &id, &headers, peer) {
        Ok((record, _)) => json(StatusCode::OK, &record),
        Err(r) => *r,
    }
}

async fn console(
    State(i): State<Arc<Instances>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match owned(&i, &id, &headers, peer) {
        Ok((_, work_dir)) => {
            let mut r = Response::new(i.console(&id, work_dir));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        Err(r) => *r,
    }
}

async fn stop(
    State(i): State<Arc<Instances>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = owned(&i, &id, &headers, peer) {
        return *r;
    }
    let sender = i.lock().get_mut(&id).and_then(|inst| inst.stop.take());
    if let Some(s) = sender {
        let _ = s.send(());
    }
    problem(StatusCode::ACCEPTED, "stopping")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        let (r, t) = parse_image("acme/app:v1").unwrap();
        assert_eq!((r.as_str(), t.to_string().as_str()), ("acme/app", "v1"));
        let (r, t) = parse_image("acme/app").unwrap();
        assert_eq!((r.as_str(), t.to_string().as_str()), ("acme/app", "latest"));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let (_, t) = parse_image(&format!("a/b@{d}")).unwrap();
        assert_eq!(t.to_string(), d);
        assert!(parse_image("A/b:v1").is_none());
        assert!(parse_image("a/b:..").is_none());
    }
}
