//! Cache options as command-line arguments of `buildctl build` and
//! `docker buildx build`.

use crate::option::{Backend, CacheOption, OptionError, OptionErrorKind};

/// Which way a cache option goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Read cache before the build (`--import-cache`, `--cache-from`).
    Import,
    /// Write cache after the build (`--export-cache`, `--cache-to`).
    Export,
}

/// A command-line client that takes cache options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// `buildctl build --import-cache ... --export-cache ...`.
    Buildctl,
    /// `docker buildx build --cache-from ... --cache-to ...`.
    Buildx,
}

impl Client {
    /// The flag for a direction.
    pub fn flag(self, direction: Direction) -> &'static str {
        match (self, direction) {
            (Self::Buildctl, Direction::Import) => "--import-cache",
            (Self::Buildctl, Direction::Export) => "--export-cache",
            (Self::Buildx, Direction::Import) => "--cache-from",
            (Self::Buildx, Direction::Export) => "--cache-to",
        }
    }
}

/// The cache options of one build: what it imports and what it exports.
///
/// Rendered as an argv list (`Vec<String>`, one item per flag and one per
/// value), so no shell quoting is involved: pass the items to
/// `std::process::Command::args` as they are. Values never contain a line
/// break, so printing one item per line is also unambiguous.
///
/// ```
/// # fn main() -> Result<(), kiln_cache_key::OptionError> {
/// use kiln_cache_key::{CacheArgs, Client};
/// let args = CacheArgs::parse(Client::Buildx, ["--cache-from", "user/app:cache", "--cache-to=type=inline"])?;
/// assert_eq!(
///     args.to_args(Client::Buildctl),
///     ["--import-cache", "type=registry,ref=user/app:cache", "--export-cache", "type=inline"]
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CacheArgs {
    imports: Vec<CacheOption>,
    exports: Vec<CacheOption>,
}

impl CacheArgs {
    /// No options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an option in a direction.
    #[must_use]
    pub fn with(mut self, direction: Direction, option: CacheOption) -> Self {
        match direction {
            Direction::Import => self.imports.push(option),
            Direction::Export => self.exports.push(option),
        }
        self
    }

    /// The import options, in order.
    pub fn imports(&self) -> &[CacheOption] {
        &self.imports
    }

    /// The export options, in order.
    pub fn exports(&self) -> &[CacheOption] {
        &self.exports
    }

    /// The argv items for a client: every import flag and value, then every
    /// export flag and value.
    pub fn to_args(&self, client: Client) -> Vec<String> {
        let mut out = Vec::with_capacity(2 * (self.imports.len() + self.exports.len()));
        for (direction, options) in [
            (Direction::Import, &self.imports),
            (Direction::Export, &self.exports),
        ] {
            for o in options {
                out.push(client.flag(direction).to_owned());
                out.push(o.to_string());
            }
        }
        out
    }

    /// Parses a client's cache arguments: `--flag VALUE` or
    /// `--flag=VALUE` for the client's two flags, nothing else.
    ///
    /// A value with no `=` at all is the clients' short form for registry
    /// caches: for buildx each CSV field is one `type=registry,ref=FIELD`
    /// (`--cache-from a,b` imports two), for buildctl the whole value is one
    /// ref (its deprecated legacy form). Everything else is a
    /// [`CacheOption`].
    ///
    /// # Errors
    ///
    /// [`OptionError`]: [`OptionErrorKind::UnexpectedArgument`] for an item
    /// that is not one of the client's cache flags,
    /// [`OptionErrorKind::MissingFlagValue`] for a flag at the end, or the
    /// value's own error (its input is the value).
    pub fn parse<I, S>(client: Client, args: I) -> Result<Self, OptionError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Self::new();
        let mut items = args.into_iter();
        while let Some(item) = items.next() {
            let item = item.as_ref();
            let (direction, inline_value) = [Direction::Import, Direction::Export]
                .into_iter()
                .find_map(|d| {
                    let flag = client.flag(d);
                    if item == flag {
                        Some((d, None))
                    } else {
                        item.strip_prefix(flag)
                            .and_then(|rest| rest.strip_prefix('='))
                            .map(|v| (d, Some(v.to_owned())))
                    }
                })
                .ok_or_else(|| {
                    OptionError::new(
                        item,
                        None,
                        OptionErrorKind::UnexpectedArgument(item.to_owned()),
                    )
                })?;
            let value = match inline_value {
                Some(v) => v,
                None => items.next().map(|v| v.as_ref().to_owned()).ok_or_else(|| {
                    OptionError::new(
                        item,
                        None,
                        OptionErrorKind::MissingFlagValue(item.to_owned()),
                    )
                })?,
            };
            for option in parse_value(client, &value)? {
                out = out.with(direction, option);
            }
        }
        Ok(out)
    }
}

/// One flag value: the short form or a cache option.
fn parse_value(client: Client, value: &str) -> Result<Vec<CacheOption>, OptionError> {
    if value.contains('=') {
        return CacheOption::parse(value).map(|o| vec![o]);
    }
    let refs = match client {
        Client::Buildctl => vec![value.to_owned()],
        Client::Buildx => CacheOption::split_fields(value)?,
    };
    refs.iter()
        .map(|r| {
            if r.is_empty() {
                return Err(OptionError::new(value, None, OptionErrorKind::Empty));
            }
            CacheOption::new(Backend::Registry)
                .with("ref", r)
                .map_err(|e| OptionError::new(value, None, e.kind().clone()))
        })
        .collect()
}

impl CacheOption {
    /// The CSV fields of a value, without the `key=value` step.
    fn split_fields(value: &str) -> Result<Vec<String>, OptionError> {
        crate::csv::split(value)
            .map(|fields| fields.into_iter().map(|(f, _)| f).collect())
            .map_err(|(col, kind)| OptionError::new(value, Some(col), kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn args(client: Client, items: &[&str]) -> Result<CacheArgs, OptionError> {
        CacheArgs::parse(client, items)
    }

    #[test]
    fn renders_both_clients() {
        let a = CacheArgs::new()
            .with(Direction::Import, "type=registry,ref=r/a".parse().unwrap())
            .with(
                Direction::Export,
                "type=registry,ref=r/b,mode=max".parse().unwrap(),
            )
            .with(
                Direction::Import,
                "type=local,\"src=/a,b\"".parse().unwrap(),
            );
        assert_eq!(
            a.to_args(Client::Buildctl),
            [
                "--import-cache",
                "type=registry,ref=r/a",
                "--import-cache",
                "type=local,\"src=/a,b\"",
                "--export-cache",
                "type=registry,ref=r/b,mode=max",
            ]
        );
        let bx = a.to_args(Client::Buildx);
        assert_eq!(bx[0], "--cache-from");
        assert_eq!(bx[4], "--cache-to");
        assert_eq!(
            args(
                Client::Buildx,
                &bx.iter().map(String::as_str).collect::<Vec<_>>()
            )
            .unwrap(),
            a
        );
        let bc = a.to_args(Client::Buildctl);
        assert_eq!(
            args(
                Client::Buildctl,
                &bc.iter().map(String::as_str).collect::<Vec<_>>()
            )
            .unwrap(),
            a
        );
    }

    #[rstest]
    #[case(Client::Buildx, &["--cache-from", "a/b,c/d"], 2)]
    #[case(Client::Buildx, &["--cache-from=a/b"], 1)]
    #[case(Client::Buildctl, &["--import-cache", "a/b"], 1)]
    #[case(Client::Buildctl, &["--import-cache=type=inline", "--export-cache", "type=inline"], 2)]
    #[case(Client::Buildx, &[], 0)]
    fn parses(#[case] client: Client, #[case] items: &[&str], #[case] count: usize) {
        let a = args(client, items).unwrap();
        assert_eq!(a.imports().len() + a.exports().len(), count);
    }

    #[test]
    fn short_forms_are_registry_refs() {
        let a = args(Client::Buildx, &["--cache-to", "a/b:cache,c/d"]).unwrap();
        let refs: Vec<&str> = a.exports().iter().map(|o| o.get("ref").unwrap()).collect();
        assert_eq!(refs, ["a/b:cache", "c/d"]);
        let a = args(Client::Buildctl, &["--import-cache", "a/b,c/d"]).unwrap();
        assert_eq!(a.imports()[0].get("ref"), Some("a/b,c/d"));
    }

    #[rstest]
    #[case(Client::Buildx, &["--import-cache", "type=inline"], OptionErrorKind::UnexpectedArgument("--import-cache".into()))]
    #[case(Client::Buildctl, &["--cache-from", "a"], OptionErrorKind::UnexpectedArgument("--cache-from".into()))]
    #[case(Client::Buildctl, &["--export-cache"], OptionErrorKind::MissingFlagValue("--export-cache".into()))]
    #[case(Client::Buildctl, &["--export-cachex=type=inline"], OptionErrorKind::UnexpectedArgument("--export-cachex=type=inline".into()))]
    #[case(Client::Buildctl, &["--import-cache", ""], OptionErrorKind::Empty)]
    #[case(Client::Buildx, &["--cache-from", "a,,b"], OptionErrorKind::Empty)]
    #[case(Client::Buildx, &["--cache-from", "a\"b"], OptionErrorKind::BareQuote)]
    #[case(Client::Buildx, &["--cache-to", "type=nope"], OptionErrorKind::UnknownBackend("nope".into()))]
    fn rejects(#[case] client: Client, #[case] items: &[&str], #[case] want: OptionErrorKind) {
        assert_eq!(args(client, items).unwrap_err().kind(), &want);
    }
}
