//! One instruction: what BuildKit's parser reports for it, plus where its
//! bytes are in the file.

use std::ops::Range;

use crate::args::Node;
use crate::heredoc::Heredoc;

/// A piece of an instruction's logical line and where it sits in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) logical: usize,
    pub(crate) source: usize,
    pub(crate) len: usize,
}

/// One instruction as BuildKit's parser sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub(crate) node: Node,
    pub(crate) original: String,
    pub(crate) start_line: usize,
    pub(crate) end_line: usize,
    pub(crate) span: Range<usize>,
    pub(crate) segments: Vec<Segment>,
    pub(crate) heredocs: Vec<Heredoc>,
}

impl Instruction {
    /// The keyword as written (`FROM`, `from`, `Run`, ...).
    pub fn keyword(&self) -> &str {
        &self.node.keyword
    }

    /// Whether the keyword is `name`, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.node.keyword.eq_ignore_ascii_case(name)
    }

    /// For `ONBUILD`, the trigger's keyword as written.
    pub fn trigger_keyword(&self) -> Option<&str> {
        self.node.trigger.as_deref().map(|t| t.keyword.as_str())
    }

    /// The builder flags (`--platform=...`) with quotes and escapes
    /// processed, as BuildKit reports them.
    pub fn flags(&self) -> impl ExactSizeIterator<Item = &str> {
        self.node.flags.iter().map(|f| f.text.as_str())
    }

    /// The flags of the trigger for `ONBUILD`, else of this instruction.
    pub fn effective_flags(&self) -> impl ExactSizeIterator<Item = &str> {
        self.node.effective().flags.iter().map(|f| f.text.as_str())
    }

    /// The values BuildKit's parser produces (for ONBUILD: the trigger's).
    /// `ENV` and `LABEL` carry BuildKit's separator after each pair
    /// (`[k, v, "=", ...]`; `""` for the legacy `k v` form).
    pub fn values(&self) -> &[String] {
        &self.node.effective().values
    }

    /// `values()` without the `ENV`/`LABEL` separators: `[k, v, k, v, ...]`.
    pub fn values_without_separators(&self) -> Vec<&str> {
        let n = self.node.effective();
        let pairs = ["env", "label"]
            .iter()
            .any(|k| n.keyword.eq_ignore_ascii_case(k));
        if pairs {
            n.values
                .chunks(3)
                .flat_map(|c| c.iter().take(2))
                .map(String::as_str)
                .collect()
        } else {
            n.values.iter().map(String::as_str).collect()
        }
    }

    /// Whether the arguments are in JSON (exec) form.
    pub fn is_json(&self) -> bool {
        self.node.effective().json
    }

    /// The logical line: physical lines joined, comments and continuation
    /// tokens removed (BuildKit's `Node.Original`).
    pub fn original(&self) -> &str {
        &self.original
    }

    /// First physical line (1-based).
    pub fn start_line(&self) -> usize {
        self.start_line
    }

    /// Last physical line (1-based), heredoc bodies included.
    pub fn end_line(&self) -> usize {
        self.end_line
    }

    /// Byte range in the source: from the start of the first physical line
    /// through the line ending of the last (heredoc terminators included).
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// Heredocs, in the order their bodies follow the instruction.
    pub fn heredocs(&self) -> &[Heredoc] {
        &self.heredocs
    }

    /// Source byte ranges covering logical-line bytes `r` (several when the
    /// text was split by a line continuation).
    pub fn source_ranges(&self, r: Range<usize>) -> Vec<Range<usize>> {
        crate::parser::map_range(&self.segments, r)
    }
}
