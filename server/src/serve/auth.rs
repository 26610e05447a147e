//! Principals, the token endpoint (Docker token flow and OAuth2 password /
//! refresh-token grants) and the registry's [`Access`] policy over
//! `kiln-registry-token`.
//!
//! Principals: the admin (everything), tenants from the configuration
//! (their own namespaces; pull on `cache/global/*` and the mirror
//! namespace), and anonymous clients (pull on the configured patterns).
//! Admin power comes only from the admin credential: what a token grants is
//! the intersection of what was asked and the principal's policy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use kiln_registry::Error;
use kiln_registry::api::{Access, Denial, Grant, Need, Request};
use kiln_registry_token::{
    Action, Actions, CachingVerifier, Challenge, ChallengeError, Claims, KeySet, MintRequest,
    Minter, Permission, RepositoryName, RepositoryPattern, Scope, SigningKey, TokenFormat,
    Verifier, VerifyingKey, grant,
};
use sha2::{Digest as _, Sha256};

use super::config::Config;

/// Failed logins allowed per client address per window.
const MAX_FAILURES: u32 = 10;
/// The failure-counting window.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most (the table is cleared beyond).
const MAX_TRACKED: usize = 65_536;
/// Refresh tokens live this long.
const REFRESH_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Verified access tokens remembered at most (the cache is cleared beyond).
const TOKEN_CACHE: usize = 65_536;
/// The longest a build credential lives.
const BUILD_TOKEN_MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// The user name of the server's own credential.
const INTERNAL_USER: &str = "kiln-internal";
/// The user name of a build's credential (its password is the build token).
pub(crate) const BUILD_USER: &str = "kiln-build";

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    Admin,
    Tenant(String),
    Anonymous,
    /// A build, with exactly the access its token names.
    Build {
        id: String,
        policy: Arc<[Permission]>,
    },
}

impl Principal {
    /// The subject tokens issued to the principal carry.
    pub(crate) fn subject(&self) -> String {
        match self {
            Self::Admin => "admin".into(),
            Self::Tenant(t) => format!("tenant:{t}"),
            Self::Anonymous => "anonymous".into(),
            Self::Build { id, .. } => format!("build:{id}"),
        }
    }
}

/// The auth state of a running server.
pub(crate) struct Auth {
    open: bool,
    service: String,
    realm: String,
    ttl: Duration,
    admin_sha256: [u8; 32],
    tenants: HashMap<String, [u8; 32]>,
    /// Each principal's policy, built once.
    admin_policy: Arc<[Permission]>,
    tenant_policies: HashMap<String, Arc<[Permission]>>,
    anonymous: Arc<[Permission]>,
    minter: Minter,
    refresh_minter: Minter,
    /// This server's access tokens and (when configured) legacy ones, each
    /// verified once and then answered from a bounded cache until it
    /// expires.
    verifier: CachingVerifier,
    /// Tokens in the legacy format, when configured.
    legacy_verifier: Option<CachingVerifier>,
    refresh_verifier: Verifier,
    /// Build credentials: tokens of their own audience, whose grants are
    /// the build principal's whole policy.
    build_minter: Minter,
    build_verifier: Verifier,
    /// Who started each build (build id → subject): owners may pull
    /// `builds/<id>` through the server's own routes.
    build_owners: std::sync::RwLock<HashMap<String, String>>,
    /// Builds running now: only their credentials are taken.
    running_builds: std::sync::RwLock<std::collections::HashSet<String>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    failures_total: std::sync::atomic::AtomicU64,
    /// The server's own credential (an admin), for copies into itself; in
    /// memory only, new at every start.
    internal_password: String,
    internal_sha256: [u8; 32],
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

pub(crate) fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(b)
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `user:password` from the base64 of Basic credentials.
fn decode_basic(b64: &str) -> Option<(String, String)> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Pull, push and delete.
fn all_actions() -> Actions {
    Actions::NONE
        .with(Action::Pull)
        .with(Action::Push)
        .with(Action::Delete)
}

/// Pull alone.
fn pull() -> Actions {
    Actions::NONE.with(Action::Pull)
}

/// A tenant's policy: its own namespaces, pull on the global cache and the
/// mirror namespace, and what anyone may pull.
fn tenant_policy(t: &str, mirror_prefix: &str, anonymous: &[Permission]) -> Arc<[Permission]> {
    let perm = |pattern: String, actions| {
        pattern
            .parse::<RepositoryPattern>()
            .ok()
            .map(|p| Permission::new(p, actions))
    };
    [
        perm(t.to_owned(), all_actions()),
        perm(format!("{t}/*"), all_actions()),
        perm(format!("cache/{t}"), all_actions()),
        perm(format!("cache/{t}/*"), all_actions()),
        perm("cache/global/*".into(), pull()),
        perm(format!("{mirror_prefix}/*"), pull()),
    ]
    .into_iter()
    .flatten()
    .chain(anonymous.iter().cloned())
    .collect()
}

/// The `Authorization` header, when it is text.
fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The token of an `Authorization: Bearer` value.
fn bearer(value: &str) -> Option<&str> {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// Equality that takes the same time wherever the first difference is.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// Loads or creates the signing key and the admin credential under
    /// `auth_dir`. A new admin password is printed once, to stderr.
    pub(crate) fn open(config: &Config, auth_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(auth_dir)?;
        let key_path = auth_dir.join("token-signing.key");
        let secret = match std::fs::read(&key_path) {
            Ok(k) if k.len() >= 32 => k,
            _ => {
                let k = random_bytes::<32>()?;
                super::write_atomically(&key_path, &k, 0o600)?;
                k.to_vec()
            }
        };
        let admin_path = auth_dir.join("admin.sha256");
        let admin_sha256 = match std::fs::read_to_string(&admin_path)
            .ok()
            .and_then(|s| hex32(&s))
        {
            Some(h) => h,
            None => {
                let password =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
                let hash = sha256_hex(password.as_bytes());
                super::write_atomically(&admin_path, hash.as_bytes(), 0o600)?;
                eprintln!(
                    "kiln: new admin credential (shown once, only its hash is kept in {}):\n  username: admin\n  password: {password}",
                    admin_path.display()
                );
                hex32(&hash).context("hash")?
            }
        };
        let key = SigningKey::hs256(&secret)?.with_kid("kiln-1");
        let mut keys = KeySet::new();
        keys.insert(key.verifying_key()?)?;
        let ttl = Duration::from_secs(config.token_ttl_secs);
        let refresh_audience = format!("{}/refresh", config.service);
        let build_audience = format!("{}/build", config.service);
        let tenants = config
            .tenants
            .iter()
            .filter_map(|t| Some((t.name.clone(), hex32(&t.password_sha256)?)))
            .collect();
        let internal_password =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
        let anonymous: Vec<Permission> = config
            .anonymous_pull
            .iter()
            .map(|p| Permission::new(p.clone(), pull()))
            .collect();
        Ok(Self {
            open: config.open,
            service: config.service.clone(),
            realm: format!("{}/token", config.public_url()),
            ttl,
            admin_sha256,
            tenants,
            admin_policy: Arc::from([Permission::new(RepositoryPattern::Any, all_actions())]),
            tenant_policies: config
                .tenants
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        tenant_policy(&t.name, &config.mirror_prefix, &anonymous),
                    )
                })
                .collect(),
            anonymous: anonymous.into(),
            minter: Minter::new(key.clone(), "kiln", &config.service).max_ttl(ttl),
            refresh_minter: Minter::new(key.clone(), "kiln", &refresh_audience)
                .max_ttl(REFRESH_TTL),
            build_minter: Minter::new(key, "kiln", &build_audience).max_ttl(BUILD_TOKEN_MAX_TTL),
            build_verifier: Verifier::new(&keys, "kiln", &build_audience),
            build_owners: std::sync::RwLock::new(HashMap::new()),
            running_builds: std::sync::RwLock::new(std::collections::HashSet::new()),
            verifier: CachingVerifier::new(
                Verifier::new(&keys, "kiln", &config.service),
                TOKEN_CACHE,
            ),
            legacy_verifier: match &config.legacy_tokens {
                Some(l) => {
                    let secret = std::fs::read(&l.secret_file)
                        .with_context(|| format!("reading {}", l.secret_file.display()))?;
                    let secret = secret.strip_suffix(b"\n").unwrap_or(&secret);
                    let mut legacy = KeySet::new();
                    legacy.insert(VerifyingKey::legacy_hs256(secret)?)?;
                    Some(CachingVerifier::new(
                        Verifier::new(&legacy, &l.issuer, &config.service),
                        TOKEN_CACHE,
                    ))
                }
                None => None,
            },
            refresh_verifier: Verifier::new(&keys, "kiln", &refresh_audience),
            failures: Mutex::new(HashMap::new()),
            failures_total: std::sync::atomic::AtomicU64::new(0),
            internal_sha256: Sha256::digest(internal_password.as_bytes()).into(),
            internal_password,
        })
    }

    /// What a principal may do.
    pub(crate) fn policy(&self, p: &Principal) -> Arc<[Permission]> {
        match p {
            Principal::Admin => self.admin_policy.clone(),
            Principal::Tenant(t) => self
                .tenant_policies
                .get(t)
                .cloned()
                .unwrap_or_else(|| self.anonymous.clone()),
            Principal::Anonymous => self.anonymous.clone(),
            Principal::Build { policy, .. } => policy.clone(),
        }
    }

    fn rate_limited(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else { return false };
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&ip)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    /// Refused credentials and tokens since start.
    pub(crate) fn failures_total(&self) -> u64 {
        self.failures_total
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn record_failure(&self, ip: Option<IpAddr>) {
        self.failures_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(ip) = ip else { return };
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            map.clear();
        }
        let e = map.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= FAILURE_WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
        tracing::warn!(client = %ip, failures = e.0, "bad credentials");
    }

    /// Checks a username and password.
    ///
    /// # Errors
    ///
    /// `TooManyRequests` when the address failed too often, `Unauthorized`
    /// for wrong credentials.
    pub(crate) fn login(
        &self,
        user: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<Principal, Error> {
        if self.rate_limited(ip) {
            return Err(Error::TooManyRequests);
        }
        if user == BUILD_USER {
            return self.build_principal(password).ok_or_else(|| {
                self.record_failure(ip);
                Error::Unauthorized
            });
        }
        let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let ok = match user {
            "admin" => same(&given, &self.admin_sha256).then_some(Principal::Admin),
            INTERNAL_USER => same(&given, &self.internal_sha256).then_some(Principal::Admin),
            t => self
                .tenants
                .get(t)
                .filter(|h| same(&given, h))
                .map(|_| Principal::Tenant(t.to_owned())),
        };
        ok.ok_or_else(|| {
            self.record_failure(ip);
            Error::Unauthorized
        })
    }

    /// The principal of `Authorization: Basic`, anonymous without one.
    pub(crate) fn basic(
        &self,
        headers: &HeaderMap,
        ip: Option<IpAddr>,
    ) -> Result<Principal, Error> {
        let Some(v) = authorization(headers) else {
            return Ok(Principal::Anonymous);
        };
        let Some(b64) = v
            .strip_prefix("Basic ")
            .or_else(|| v.strip_prefix("basic "))
        else {
            return Err(Error::Unauthorized);
        };
        let (user, password) = decode_basic(b64).ok_or(Error::Unauthorized)?;
        self.login(&user, &password, ip)
    }

    /// An access token for `principal` with what it may have of `scopes`
    /// (the catalog, filtered by the principal's policy, needs no grant
    /// beyond a named principal). Returns the token and its lifetime.
    pub(crate) fn issue(
        &self,
        principal: &Principal,
        scopes: &[Scope],
    ) -> Result<(String, Duration), Error> {
        let policy = self.policy(principal);
        let permissions = grant(scopes, &policy);
        let token = self
            .minter
            .mint(&MintRequest {
                subject: principal.subject(),
                permissions,
                ttl: self.ttl,
                build_id: None,
            })
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        Ok((token, self.ttl))
    }

    /// A refresh token for `principal` (OAuth2 `access_type=offline`).
    pub(crate) fn refresh_token(&self, principal: &Principal) -> Result<String, Error> {
        self.refresh_minter
            .mint(&MintRequest {
                subject: principal.subject(),
                permissions: Vec::new(),
                ttl: REFRESH_TTL,
                build_id: None,
            })
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))
    }

    /// A build's credential (the password of [`BUILD_USER`]): a token of
    /// the build audience granting `permissions`, for `ttl`.
    pub(crate) fn build_credential(
        &self,
        id: &str,
        permissions: Vec<Permission>,
        ttl: Duration,
    ) -> Result<String, Error> {
        self.build_minter
            .mint(&MintRequest {
                subject: format!("build:{id}"),
                permissions,
                ttl,
                build_id: Some(id.to_owned()),
            })
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))
    }

    /// The build principal of a build credential still valid: unexpired,
    /// and its build running (a credential dies with its build).
    fn build_principal(&self, credential: &str) -> Option<Principal> {
        let claims = self.build_verifier.verify(credential).ok()?;
        let id = claims.build_id?;
        let running = self
            .running_builds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id);
        running.then(|| Principal::Build {
            id,
            policy: claims.permissions.into(),
        })
    }

    /// Marks build `id` running (its credential taken) or not.
    pub(crate) fn set_build_running(&self, id: &str, running: bool) {
        let mut set = self
            .running_builds
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if running {
            set.insert(id.to_owned());
        } else {
            set.remove(id);
        }
    }

    /// Records who started build `id`.
    pub(crate) fn set_build_owner(&self, id: &str, owner: String) {
        self.build_owners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), owner);
    }

    /// Whether `principal` started the build whose result `repo` is.
    fn owns_build(&self, principal: &Principal, repo: &RepositoryName) -> bool {
        let Some(id) = repo.as_str().strip_prefix("builds/") else {
            return false;
        };
        self.build_owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some_and(|owner| *owner == principal.subject())
    }

    /// A token's claims: this server's tokens, or legacy-format ones when
    /// configured.
    fn verify(&self, token: &str) -> Result<Arc<Claims>, kiln_registry_token::Error> {
        match (self.verifier.verify(token), &self.legacy_verifier) {
            (Ok(c), _) => Ok(c),
            (Err(e), Some(legacy)) => legacy.verify(token).map_err(|_| e),
            (Err(e), None) => Err(e),
        }
    }

    /// The principal a token was issued to: only this server's own tokens
    /// name one (a legacy token's subject is no principal, whatever it says).
    fn principal_of_claims(&self, claims: &Claims) -> Option<Principal> {
        if claims.format != TokenFormat::Docker {
            return None;
        }
        self.principal_of(claims.subject.as_deref())
    }

    /// The principal a token's subject names, if it is one of this
    /// server's (a tenant still configured).
    pub(crate) fn principal_of(&self, subject: Option<&str>) -> Option<Principal> {
        match subject? {
            "admin" => Some(Principal::Admin),
            "anonymous" => Some(Principal::Anonymous),
            s => s
                .strip_prefix("tenant:")
                .filter(|t| self.tenants.contains_key(*t))
                .map(|t| Principal::Tenant(t.to_owned())),
        }
    }

    /// The principal a refresh token was issued to (still configured).
    pub(crate) fn redeem_refresh(&self, token: &str) -> Result<Principal, Error> {
        let claims = self
            .refresh_verifier
            .verify(token)
            .map_err(|_| Error::Unauthorized)?;
        match self.principal_of(claims.subject.as_deref()) {
            Some(Principal::Anonymous) | None => Err(Error::Unauthorized),
            Some(p) => Ok(p),
        }
    }

    /// The server's own admin credential (user, password), for copies into
    /// itself.
    pub(crate) fn internal_credentials(&self) -> (String, String) {
        (INTERNAL_USER.to_owned(), self.internal_password.clone())
    }

    /// Passes only the admin (Basic credentials, or a token issued to the
    /// admin).
    ///
    /// # Errors
    ///
    /// `Unauthorized` without (valid) credentials, `Denied` for anyone
    /// else, `TooManyRequests` after too many failures.
    pub(crate) fn require_admin(
        &self,
        headers: &HeaderMap,
        ip: Option<IpAddr>,
    ) -> Result<(), Error> {
        if authorization(headers).is_none() {
            return Err(Error::Unauthorized);
        }
        match self.principal(headers, ip)? {
            Principal::Admin => Ok(()),
            _ => Err(Error::Denied),
        }
    }

    /// Whether `principal`'s policy allows `action` on `repo`.
    pub(crate) fn policy_allows(
        &self,
        principal: &Principal,
        repo: &RepositoryName,
        action: Action,
    ) -> bool {
        policy_allows(&self.policy(principal), repo, action)
            || (action == Action::Pull && self.owns_build(principal, repo))
    }

    /// Who the request's credentials (Basic, or a token this server issued)
    /// name; anonymous without credentials.
    ///
    /// # Errors
    ///
    /// `Unauthorized` for bad credentials, `Denied` for a token that names
    /// no principal of this server, `TooManyRequests` after failures.
    pub(crate) fn principal(
        &self,
        headers: &HeaderMap,
        ip: Option<IpAddr>,
    ) -> Result<Principal, Error> {
        match authorization(headers).and_then(bearer) {
            Some(token) => {
                let claims = self
                    .verify_counted(token)
                    .map_err(|_| Error::Unauthorized)?;
                self.principal_of_claims(&claims).ok_or(Error::Denied)
            }
            None => self.basic(headers, ip),
        }
    }

    /// Verifies a token, counting and logging a refusal.
    fn verify_counted(&self, token: &str) -> Result<Arc<Claims>, kiln_registry_token::Error> {
        self.verify(token).inspect_err(|e| {
            tracing::info!(error = %e, "token refused");
            self.failures_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
    }

    /// The service name (token audience).
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    fn challenge(&self, needs: &[Need], error: Option<ChallengeError>) -> String {
        let mut by_repo: Vec<(RepositoryName, Actions)> = Vec::new();
        let mut scopes = Vec::new();
        for n in needs {
            match n {
                Need::Repository(r, a) | Need::Wanted(r, a) => {
                    let wanted = match a {
                        Action::Push => Actions::NONE.with(Action::Pull).with(Action::Push),
                        other => Actions::NONE.with(*other),
                    };
                    match by_repo.iter_mut().find(|(x, _)| x == r) {
                        Some((_, acts)) => *acts = acts.union(wanted),
                        None => by_repo.push((r.clone(), wanted)),
                    }
                }
                Need::Catalog => {
                    if let Ok(s) = "registry:catalog:*".parse() {
                        scopes.push(s);
                    }
                }
                _ => {}
            }
        }
        scopes.extend(by_repo.iter().map(|(r, a)| Scope::repository(r, *a)));
        Challenge {
            realm: self.realm.clone(),
            service: Some(self.service.clone()),
            scopes,
            error,
        }
        .to_string()
    }

    fn deny(&self, needs: &[Need], error: Error, why: Option<ChallengeError>) -> Denial {
        let challenge = matches!(error, Error::Unauthorized).then(|| self.challenge(needs, why));
        Denial { error, challenge }
    }
}

/// Access for the internal loopback listener that copies into this server
/// use: only the server's own credential, as Basic auth.
#[derive(Debug)]
pub(crate) struct InternalAccess {
    sha256: [u8; 32],
}

impl InternalAccess {
    pub(crate) fn new(auth: &Auth) -> Self {
        Self {
            sha256: auth.internal_sha256,
        }
    }
}

impl Access for InternalAccess {
    type Grant = Allowed;

    fn authorize(&self, request: Request<'_>, _needs: &[Need]) -> Result<Allowed, Denial> {
        let ok = authorization(request.headers)
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(decode_basic)
            .is_some_and(|(user, password)| {
                user == INTERNAL_USER
                    && same(&Sha256::digest(password.as_bytes()).into(), &self.sha256)
            });
        if ok {
            Ok(Allowed::Everything)
        } else {
            Err(Denial {
                error: Error::Unauthorized,
                challenge: Some("Basic realm=\"kiln-internal\"".into()),
            })
        }
    }
}

/// The response to a refused request on a non-registry route: the error
/// body, and a Basic challenge for a 401.
pub(crate) fn basic_refusal(e: &Error) -> axum::response::Response {
    let mut r = kiln_registry::api::error_response(e);
    if matches!(e, Error::Unauthorized) {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"kiln\""),
        );
    }
    r
}

/// What an authorized request may do.
#[derive(Debug)]
pub(crate) enum Allowed {
    Everything,
    /// A token's grants, and the policy of the principal it was issued to
    /// (for what the request can use but does not need: mount sources, the
    /// catalog). Tokens minted elsewhere (build tokens) name no principal
    /// and have only their grants.
    Claims(Arc<Claims>, Arc<[Permission]>),
    Policy(Arc<[Permission]>),
}

fn policy_allows(policy: &[Permission], repo: &RepositoryName, action: Action) -> bool {
    policy
        .iter()
        .any(|p| p.pattern.matches(repo) && p.actions.contains(action))
}

impl Allowed {
    /// Whether the credentials themselves grant `action` on `repo`.
    fn allows_exactly(&self, repo: &RepositoryName, action: Action) -> bool {
        match self {
            Self::Everything => true,
            Self::Claims(c, _) => c.authorize(repo, action).is_ok(),
            Self::Policy(p) => policy_allows(p, repo, action),
        }
    }
}

impl Grant for Allowed {
    fn allows(&self, repo: &RepositoryName, action: Action) -> bool {
        self.allows_exactly(repo, action)
            || matches!(self, Self::Claims(_, p) if policy_allows(p, repo, action))
    }
}

impl Access for Auth {
    type Grant = Allowed;

    fn authorize(&self, request: Request<'_>, needs: &[Need]) -> Result<Allowed, Denial> {
        if self.open {
            return Ok(Allowed::Everything);
        }
        let auth = authorization(request.headers);
        // `/v2/` needs credentials, any valid ones; the catalog a principal
        // other than anonymous (it is filtered by what the credentials
        // allow); repositories need grants.
        let covers = |g: &Allowed, authenticated: bool, anonymous: bool| {
            needs.iter().all(|n| match n {
                Need::Base => authenticated,
                Need::Catalog => authenticated && !anonymous,
                Need::Repository(r, a) => g.allows_exactly(r, *a),
                Need::Wanted(..) => true,
                _ => false,
            })
        };
        match (auth, auth.and_then(bearer)) {
            (_, Some(token)) => {
                let claims = self.verify_counted(token).map_err(|_| {
                    self.deny(
                        needs,
                        Error::Unauthorized,
                        Some(ChallengeError::InvalidToken),
                    )
                })?;
                // A build's access tokens end with its build, like its
                // credential.
                if let Some(build) = claims
                    .subject
                    .as_deref()
                    .and_then(|s| s.strip_prefix("build:"))
                    && !self
                        .running_builds
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains(build)
                {
                    return Err(self.deny(
                        needs,
                        Error::Unauthorized,
                        Some(ChallengeError::InvalidToken),
                    ));
                }
                let principal = self.principal_of_claims(&claims);
                let anonymous = principal == Some(Principal::Anonymous);
                let policy = principal.map_or_else(|| Arc::from([]), |p| self.policy(&p));
                let g = Allowed::Claims(claims, policy);
                if covers(&g, true, anonymous) {
                    Ok(g)
                } else {
                    Err(self.deny(
                        needs,
                        Error::Unauthorized,
                        Some(ChallengeError::InsufficientScope),
                    ))
                }
            }
            (Some(_), None) => {
                let p = self
                    .basic(request.headers, request.peer)
                    .map_err(|e| self.deny(needs, e, None))?;
                let g = Allowed::Policy(self.policy(&p));
                let anonymous = p == Principal::Anonymous;
                if covers(&g, !anonymous, anonymous) {
                    Ok(g)
                } else {
                    Err(self.deny(needs, Error::Denied, None))
                }
            }
            (None, _) => {
                let g = Allowed::Policy(self.anonymous.clone());
                if covers(&g, false, true) {
                    Ok(g)
                } else {
                    Err(self.deny(needs, Error::Unauthorized, None))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_credential_works_only_while_its_build_runs_and_only_for_its_grants() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::open(&Config::default(), dir.path()).unwrap();
        let grants = vec![Permission::new("builds/b1".parse().unwrap(), all_actions())];
        let credential = auth
            .build_credential("b1", grants, Duration::from_secs(60))
            .unwrap();
        assert!(
            auth.login(BUILD_USER, &credential, None).is_err(),
            "not running yet"
        );
        auth.set_build_running("b1", true);
        let p = auth.login(BUILD_USER, &credential, None).unwrap();
        assert_eq!(p.subject(), "build:b1");
        let own: RepositoryName = "builds/b1".parse().unwrap();
        let other: RepositoryName = "builds/b2".parse().unwrap();
        assert!(auth.policy_allows(&p, &own, Action::Push));
        assert!(!auth.policy_allows(&p, &other, Action::Pull));
        // Not a refresh token, not another audience's token.
        assert!(auth.redeem_refresh(&credential).is_err());
        let refresh = auth.refresh_token(&Principal::Admin).unwrap();
        assert!(auth.login(BUILD_USER, &refresh, None).is_err());
        auth.set_build_running("b1", false);
        assert!(
            auth.login(BUILD_USER, &credential, None).is_err(),
            "ended with its build"
        );
    }
}
