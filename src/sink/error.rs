//! Sink errors and the one pure function that decides retry vs reject vs stop.
//!
//! Consumes errors from the `clickhouse` crate and from the encoder; emits [`SinkError`] whose
//! [`SinkError::kind`] the pipeline branches on. The decision lives in [`classify`], keyed on
//! ClickHouse error codes (`src/Common/ErrorCodes.cpp`; every code and name below was checked
//! with `errorCodeToName` on engine 26.9), and is pinned by a table test.

use super::native::EncodeError;

/// What the caller should do about a failed ClickHouse call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Transient (network, overload, a table not created yet): retry the same batch with the
    /// same dedup token, forever, with backoff.
    Retriable,
    /// Something in the rows is unacceptable: isolate the bad rows (bisect) and dead-letter
    /// them; retrying the same bytes cannot succeed.
    DataError,
    /// The service is misconfigured (credentials, schema drift, SQL bug): hold the batch
    /// (nothing is acked or dead-lettered), name it in `/ready`, and retry it on the slow end of
    /// the retry schedule until the cause is fixed.
    Fatal,
    /// The block spans more partitions than the server takes in one INSERT (`Code: 252`,
    /// "Too many partitions for single INSERT block"): split it by partition. Nothing of
    /// the block was written (the check runs before any part is).
    TooManyPartitions,
    /// The block is too large for one INSERT (a per-query memory limit, a body-size limit
    /// answered 413): split it in halves. Retrying the same bytes fails the same way; a
    /// server short of memory overall is `Retriable` instead.
    TooLarge,
}

impl ErrorClass {
    /// Whether the error is about the block's shape (its size or its partitions), which a
    /// split of the block fixes; such a block is never retried as it is, and never
    /// dead-lettered for its shape alone.
    pub fn is_shape(self) -> bool {
        matches!(self, ErrorClass::TooManyPartitions | ErrorClass::TooLarge)
    }
}

/// A failed sink operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// ClickHouse answered with an error.
    #[error("clickhouse error: {message}")]
    Server {
        /// The ClickHouse error code (`Code: N.`), when the response carried one.
        code: Option<i32>,
        /// The HTTP status, when the response carried nothing else (the crate keeps the status
        /// only for empty error bodies).
        http_status: Option<u16>,
        /// The server's message, verbatim.
        message: String,
    },
    /// The request did not complete: connection refused or reset, timeout, task aborted.
    #[error("transport error: {0}")]
    Transport(#[source] clickhouse::error::Error),
    /// The client could not build the request or read the answer (bad URL, unexpected result
    /// shape): a bug or a misconfiguration.
    #[error("client error: {0}")]
    Client(#[source] clickhouse::error::Error),
    /// The rows could not be encoded (a bug: rows of the wrong table).
    #[error("encode error: {0}")]
    Encode(#[from] EncodeError),
    /// `insert` was called for a table this service does not write.
    #[error("no insert columns are known for table {0}")]
    UnknownTable(String),
    /// `insert` was called without a dedup token, which would silently give up exactly-once.
    #[error("empty insert_deduplication_token")]
    EmptyToken,
    /// Rows that must never be dropped (dead letters) were refused by ClickHouse even one by
    /// one: the batch is held (not acked) and stored again later.
    #[error("{rows} row(s) of {table} refused and held; first error: {first}")]
    Refused {
        /// Table that refused them.
        table: String,
        /// How many rows were refused.
        rows: usize,
        /// The error for the first of them.
        first: Box<SinkError>,
    },
    /// A halving could not be journaled (the stop came, or another owner rewrote the
    /// journal): the insert stops before sending the halves.
    #[error("halving not journaled: {0}")]
    Journal(String),
    /// A retry loop was stopped by cancellation; `last` is the error it was retrying.
    #[error("retry cancelled after {attempts} attempts; last error: {last}")]
    RetryCancelled {
        /// Failed attempts so far.
        attempts: u32,
        /// The last retriable error.
        last: Box<SinkError>,
    },
}

impl SinkError {
    /// How the caller should react. A cancelled retry is `Retriable`: the batch was not
    /// inserted (or is deduplicated when re-sent), so it must not be acked.
    pub fn kind(&self) -> ErrorClass {
        match self {
            SinkError::Server {
                code,
                http_status,
                message,
            } => classify(*code, *http_status, message),
            SinkError::Transport(_) | SinkError::RetryCancelled { .. } | SinkError::Journal(_) => {
                ErrorClass::Retriable
            }
            SinkError::Client(_)
            | SinkError::Refused { .. }
            | SinkError::Encode(_)
            | SinkError::UnknownTable(_)
            | SinkError::EmptyToken => ErrorClass::Fatal,
        }
    }

    /// Whether the server refused our credentials (`AUTHENTICATION_FAILED`, `UNKNOWN_USER`,
    /// `WRONG_PASSWORD`, `REQUIRED_PASSWORD`, or a bare 401): waiting does not fix that.
    pub fn is_auth_failure(&self) -> bool {
        match self {
            SinkError::Server {
                code: Some(code), ..
            } => matches!(code, 516 | 192 | 193 | 194),
            SinkError::Server {
                code: None,
                http_status: Some(401),
                ..
            } => true,
            SinkError::RetryCancelled { last, .. } => last.is_auth_failure(),
            _ => false,
        }
    }

    /// Why the TLS handshake failed, when it failed on a certificate: the server's is not
    /// trusted (wrong CA, expired, another name) or the server refused ours (none, or one
    /// its CA did not sign). A misconfiguration, not an outage: waiting does not fix it.
    pub fn tls_certificate_failure(&self) -> Option<String> {
        let SinkError::Transport(e) = self else {
            return match self {
                SinkError::RetryCancelled { last, .. } => last.tls_certificate_failure(),
                _ => None,
            };
        };
        // The rustls error sits inside `io::Error`s (tokio-rustls, hyper-rustls), whose
        // `source()` skips the error they wrap: descend into those with `get_ref`.
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = current {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                current = match io.get_ref() {
                    Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                    None => err.source(),
                };
                continue;
            }
            if let Some(tls) = err.downcast_ref::<rustls::Error>() {
                use rustls::AlertDescription as A;
                return match tls {
                    rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::AlertReceived(
                        A::UnknownCA
                        | A::BadCertificate
                        | A::CertificateRequired
                        | A::CertificateUnknown
                        | A::UnsupportedCertificate
                        | A::CertificateExpired
                        | A::CertificateRevoked
                        | A::AccessDenied,
                    ) => Some(tls.to_string()),
                    _ => None,
                };
            }
            current = err.source();
        }
        None
    }

    /// The ClickHouse error code, if the server sent one.
    pub fn code(&self) -> Option<i32> {
        match self {
            SinkError::Server { code, .. } => *code,
            SinkError::RetryCancelled { last, .. } => last.code(),
            SinkError::Refused { first, .. } => first.code(),
            _ => None,
        }
    }
}

impl From<clickhouse::error::Error> for SinkError {
    fn from(e: clickhouse::error::Error) -> Self {
        use clickhouse::error::Error as E;
        match e {
            E::BadResponse(message) => SinkError::Server {
                code: parse_code(&message),
                http_status: parse_status(&message),
                message,
            },
            // `Custom` is what the crate returns when its request task was cancelled or
            // aborted, i.e. the connection went away under it.
            E::Network(_) | E::TimedOut | E::Custom(_) => SinkError::Transport(e),
            other => SinkError::Client(other),
        }
    }
}

use ErrorClass::{DataError, Fatal, Retriable, TooLarge, TooManyPartitions};

/// Known error codes, their names (matched in messages that lack a `Code:`), and their class.
/// Codes not listed are `Retriable`: an unknown failure holds the batch back (visible in the
/// retry metric) instead of dead-lettering good rows or stopping the service.
///
/// Two codes mean a shape error or an overload depending on the text, refined by
/// [`classify`]: 252 is both "Too many partitions for single INSERT block" (split by
/// partition) and "Too many parts … merges are processing significantly slower than
/// inserts" (overload: wait); 241 is "Memory limit (for query) exceeded" (this block is too
/// large: halve it) or the server's or user's total (overload: wait).
const CODES: &[(i32, &str, ErrorClass)] = &[
    // Transient: the server, the network or the cluster will recover.
    (23, "CANNOT_READ_FROM_ISTREAM", Retriable),
    (24, "CANNOT_WRITE_TO_OSTREAM", Retriable),
    // A missing table or database during start-up or a migration is transient: it will be
    // created (Vector treats it as fatal and drops data; we wait).
    (60, "UNKNOWN_TABLE", Retriable),
    (81, "UNKNOWN_DATABASE", Retriable),
    (159, "TIMEOUT_EXCEEDED", Retriable),
    (160, "TOO_SLOW", Retriable),
    (198, "DNS_ERROR", Retriable),
    (202, "TOO_MANY_SIMULTANEOUS_QUERIES", Retriable),
    (203, "NO_FREE_CONNECTION", Retriable),
    (209, "SOCKET_TIMEOUT", Retriable),
    (210, "NETWORK_ERROR", Retriable),
    (225, "NO_ZOOKEEPER", Retriable),
    (236, "ABORTED", Retriable),
    // Overload unless the text says the block itself is at fault (see `refine`).
    (241, "MEMORY_LIMIT_EXCEEDED", Retriable),
    (242, "TABLE_IS_READ_ONLY", Retriable),
    (243, "NOT_ENOUGH_SPACE", Retriable),
    (252, "TOO_MANY_PARTS", Retriable),
    (173, "CANNOT_ALLOCATE_MEMORY", Retriable),
    (279, "ALL_CONNECTION_TRIES_FAILED", Retriable),
    (285, "TOO_FEW_LIVE_REPLICAS", Retriable),
    (286, "UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE", Retriable),
    (319, "UNKNOWN_STATUS_OF_INSERT", Retriable),
    (373, "SESSION_IS_LOCKED", Retriable),
    (394, "QUERY_WAS_CANCELLED", Retriable),
    (425, "SYSTEM_ERROR", Retriable),
    (439, "CANNOT_SCHEDULE_TASK", Retriable),
    (473, "DEADLOCK_AVOIDED", Retriable),
    (999, "KEEPER_EXCEPTION", Retriable),
    (1000, "POCO_EXCEPTION", Retriable),
    // Bad values in the block: bisect to find the rows.
    (6, "CANNOT_PARSE_TEXT", DataError),
    (25, "CANNOT_PARSE_ESCAPE_SEQUENCE", DataError),
    (26, "CANNOT_PARSE_QUOTED_STRING", DataError),
    (27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", DataError),
    // Truncated binary input: a body cut off on the way in (a proxy, a reset) as well as a
    // block the server cannot read. The first is not a function of the rows — isolating
    // "bad rows" on it would dead-letter good ones, and a replay would not see it — and our
    // encoder's blocks are well formed, so it is retried (held if it persists).
    (32, "ATTEMPT_TO_READ_AFTER_EOF", Retriable),
    (33, "CANNOT_READ_ALL_DATA", Retriable),
    (38, "CANNOT_PARSE_DATE", DataError),
    (41, "CANNOT_PARSE_DATETIME", DataError),
    (53, "TYPE_MISMATCH", DataError),
    (69, "ARGUMENT_OUT_OF_BOUND", DataError),
    (70, "CANNOT_CONVERT_TYPE", DataError),
    (72, "CANNOT_PARSE_NUMBER", DataError),
    (117, "INCORRECT_DATA", DataError),
    (131, "TOO_LARGE_STRING_SIZE", DataError),
    (321, "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE", DataError),
    (349, "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN", DataError),
    (376, "CANNOT_PARSE_UUID", DataError),
    (407, "DECIMAL_OVERFLOW", DataError),
    // A table CHECK constraint is a per-row verdict.
    (469, "VIOLATED_CONSTRAINT", DataError),
    (691, "UNKNOWN_ELEMENT_OF_ENUM", DataError),
    // The service and the server disagree about who may do what, or about the schema.
    (8, "THERE_IS_NO_COLUMN", Fatal),
    (10, "NOT_FOUND_COLUMN_IN_BLOCK", Fatal),
    (16, "NO_SUCH_COLUMN_IN_TABLE", Fatal),
    (20, "NUMBER_OF_COLUMNS_DOESNT_MATCH", Fatal),
    (36, "BAD_ARGUMENTS", Fatal),
    (43, "ILLEGAL_TYPE_OF_ARGUMENT", Fatal),
    (44, "ILLEGAL_COLUMN", Fatal),
    (47, "UNKNOWN_IDENTIFIER", Fatal),
    (48, "NOT_IMPLEMENTED", Fatal),
    (50, "UNKNOWN_TYPE", Fatal),
    (62, "SYNTAX_ERROR", Fatal),
    (73, "UNKNOWN_FORMAT", Fatal),
    (115, "UNKNOWN_SETTING", Fatal),
    (164, "READONLY", Fatal),
    (192, "UNKNOWN_USER", Fatal),
    (193, "WRONG_PASSWORD", Fatal),
    (194, "REQUIRED_PASSWORD", Fatal),
    (195, "IP_ADDRESS_NOT_ALLOWED", Fatal),
    (452, "SETTING_CONSTRAINT_VIOLATION", Fatal),
    (497, "ACCESS_DENIED", Fatal),
    (516, "AUTHENTICATION_FAILED", Fatal),
];

/// Decides what to do about a failed call, from the ClickHouse error code if there is one,
/// else from an error name in the message (`… (UNKNOWN_TABLE) …`), else from the HTTP status.
///
/// The policy for what was never seen:
/// - a code not in the table: `Retriable` (the batch is held, retried with backoff and shown
///   by the retry metric and `/ready`; never dead-lettered, never dropped);
/// - no answer at all (connection refused or reset, timeout, a response lost after the
///   server committed): `Retriable` — the token makes the re-send a no-op if it had landed;
/// - a status without a code comes from something in front of ClickHouse: 5xx, 404
///   (ClickHouse's own status for unknown tables/databases), 408 and 429 are `Retriable`;
///   413 (body too large) is `TooLarge`; any other 4xx (401/403 from an auth proxy, 400) is
///   `Fatal`, since re-sending the same request cannot help and dead-lettering good rows would
///   be wrong.
pub fn classify(code: Option<i32>, http_status: Option<u16>, message: &str) -> ErrorClass {
    let code = code.or_else(|| {
        CODES
            .iter()
            .find(|(_, name, _)| message_names(message, name))
            .map(|(c, _, _)| *c)
    });
    if let Some(code) = code {
        let class = CODES
            .iter()
            .find(|(c, _, _)| *c == code)
            .map_or(Retriable, |(_, _, class)| *class);
        return refine(code, class, message);
    }
    match http_status {
        None => Retriable,
        Some(413) => TooLarge,
        Some(s) if s >= 500 || matches!(s, 404 | 408 | 429) => Retriable,
        Some(_) => Fatal,
    }
}

/// The shape errors hidden behind two overload codes (see [`CODES`]).
fn refine(code: i32, class: ErrorClass, message: &str) -> ErrorClass {
    match code {
        252 if message.contains("Too many partitions") => TooManyPartitions,
        241 if message.contains("(for query)") => TooLarge,
        _ => class,
    }
}

/// Whether `message` mentions error `name` the way ClickHouse prints it: `(NAME)`.
fn message_names(message: &str, name: &str) -> bool {
    message.match_indices(name).any(|(at, _)| {
        let before = message.get(..at).and_then(|s| s.chars().next_back());
        let after = message
            .get(at + name.len()..)
            .and_then(|s| s.chars().next());
        before == Some('(') && after == Some(')')
    })
}

/// The code of the first `Code: N` in a ClickHouse error text (the outermost exception).
pub fn parse_code(message: &str) -> Option<i32> {
    let rest = message.get(message.find("Code: ")? + "Code: ".len()..)?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest.get(..digits)?.parse().ok()
}

/// The HTTP status the crate reports for an error response with an empty body: the text is
/// then exactly `"<status> <reason>"`, e.g. `404 Not Found`.
pub fn parse_status(message: &str) -> Option<u16> {
    let head = message.get(..3)?;
    let rest = message.get(3..)?;
    if !head.bytes().all(|b| b.is_ascii_digit()) || !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    head.parse().ok().filter(|s| (100..600).contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_are_told_apart() {
        let server = |code, http_status| SinkError::Server {
            code,
            http_status,
            message: "x".into(),
        };
        for (e, refused) in [
            (server(Some(516), Some(403)), true),
            (server(Some(192), None), true),
            (server(Some(193), None), true),
            (server(Some(194), None), true),
            (server(None, Some(401)), true),
            (server(Some(497), Some(403)), false), // ACCESS_DENIED: a grant, not a password
            (server(None, Some(403)), false),
            (server(Some(60), None), false),
            (
                SinkError::RetryCancelled {
                    attempts: 3,
                    last: Box::new(server(Some(516), None)),
                },
                true,
            ),
        ] {
            assert_eq!(e.is_auth_failure(), refused, "{e}");
            assert_eq!(e.tls_certificate_failure(), None, "{e}");
        }
    }

    fn check(code: Option<i32>, status: Option<u16>, message: &str, expected: ErrorClass) {
        assert_eq!(
            classify(code, status, message),
            expected,
            "{code:?} {status:?} {message:?}"
        );
    }

    #[test]
    fn classification_table() {
        let cases: &[(Option<i32>, Option<u16>, &str, ErrorClass)] = &[
            // No answer at all: network, connection refused, timeouts.
            (None, None, "network error: connection refused", Retriable),
            (None, None, "timeout expired", Retriable),
            (None, Some(502), "502 Bad Gateway", Retriable),
            (None, Some(503), "503 Service Unavailable", Retriable),
            (None, Some(404), "404 Not Found", Retriable),
            (None, Some(429), "429 Too Many Requests", Retriable),
            (None, Some(401), "401 Unauthorized", Fatal),
            (None, Some(403), "403 Forbidden", Fatal),
            (None, Some(400), "400 Bad Request", Fatal),
            // Codes.
            // Shape errors: split, never retried as they are, never dead-lettered.
            (
                Some(252),
                Some(500),
                "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100). (TOO_MANY_PARTS)",
                TooManyPartitions,
            ),
            (
                None,
                Some(500),
                "Too many partitions for single INSERT block (more than 100) (TOO_MANY_PARTS)",
                TooManyPartitions,
            ),
            (
                Some(241),
                None,
                "Memory limit (for query) exceeded: would use 9.32 GiB",
                TooLarge,
            ),
            (None, Some(413), "413 Payload Too Large", TooLarge),
            // The same codes as overload: wait, never split.
            (
                Some(252),
                None,
                "Too many parts (300). Merges are processing significantly slower than inserts",
                Retriable,
            ),
            (
                Some(241),
                None,
                "Memory limit (total) exceeded: would use 30.1 GiB",
                Retriable,
            ),
            (Some(173), None, "Cannot allocate memory", Retriable),
            // Never seen: a code outside the table, a 5xx without a code, no answer at all.
            (Some(1001), Some(500), "std::exception", Retriable),
            (None, Some(500), "", Retriable),
            (Some(159), None, "", Retriable),
            (Some(241), None, "", Retriable),
            (
                None,
                Some(500),
                "Memory limit (for user) exceeded (MEMORY_LIMIT_EXCEEDED)",
                Retriable,
            ),
            (Some(210), None, "", Retriable),
            (Some(209), None, "", Retriable),
            (Some(202), None, "", Retriable),
            (Some(60), Some(404), "", Retriable),
            (Some(81), Some(404), "", Retriable),
            (Some(242), None, "", Retriable),
            (Some(999), None, "", Retriable),
            (Some(236), None, "", Retriable),
            (Some(319), None, "", Retriable),
            (Some(6), Some(400), "", DataError),
            (Some(27), None, "", DataError),
            (Some(38), None, "", DataError),
            (Some(41), None, "", DataError),
            (Some(69), None, "", DataError),
            (Some(72), None, "", DataError),
            (Some(117), None, "", DataError),
            (Some(407), None, "", DataError),
            (Some(53), None, "", DataError),
            (Some(70), None, "", DataError),
            (Some(321), None, "", DataError),
            (Some(131), None, "", DataError),
            (Some(469), None, "", DataError),
            // A body cut off on the way in is not the rows' fault (review finding 1).
            (
                Some(32),
                Some(500),
                "Code: 32. DB::Exception: Attempt to read after eof. (ATTEMPT_TO_READ_AFTER_EOF)",
                Retriable,
            ),
            (
                None,
                None,
                "Cannot read all data. Bytes read: 12. (CANNOT_READ_ALL_DATA)",
                Retriable,
            ),
            (Some(516), Some(403), "", Fatal),
            (Some(497), None, "", Fatal),
            (Some(16), None, "", Fatal),
            (Some(62), Some(400), "", Fatal),
            (Some(115), None, "", Fatal),
            // A code wins over the status and the message.
            (Some(60), Some(400), "(SYNTAX_ERROR)", Retriable),
            // Unknown codes hold the batch back rather than lose or dead-letter it.
            (Some(12345), Some(500), "", Retriable),
            // No code, but a name in the message (e.g. a proxy that forwards the text only).
            (
                None,
                Some(500),
                "DB::Exception: bad password (AUTHENTICATION_FAILED)",
                Fatal,
            ),
            (
                None,
                None,
                "Cannot parse (CANNOT_PARSE_TEXT) (version 26.9)",
                DataError,
            ),
            (
                None,
                Some(400),
                "mentions TYPE_MISMATCH without parentheses",
                Fatal,
            ),
        ];
        for &(code, status, message, expected) in cases {
            check(code, status, message, expected);
        }
    }

    #[test]
    fn codes_are_unique() {
        let mut codes = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for (code, name, _) in CODES {
            assert!(codes.insert(*code), "duplicate code {code}");
            assert!(names.insert(*name), "duplicate name {name}");
        }
    }

    #[test]
    fn server_errors_keep_code_and_status() {
        let e = SinkError::from(clickhouse::error::Error::BadResponse(
            "Code: 60. DB::Exception: Unknown table expression identifier 'x' (UNKNOWN_TABLE) \
             (version 26.9.2.1)"
                .into(),
        ));
        assert_eq!(e.code(), Some(60));
        assert_eq!(e.kind(), Retriable);

        let e = SinkError::from(clickhouse::error::Error::BadResponse("Code: 27".into()));
        assert_eq!(e.code(), Some(27));
        assert_eq!(e.kind(), DataError);

        let e = SinkError::from(clickhouse::error::Error::BadResponse(
            "401 Unauthorized".into(),
        ));
        assert!(matches!(
            e,
            SinkError::Server {
                code: None,
                http_status: Some(401),
                ..
            }
        ));
        assert_eq!(e.kind(), Fatal);

        assert_eq!(
            SinkError::from(clickhouse::error::Error::TimedOut).kind(),
            Retriable
        );
        assert_eq!(
            SinkError::from(clickhouse::error::Error::RowNotFound).kind(),
            Fatal
        );
    }

    #[test]
    fn parsing_codes_and_statuses() {
        assert_eq!(
            parse_code("Code: 252. DB::Exception: Too many parts"),
            Some(252)
        );
        assert_eq!(parse_code("x Code: 9 Code: 10"), Some(9));
        assert_eq!(parse_code("Code: abc"), None);
        assert_eq!(parse_code("no code"), None);
        assert_eq!(parse_status("503 Service Unavailable"), Some(503));
        assert_eq!(parse_status("404"), Some(404));
        assert_eq!(parse_status("4040 x"), None);
        assert_eq!(parse_status("Code: 60"), None);
        assert_eq!(parse_status("999 x"), None);
        assert_eq!(parse_status("é"), None);
    }
}
