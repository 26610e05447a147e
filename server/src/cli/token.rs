//! `kiln token mint | verify | key-id`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::parse_duration;
use kiln_registry_token::{
    KeySet, MintRequest, Minter, Permission, SigningKey, Verifier, VerifyingKey, libtrust_key_id,
};

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Mint a registry token and print it.
    Mint(MintArgs),
    /// Verify a token and print its claims as JSON.
    Verify(VerifyArgs),
    /// Print the libtrust key ID CNCF distribution expects for a public key.
    KeyId {
        /// Public key (PEM, SubjectPublicKeyInfo).
        public_key: PathBuf,
    },
}

/// Where the key comes from.
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub(crate) struct KeySource {
    /// File holding the HS256 shared secret (trailing whitespace ignored).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Key file: a private key PEM to mint; a public or private key PEM, or
    /// a JWKS document, to verify.
    #[arg(long, conflicts_with = "secret_file")]
    key: Option<PathBuf>,
    /// Verify: file holding the secret of legacy-format tokens
    /// (`{build_id, repos, scope}`); such a key verifies nothing else.
    #[arg(long)]
    legacy_secret_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct MintArgs {
    #[command(flatten)]
    source: KeySource,
    /// Key ID written into the token header.
    #[arg(long, conflicts_with = "libtrust_kid")]
    kid: Option<String>,
    /// Use distribution's libtrust key ID of the key (P-256, Ed25519).
    #[arg(long)]
    libtrust_kid: bool,
    /// `iss`.
    #[arg(long)]
    issuer: String,
    /// `aud`: the registry's service name.
    #[arg(long)]
    audience: String,
    /// A grant `PATTERN:ACTIONS` (repeatable), e.g. `cache/global/*:pull`.
    #[arg(long = "access", value_name = "PATTERN:ACTIONS", required = true)]
    access: Vec<Permission>,
    /// Lifetime: `90s`, `10m`, `1h` or seconds.
    #[arg(long, value_parser = parse_duration)]
    ttl: Duration,
    /// Longest lifetime allowed.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    max_ttl: Duration,
    /// The build the token is for.
    #[arg(long)]
    build_id: Option<String>,
    /// `sub` (default: `build-{build-id}`, else `kiln`).
    #[arg(long)]
    subject: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The token (`-` for standard input).
    token: String,
    #[command(flatten)]
    source: KeySource,
    /// Key ID of a single PEM key (tokens must name it).
    #[arg(long)]
    kid: Option<String>,
    /// Expected `iss`.
    #[arg(long)]
    issuer: String,
    /// Expected `aud`.
    #[arg(long)]
    audience: String,
    /// Clock leeway for exp/nbf/iat.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    leeway: Duration,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut s = read(path)?;
    while s.last().is_some_and(u8::is_ascii_whitespace) {
        s.pop();
    }
    Ok(s)
}

fn signing_key(args: &MintArgs) -> anyhow::Result<SigningKey> {
    if args.source.legacy_secret_file.is_some() {
        bail!("legacy-format tokens are verified, never minted");
    }
    let key = match (&args.source.secret_file, &args.source.key) {
        (Some(f), _) => SigningKey::hs256(&secret(f)?)?,
        (None, Some(k)) => {
            SigningKey::from_pem(&read(k)?).with_context(|| format!("loading {}", k.display()))?
        }
        (None, None) => bail!("give --secret-file or --key"),
    };
    Ok(match (&args.kid, args.libtrust_kid) {
        (Some(k), _) => key.with_kid(k.clone()),
        (None, true) => key.with_libtrust_kid()?,
        (None, false) => key,
    })
}

fn key_set(args: &VerifyArgs) -> anyhow::Result<KeySet> {
    let key = match (&args.source.secret_file, &args.source.key) {
        (Some(f), _) => Some(VerifyingKey::hs256(&secret(f)?)?),
        (None, Some(k)) => {
            let bytes = read(k)?;
            if bytes.trim_ascii_start().starts_with(b"{") {
                let text = String::from_utf8(bytes).context("JWKS is not UTF-8")?;
                let mut set =
                    KeySet::from_jwks(&text).with_context(|| format!("loading {}", k.display()))?;
                if let Some(f) = &args.source.legacy_secret_file {
                    set.insert(VerifyingKey::legacy_hs256(&secret(f)?)?)?;
                }
                return Ok(set);
            }
            let text = String::from_utf8_lossy(&bytes);
            Some(if text.contains("PRIVATE KEY-----") {
                SigningKey::from_pem(&bytes)?.verifying_key()?
            } else {
                VerifyingKey::from_public_pem(&bytes)
                    .with_context(|| format!("loading {}", k.display()))?
            })
        }
        (None, None) => None,
    };
    let mut set = KeySet::new();
    if let Some(key) = key {
        set.insert(match &args.kid {
            Some(k) => key.with_kid(k.clone()),
            None => key,
        })?;
    }
    if let Some(f) = &args.source.legacy_secret_file {
        set.insert(VerifyingKey::legacy_hs256(&secret(f)?)?)?;
    }
    Ok(set)
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Mint(args) => {
            let key = signing_key(&args)?;
            let subject = args.subject.clone().unwrap_or_else(|| {
                args.build_id
                    .as_ref()
                    .map_or_else(|| "kiln".to_owned(), |b| format!("build-{b}"))
            });
            let minter = Minter::new(key, &args.issuer, &args.audience).max_ttl(args.max_ttl);
            let token = minter.mint(&MintRequest {
                subject,
                permissions: args.access,
                ttl: args.ttl,
                build_id: args.build_id,
            })?;
            println!("{token}");
            Ok(())
        }
        Command::Verify(args) => {
            let keys = key_set(&args)?;
            let mut token = args.token.clone();
            if token == "-" {
                token.clear();
                std::io::stdin().read_to_string(&mut token)?;
            }
            let verifier = Verifier::new(&keys, &args.issuer, &args.audience).leeway(args.leeway);
            let claims = verifier.verify(token.trim()).context("token refused")?;
            println!("{}", serde_json::to_string_pretty(&claims)?);
            Ok(())
        }
        Command::KeyId { public_key } => {
            let pem = String::from_utf8(read(&public_key)?).context("PEM is not UTF-8")?;
            let b64: String = pem
                .lines()
                .skip_while(|l| !l.starts_with("-----BEGIN PUBLIC KEY-----"))
                .skip(1)
                .take_while(|l| !l.starts_with("-----END"))
                .collect();
            use base64::Engine;
            let der = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .context("not a PUBLIC KEY PEM")?;
            if der.is_empty() {
                bail!("{}: no PUBLIC KEY block", public_key.display());
            }
            println!("{}", libtrust_key_id(&der));
            Ok(())
        }
    }
}
