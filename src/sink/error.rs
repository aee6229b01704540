//! ClickHouse failures, classified in one place.
//!
//! Error codes from ClickHouse's `ErrorCodes.cpp` (NOTES §3). The server reports them in the
//! HTTP body as `Code: N` (18.x: `Code: 60, e.displayText() = ...`; current: `Code: 60. DB::...`).

use crate::error::{Classify, ErrorClass};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The server answered with an exception. `message` is the server's text with any echo of
    /// the data removed (see [`SinkError::from_client`]).
    #[error("ClickHouse error code {code}: {message}")]
    Server { code: u32, message: String },
    #[error("ClickHouse unreachable: {0}")]
    Network(String),
    #[error("ClickHouse timed out")]
    TimedOut,
    #[error("unexpected ClickHouse response: {0}")]
    Protocol(String),
    #[error("ClickHouse server version {0} is not supported")]
    UnsupportedServer(String),
}

/// Codes that mean "this data can never be inserted": bad values, wrong types, parse failures.
const BAD_DATA: &[u32] = &[6, 27, 41, 53, 69, 70, 72, 117, 131, 190, 321];
/// Codes that mean "the environment is wrong": authentication, access, missing objects.
const SYSTEMIC: &[u32] = &[16, 47, 60, 81, 164, 192, 193, 194, 195, 196, 497, 516];
/// Authentication failures: credentials may have been rotated.
const AUTH: &[u32] = &[192, 193, 194, 195, 196, 516];
/// A query too large for the server's limits: 62 syntax error (also "max query size exceeded"),
/// 168 AST too big, 241 memory limit, 158/307/396 too many rows or bytes. Retrying cannot cure
/// it, and the processor's queries are bounded by construction (docs/sales-fact.md, "Fan-out"),
/// so meeting one means the server's limits are set below what the processor needs: systemic,
/// never transient, never the message's fault.
const TOO_LARGE: &[u32] = &[62, 158, 168, 241, 307, 396];
/// Overload and infrastructure hiccups: retry with backoff. 159 timeout, 202 too many
/// simultaneous queries, 209/210 socket, 242 table read-only, 252 too many parts, 319 unknown
/// status of insert, 425 system error, 999 keeper.
const TRANSIENT: &[u32] = &[3, 159, 160, 202, 203, 209, 210, 236, 242, 252, 285, 319, 394, 425, 999];

impl SinkError {
    /// Converts the client's error. The server's message is cut to its first line and to 300
    /// characters: a parse error quotes the offending data, which must never reach a log.
    pub fn from_client(error: clickhouse::error::Error) -> Self {
        use clickhouse::error::Error as E;
        match error {
            E::BadResponse(text) => match parse_code(&text) {
                Some(code) => SinkError::Server { code, message: redact(&text) },
                None if looks_like_http_status(&text) => SinkError::Network(redact(&text)),
                None => SinkError::Protocol(redact(&text)),
            },
            E::Network(e) => SinkError::Network(e.to_string()),
            E::TimedOut => SinkError::TimedOut,
            other => SinkError::Protocol(redact(&other.to_string())),
        }
    }

    pub fn is_auth(&self) -> bool {
        matches!(self, SinkError::Server { code, .. } if AUTH.contains(code))
    }

    pub fn server_code(&self) -> Option<u32> {
        match self {
            SinkError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl Classify for SinkError {
    fn class(&self) -> ErrorClass {
        match self {
            SinkError::Network(_) | SinkError::TimedOut => ErrorClass::Transient,
            SinkError::Protocol(_) | SinkError::UnsupportedServer(_) => ErrorClass::Systemic,
            SinkError::Server { code, .. } if BAD_DATA.contains(code) => ErrorClass::Poison,
            SinkError::Server { code, .. } if SYSTEMIC.contains(code) || TOO_LARGE.contains(code) => {
                ErrorClass::Systemic
            }
            SinkError::Server { code, .. } if TRANSIENT.contains(code) => ErrorClass::Transient,
            // Unknown codes: retry rather than dead-letter; if it persists, the receive count and
            // the alarms bring it to an operator without losing the message.
            SinkError::Server { .. } => ErrorClass::Transient,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            SinkError::Network(_) => "clickhouse.network",
            SinkError::TimedOut => "clickhouse.timeout",
            SinkError::Protocol(_) => "clickhouse.protocol",
            SinkError::UnsupportedServer(_) => "clickhouse.unsupported_server",
            e if e.is_auth() => "clickhouse.auth",
            SinkError::Server { code: 60, .. } => "clickhouse.unknown_table",
            SinkError::Server { code: 81, .. } => "clickhouse.unknown_database",
            SinkError::Server { code: 497, .. } => "clickhouse.access_denied",
            SinkError::Server { code, .. } if BAD_DATA.contains(code) => "clickhouse.bad_data",
            SinkError::Server { code, .. } if SYSTEMIC.contains(code) => "clickhouse.environment",
            SinkError::Server { code, .. } if TOO_LARGE.contains(code) => "clickhouse.query_too_large",
            SinkError::Server { .. } => "clickhouse.server",
        }
    }
}

fn parse_code(text: &str) -> Option<u32> {
    let start = text.find("Code: ")? + "Code: ".len();
    let digits: String = text[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn looks_like_http_status(text: &str) -> bool {
    // e.g. "502 Bad Gateway" from a proxy in front of ClickHouse.
    text.len() >= 3 && text.as_bytes()[..3].iter().all(u8::is_ascii_digit)
}

fn redact(text: &str) -> String {
    let first_line = text.lines().next().unwrap_or_default();
    // Server messages quote parsed data after "(at row" / ": while" / "Cannot parse input";
    // keep the part before any quote.
    let cut = first_line.find(['\'', '`', '"']).unwrap_or(first_line.len());
    first_line[..cut].chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(text: &str) -> SinkError {
        SinkError::from_client(clickhouse::error::Error::BadResponse(text.to_string()))
    }

    #[test]
    fn codes_are_parsed_from_old_and_new_servers() {
        let old = server(
            "Code: 60, e.displayText() = DB::Exception: Table analytics.x doesn't exist., e.what() = DB::Exception",
        );
        assert_eq!((old.class(), old.code()), (ErrorClass::Systemic, "clickhouse.unknown_table"));
        let new = server(
            "Code: 516. DB::Exception: default: Authentication failed: password is incorrect. (AUTHENTICATION_FAILED)",
        );
        assert_eq!((new.class(), new.code(), new.is_auth()), (ErrorClass::Systemic, "clickhouse.auth", true));
    }

    #[test]
    fn bad_data_is_poison_overload_is_transient() {
        assert_eq!(server("Code: 27. DB::Exception: Cannot parse input").class(), ErrorClass::Poison);
        assert_eq!(server("Code: 252. DB::Exception: Too many parts").class(), ErrorClass::Transient);
        assert_eq!(server("502 Bad Gateway").class(), ErrorClass::Transient);
    }

    #[test]
    fn a_query_too_large_is_never_transient() {
        for text in [
            "Code: 168, e.displayText() = DB::Exception: AST is too big. Maximum: 50000",
            "Code: 241. DB::Exception: Memory limit (total) exceeded",
            "Code: 62. DB::Exception: Max query size exceeded",
        ] {
            assert_eq!(
                (server(text).class(), server(text).code()),
                (ErrorClass::Systemic, "clickhouse.query_too_large")
            );
        }
        assert_eq!(server("502 Bad Gateway").class(), ErrorClass::Transient);
    }

    #[test]
    fn quoted_data_never_survives_in_the_message() {
        let e = server("Code: 27. DB::Exception: Cannot parse input: expected '\\t' before: 'secret-value'\nmore");
        assert!(!e.to_string().contains("secret-value"));
    }
}
