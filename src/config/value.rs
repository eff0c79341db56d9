//! Values: how a YAML node or an environment variable becomes a typed value ([`Kind`]), the
//! rules keys check, and how values print back.
//!
//! The same parser serves both sources, so `2s` means the same in a file and in `env`. Errors are
//! the reason only (lower-case, with the offending value quoted); the caller adds the key.

use std::net::{IpAddr, SocketAddr};
use std::num::{IntErrorKind, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use yaml_serde::Value;

use super::{
    ClickHouseHost, Compression, Discard, LogFormat, NatsMode, Secret, SecretItem, StreamStorage,
};
use crate::model::DataType;

/// How a key's value is read and printed. An environment variable's text is read as a YAML
/// string, so a kind parses both sources with one function.
pub(crate) struct Kind<T> {
    /// The node → the value, or the reason it is refused.
    pub parse: fn(&Value) -> Result<T, String>,
    /// The value as `config` prints it (secrets masked).
    pub show: fn(&T) -> String,
    /// Whether an empty variable is a value (an empty password) rather than "unset".
    pub empty_env_is_value: bool,
    /// `syntax`: a refused file value is reported with the file's name, as a malformed file;
    /// `rule`: under its key alone, as every broken rule (and a zero where none fits) is.
    pub syntax: bool,
    /// The secrets the value holds (`None`: a kind that holds none). Every key of a kind that
    /// has them is masked in everything the process writes (`crate::redact`), without a line
    /// of its own anywhere else.
    pub hidden: Option<fn(&T) -> Vec<SecretItem>>,
}

macro_rules! kinds {
    (@syntax syntax) => { true };
    (@syntax rule) => { false };
    (@hidden $t:ty,) => { None };
    (@hidden $t:ty, $hidden:expr) => { Some($hidden as fn(&$t) -> Vec<SecretItem>) };
    ($($(#[$doc:meta])* $class:ident $name:ident: $t:ty = $parse:expr, $show:expr
        $(, secret $hidden:expr)?;)*) => {$(
        $(#[$doc])*
        pub(crate) const $name: Kind<$t> = Kind {
            parse: $parse,
            show: $show,
            empty_env_is_value: false,
            syntax: kinds!(@syntax $class),
            hidden: kinds!(@hidden $t, $($hidden)?),
        };
    )*};
}

/// A kind whose values are a fixed set of names, read (`lower`: in any case) and printed
/// from one table.
macro_rules! choice {
    ($name:ident: $t:ty, $what:literal, expected $expected:literal, lower $lower:literal,
        [$(($text:literal, $value:expr)),+]) => {
        pub(crate) const $name: Kind<$t> = Kind {
            parse: |v| pick(v, $lower, $what, $expected, &[$(($text, $value)),+]),
            show: |x| {
                let names = [$(($text, $value)),+];
                names.iter().find(|(_, v)| v == x).map_or("", |(t, _)| t).to_string()
            },
            empty_env_is_value: false,
            syntax: false,
            hidden: None,
        };
    };
}

choice! {
    MODE: NatsMode, "mode", expected "jetstream or core", lower true,
    [("jetstream", NatsMode::JetStream), ("core", NatsMode::Core)]
}
choice! {
    STREAM_STORAGE: StreamStorage, "storage", expected "file or memory", lower false,
    [("file", StreamStorage::File), ("memory", StreamStorage::Memory)]
}
choice! {
    STREAM_DISCARD: Discard, "discard policy", expected "old or new", lower false,
    [("old", Discard::Old), ("new", Discard::New)]
}
choice! {
    INSERT_COMPRESSION: Compression, "compression", expected "lz4 or none", lower false,
    [("none", Compression::None), ("lz4", Compression::Lz4)]
}
choice! {
    LOG_FORMAT_KIND: LogFormat, "format", expected "pretty or json", lower true,
    [("pretty", LogFormat::Pretty), ("text", LogFormat::Pretty), ("json", LogFormat::Json)]
}

#[rustfmt::skip]
kinds! {
    syntax TEXT: String = |v| scalar(v), String::clone;
    syntax BOOL: bool = |v| parse_bool(&scalar(v)?), bool::to_string;
    syntax DURATION: Duration = |v| parse_duration(&scalar(v)?), |d| format_duration(*d);
    /// Fractional hours (`8`, `0.05`), as the Python service's `MIGRATION_WINDOW_HOURS`.
    syntax HOURS: Duration = |v| {
        let s = scalar(v)?;
        let hours: f64 = s.trim().parse()
            .map_err(|_| format!("invalid number \"{s}\": expected hours, e.g. 8 or 0.5"))?;
        seconds_to_duration(hours * 3600.0)
    }, |d| (d.as_secs_f64() / 3600.0).to_string();
    syntax SIZE: NonZeroU64 = |v| non_zero(parse_size(&scalar(v)?)?), |n| format_size(n.get());
    syntax PORT: u16 = |v| parse_port(&scalar(v)?), u16::to_string;
    syntax COUNT: NonZeroU64 = |v| non_zero(parse_count(&scalar(v)?)?), NonZeroU64::to_string;
    syntax ROWS: NonZeroUsize = |v| {
        let n = usize::try_from(parse_count(&scalar(v)?)?).map_err(|_| "too large".to_string())?;
        NonZeroUsize::new(n).ok_or_else(|| MUST_BE_POSITIVE.to_string())
    }, NonZeroUsize::to_string;
    syntax U32: u32 = |v| u32::try_from(parse_count(&scalar(v)?)?).map_err(|_| "too large".into()),
        u32::to_string;
    syntax I64: i64 = |v| {
        let s = scalar(v)?;
        s.trim().parse().map_err(|_| format!("invalid number \"{s}\": expected a whole number"))
    }, i64::to_string;
    syntax F64: f64 = |v| {
        let s = scalar(v)?;
        s.trim().parse().map_err(|_| format!("invalid number \"{s}\""))
    }, f64::to_string;
    syntax LIST: Vec<String> = list, |l| l.join(",");
    syntax PATH: PathBuf = |v| Ok(PathBuf::from(scalar(v)?)), |p| p.display().to_string();
    /// A text whose surrounding blanks do not count; empty = no filter.
    syntax FILTER: String = |v| Ok(scalar(v)?.trim().to_string()),
        |s| if s.is_empty() { "(none)".into() } else { s.clone() };
    /// A bearer token; empty = none.
    syntax TOKEN: Secret = |v| Ok(Secret::new(secret_text(v)?)),
        |s| if s.is_empty() { "(none)".into() } else { s.masked().into() },
        secret |s| vec![SecretItem::Value(s.clone())];
    /// A file whose content is secret (a private key, an nkey seed, a creds file): read and
    /// printed as a path, its content registered for masking.
    syntax SECRET_FILE: PathBuf = |v| Ok(PathBuf::from(scalar(v)?)), |p| p.display().to_string(),
        secret |p| vec![SecretItem::File(p.clone())];
    rule IP: IpAddr = |v| {
        let s = scalar(v)?;
        s.parse().map_err(|_| format!("invalid ip address \"{s}\""))
    }, IpAddr::to_string;
    rule SOCKET: SocketAddr = |v| {
        let s = scalar(v)?;
        match s.parse::<SocketAddr>() {
            Ok(a) if a.port() == 0 => Err(format!("invalid address \"{s}\": port must be 1-65535")),
            Ok(a) => Ok(a),
            Err(_) => Err(format!("invalid address \"{s}\": expected ip:port")),
        }
    }, SocketAddr::to_string;
    rule NATS_URLS: Vec<String> = |v| parse_nats_urls(&list(v)?.join(",")),
        |l| l.iter().map(|u| redact_nats_url(u)).collect::<Vec<_>>().join(","),
        secret |l| l.iter().filter_map(|u| super::nats_security::url_credentials(u))
            .map(|c| SecretItem::Value(c.into_secret())).collect();
    /// `MARKETPRISM_LOG_JSON`: a boolean choosing `json` or `pretty`.
    rule LOG_JSON: LogFormat = |v| Ok(if parse_bool(&scalar(v)?)? { LogFormat::Json } else { LogFormat::Pretty }),
        LOG_FORMAT_KIND.show;
    /// `embedded`, or a host name or address of an external server.
    rule CLICKHOUSE_HOST: ClickHouseHost = |v| match scalar(v)?.trim() {
        "embedded" => Ok(ClickHouseHost::Embedded),
        host => check_host(host).map(ClickHouseHost::Server),
    }, |h| match h { ClickHouseHost::Embedded => "embedded".into(), ClickHouseHost::Server(s) => s.clone() };
    /// A host name or address, not a URL.
    rule HOST: String = |v| check_host(&scalar(v)?), String::clone;
    /// A level (Python names accepted: `INFO`, `WARNING`, `CRITICAL`) or a filter directive.
    rule LEVEL: String = |v| normalize_level(&scalar(v)?), String::clone;
    /// Data type names, no duplicates, returned in [`DataType::ALL`] order.
    rule TYPES: Vec<DataType> = |v| {
        let mut types = Vec::new();
        for name in list(v)? {
            let t = DataType::parse(&name).ok_or_else(|| unknown_type(&name))?;
            if types.contains(&t) {
                return Err(format!("\"{t}\" is listed twice"));
            }
            types.push(t);
        }
        if types.is_empty() {
            return Err("must name at least one data type".into());
        }
        types.sort_by_key(|t| DataType::ALL.iter().position(|a| a == t));
        Ok(types)
    }, |l| l.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(",");
}

/// A password: an empty variable is an (empty) password, and it prints masked.
pub(crate) const PASSWORD: Kind<Secret> = Kind {
    parse: |v| Ok(Secret::new(secret_text(v)?)),
    show: |s| s.masked().into(),
    empty_env_is_value: true,
    syntax: true,
    hidden: Some(|s| vec![SecretItem::Value(s.clone())]),
};

/// What a node is, for "invalid type" messages.
pub(crate) fn what(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Sequence(_) => "sequence",
        Value::Mapping(_) => "mapping",
        Value::Tagged(_) => "tagged value",
    }
}

/// A secret as written: a YAML string. An unquoted number or boolean is refused: the YAML
/// value tree keeps its value, not its text (`0123` would become `123`, `1.50` `1.5`), and a
/// password that changed silently fails every login.
fn secret_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => Err(
            "write the secret in quotes: an unquoted number or boolean is not kept as written"
                .into(),
        ),
        other => scalar(other),
    }
}

/// A single value (string, number or boolean) as text.
pub(crate) fn scalar(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!(
            "invalid type: {}, expected a single value",
            what(other)
        )),
    }
}

/// A YAML sequence of values, or one comma-separated text (as environment variables give it).
fn list(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Sequence(items) => items.iter().map(scalar).collect(),
        other => Ok(scalar(other)?
            .split(',')
            .map(|s| s.trim().to_string())
            .collect()),
    }
}

/// One of `options` (`lower`: compared in lower case), else "unknown <what> ... (expected ...)".
fn pick<T: Copy>(
    v: &Value,
    lower: bool,
    what: &str,
    expected: &str,
    options: &[(&str, T)],
) -> Result<T, String> {
    let s = scalar(v)?;
    let key = if lower {
        s.to_ascii_lowercase()
    } else {
        s.clone()
    };
    let found = options.iter().find(|(name, _)| *name == key);
    found
        .map(|(_, t)| *t)
        .ok_or_else(|| format!("unknown {what} \"{s}\" (expected {expected})"))
}

/// The reason a zero is refused where the type holds none.
pub(crate) const MUST_BE_POSITIVE: &str = "must be > 0";

fn non_zero(n: u64) -> Result<NonZeroU64, String> {
    NonZeroU64::new(n).ok_or_else(|| MUST_BE_POSITIVE.to_string())
}

/// JetStream's largest replica count: a stream (or key-value bucket) of more is refused.
pub(crate) const MAX_REPLICAS: usize = 5;

/// Rule: a replica count JetStream accepts (1 to [`MAX_REPLICAS`]).
pub(crate) fn replicas(n: &NonZeroUsize) -> Result<(), String> {
    if n.get() <= MAX_REPLICAS {
        Ok(())
    } else {
        Err(format!(
            "must be 1 to {MAX_REPLICAS} (JetStream's largest replica count), got {n}"
        ))
    }
}

/// Rule: a duration that is not zero.
pub(crate) fn positive(d: &Duration) -> Result<(), String> {
    if d.is_zero() {
        Err(MUST_BE_POSITIVE.into())
    } else {
        Ok(())
    }
}

/// Rule: at least one subject, each a valid filter.
pub(crate) fn subjects(list: &[String]) -> Result<(), String> {
    if list.is_empty() {
        return Err("must not be empty".into());
    }
    list.iter().try_for_each(|s| check_subject(s))
}

/// Rule: a stream's message limit.
pub(crate) fn partitions(n: &std::num::NonZeroUsize) -> Result<(), String> {
    let max = crate::source::partition::MAX_PARTITIONS as usize;
    if n.get() > max {
        return Err(format!("at most {max}"));
    }
    Ok(())
}

pub(crate) fn max_msgs(n: &i64) -> Result<(), String> {
    if *n == 0 || *n < -1 {
        Err("must be > 0 (or -1 for no limit)".into())
    } else {
        Ok(())
    }
}

/// Rule: a pull fits one message of NATS's default `max_payload` (1 MiB), or the server could
/// never deliver it.
pub(crate) fn fits_a_message(n: &NonZeroU64) -> Result<(), String> {
    if n.get() >= 1 << 20 {
        return Ok(());
    }
    Err(format!(
        "must be >= 1MiB (one message of NATS's default max_payload), got {n}"
    ))
}

/// Rule: not the empty string.
pub(crate) fn not_empty(s: &str) -> Result<(), String> {
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(())
    }
}

/// Rule: a ClickHouse cluster name as `remote_servers` spells it (empty: none).
pub(crate) fn check_cluster(name: &str) -> Result<(), String> {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid cluster name \"{name}\": use letters, digits, _, - and ."
        ))
    }
}

/// Rule: an insert quorum is off (0, 1) or a replica count ClickHouse takes (2..=255).
pub(crate) fn quorum(n: &u32) -> Result<(), String> {
    if *n <= 255 {
        Ok(())
    } else {
        Err("must be at most 255 (replicas of one shard)".into())
    }
}

/// Rule: a backoff multiplier.
pub(crate) fn multiplier(m: &f64) -> Result<(), String> {
    if m.is_finite() && *m >= 1.0 {
        Ok(())
    } else {
        Err("must be a number >= 1".into())
    }
}

/// Rule: a fraction above zero.
pub(crate) fn fraction(j: &f64) -> Result<(), String> {
    if j.is_finite() && *j > 0.0 {
        return Ok(());
    }
    Err(format!("must be a fraction > 0, e.g. 0.1 (got {j})"))
}

/// Rule: the cold server is a real one.
pub(crate) fn not_embedded(host: &str) -> Result<(), String> {
    if host != "embedded" {
        return Ok(());
    }
    Err("cannot be \"embedded\"; leave it unset to use the hot server".into())
}

/// The reason an unknown data type name is refused.
pub(crate) fn unknown_type(name: &str) -> String {
    let names: Vec<&str> = DataType::ALL.iter().map(|t| t.as_str()).collect();
    format!(
        "unknown data type \"{name}\" (expected one of {})",
        names.join(", ")
    )
}

/// Parses `500ms`, `2s`, `5m`, `48h`, `1d` or a bare number of seconds (`3.0`, `60`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit = unit.trim();
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration \"{text}\": expected e.g. 500ms, 2s, 5m, 48h"))?;
    let seconds = match unit {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" | "mins" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => {
            return Err(format!(
                "invalid duration \"{text}\": unknown unit \"{unit}\" (use ms, s, m, h or d)"
            ));
        }
    };
    seconds_to_duration(seconds).map_err(|reason| format!("invalid duration \"{text}\": {reason}"))
}

/// Converts a number of seconds into a `Duration`, rejecting negative or non-finite values.
pub(crate) fn seconds_to_duration(seconds: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(seconds).map_err(|_| "must be a finite, non-negative number".into())
}

/// Prints a duration the way [`parse_duration`] reads it back (`48h`, `2s`, `500ms`).
pub(crate) fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if !millis.is_multiple_of(1000) || millis == 0 {
        if !d.subsec_nanos().is_multiple_of(1_000_000) {
            return format!("{}s", d.as_secs_f64());
        }
        return format!("{millis}ms");
    }
    let secs = d.as_secs();
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Parses `64MiB`, `2GiB`, `512KiB`, `10MB` (decimal) or a bare number of bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let bad = || format!("invalid size \"{text}\": expected e.g. 64MiB, 2GiB or a number of bytes");
    let value: u64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "kib" => 1 << 10,
        "mb" | "m" => 1_000_000,
        "mib" => 1 << 20,
        "gb" | "g" => 1_000_000_000,
        "gib" => 1 << 30,
        "tb" | "t" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("invalid size \"{text}\": too large"))
}

/// Prints a size the way [`parse_size`] reads it back (`64MiB`, `2GiB`, `1234`).
pub(crate) fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (unit, name) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{name}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// Parses a TCP port, 1–65535.
pub(crate) fn parse_port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(0) => Err(format!("invalid port \"{text}\": must be 1-65535")),
        Ok(port) => Ok(port),
        Err(e) => {
            let why = match e.kind() {
                IntErrorKind::Empty => "empty",
                IntErrorKind::PosOverflow => "must be 1-65535",
                _ => "invalid digit",
            };
            Err(format!("invalid port \"{text}\": {why}"))
        }
    }
}

/// Parses a boolean: `1/0`, `true/false`, `yes/no`, `on/off` (any case).
pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "invalid boolean \"{text}\": expected 1/0, true/false or yes/no"
        )),
    }
}

/// Parses a whole number (`5000000`, `5_000_000`).
pub(crate) fn parse_count(text: &str) -> Result<u64, String> {
    text.trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("invalid number \"{text}\": expected a whole number"))
}

/// A NATS URL with its secret replaced by `***` (`nats://user:***@host:4222`, a token alone
/// `nats://***@host`), for everything printed: `config`, errors, logs.
pub fn redact_nats_url(u: &str) -> String {
    let Some((scheme, rest)) = u.split_once("://") else {
        return u.to_string();
    };
    let Some((auth, host)) = rest.rsplit_once('@') else {
        return u.to_string();
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        // A token alone (`nats://token@host`) is the secret.
        None => format!("{scheme}://***@{host}"),
    }
}

/// Splits and checks `nats://a:4222,tls://b:4222`.
pub(crate) fn parse_nats_urls(text: &str) -> Result<Vec<String>, String> {
    let mut urls = Vec::new();
    for raw in text.split(',').map(str::trim) {
        // Errors quote the URL without its secret.
        let part = &redact_nats_url(raw);
        let rest = part
            .strip_prefix("nats://")
            .or_else(|| part.strip_prefix("tls://"))
            .ok_or_else(|| format!("invalid url \"{part}\": scheme must be nats:// or tls://"))?;
        // Credentials are read up to the authority's end, as a URL parser does: a `/`, `?` or
        // `#` written raw in them would end it early, leaving the secret unread (and unmasked).
        if let Some((userinfo, _)) = raw.split_once("://").and_then(|(_, r)| r.rsplit_once('@'))
            && userinfo.contains(['/', '?', '#'])
        {
            return Err(format!(
                "invalid url \"{part}\": percent-encode the user, password or token in a URL ('/' as %2F, '?' as %3F, '#' as %23, '@' as %40, ',' as %2C), or set nats.user and nats.password"
            ));
        }
        // Skip optional credentials (`user:pass@host`).
        let host_port = rest
            .rsplit('@')
            .next()
            .unwrap_or(rest)
            .trim_end_matches('/');
        let (host, port) = match host_port.strip_prefix('[') {
            // An IPv6 literal: `[::1]:4222`.
            Some(v6) => match v6.split_once(']') {
                Some((h, p)) => (h, p.strip_prefix(':')),
                None => return Err(format!("invalid url \"{part}\": unclosed [")),
            },
            None => match host_port.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            },
        };
        if host.is_empty() {
            return Err(format!("invalid url \"{part}\": no host"));
        }
        if let Some(port) = port {
            parse_port(port).map_err(|r| format!("invalid url \"{part}\": {r}"))?;
        }
        urls.push(raw.to_string());
    }
    Ok(urls)
}

/// Stream names and consumer names: no whitespace, `.`, `*`, `>`, path separators.
pub(crate) fn check_name(name: &str, allow_empty: bool) -> Result<(), String> {
    if name.is_empty() && !allow_empty {
        return Err("must not be empty".into());
    }
    match name
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        Some(c) => Err(format!("invalid name \"{name}\": must not contain {c:?}")),
        None => Ok(()),
    }
}

/// An inbox prefix: dot-separated tokens of letters, digits, `_` and `-` (no wildcard).
pub(crate) fn check_inbox_prefix(prefix: &str) -> Result<(), String> {
    let token = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if prefix.split('.').all(token) {
        Ok(())
    } else {
        Err(format!(
            "invalid inbox prefix \"{prefix}\": dot-separated tokens of letters, digits, _ and -"
        ))
    }
}

/// Key-value bucket names: letters, digits, `_` and `-`.
pub(crate) fn check_bucket(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(format!(
            "invalid bucket name \"{name}\": use letters, digits, _ and -"
        ))
    }
}

/// A subject filter: non-empty dot-separated tokens, `>` only last.
pub(crate) fn check_subject(subject: &str) -> Result<(), String> {
    let tokens: Vec<&str> = subject.split('.').collect();
    let bad = tokens.iter().enumerate().any(|(i, t)| {
        t.is_empty()
            || t.chars().any(char::is_whitespace)
            || (*t == ">" && i + 1 != tokens.len())
            || (t.len() > 1 && (t.contains('*') || t.contains('>')))
    });
    if bad {
        Err(format!("invalid subject \"{subject}\""))
    } else {
        Ok(())
    }
}

/// A host name or address, not a URL.
pub(crate) fn check_host(host: &str) -> Result<String, String> {
    let host = host.trim();
    if host.is_empty() {
        Err("must not be empty".into())
    } else if host.contains("://") || host.contains('/') || host.chars().any(char::is_whitespace) {
        Err(format!(
            "invalid host \"{host}\": expected a host name or address, not a url"
        ))
    } else {
        Ok(host.to_string())
    }
}

/// A ClickHouse database name we can put in SQL unquoted.
pub(crate) fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid database name \"{name}\": use letters, digits and _"
        ))
    }
}

/// A level name (Python names accepted: `INFO`, `WARNING`, `CRITICAL`) or a filter directive.
pub(crate) fn normalize_level(level: &str) -> Result<String, String> {
    let lower = level.trim().to_ascii_lowercase();
    if lower.contains('=') || lower.contains(',') {
        return Ok(level.trim().to_string());
    }
    match lower.as_str() {
        "trace" | "debug" | "info" | "warn" | "error" | "off" => Ok(lower),
        "warning" => Ok("warn".into()),
        "critical" | "fatal" => Ok("error".into()),
        _ => Err(format!(
            "unknown level \"{level}\" (expected trace, debug, info, warn, error or off)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        for (text, d) in [
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("5m", Duration::from_secs(300)),
            ("48h", Duration::from_secs(172_800)),
            ("3.0", Duration::from_secs(3)),
            ("2.5", Duration::from_millis(2500)),
            ("1d", Duration::from_secs(86_400)),
        ] {
            assert_eq!(parse_duration(text), Ok(d), "{text}");
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(2500)), "2500ms");
        assert!(
            parse_duration("5x")
                .unwrap_err()
                .contains("unknown unit \"x\"")
        );
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_parse_and_print_back() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert_eq!(format_size(2 << 30), "2GiB");
        assert_eq!(format_size(1234), "1234");
        assert!(parse_size("12XB").is_err());
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn ports_and_bools() {
        assert_eq!(parse_port("8123"), Ok(8123));
        assert_eq!(
            parse_port("80x").unwrap_err(),
            "invalid port \"80x\": invalid digit"
        );
        assert_eq!(
            parse_port("0").unwrap_err(),
            "invalid port \"0\": must be 1-65535"
        );
        assert_eq!(
            parse_port("70000").unwrap_err(),
            "invalid port \"70000\": must be 1-65535"
        );
        for t in ["1", "true", "YES", "on"] {
            assert_eq!(parse_bool(t), Ok(true));
        }
        for f in ["0", "false", "no", "Off"] {
            assert_eq!(parse_bool(f), Ok(false));
        }
        assert!(parse_bool("maybe").is_err());
        assert_eq!(parse_count("5_000_000"), Ok(5_000_000));
    }
}
