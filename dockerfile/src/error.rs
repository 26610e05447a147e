//! The crate's one error type: where it happened and what kind it is.

use std::fmt;

/// An error from parsing or resolving a Dockerfile.
///
/// `line` is the 1-based physical line BuildKit reports for the error (`None`
/// where BuildKit reports none, e.g. for an empty file or a bad `escape`
/// directive on the first line). Equality ignores nothing: two errors are
/// equal when line, column and kind are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    line: Option<usize>,
    column: Option<usize>,
    kind: ErrorKind,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, line: Option<usize>) -> Self {
        Self {
            line,
            column: None,
            kind,
        }
    }

    /// Adds the 1-based column (in characters) of the offending token.
    #[must_use]
    pub(crate) fn with_column(mut self, column: Option<usize>) -> Self {
        self.column = column;
        self
    }

    pub(crate) fn at(kind: ErrorKind, line: usize) -> Self {
        Self::new(kind, (line > 0).then_some(line))
    }

    /// The 1-based line BuildKit reports, if any.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The 1-based column (in characters) of the offending token, where
    /// known: base names, `--platform` and `--from` values. BuildKit itself
    /// reports lines only.
    pub fn column(&self) -> Option<usize> {
        self.column
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.kind),
            None => self.kind.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

/// What went wrong. Messages are BuildKit's, so users recognise them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input is not UTF-8.
    #[error("dockerfile is not valid UTF-8")]
    InvalidUtf8,
    /// A physical line exceeds BuildKit's scanner limit.
    #[error("dockerfile line greater than max allowed size of 65535")]
    LineTooLong,
    /// No instruction at all (empty file, only comments).
    #[error("file with no instructions")]
    NoInstructions,
    /// `# escape=` with something other than `\` or backtick.
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscapeToken(String),
    /// A parser directive given twice.
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    /// A heredoc body without its terminator line.
    #[error("unterminated heredoc")]
    UnterminatedHeredoc,
    /// A JSON array with a non-string element.
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    JsonNotStringArray,
    /// `ENV`/`LABEL` in the legacy form without a value.
    #[error("{0} must have two arguments")]
    MissingValue(&'static str),
    /// `ENV`/`LABEL` pair without `=`.
    #[error("Syntax error - can't find = in {0:?}. Must be of the form: name=value")]
    MissingEquals(String),
    /// An instruction BuildKit does not know.
    #[error("unknown instruction: {0}")]
    UnknownInstruction(String),
    /// An instruction other than `ARG` before the first `FROM`.
    #[error("no build stage in current context")]
    NoBuildStage,
    /// `FROM` with the wrong number of arguments.
    #[error("FROM requires either one or three arguments")]
    FromArity,
    /// An instruction that needs arguments has none.
    #[error("{0} requires at least one argument")]
    AtLeastOneArgument(&'static str),
    /// `ARG =value`.
    #[error("ARG names can not be blank")]
    BlankArgName,
    /// Stage name not matching `^[a-z][a-z0-9-_.]*$`.
    #[error(
        "invalid name for build stage: {0:?}, name can't start with a number or contain symbols"
    )]
    InvalidStageName(String),
    /// A flag the instruction does not accept.
    #[error("unknown flag: --{0}")]
    UnknownFlag(String),
    /// A flag given twice.
    #[error("duplicate flag specified: --{0}")]
    DuplicateFlag(String),
    /// A flag that needs `=value` has none.
    #[error("missing a value on flag: --{0}")]
    MissingFlagValue(String),
    /// A flag word that does not start with `--`.
    #[error("arg should start with -- : {0}")]
    NotAFlag(String),
    /// `ONBUILD` wrapping an instruction that may not be a trigger.
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger(String),
    /// `ONBUILD ONBUILD`.
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChain,
    /// Variable expansion failed (bad substitution, `${X:?msg}`, ...).
    #[error("failed to process {word:?}: {reason}")]
    Expansion {
        /// The word as written.
        word: String,
        /// BuildKit's reason.
        reason: String,
    },
    /// A FROM base expanded to nothing.
    #[error("base name ({0}) should not be blank")]
    BlankBaseName(String),
    /// A `--platform` value expanded to nothing.
    #[error("empty platform value from expression {0}")]
    EmptyPlatform(String),
    /// A `--platform` value that is not `os[/arch[/variant]]`.
    #[error("failed to parse platform {expression}: {reason}")]
    InvalidPlatform {
        /// The expression as written.
        expression: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A base image (or `--from` image) that is not a valid reference.
    #[error("failed to parse stage name {name:?}: {reason}")]
    InvalidReference {
        /// The expanded name.
        name: String,
        /// distribution/reference's reason.
        reason: crate::reference::ReferenceError,
    },
    /// `COPY --from=N` with an index that names no earlier stage.
    #[error("invalid stage index {0}")]
    InvalidStageIndex(String),
    /// A `RUN --mount` value that is not valid CSV or has a bad field.
    #[error("invalid mount: {0}")]
    InvalidMount(String),
    /// A mirror given to the rewriter that is not `HOST[:PORT][/PREFIX]`.
    #[error("invalid mirror {0:?}: expected HOST[:PORT][/PREFIX]")]
    InvalidMirror(String),
}
