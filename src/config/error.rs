//! `ConfigError`: why the configuration was refused, naming the key or variable at fault.

use std::path::PathBuf;

/// A configuration that cannot be used. Every variant names where the bad value came from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {}: {source}", path.display())]
    Read {
        /// The file given with `--config`.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key in the file is not part of the configuration (nor a known key of the Python service's file).
    #[error("config file {}: unknown key \"{key}\"{}", path.display(), hint(suggestion.as_deref()))]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The dotted path of the key, e.g. `batch.trade_batch_sise`.
        key: String,
        /// The closest known key at the same level, if one is close.
        suggestion: Option<String>,
    },
    /// The file is not valid YAML, or a section is not a mapping.
    #[error("config file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, starting with the dotted key when known.
        reason: String,
    },
    /// An environment variable has a value that cannot be parsed.
    #[error("env {var}: {reason}")]
    Env {
        /// The variable name.
        var: String,
        /// What is wrong, quoting the value (never for secrets).
        reason: String,
    },
    /// A value in the file (or a combination of values) is refused.
    #[error("{key}: {reason}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// The rule that is broken.
        reason: String,
    },
}

fn hint(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!(" (did you mean \"{s}\"?)"))
        .unwrap_or_default()
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        let known = ["trade_batch_size", "max_batch_size", "flush_interval"];
        assert_eq!(
            closest("trade_batch_sise", &known),
            Some("trade_batch_size")
        );
        assert_eq!(closest("flush_intervall", &known), Some("flush_interval"));
        assert_eq!(closest("colour", &known), None);
    }
}
