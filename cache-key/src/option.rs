//! BuildKit cache options: `type=<backend>,key=value,...`, typed where
//! BuildKit gives a value a type, preserved in order where it does not.

use std::fmt;
use std::str::FromStr;

use crate::csv;

/// A BuildKit cache backend: the `type=` of a cache option.
///
/// Only the six backends BuildKit documents are accepted; any other
/// `type=` is rejected with [`OptionErrorKind::UnknownBackend`] instead of
/// being kept as an opaque string, because:
///
/// - BuildKit itself fails a build with `unknown cache exporter` for a type
///   it has no resolver for, so an unknown type is an error either way, and
///   catching it when the option is parsed points at the right place;
/// - this crate validates attributes per backend, which it cannot do for a
///   backend it does not know;
/// - an `Other(String)` variant would make `Other("registry")` and
///   `Registry` two values for one backend.
///
/// The enum is `#[non_exhaustive]`, so a backend BuildKit adds later can be
/// added here without breaking callers.
///
/// The attributes listed per variant are the ones the Docker documentation
/// ("Cache storage backends") and BuildKit's `cache/remotecache` sources
/// define. Values of typed attributes are checked on parse (see
/// [`CacheOption`]); any other attribute is kept as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Backend {
    /// `registry`: a separate cache image. `ref`, `mode`, `oci-mediatypes`,
    /// `image-manifest`, `compression`, `compression-level`,
    /// `force-compression`, `ignore-error`, `registry.insecure`.
    Registry,
    /// `inline`: cache metadata inside the pushed image. No attributes.
    Inline,
    /// `local`: an OCI layout directory. `src`, `digest` (import), `dest`,
    /// `mode`, `oci-mediatypes`, `image-manifest`, `compression`,
    /// `compression-level`, `force-compression`, `ignore-error` (export).
    Local,
    /// `gha`: the GitHub Actions cache. `url`, `url_v2`, `token`, `scope`,
    /// `timeout`, `version`, `mode`, `ignore-error`, `repository`,
    /// `ghtoken`.
    Gha,
    /// `s3`: an S3 bucket. `region`, `bucket`, `name`, `endpoint_url`,
    /// `prefix`, `blobs_prefix`, `manifests_prefix`, `upload_parallelism`,
    /// `touch_refresh`, `use_path_style`, `access_key_id`,
    /// `secret_access_key`, `session_token`, `disable_accept_encoding`,
    /// `retry_mode`, `retry_max_attempts`, `mode`, `ignore-error`.
    S3,
    /// `azblob`: Azure Blob Storage. `name`, `account_url`, `account_name`,
    /// `secret_access_key`, `container`, `prefix`, `blobs_prefix`,
    /// `manifests_prefix`, `mode`, `ignore-error`.
    Azblob,
}

impl Backend {
    /// Every backend, in documentation order.
    pub const ALL: [Self; 6] = [
        Self::Registry,
        Self::Inline,
        Self::Local,
        Self::Gha,
        Self::S3,
        Self::Azblob,
    ];

    /// The `type=` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registry => "registry",
            Self::Inline => "inline",
            Self::Local => "local",
            Self::Gha => "gha",
            Self::S3 => "s3",
            Self::Azblob => "azblob",
        }
    }

    /// The attribute names BuildKit documents for this backend.
    pub fn known_attributes(self) -> impl Iterator<Item = &'static str> {
        self.specs().iter().map(|s| s.key)
    }

    fn specs(self) -> &'static [Spec] {
        match self {
            Self::Registry => REGISTRY,
            Self::Inline => &[],
            Self::Local => LOCAL,
            Self::Gha => GHA,
            Self::S3 => S3,
            Self::Azblob => AZBLOB,
        }
    }

    fn spec(self, key: &str) -> Option<&'static Spec> {
        self.specs().iter().find(|s| s.key == key)
    }
}

impl FromStr for Backend {
    type Err = OptionError;

    /// The exact, lower-case `type=` value (BuildKit matches it exactly).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| OptionError::new(s, None, OptionErrorKind::UnknownBackend(s.to_owned())))
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `mode=`: which layers a cache export includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheMode {
    /// Only the layers of the result image (BuildKit's default).
    Min,
    /// Every layer of every stage.
    Max,
}

impl CacheMode {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Min => "min",
            Self::Max => "max",
        }
    }
}

impl fmt::Display for CacheMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `compression=`: the layer compression of an exported cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CompressionType {
    /// `uncompressed`.
    Uncompressed,
    /// `gzip` (BuildKit's default; levels 0..=9).
    Gzip,
    /// `estargz` (gzip-based, lazily pullable; levels 0..=9).
    Estargz,
    /// `zstd` (levels 0..=22).
    Zstd,
    /// `zstd:chunked` (zstd with a table of contents; levels 0..=22). Only
    /// recent BuildKit releases know it; older daemons reject it.
    ZstdChunked,
}

impl CompressionType {
    /// Every algorithm.
    pub const ALL: [Self; 5] = [
        Self::Uncompressed,
        Self::Gzip,
        Self::Estargz,
        Self::Zstd,
        Self::ZstdChunked,
    ];

    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uncompressed => "uncompressed",
            Self::Gzip => "gzip",
            Self::Estargz => "estargz",
            Self::Zstd => "zstd",
            Self::ZstdChunked => "zstd:chunked",
        }
    }

    /// The highest `compression-level` the algorithm accepts (the lowest is
    /// 0), per the Docker exporter documentation: 9 for `gzip` and
    /// `estargz` (Go's `compress/gzip`), 22 for `zstd`. `None` for
    /// `uncompressed`, which takes no level.
    pub fn max_level(self) -> Option<u8> {
        match self {
            Self::Uncompressed => None,
            Self::Gzip | Self::Estargz => Some(9),
            Self::Zstd | Self::ZstdChunked => Some(MAX_LEVEL),
        }
    }
}

impl FromStr for CompressionType {
    type Err = OptionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                OptionError::new(s, None, invalid_value(COMPRESSION, s, Kind::Compression))
            })
    }
}

impl fmt::Display for CompressionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `compression-level` range BuildKit documents for the attribute.
const MAX_LEVEL: u8 = 22;

const MODE: &str = "mode";
const IGNORE_ERROR: &str = "ignore-error";
const COMPRESSION: &str = "compression";
const COMPRESSION_LEVEL: &str = "compression-level";
const FORCE_COMPRESSION: &str = "force-compression";

/// How a known attribute's value is checked and normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Any string.
    Str,
    /// Go `strconv.ParseBool`; stored as `true`/`false`.
    Bool,
    /// As [`Kind::Bool`], and empty means `true` (`force-compression`).
    BoolEmptyTrue,
    /// `min` or `max`.
    Mode,
    /// A [`CompressionType`].
    Compression,
    /// Go `strconv.ParseInt` in 0..=22; stored in decimal.
    Level,
    /// Go `strconv.Atoi`, at least 1; stored in decimal.
    PositiveInt,
    /// Go `time.ParseDuration` syntax; stored as written.
    Duration,
    /// `standard` or `adaptive` (S3 `retry_mode`).
    RetryMode,
}

impl Kind {
    fn expected(self) -> &'static str {
        match self {
            Self::Str => "a string",
            Self::Bool | Self::BoolEmptyTrue => "a boolean (true or false)",
            Self::Mode => "min or max",
            Self::Compression => "one of uncompressed, gzip, estargz, zstd, zstd:chunked",
            Self::Level => "an integer in 0..=22",
            Self::PositiveInt => "a positive integer",
            Self::Duration => "a Go duration such as 90s or 1h30m",
            Self::RetryMode => "standard or adaptive",
        }
    }

    /// The normalised value, or `None` when invalid.
    fn normalise(self, value: &str) -> Option<String> {
        match self {
            Self::Str => Some(value.to_owned()),
            Self::Bool => go_parse_bool(value).map(|b| b.to_string()),
            Self::BoolEmptyTrue if value.is_empty() => Some("true".to_owned()),
            Self::BoolEmptyTrue => go_parse_bool(value).map(|b| b.to_string()),
            Self::Mode => matches!(value, "min" | "max").then(|| value.to_owned()),
            Self::Compression => CompressionType::ALL
                .into_iter()
                .any(|c| c.as_str() == value)
                .then(|| value.to_owned()),
            Self::Level => value
                .parse::<i64>()
                .ok()
                .filter(|l| (0..=i64::from(MAX_LEVEL)).contains(l))
                .map(|l| l.to_string()),
            Self::PositiveInt => value
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .map(|n| n.to_string()),
            Self::Duration => is_go_duration(value).then(|| value.to_owned()),
            Self::RetryMode => matches!(value, "standard" | "adaptive").then(|| value.to_owned()),
        }
    }
}

/// A known attribute.
#[derive(Debug)]
struct Spec {
    key: &'static str,
    kind: Kind,
}

const fn spec(key: &'static str, kind: Kind) -> Spec {
    Spec { key, kind }
}

const REGISTRY: &[Spec] = &[
    spec("ref", Kind::Str),
    spec(MODE, Kind::Mode),
    spec("oci-mediatypes", Kind::Bool),
    spec("image-manifest", Kind::Bool),
    spec(COMPRESSION, Kind::Compression),
    spec(COMPRESSION_LEVEL, Kind::Level),
    spec(FORCE_COMPRESSION, Kind::BoolEmptyTrue),
    spec(IGNORE_ERROR, Kind::Bool),
    spec("registry.insecure", Kind::Bool),
];

const LOCAL: &[Spec] = &[
    spec("src", Kind::Str),
    spec("digest", Kind::Str),
    spec("dest", Kind::Str),
    spec(MODE, Kind::Mode),
    spec("oci-mediatypes", Kind::Bool),
    spec("image-manifest", Kind::Bool),
    spec(COMPRESSION, Kind::Compression),
    spec(COMPRESSION_LEVEL, Kind::Level),
    spec(FORCE_COMPRESSION, Kind::BoolEmptyTrue),
    spec(IGNORE_ERROR, Kind::Bool),
];

const GHA: &[Spec] = &[
    spec("url", Kind::Str),
    spec("url_v2", Kind::Str),
    spec("token", Kind::Str),
    spec("scope", Kind::Str),
    spec("timeout", Kind::Duration),
    spec("version", Kind::Str),
    spec(MODE, Kind::Mode),
    spec(IGNORE_ERROR, Kind::Bool),
    spec("repository", Kind::Str),
    spec("ghtoken", Kind::Str),
];

const S3: &[Spec] = &[
    spec("region", Kind::Str),
    spec("bucket", Kind::Str),
    spec("name", Kind::Str),
    spec("endpoint_url", Kind::Str),
    spec("prefix", Kind::Str),
    spec("blobs_prefix", Kind::Str),
    spec("manifests_prefix", Kind::Str),
    spec("upload_parallelism", Kind::PositiveInt),
    spec("touch_refresh", Kind::Duration),
    spec("use_path_style", Kind::Bool),
    spec("access_key_id", Kind::Str),
    spec("secret_access_key", Kind::Str),
    spec("session_token", Kind::Str),
    spec("disable_accept_encoding", Kind::Bool),
    spec("retry_mode", Kind::RetryMode),
    spec("retry_max_attempts", Kind::PositiveInt),
    spec(MODE, Kind::Mode),
    spec(IGNORE_ERROR, Kind::Bool),
];

const AZBLOB: &[Spec] = &[
    spec("name", Kind::Str),
    spec("account_url", Kind::Str),
    spec("account_name", Kind::Str),
    spec("secret_access_key", Kind::Str),
    spec("container", Kind::Str),
    spec("prefix", Kind::Str),
    spec("blobs_prefix", Kind::Str),
    spec("manifests_prefix", Kind::Str),
    spec(MODE, Kind::Mode),
    spec(IGNORE_ERROR, Kind::Bool),
];

/// One cache option: a backend and its attributes in order, e.g.
/// `type=registry,ref=reg:5000/cache/acme,mode=max`.
///
/// # Parsing
///
/// The text is one CSV record read as BuildKit reads it (see below), each
/// field `key=value` split at the first `=`. Then:
///
/// - keys are lower-cased (ASCII) as BuildKit does, and must be non-empty
///   and made of `[a-z0-9._:-]`: every BuildKit attribute is, and anything
///   else (`" ref"` after a stray space, an empty key) would be silently
///   ignored by BuildKit;
/// - exactly one `type=` naming a [`Backend`];
/// - no key twice: BuildKit keeps only the last, silently;
/// - values of the backend's typed attributes are checked and normalised:
///   booleans as Go's `strconv.ParseBool` (`1`, `t`, `TRUE`... stored as
///   `true`/`false`; an empty `force-compression` means `true` as in
///   BuildKit), `mode` is `min`/`max`, `compression` a
///   [`CompressionType`], `compression-level` an integer in 0..=22,
///   `upload_parallelism`/`retry_max_attempts` positive integers,
///   `timeout`/`touch_refresh` Go durations. BuildKit silently falls back to
///   a default for several of these (an unknown `mode` exports `min`, a bad
///   `use_path_style` is ignored), so catching them here matters;
/// - every other attribute, known string or unknown, is kept with its value
///   as written, in order.
///
/// Required attributes (`ref` for `registry`, `dest` for a `local`
/// export...) depend on the direction and on BuildKit's environment
/// fallbacks, so they are not checked. Nor is the per-algorithm level limit
/// (`gzip` stops at 9): the attribute's documented range is 0..=22, and
/// [`Compression`](crate::Compression) checks the algorithm's.
///
/// # CSV
///
/// Parsing follows Go's `encoding/csv` and BuildKit's current
/// `go-csvvalue` exactly where they agree: fields split at `,`; a field
/// starting with `"` is quoted, `""` in it is a quote, and its closing
/// quote must be followed by `,` or the end; a `"` in an unquoted field is
/// an error; one trailing `\n`/`\r\n` is ignored. Line breaks anywhere else
/// (where the two readers disagree) and NUL (which no argv item can carry)
/// are rejected, so values never contain CR, LF or NUL. Rendering quotes a
/// field exactly when Go's `csv.Writer` would (a `,` or `"` in it), so
/// either reader gets back the same fields, and `parse(render(x)) == x`.
///
/// # Credentials
///
/// `Debug` redacts the values of `token`, `ghtoken`, `secret_access_key`,
/// `session_token` and of any attribute whose name contains `token`,
/// `secret` or `password`. `Display` (the CSV text BuildKit needs) does
/// not.
///
/// ```
/// # fn main() -> Result<(), kiln_cache_key::OptionError> {
/// use kiln_cache_key::{Backend, CacheMode, CacheOption};
/// let o: CacheOption = "type=registry,ref=reg:5000/cache/acme,mode=max,IGNORE-ERROR=1,\"x-note=a,b\"".parse()?;
/// assert_eq!(o.backend(), Backend::Registry);
/// assert_eq!(o.mode(), Some(CacheMode::Max));
/// assert_eq!(o.flag("ignore-error"), Some(true));
/// assert_eq!(o.get("x-note"), Some("a,b"));
/// assert_eq!(
///     o.to_string(),
///     "type=registry,ref=reg:5000/cache/acme,mode=max,ignore-error=true,\"x-note=a,b\""
/// );
/// assert!("type=registry,mode=MAX".parse::<CacheOption>().is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheOption {
    backend: Backend,
    attrs: Vec<(String, String)>,
}

impl CacheOption {
    /// An option with no attributes.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            attrs: Vec::new(),
        }
    }

    /// Parses one option (see the type docs).
    ///
    /// # Errors
    ///
    /// [`OptionError`] with the 1-based byte column of the offending field
    /// (or quote) where there is one.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        let err = |column, kind| OptionError::new(input, column, kind);
        let fields = csv::split(input).map_err(|(col, kind)| err(Some(col), kind))?;
        let mut backend = None;
        let mut attrs: Vec<(String, &str, usize)> = Vec::with_capacity(fields.len());
        for (field, col) in &fields {
            let Some((key, value)) = field.split_once('=') else {
                return Err(err(
                    Some(*col),
                    OptionErrorKind::MissingEquals(field.clone()),
                ));
            };
            let key = check_key(key).map_err(|kind| err(Some(*col), kind))?;
            if key == "type" {
                if backend.is_some() {
                    return Err(err(Some(*col), OptionErrorKind::DuplicateKey(key)));
                }
                let b = value
                    .parse::<Backend>()
                    .map_err(|e| err(Some(*col), e.kind))?;
                backend = Some(b);
            } else {
                attrs.push((key, value, *col));
            }
        }
        let backend = backend.ok_or_else(|| err(None, OptionErrorKind::MissingType))?;
        let mut option = Self::new(backend);
        for (key, value, col) in attrs {
            option
                .insert(key, value, false)
                .map_err(|kind| err(Some(col), kind))?;
        }
        Ok(option)
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The attributes in order (without `type`), values normalised.
    pub fn attrs(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of an attribute (key compared after ASCII lower-casing).
    pub fn get(&self, key: &str) -> Option<&str> {
        let key = key.to_ascii_lowercase();
        self.attrs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Adds an attribute, checked as a parsed one would be.
    ///
    /// # Errors
    ///
    /// [`OptionErrorKind::InvalidKey`] (including `type`, which is the
    /// backend), [`OptionErrorKind::DuplicateKey`],
    /// [`OptionErrorKind::InvalidValue`], [`OptionErrorKind::LineBreak`] or
    /// [`OptionErrorKind::Nul`]; the error's input is `key=value`.
    pub fn with(mut self, key: &str, value: &str) -> Result<Self, OptionError> {
        self.set_checked(key, value, false)?;
        Ok(self)
    }

    /// Sets an attribute: replaces its value in place when present,
    /// appends it otherwise.
    ///
    /// # Errors
    ///
    /// As [`with`](Self::with), without the duplicate check.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self, OptionError> {
        self.set_checked(key, value, true)?;
        Ok(self)
    }

    /// Removes an attribute, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let key = key.to_ascii_lowercase();
        let at = self.attrs.iter().position(|(k, _)| *k == key)?;
        Some(self.attrs.remove(at).1)
    }

    /// `mode=`, when set.
    pub fn mode(&self) -> Option<CacheMode> {
        match self.typed(MODE)? {
            "min" => Some(CacheMode::Min),
            "max" => Some(CacheMode::Max),
            _ => None,
        }
    }

    /// `compression=`, when set.
    pub fn compression(&self) -> Option<CompressionType> {
        self.typed(COMPRESSION)?.parse().ok()
    }

    /// `compression-level=`, when set.
    pub fn compression_level(&self) -> Option<u8> {
        self.typed(COMPRESSION_LEVEL)?.parse().ok()
    }

    /// The value of one of the backend's boolean attributes
    /// (`ignore-error`, `oci-mediatypes`, `registry.insecure`...), when set.
    /// `None` for an attribute that is not a known boolean of this backend.
    pub fn flag(&self, key: &str) -> Option<bool> {
        let key = key.to_ascii_lowercase();
        let spec = self.backend.spec(&key)?;
        if !matches!(spec.kind, Kind::Bool | Kind::BoolEmptyTrue) {
            return None;
        }
        self.get(&key).and_then(go_parse_bool)
    }

    /// Appends an attribute whose key and value the caller knows to be
    /// valid and normalised (crate-internal builders).
    pub(crate) fn push_trusted(&mut self, key: &'static str, value: impl Into<String>) {
        self.attrs.push((key.to_owned(), value.into()));
    }

    /// A typed attribute's stored (normalised) value.
    fn typed(&self, key: &str) -> Option<&str> {
        self.backend.spec(key)?;
        self.get(key)
    }

    fn set_checked(&mut self, key: &str, value: &str, replace: bool) -> Result<(), OptionError> {
        let input = format!("{key}={value}");
        let err = |kind| OptionError::new(&input, None, kind);
        if value.contains(['\r', '\n']) {
            return Err(err(OptionErrorKind::LineBreak));
        }
        if value.contains('\0') {
            return Err(err(OptionErrorKind::Nul));
        }
        let key = check_key(key).map_err(err)?;
        if key == "type" {
            return Err(err(OptionErrorKind::InvalidKey(key)));
        }
        self.insert(key, value, replace).map_err(err)
    }

    /// Checks and normalises `value` for `key` (already a checked key),
    /// then stores it.
    fn insert(&mut self, key: String, value: &str, replace: bool) -> Result<(), OptionErrorKind> {
        let value = match self.backend.spec(&key) {
            Some(spec) => spec
                .kind
                .normalise(value)
                .ok_or_else(|| invalid_value(spec.key, value, spec.kind))?,
            None => value.to_owned(),
        };
        match self.attrs.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) if replace => slot.1 = value,
            Some(_) => return Err(OptionErrorKind::DuplicateKey(key)),
            None => self.attrs.push((key, value)),
        }
        Ok(())
    }
}

impl FromStr for CacheOption {
    type Err = OptionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for CacheOption {
    type Error = OptionError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for CacheOption {
    type Error = OptionError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl fmt::Display for CacheOption {
    /// The CSV value: `type=<backend>` first, then the attributes in order,
    /// each field quoted only when it must be.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(64);
        out.push_str("type=");
        out.push_str(self.backend.as_str());
        let mut field = String::new();
        for (k, v) in &self.attrs {
            out.push(',');
            field.clear();
            field.push_str(k);
            field.push('=');
            field.push_str(v);
            csv::write_field(&mut out, &field);
        }
        f.write_str(&out)
    }
}

impl fmt::Debug for CacheOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Attrs<'a>(&'a [(String, String)]);
        impl fmt::Debug for Attrs<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut list = f.debug_list();
                for (k, v) in self.0 {
                    if is_secret(k) {
                        list.entry(&(k, "<redacted>"));
                    } else {
                        list.entry(&(k, v));
                    }
                }
                list.finish()
            }
        }
        f.debug_struct("CacheOption")
            .field("backend", &self.backend)
            .field("attrs", &Attrs(&self.attrs))
            .finish()
    }
}

impl serde::Serialize for CacheOption {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CacheOption {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A cache option (or cache argument list) that could not be parsed.
///
/// `input` is the text as given; it may hold credentials (a `gha` token, S3
/// keys), so neither `Display` nor `Debug` prints it (`Debug` shows its
/// length): the kind and column point at the problem, and
/// [`input`](Self::input) gives it to a caller that knows it is safe.
#[derive(Clone, PartialEq, Eq)]
pub struct OptionError {
    input: String,
    column: Option<usize>,
    kind: OptionErrorKind,
}

impl OptionError {
    pub(crate) fn new(input: &str, column: Option<usize>, kind: OptionErrorKind) -> Self {
        Self {
            input: input.to_owned(),
            column,
            kind,
        }
    }

    /// The text that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// The 1-based byte column (as Go's `csv.ParseError` counts), where
    /// there is one.
    pub fn column(&self) -> Option<usize> {
        self.column
    }

    /// What went wrong.
    pub fn kind(&self) -> &OptionErrorKind {
        &self.kind
    }
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(c) => write!(f, "invalid cache option at column {c}: {}", self.kind),
            None => write!(f, "invalid cache option: {}", self.kind),
        }
    }
}

impl fmt::Debug for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptionError")
            .field("input", &format_args!("<{} bytes>", self.input.len()))
            .field("column", &self.column)
            .field("kind", &self.kind)
            .finish()
    }
}

impl std::error::Error for OptionError {}

/// What was wrong with a cache option. CSV messages are Go's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionErrorKind {
    /// Empty input (Go reports `EOF`).
    #[error("empty cache option")]
    Empty,
    /// A `"` inside an unquoted field.
    #[error("bare \" in non-quoted-field")]
    BareQuote,
    /// A quoted field not closed, or its closing quote followed by
    /// something other than `,`.
    #[error("extraneous or missing \" in quoted-field")]
    Quote,
    /// CR or LF other than one trailing line break.
    #[error("line break inside a cache option")]
    LineBreak,
    /// A NUL character.
    #[error("NUL character in a cache option")]
    Nul,
    /// A field without `=`.
    #[error("field {0:?} is not key=value")]
    MissingEquals(String),
    /// A key that is empty, outside `[a-z0-9._:-]`, or `type` where an
    /// attribute is expected.
    #[error("invalid attribute name {0:?}")]
    InvalidKey(String),
    /// A key given twice.
    #[error("attribute {0:?} given more than once")]
    DuplicateKey(String),
    /// No `type=`.
    #[error("missing type=<backend>")]
    MissingType,
    /// A `type=` that is not one of the six BuildKit backends.
    #[error("unknown cache backend {0:?}; expected registry, inline, local, gha, s3 or azblob")]
    UnknownBackend(String),
    /// A typed attribute with a value of the wrong form.
    #[error("invalid value {value:?} for {key}: expected {expected}")]
    InvalidValue {
        /// The attribute.
        key: String,
        /// The value as given.
        value: String,
        /// What the attribute takes.
        expected: &'static str,
    },
    /// An argument list item that is not a cache flag or its value.
    #[error("unexpected argument {0:?}")]
    UnexpectedArgument(String),
    /// A cache flag at the end of an argument list, without its value.
    #[error("flag {0} needs a value")]
    MissingFlagValue(String),
}

fn invalid_value(key: &str, value: &str, kind: Kind) -> OptionErrorKind {
    OptionErrorKind::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        expected: kind.expected(),
    }
}

/// Lower-cases (ASCII) and checks an attribute name.
fn check_key(key: &str) -> Result<String, OptionErrorKind> {
    let lower = key.to_ascii_lowercase();
    let valid = !lower.is_empty()
        && lower
            .bytes()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b':' | b'-'));
    if valid {
        Ok(lower)
    } else {
        Err(OptionErrorKind::InvalidKey(key.to_owned()))
    }
}

/// Attribute names whose values `Debug` hides.
fn is_secret(key: &str) -> bool {
    matches!(
        key,
        "token" | "ghtoken" | "secret_access_key" | "session_token"
    ) || ["token", "secret", "password"]
        .iter()
        .any(|w| key.contains(w))
}

/// Go's `strconv.ParseBool`.
pub(crate) fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The syntax Go's `time.ParseDuration` accepts: an optional sign, then
/// `0` or one or more `<decimal><unit>` with units `ns`, `us`, `µs`, `μs`,
/// `ms`, `s`, `m`, `h`. (Go's overflow check beyond ~292 years is not
/// repeated.)
fn is_go_duration(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    if s.is_empty() {
        return false;
    }
    let mut rest = s;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        rest = &rest[int_len..];
        let mut frac_len = 0;
        if let Some(after_dot) = rest.strip_prefix('.') {
            frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            rest = &after_dot[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return false;
        }
        let unit_len = rest
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        if !matches!(
            &rest[..unit_len],
            "ns" | "us" | "µs" | "μs" | "ms" | "s" | "m" | "h"
        ) {
            return false;
        }
        rest = &rest[unit_len..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn parse(s: &str) -> CacheOption {
        CacheOption::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn kind(s: &str) -> (Option<usize>, OptionErrorKind) {
        let e = CacheOption::parse(s).unwrap_err();
        (e.column(), e.kind().clone())
    }

    #[rstest]
    #[case("type=inline", "type=inline")]
    #[case("TYPE=registry,REF=r/x", "type=registry,ref=r/x")]
    #[case("ref=r/x,type=registry", "type=registry,ref=r/x")]
    #[case("type=registry,ref=r/x\n", "type=registry,ref=r/x")]
    #[case("\"type=registry\",\"ref=r/x\"", "type=registry,ref=r/x")]
    #[case(
        "type=registry,ignore-error=1,oci-mediatypes=F",
        "type=registry,ignore-error=true,oci-mediatypes=false"
    )]
    #[case(
        "type=registry,force-compression=",
        "type=registry,force-compression=true"
    )]
    #[case("type=local,compression-level=+07", "type=local,compression-level=7")]
    #[case("type=local,compression-level=-0", "type=local,compression-level=0")]
    #[case(
        "type=s3,upload_parallelism=08,touch_refresh=1h30m",
        "type=s3,upload_parallelism=8,touch_refresh=1h30m"
    )]
    #[case("type=gha,timeout=10m,scope=a=b", "type=gha,timeout=10m,scope=a=b")]
    #[case("type=gha,compression=anything", "type=gha,compression=anything")]
    #[case("type=inline,mode=whatever", "type=inline,mode=whatever")]
    #[case("type=registry,\"x=a,\"\"b\"\"\"", "type=registry,\"x=a,\"\"b\"\"\"")]
    #[case("type=registry,x=", "type=registry,x=")]
    #[case("type=registry,x==", "type=registry,x==")]
    #[case("type=registry,x= lead", "type=registry,x= lead")]
    #[case(
        "type=registry,compression=zstd:chunked",
        "type=registry,compression=zstd:chunked"
    )]
    fn parses_and_renders(#[case] input: &str, #[case] rendered: &str) {
        let o = parse(input);
        assert_eq!(o.to_string(), rendered);
        assert_eq!(parse(rendered), o);
    }

    #[test]
    fn quoted_values_keep_commas_quotes_and_equals() {
        let o = parse("type=registry,\"x=a,\"\"b\"\"=c\"");
        assert_eq!(o.get("x"), Some("a,\"b\"=c"));
    }

    #[rstest]
    #[case("", Some(1), OptionErrorKind::Empty)]
    #[case("ref=x", None, OptionErrorKind::MissingType)]
    #[case("type=registry,type=local", Some(15), OptionErrorKind::DuplicateKey("type".into()))]
    #[case("type=Registry", Some(1), OptionErrorKind::UnknownBackend("Registry".into()))]
    #[case("type=gcs", Some(1), OptionErrorKind::UnknownBackend("gcs".into()))]
    #[case("type=registry,ref", Some(15), OptionErrorKind::MissingEquals("ref".into()))]
    #[case(
        "type=registry,",
        Some(15),
        OptionErrorKind::MissingEquals(String::new())
    )]
    #[case("type=registry, ref=x", Some(15), OptionErrorKind::InvalidKey(" ref".into()))]
    #[case(
        "type=registry,=x",
        Some(15),
        OptionErrorKind::InvalidKey(String::new())
    )]
    #[case("type=registry,ref=a,REF=b", Some(21), OptionErrorKind::DuplicateKey("ref".into()))]
    #[case("type=registry,x=1,x=1", Some(19), OptionErrorKind::DuplicateKey("x".into()))]
    #[case("type=registry,ref=a\"b", Some(20), OptionErrorKind::BareQuote)]
    #[case("type=registry,\"ref=a", Some(16), OptionErrorKind::Quote)]
    // Quotes only open a field at its start: this one's are bare.
    #[case(
        "type=registry,x=\"a,\"\"b\"\"\"",
        Some(17),
        OptionErrorKind::BareQuote
    )]
    fn rejects(#[case] input: &str, #[case] column: Option<usize>, #[case] want: OptionErrorKind) {
        assert_eq!(kind(input), (column, want));
    }

    #[rstest]
    #[case("type=registry,mode=MAX", "mode")]
    #[case("type=registry,mode=", "mode")]
    #[case("type=s3,mode=all", "mode")]
    #[case("type=registry,ignore-error=yes", "ignore-error")]
    #[case("type=registry,ignore-error=", "ignore-error")]
    #[case("type=registry,registry.insecure=on", "registry.insecure")]
    #[case("type=local,compression=lz4", "compression")]
    #[case("type=local,compression=GZIP", "compression")]
    #[case("type=registry,compression-level=23", "compression-level")]
    #[case("type=registry,compression-level=-1", "compression-level")]
    #[case("type=registry,compression-level=1.5", "compression-level")]
    #[case("type=registry,force-compression=2", "force-compression")]
    #[case("type=s3,upload_parallelism=0", "upload_parallelism")]
    #[case("type=s3,retry_max_attempts=x", "retry_max_attempts")]
    #[case("type=s3,retry_mode=fast", "retry_mode")]
    #[case("type=s3,touch_refresh=24", "touch_refresh")]
    #[case("type=gha,timeout=1d", "timeout")]
    #[case("type=s3,use_path_style=maybe", "use_path_style")]
    fn rejects_bad_typed_values(#[case] input: &str, #[case] key: &str) {
        match kind(input).1 {
            OptionErrorKind::InvalidValue { key: k, .. } => assert_eq!(k, key),
            other => panic!("{input}: {other:?}"),
        }
    }

    #[rstest]
    #[case("0", true)]
    #[case("-0", true)]
    #[case("90s", true)]
    #[case("1h30m", true)]
    #[case("1.5h", true)]
    #[case(".5s", true)]
    #[case("5.s", true)]
    #[case("300ms", true)]
    #[case("2µs", true)]
    #[case("2μs", true)]
    #[case("-1h", true)]
    #[case("", false)]
    #[case("1", false)]
    #[case("h", false)]
    #[case(".s", false)]
    #[case("1d", false)]
    #[case("1hh", false)]
    #[case("+", false)]
    #[case("1h 2m", false)]
    fn go_durations(#[case] input: &str, #[case] ok: bool) {
        assert_eq!(is_go_duration(input), ok, "{input}");
    }

    #[test]
    fn typed_getters() {
        let o = parse(
            "type=registry,mode=min,compression=estargz,compression-level=9,registry.insecure=T,ref=x",
        );
        assert_eq!(o.mode(), Some(CacheMode::Min));
        assert_eq!(o.compression(), Some(CompressionType::Estargz));
        assert_eq!(o.compression_level(), Some(9));
        assert_eq!(o.flag("registry.insecure"), Some(true));
        assert_eq!(o.flag("ref"), None);
        assert_eq!(o.flag("force-compression"), None);
        // Not typed for gha: kept as a string, no typed reading.
        let g = parse("type=gha,compression=zstd,mode=max");
        assert_eq!(g.compression(), None);
        assert_eq!(g.mode(), Some(CacheMode::Max));
    }

    #[test]
    fn builder_checks_like_the_parser() {
        let o = CacheOption::new(Backend::Registry)
            .with("REF", "r/x")
            .unwrap()
            .with("mode", "max")
            .unwrap();
        assert_eq!(o.to_string(), "type=registry,ref=r/x,mode=max");
        let e = o.clone().with("ref", "again").unwrap_err();
        assert_eq!(e.kind(), &OptionErrorKind::DuplicateKey("ref".into()));
        assert_eq!(e.input(), "ref=again");
        assert!(matches!(
            o.clone().with("mode", "huge").unwrap_err().kind(),
            OptionErrorKind::InvalidValue { .. }
        ));
        assert_eq!(
            o.clone().with("type", "local").unwrap_err().kind(),
            &OptionErrorKind::InvalidKey("type".into())
        );
        assert_eq!(
            o.clone().with("x", "a\nb").unwrap_err().kind(),
            &OptionErrorKind::LineBreak
        );
        assert_eq!(
            o.clone().with("x", "a\0b").unwrap_err().kind(),
            &OptionErrorKind::Nul
        );
        let mut o = o;
        o.set("mode", "min").unwrap().set("x", "1").unwrap();
        assert_eq!(o.to_string(), "type=registry,ref=r/x,mode=min,x=1");
        assert_eq!(o.remove("MODE").as_deref(), Some("min"));
        assert_eq!(o.remove("mode"), None);
        assert_eq!(o.to_string(), "type=registry,ref=r/x,x=1");
    }

    #[test]
    fn debug_redacts_credentials() {
        let o = parse("type=gha,token=t0ps3cret,ghtoken=g,scope=main,x-password=p,api_token=q");
        let dbg = format!("{o:?}");
        for secret in ["t0ps3cret", "\"g\"", "\"p\"", "\"q\""] {
            assert!(!dbg.contains(secret), "{dbg}");
        }
        assert!(dbg.contains("main"), "{dbg}");
        assert!(o.to_string().contains("token=t0ps3cret"));
    }

    #[test]
    fn errors_do_not_display_the_input() {
        let e = CacheOption::parse("type=gha,token=t0ps3cret,mode=bad").unwrap_err();
        assert!(!e.to_string().contains("t0ps3cret"), "{e}");
        assert!(!format!("{e:?}").contains("t0ps3cret"), "{e:?}");
        assert_eq!(e.input(), "type=gha,token=t0ps3cret,mode=bad");
        assert_eq!(e.column(), Some(26));
        assert_eq!(
            e.to_string(),
            "invalid cache option at column 26: invalid value \"bad\" for mode: expected min or max"
        );
    }

    #[test]
    fn every_backend_round_trips_its_name() {
        for b in Backend::ALL {
            assert_eq!(b.as_str().parse::<Backend>().unwrap(), b);
            assert_eq!(parse(&format!("type={b}")).backend(), b);
            for key in b.known_attributes() {
                assert!(check_key(key).is_ok(), "{key}");
            }
        }
    }

    #[test]
    fn serde_is_the_csv_text() {
        let o = parse("type=registry,ref=r/x,\"x=a,b\"");
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(json, r#""type=registry,ref=r/x,\"x=a,b\"""#);
        assert_eq!(serde_json::from_str::<CacheOption>(&json).unwrap(), o);
        assert!(serde_json::from_str::<CacheOption>("\"type=nope\"").is_err());
    }
}
