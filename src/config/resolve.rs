//! The one path every key takes: file and environment and default → a typed, checked value,
//! with its source, its printed line and errors naming the key or the variable.
//!
//! For every key the environment wins over the file, the file over the default. A Python
//! service key mapped onto one of ours loses against ours (with a warning). File keys nobody
//! reads are refused, with the closest known key at that level as a suggestion.
//!
//! figment was evaluated and not used: env names here are not derived from key paths (several per
//! key, `NATS_URL`, `HOT_STORAGE_HTTP_PORT`, empty = unset except passwords), the Python service's
//! keys need a pass over the document either way, and the error texts name the variable or key
//! as ours do; what figment would add, merging the layers, is `Resolver::find` below.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use yaml_serde::Value;

use super::error::closest;
use super::keys::{self, COMPUTED, PYTHON_IGNORED};
use super::value::{Kind, MUST_BE_POSITIVE, what};
use super::{ConfigError, Loaded, SecretItem, Source};
use crate::model::DataType;

/// One configuration key, declared once in `keys::k`: its dotted name, how its value is read and
/// printed, its environment variables, the Python service's file keys for it, its default, its
/// rule and one line of documentation.
pub(crate) struct Key<T: 'static> {
    /// Dotted name; a `*` stands for a data type or stream name, given by the caller.
    pub name: &'static str,
    pub kind: &'static Kind<T>,
    /// Variables, first set wins.
    pub env: &'static [&'static str],
    /// How the variables are read, when it differs from the file (`MARKETPRISM_LOG_JSON`).
    pub env_kind: Option<&'static Kind<T>>,
    /// The Python service's file keys for the same setting, read when ours is unset.
    pub python: &'static [&'static str],
    /// The default, written as in the file; `None`: unset, or given by the caller.
    pub default: Option<&'static str>,
    /// A rule the value must keep.
    pub check: fn(&T) -> Result<(), String>,
    /// Whether the key can be set in the file (`false`: environment only).
    pub file: bool,
    /// What the key does (and why the default is what it is).
    pub doc: &'static str,
}

fn no_rule<T>(_: &T) -> Result<(), String> {
    Ok(())
}

impl<T> Key<T> {
    pub(crate) const fn new(name: &'static str, kind: &'static Kind<T>, doc: &'static str) -> Self {
        Key {
            name,
            kind,
            env: &[],
            env_kind: None,
            python: &[],
            default: None,
            check: no_rule::<T>,
            file: true,
            doc,
        }
    }
    pub(crate) const fn env(mut self, vars: &'static [&'static str]) -> Self {
        self.env = vars;
        self
    }
    pub(crate) const fn env_kind(mut self, kind: &'static Kind<T>) -> Self {
        self.env_kind = Some(kind);
        self
    }
    pub(crate) const fn env_only(mut self) -> Self {
        self.file = false;
        self
    }
    pub(crate) const fn python(mut self, keys: &'static [&'static str]) -> Self {
        self.python = keys;
        self
    }
    pub(crate) const fn default(mut self, text: &'static str) -> Self {
        self.default = Some(text);
        self
    }
    pub(crate) const fn check(mut self, rule: fn(&T) -> Result<(), String>) -> Self {
        self.check = rule;
        self
    }
}

/// A declaration as the docs and secrets tests read it: name, variables, settable in the file,
/// doc line, and whether its kind holds secrets.
pub(crate) type Declared = (
    &'static str,
    &'static [&'static str],
    bool,
    &'static str,
    bool,
);

/// Every key declaration, in the order [`keys::build`] reads them.
pub(crate) fn declared() -> Vec<Declared> {
    let mut r = Resolver::new(None, Value::Null, &|_| None);
    let _ = keys::build(&mut r);
    r.declared
}

/// The environment variables of every key whose kind holds secrets (see
/// `config::secret_variables`).
pub(crate) fn secret_variables() -> Vec<&'static str> {
    let declared = declared();
    let secret = declared.iter().filter(|d| d.4);
    secret.flat_map(|d| d.1.iter().copied()).collect()
}

/// Reads, parses and validates; see [`Config::load`].
pub(super) fn load(
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let doc = match path {
        Some(path) => read(path)?,
        None => Value::Null,
    };
    let mut r = Resolver::new(path.map(Path::to_path_buf), doc, env);
    r.normalize_batch_types()?;
    let mut known = Resolver::new(None, Value::Null, &|_| None);
    keys::build(&mut known)?;
    let mut known = known.known;
    for (key, _, subkeys) in PYTHON_IGNORED {
        // A section is accepted with the sub-keys the Python service's file has, and no others.
        if subkeys.is_empty() {
            known.insert(key.to_string());
        }
        known.extend(subkeys.iter().map(|s| format!("{key}.{s}")));
    }
    r.refuse_unknown(&r.doc, "", &known)?;
    for (key, why, _) in PYTHON_IGNORED {
        if r.node(key).is_some() {
            r.warn(format!("Python service key \"{key}\" is ignored: {why}"));
        }
    }
    let config = keys::build(&mut r)?;
    // Printed by section, in `Config`'s order (the batch is read before the NATS keys need it).
    let section = |k: &str| SECTIONS.iter().position(|s| k.split('.').next() == Some(s));
    r.entries.sort_by_key(|(k, _)| section(k));
    for (key, item) in r.secrets.clone() {
        if let SecretItem::Value(s) = &item
            && !s.is_empty()
            && s.expose().len() < crate::redact::MIN_LEN
        {
            let message = format!(
                "{key}: a secret shorter than {} characters is masked in `config` but cannot be masked in logs and errors; use a longer one",
                crate::redact::MIN_LEN
            );
            r.warn(message);
        }
    }
    Ok(Loaded {
        config,
        sources: r.sources,
        warnings: r.warnings,
        entries: r.entries,
        secrets: r.secrets,
    })
}

/// The top-level sections in `Config`'s order; `config` prints in this order.
pub(crate) const SECTIONS: [&str; 11] = [
    "nats",
    "clickhouse",
    "cold_clickhouse",
    "embedded",
    "batch",
    "retry",
    "http",
    "log",
    "migration",
    "quality",
    "shutdown",
];

fn read(path: &Path) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // An empty file (or one with only comments) is `Null`: an empty configuration.
    yaml_serde::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: without_quoted_values(&e.to_string()),
    })
}

/// A YAML error without the values it quotes between backticks (e.g. "invalid type: integer
/// `…` as u128"): the value may be a password or a token, and the position names it anyway.
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut quoted = true;
    for part in parts {
        out.push_str(if quoted { "`…`" } else { part });
        quoted = !quoted;
    }
    out
}

/// The state of one load: the document, the environment, and what was found.
pub(crate) struct Resolver<'a> {
    file: Option<PathBuf>,
    doc: Value,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Values computed from several Python service keys (`subscriptions` → `nats.types`).
    pub computed: BTreeMap<&'static str, Value>,
    pub sources: BTreeMap<String, Source>,
    pub warnings: Vec<String>,
    /// `(key, printed value)` of every key, in the order read.
    pub entries: Vec<(String, String)>,
    /// Every file key read.
    pub known: BTreeSet<String>,
    /// Every key declaration used: name, variables, whether the file may set it, doc line.
    pub declared: Vec<Declared>,
    /// `(key, secret)` of every value read whose kind holds secrets.
    pub secrets: Vec<(String, SecretItem)>,
}

impl<'a> Resolver<'a> {
    fn new(file: Option<PathBuf>, doc: Value, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Resolver {
            file,
            doc,
            env,
            computed: BTreeMap::new(),
            sources: BTreeMap::new(),
            warnings: Vec::new(),
            entries: Vec::new(),
            known: BTreeSet::new(),
            declared: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// Records `line` as the printed value of `name`, and the secrets `value` holds.
    fn print<T>(&mut self, key: &Key<T>, name: &str, value: Option<&T>) {
        let line = value.map_or_else(|| "(none)".into(), |v| (key.kind.show)(v));
        self.entries.push((name.to_string(), line));
        if let (Some(hidden), Some(v)) = (key.kind.hidden, value) {
            for item in hidden(v) {
                self.secrets.push((name.to_string(), item));
            }
        }
    }

    /// The key's value (else `default`, else the key's default), recorded and printed.
    pub(crate) fn get<T>(&mut self, key: &Key<T>) -> Result<T, ConfigError> {
        self.value(key, None, &[], None)
    }

    /// Like [`get`](Self::get) for a `*` key at `at`, reading the `fallbacks` file keys (in
    /// order, silently) when it is unset, and `default` when they are too.
    pub(crate) fn value<T>(
        &mut self,
        key: &Key<T>,
        at: Option<&str>,
        fallbacks: &[&str],
        default: Option<T>,
    ) -> Result<T, ConfigError> {
        let name = name_at(key, at);
        let value = match self.find(key, at, fallbacks)? {
            Some((v, source)) => {
                self.sources.insert(name.clone(), source);
                v
            }
            None => match (default, key.default) {
                (Some(v), _) => v,
                (None, Some(text)) => {
                    let v = Value::String(text.into());
                    let value = (key.kind.parse)(&v).and_then(|d| (key.check)(&d).map(|()| d));
                    value.map_err(|e| ConfigError::invalid(&name, format!("bad default: {e}")))?
                }
                (None, None) => return Err(ConfigError::invalid(name, "has no default")),
            },
        };
        self.print(key, &name, Some(&value));
        Ok(value)
    }

    /// The key's value if set, printed as `(none)` if not.
    pub(crate) fn opt<T>(&mut self, key: &Key<T>) -> Result<Option<T>, ConfigError> {
        let found = self.find(key, None, &[])?;
        self.print(key, key.name, found.as_ref().map(|(v, _)| v));
        Ok(found.map(|(v, source)| {
            self.sources.insert(key.name.to_string(), source);
            v
        }))
    }

    /// The key's value and source if set, neither recorded nor printed.
    pub(crate) fn peek<T>(
        &mut self,
        key: &Key<T>,
        at: Option<&str>,
    ) -> Result<Option<(T, Source)>, ConfigError> {
        self.find(key, at, &[])
    }

    /// Prints `value` under `name` and records its source.
    pub(crate) fn record<T>(&mut self, key: &Key<T>, name: &str, value: &T, source: &Source) {
        if *source != Source::Default {
            self.sources.insert(name.to_string(), source.clone());
        }
        self.print(key, name, Some(value));
    }

    /// Prints a line that is not a key (a value derived from keys).
    pub(crate) fn show(&mut self, name: &str, text: impl Into<String>) {
        self.entries.push((name.to_string(), text.into()));
    }

    /// `reason` reported under the variable `name`'s value came from, else under `name`.
    pub(crate) fn fail(&self, name: &str, reason: impl Into<String>) -> ConfigError {
        match self.sources.get(name) {
            Some(Source::Env(var)) => ConfigError::Env {
                var: var.clone(),
                reason: reason.into(),
            },
            _ => ConfigError::invalid(name, reason),
        }
    }

    /// The environment, else the first set of the key, its Python service keys and
    /// `fallbacks` in the file. When a variable wins, the file's value is still parsed and a
    /// malformed one (a `syntax` kind: the wrong type, not a number) refused, as a malformed
    /// file is whatever the environment says; a file value that only breaks a rule (an
    /// unknown host form, a log level, a zero) is overridden, as before the key table.
    fn find<T>(
        &mut self,
        key: &Key<T>,
        at: Option<&str>,
        fallbacks: &[&str],
    ) -> Result<Option<(T, Source)>, ConfigError> {
        let name = name_at(key, at);
        if !self.declared.iter().any(|d| d.0 == key.name) {
            let secret = key.kind.hidden.is_some();
            self.declared
                .push((key.name, key.env, key.file, key.doc, secret));
        }
        let mut in_file = None;
        if key.file {
            let chain = [name.as_str()]
                .into_iter()
                .chain(key.python.iter().copied());
            for path in chain.chain(fallbacks.iter().copied()) {
                if !COMPUTED.contains(&path) {
                    self.known.insert(path.to_string());
                }
                let Some(node) = self.node(path) else {
                    continue;
                };
                match &in_file {
                    None => in_file = Some((path.to_string(), node)),
                    Some((ours, _)) if key.python.contains(&path) => {
                        let ours = ours.clone();
                        self.warn(format!(
                            "Python service key \"{path}\" is ignored: \"{ours}\" is set"
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        for var in key.env {
            let Some(text) = (self.env)(var) else {
                continue;
            };
            if text.trim().is_empty() && !key.kind.empty_env_is_value {
                continue;
            }
            let kind = key.env_kind.unwrap_or(key.kind);
            let env_err = |reason| ConfigError::Env {
                var: var.to_string(),
                reason,
            };
            let value = (kind.parse)(&Value::String(text)).map_err(env_err)?;
            (key.check)(&value).map_err(env_err)?;
            if let Some((path, node)) = &in_file
                && let Err(e) = (key.kind.parse)(node)
                && ((key.kind.syntax && e != MUST_BE_POSITIVE) || e.starts_with("invalid type"))
            {
                return Err(self.bad(key, path, e));
            }
            return Ok(Some((value, Source::Env(var.to_string()))));
        }
        match in_file {
            Some((path, node)) => {
                let value = (key.kind.parse)(&node).map_err(|e| self.bad(key, &path, e))?;
                (key.check)(&value).map_err(|reason| ConfigError::invalid(path, reason))?;
                let source = self.file.clone().map_or(Source::Default, Source::File);
                Ok(Some((value, source)))
            }
            None => Ok(None),
        }
    }

    /// The node at a dotted path, if set (`null` and a Python service's empty list are unset).
    fn node(&self, path: &str) -> Option<Value> {
        // A computed key is what its Python service keys say, nothing else (an empty
        // `subscriptions:` section sets nothing).
        if COMPUTED.contains(&path) {
            return self.computed.get(path).cloned();
        }
        let mut node = &self.doc;
        for part in path.split('.') {
            node = node.get(part)?;
        }
        match node {
            Value::Null => None,
            Value::Sequence(s) if s.is_empty() && PYTHON_LISTS.contains(&path) => None,
            other => Some(other.clone()),
        }
    }

    /// A refused file value: malformed (reported with the file) or breaking a rule (under the
    /// key alone), as [`Kind::syntax`] says.
    fn bad<T>(&self, key: &Key<T>, path: &str, reason: String) -> ConfigError {
        if !key.kind.syntax || reason == MUST_BE_POSITIVE {
            return ConfigError::invalid(path, reason);
        }
        ConfigError::File {
            path: self.file.clone().unwrap_or_default(),
            reason: format!("{path}: {reason}"),
        }
    }

    pub(crate) fn warn(&mut self, message: String) {
        let message = match &self.file {
            Some(path) => format!("config file {}: {message}", path.display()),
            None => message,
        };
        // A key read twice (`peek`, then `get`) must not repeat its warning.
        if !self.warnings.contains(&message) {
            self.warnings.push(message);
        }
    }

    /// Refuses a key of the file that no declaration reads (nor the Python service's file has).
    fn refuse_unknown(
        &self,
        node: &Value,
        prefix: &str,
        known: &BTreeSet<String>,
    ) -> Result<(), ConfigError> {
        let path = self.file.clone().unwrap_or_default();
        let map = match node {
            Value::Null => return Ok(()),
            Value::Mapping(map) => map,
            other => {
                let at = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}: ")
                };
                return Err(ConfigError::File {
                    path,
                    reason: format!("{at}invalid type: {}, expected a mapping", what(other)),
                });
            }
        };
        for (k, v) in map {
            let k = super::value::scalar(k).unwrap_or_else(|_| format!("{k:?}"));
            let full = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            let section = format!("{full}.");
            if known.contains(&full) {
                continue;
            }
            if known.iter().any(|n| n.starts_with(&section)) {
                self.refuse_unknown(v, &full, known)?;
                continue;
            }
            let level = if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}.")
            };
            let siblings: BTreeSet<&str> = known
                .iter()
                .filter_map(|n| n.strip_prefix(&level)?.split('.').next())
                .collect();
            let siblings: Vec<&str> = siblings.into_iter().collect();
            return Err(ConfigError::UnknownKey {
                path,
                suggestion: closest(&k, &siblings).map(str::to_string),
                key: full,
            });
        }
        Ok(())
    }

    /// `batch.types` entries may name a type by its table (`trades`) and use the Python service
    /// README's `batch_size` / `timeout` for `max_rows` / `max_age`: rewritten to our names.
    fn normalize_batch_types(&mut self) -> Result<(), ConfigError> {
        let types = self.doc.get_mut("batch").and_then(|b| b.get_mut("types"));
        let Some(Value::Mapping(map)) = types else {
            return Ok(());
        };
        let mut seen: BTreeMap<DataType, String> = BTreeMap::new();
        for (k, mut v) in std::mem::take(map) {
            let name = super::value::scalar(&k).unwrap_or_default();
            let key = format!("batch.types.{name}");
            let t = DataType::parse(&name)
                .or_else(|| DataType::ALL.into_iter().find(|t| t.table() == name))
                .ok_or_else(|| ConfigError::invalid(&key, super::value::unknown_type(&name)))?;
            if let Some(other) = seen.insert(t, name) {
                let reason = format!("same data type as batch.types.{other}");
                return Err(ConfigError::invalid(key, reason));
            }
            if let Value::Mapping(fields) = &mut v {
                for (alias, ours) in [("batch_size", "max_rows"), ("timeout", "max_age")] {
                    let Some(value) = fields.remove(alias) else {
                        continue;
                    };
                    if fields.insert(ours.into(), value).is_some() {
                        return Err(ConfigError::File {
                            path: self.file.clone().unwrap_or_default(),
                            reason: format!("{key}: duplicate field `{ours}`"),
                        });
                    }
                }
            }
            map.insert(t.as_str().into(), v);
        }
        Ok(())
    }
}

/// Python service keys holding a list, where an empty list means "not set".
const PYTHON_LISTS: [&str; 1] = ["nats.servers"];

fn name_at<T>(key: &Key<T>, at: Option<&str>) -> String {
    match at {
        Some(at) => key.name.replace('*', at),
        None => key.name.to_string(),
    }
}

/// Renders the effective configuration as an aligned `key  value  source` table, followed by the
/// warnings. Passwords and the token are shown as `****` (or `(empty)`), never in clear.
pub fn render(loaded: &Loaded) -> String {
    const MAX_VALUE_WIDTH: usize = 48;
    let rows: Vec<(&str, &str, String)> = loaded
        .entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str(), loaded.source(k).to_string()))
        .collect();
    let key_width = rows.iter().map(|r| r.0.len()).chain([3]).max().unwrap_or(3);
    // A very long value (the 18 subjects) would push every source far right: it overflows its
    // column instead.
    let value_width = rows
        .iter()
        .map(|r| r.1.chars().count())
        .filter(|w| *w <= MAX_VALUE_WIDTH)
        .chain([5])
        .max()
        .unwrap_or(5);
    let mut out = String::new();
    let mut line = |k: &str, v: &str, s: &str| {
        let pad = value_width.saturating_sub(v.chars().count());
        let text = format!("{k:<key_width$}  {v}{:pad$}  {s}", "");
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line("key", "value", "source");
    for (k, v, s) in &rows {
        line(k, v, s);
    }
    for warning in &loaded.warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    out
}
