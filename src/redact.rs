//! The redaction registry: every secret the loaded configuration holds, and the one function,
//! [`redact`], that masks them in text the process sends out.
//!
//! Consumes: the secret texts of the configuration ([`register`], called by the binary right
//! after the configuration is loaded: passwords, tokens, the credentials of NATS URLs, the
//! contents of secret files). Emits: text with every registered secret replaced by [`MASK`].
//! Applied at the edges, so no message has to remember it: the log writer
//! ([`RedactingMakeWriter`]), the binary's error line and stdout, the panic hook
//! ([`install_panic_hook`]) and every ops HTTP answer (`ops`). Never: reads the configuration
//! itself, logs, or keeps anything but the registered texts.
//!
//! A secret is registered in every form it can take in printed text: as written, JSON- and
//! Debug-escaped (a JSON log line, a `?field`, a `?field` in a JSON line), percent-encoded
//! and -decoded (a URL's userinfo). Texts shorter than [`MIN_LEN`] are not registered (masking every `abc` would
//! make the logs unreadable); `config` warns about such a secret.
//!
//! The registry is process-global (the log writer and the panic hook have no other way to
//! reach it) and only grows: a process loads one configuration.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::{PoisonError, RwLock};

use tracing_subscriber::fmt::MakeWriter;

/// What a secret is replaced with.
pub const MASK: &str = "****";

/// Secrets shorter than this (in bytes) are not masked in logs and errors.
pub const MIN_LEN: usize = 6;

/// The registered forms (each occurrence of any of them is masked, overlaps merged).
static REGISTRY: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds `secrets` (each in every printed form, see the module doc) to the registry.
pub fn register<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) {
    let mut registry = REGISTRY.write().unwrap_or_else(PoisonError::into_inner);
    for secret in secrets {
        for form in forms(secret.as_ref()) {
            if !registry.contains(&form) {
                registry.push(form);
            }
        }
    }
    registry.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every registered secret replaced by [`MASK`] (borrowed when there is none).
pub fn redact(text: &str) -> Cow<'_, str> {
    let registry = REGISTRY.read().unwrap_or_else(PoisonError::into_inner);
    mask(&registry, text)
}

/// Whether anything is registered (the ops surface skips buffering its answers otherwise).
pub fn is_active() -> bool {
    !REGISTRY
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .is_empty()
}

/// Masks every byte that any occurrence of any secret covers, overlapping ones included (two
/// secrets that overlap in `text` leave no tail of either; replacing one after the other
/// would leave the part of the second the first one took).
fn mask<'a>(secrets: &[String], text: &'a str) -> Cow<'a, str> {
    let mut covered: Vec<(usize, usize)> = Vec::new();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let mut from = 0;
        while let Some(at) = text.get(from..).and_then(|t| t.find(secret.as_str())) {
            let start = from + at;
            covered.push((start, start + secret.len()));
            // The next occurrence may overlap this one: search again one character on.
            from = start + text[start..].chars().next().map_or(1, char::len_utf8);
        }
    }
    if covered.is_empty() {
        return Cow::Borrowed(text);
    }
    covered.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut written = 0;
    let mut i = 0;
    while i < covered.len() {
        let (start, mut end) = covered[i];
        while i + 1 < covered.len() && covered[i + 1].0 <= end {
            end = end.max(covered[i + 1].1);
            i += 1;
        }
        out.push_str(&text[written..start]);
        out.push_str(MASK);
        written = end;
        i += 1;
    }
    out.push_str(&text[written..]);
    Cow::Owned(out)
}

/// The forms of `secret` that printed text can hold, each at least [`MIN_LEN`] long.
pub fn forms(secret: &str) -> Vec<String> {
    if secret.len() < MIN_LEN {
        return Vec::new();
    }
    let quoted = |s: String| s[1..s.len() - 1].to_string();
    let json = |s: &str| serde_json::to_string(s).map_or_else(|_| s.to_string(), quoted);
    let debug = quoted(format!("{secret:?}"));
    let mut forms = vec![
        secret.to_string(),
        json(secret),
        // A `?field` in a JSON log line: Debug-escaped, then JSON-escaped.
        json(&debug),
        debug,
        percent_encode(secret),
    ];
    let decoded = percent_decode(secret);
    if decoded != secret {
        forms.push(decoded);
    }
    let mut unique: Vec<String> = Vec::new();
    for f in forms {
        if f.len() >= MIN_LEN && !unique.contains(&f) {
            unique.push(f);
        }
    }
    unique
}

/// Every byte but the URL-unreserved ones as `%XX`, as a URL's userinfo carries it.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `s` with its `%XX` escapes decoded (a `%` not followed by two hex digits is kept as it is;
/// bytes that are not UTF-8 become U+FFFD).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            out.extend(u8::try_from(h * 16 + l));
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A writer that masks the registered secrets in what it is given before passing it on.
///
/// `tracing_subscriber`'s formatter writes each event with one `write_all`, so a secret is
/// always whole within one call.
#[derive(Debug)]
pub struct RedactingWriter<W>(pub W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let text = String::from_utf8_lossy(buf);
        match redact(&text) {
            // Unchanged: the original bytes (lossy decoding may have replaced some).
            Cow::Borrowed(_) => self.0.write_all(buf),
            Cow::Owned(masked) => self.0.write_all(masked.as_bytes()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A `tracing_subscriber` writer factory whose writers are [`RedactingWriter`]s.
#[derive(Debug, Clone)]
pub struct RedactingMakeWriter<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        RedactingWriter(self.0.make_writer_for(meta))
    }
}

/// Writes `text` to stderr with the registered secrets masked.
pub fn eprint(text: &str) {
    let mut err = RedactingWriter(io::stderr().lock());
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// Replaces the panic hook with one that prints what the default one does (thread, location,
/// message, the backtrace when `RUST_BACKTRACE` asks for it) with the secrets masked.
pub fn install_panic_hook() {
    set_panic_hook(eprint);
}

/// [`install_panic_hook`] writing to `sink` (a test collects the text).
pub fn set_panic_hook(sink: fn(&str)) {
    std::panic::set_hook(Box::new(move |info| sink(&panic_text(info))));
}

/// The default hook's text for `info`, masked.
fn panic_text(info: &std::panic::PanicHookInfo<'_>) -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed>");
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "Box<dyn Any>".into());
    let location = info
        .location()
        .map_or_else(String::new, |l| format!(" at {l}"));
    let backtrace = std::backtrace::Backtrace::capture();
    let trace = match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => format!("stack backtrace:\n{backtrace}\n"),
        _ => String::new(),
    };
    let text = format!("thread '{name}' panicked{location}:\n{message}\n{trace}");
    redact(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(secrets: &[&str], text: &str) -> String {
        let mut all: Vec<String> = secrets.iter().flat_map(|s| forms(s)).collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        mask(&all, text).into_owned()
    }

    #[test]
    fn overlapping_and_adjacent_secrets_leave_no_tail() {
        assert_eq!(
            masked(&["abcdefgh", "ghijklmn"], "x abcdefghijklmn y"),
            "x **** y"
        );
        assert_eq!(masked(&["aaaaaa"], "aaaaaaaa"), "****");
        assert_eq!(
            masked(
                &["s3cret-one", "s3cret-two"],
                "s3cret-ones3cret-two, s3cret-one"
            ),
            "****, ****"
        );
        assert_eq!(masked(&["pässwörd"], "é pässwörd é"), "é **** é");
        assert_eq!(masked(&["pässwörd"], "nothing here"), "nothing here");
    }

    #[test]
    fn every_printed_form_of_a_secret_is_masked() {
        let secret = r#"pa"ss\w@rd-Kx93"#;
        for text in [
            format!("password={secret} end"),
            format!("{{\"pw\":{}}}", serde_json::to_string(secret).unwrap()),
            format!("Some({secret:?})"),
            serde_json::to_string(&format!("Some({secret:?})")).unwrap(),
            format!("nats://u:{}@h:4222", percent_encode(secret)),
        ] {
            let out = masked(&[secret], &text);
            assert!(out.contains(MASK), "{text} -> {out}");
            for form in forms(secret) {
                assert!(!out.contains(&form), "{text} -> {out}");
            }
        }
        // A URL's userinfo as written (encoded) and as sent (decoded).
        let written = "s3cr%40t-pw";
        assert_eq!(masked(&[written], "pw s3cr@t-pw"), "pw ****");
        assert_eq!(masked(&[written], "pw s3cr%40t-pw"), "pw ****");
    }

    #[test]
    fn short_secrets_are_not_registered_and_longer_ones_win() {
        assert!(forms("abc").is_empty());
        assert_eq!(masked(&["abc12"], "abc12 stays"), "abc12 stays");
        // A secret inside a longer one: the longer is masked whole.
        assert_eq!(
            masked(
                &["secret-one", "secret-one-two"],
                "x secret-one-two y secret-one"
            ),
            "x **** y ****"
        );
        assert_eq!(masked(&[], "nothing"), "nothing");
    }

    #[test]
    fn the_writer_and_the_panic_hook_mask_registered_secrets() {
        let secret = "reg1stered-Zx81-secret";
        register([secret]);
        assert!(is_active());
        let mut out = Vec::new();
        write!(
            RedactingWriter(&mut out),
            "connect to nats://u:{secret}@h failed"
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "connect to nats://u:****@h failed"
        );
        assert_eq!(redact(&format!("[{secret:?}]")), "[\"****\"]");

        // The hook is process-wide: collect into a static, restore the default afterwards.
        static SEEN: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
        set_panic_hook(|text| SEEN.lock().unwrap().push_str(text));
        let joined = std::thread::Builder::new()
            .name("leaky".into())
            .spawn(move || panic!("cannot use password {secret} here"))
            .unwrap()
            .join();
        let _ = std::panic::take_hook();
        assert!(joined.is_err());
        let seen = SEEN.lock().unwrap().clone();
        assert!(
            seen.contains("thread 'leaky' panicked at src/redact.rs:"),
            "{seen}"
        );
        assert!(seen.contains("cannot use password **** here"), "{seen}");
        assert!(!seen.contains(secret), "{seen}");
    }
}
