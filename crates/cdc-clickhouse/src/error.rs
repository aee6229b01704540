//! ClickHouse failures, classified in one place.
//!
//! Error codes from ClickHouse's `ErrorCodes.cpp` (docs/platform-facts.md §3). The server reports them in the
//! HTTP body as `Code: N` (18.x: `Code: 60, e.displayText() = ...`; current: `Code: 60. DB::...`).
//!
//! A connection failure is classified from its whole cause chain, not from the top message
//! ("client error (Connect)"): a certificate or handshake failure is [`SinkError::Tls`], systemic
//! (no retry cures a certificate), and the chain is kept in the message so the log line at error
//! level names the cause (docs/error-policy.md).

use cdc_core::error::{Classify, ErrorClass};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The server answered with an exception. `message` is the server's text with any echo of
    /// the data removed (see [`SinkError::from_client`]).
    #[error("ClickHouse error code {code}: {message}")]
    Server { code: u32, message: String },
    #[error("ClickHouse unreachable: {0}")]
    Network(String),
    /// Certificate or TLS handshake failure: the server is not who it should be, or the client
    /// does not trust its CA (`CLICKHOUSE_CA_BUNDLE`).
    #[error("TLS with ClickHouse failed: {0}")]
    Tls(String),
    /// HTTP 401/403 without a ClickHouse error code (a proxy in front of ClickHouse refused).
    #[error("ClickHouse refused the credentials: {0}")]
    Unauthorized(String),
    #[error("ClickHouse timed out")]
    TimedOut,
    #[error("unexpected ClickHouse response: {0}")]
    Protocol(String),
    #[error("ClickHouse server version {0} is not supported")]
    UnsupportedServer(String),
    /// A setting the server does not take as configured (`CLICKHOUSE_INSERT_QUORUM=auto` on a
    /// server that reads it as 0): an operator's decision is needed.
    #[error("{0}")]
    UnsupportedSetting(String),
    /// A generic mirror in ClickHouse that this processor cannot write (a column type it does
    /// not write, a key that differs from the mapping's): an operator's decision is needed.
    /// `detail` names table and column only.
    #[error("{detail}")]
    Schema { code: &'static str, detail: String },
    /// Columns a change asks for that the configuration refuses to add (`SCHEMA_EVOLUTION=off`,
    /// or beyond the columns a table may have): the change's own fault, poison. `detail` names
    /// the table only.
    #[error("{detail}")]
    ColumnsRefused { code: &'static str, detail: String },
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
/// status of insert, 425 system error, 999 keeper. Replication: 225 no ZooKeeper session, 285 too
/// few live replicas for the insert quorum (a replica is down), 286 a quorum insert into the same
/// table still running (servers before 20.x allow one at a time; concurrent invocations meet it
/// all the time), 289 a replica that lacks a quorum-written part (a lookup with
/// `select_sequential_consistency`): each passes once the replicas catch up, and none says
/// anything about the rows, so an insert that meets one is never bisected (README, "ClickHouse
/// clusters and ClickHouse Cloud").
const TRANSIENT: &[u32] = &[3, 159, 160, 202, 203, 209, 210, 225, 236, 242, 252, 285, 286, 289, 319, 394, 425, 999];

impl SinkError {
    /// Converts the client's error. The server's message is cut to its first line and to 300
    /// characters: a parse error quotes the offending data, which must never reach a log.
    pub(crate) fn from_client(error: clickhouse::error::Error) -> Self {
        use clickhouse::error::Error as E;
        match error {
            E::BadResponse(text) => match parse_code(&text) {
                Some(code) => SinkError::Server { code, message: redact(&text) },
                None if text.starts_with("401") || text.starts_with("403") => SinkError::Unauthorized(redact(&text)),
                None if looks_like_http_status(&text) => SinkError::Network(redact(&text)),
                None => SinkError::Protocol(redact(&text)),
            },
            E::Network(e) => {
                let chain = cause_chain(e.as_ref());
                if is_tls_failure(&chain) { SinkError::Tls(chain) } else { SinkError::Network(chain) }
            }
            E::TimedOut => SinkError::TimedOut,
            other => SinkError::Protocol(redact(&other.to_string())),
        }
    }

    pub fn is_auth(&self) -> bool {
        matches!(self, SinkError::Server { code, .. } if AUTH.contains(code))
            || matches!(self, SinkError::Unauthorized(_))
    }

    /// A server exception whose code none of our lists knows. Met while inserting a message's
    /// own rows it is isolated like bad data (the pipeline bisects the insert): if the message's
    /// batch-mates land without it, the rejection was its own (docs/error-policy.md).
    pub(crate) fn is_unexplained(&self) -> bool {
        matches!(self, SinkError::Server { code, .. }
            if ![BAD_DATA, SYSTEMIC, TOO_LARGE, TRANSIENT].iter().any(|list| list.contains(code)))
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
            SinkError::Protocol(_)
            | SinkError::UnsupportedServer(_)
            | SinkError::UnsupportedSetting(_)
            | SinkError::Schema { .. } => ErrorClass::Systemic,
            SinkError::Tls(_) | SinkError::Unauthorized(_) => ErrorClass::Systemic,
            SinkError::ColumnsRefused { .. } => ErrorClass::Poison,
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
            SinkError::Tls(_) => "clickhouse.tls",
            SinkError::Unauthorized(_) => "clickhouse.auth",
            SinkError::Protocol(_) => "clickhouse.protocol",
            SinkError::UnsupportedServer(_) => "clickhouse.unsupported_server",
            SinkError::UnsupportedSetting(_) => "clickhouse.unsupported_setting",
            SinkError::Schema { code, .. } | SinkError::ColumnsRefused { code, .. } => code,
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

/// "a: b: c" from an error and its sources, each once (hyper repeats its inner error's text),
/// at most 500 characters. Connection errors carry no data, only addresses and reasons.
fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ").chars().take(500).collect()
}

/// rustls' certificate errors ("invalid peer certificate: UnknownIssuer"), alerts and handshake
/// failures, and a plaintext server on a TLS port ("corrupt message").
fn is_tls_failure(chain: &str) -> bool {
    let lower = chain.to_ascii_lowercase();
    ["certificate", "handshake", "corrupt message", "tls", "received fatal alert", "invalid dns name"]
        .iter()
        .any(|needle| lower.contains(needle))
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
    fn replication_waits_are_transient_and_never_isolate_a_message() {
        for text in [
            "Code: 286, e.displayText() = DB::Exception: Quorum for previous write has not been satisfied yet.",
            "Code: 286, e.displayText() = DB::Exception: Another quorum insert has been already started",
            "Code: 285, e.displayText() = DB::Exception: Number of alive replicas (1) is less than requested quorum (2).",
            "Code: 289. DB::Exception: Replica doesn't have part all_1_1_0 which was successfully written to quorum",
            "Code: 225. DB::Exception: Cannot use ZooKeeper",
        ] {
            let e = server(text);
            assert_eq!(e.class(), ErrorClass::Transient, "{text}");
            assert!(!e.is_unexplained(), "{text}");
        }
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
    fn only_codes_no_list_knows_are_unexplained() {
        assert!(server("Code: 44. DB::Exception: Cannot insert column _row_exists").is_unexplained());
        assert!(!server("Code: 27. DB::Exception: Cannot parse input").is_unexplained());
        assert!(!server("Code: 252. DB::Exception: Too many parts").is_unexplained());
        assert!(!server("Code: 516. DB::Exception: Authentication failed").is_unexplained());
        assert!(!SinkError::TimedOut.is_unexplained());
    }

    #[test]
    fn tls_and_proxy_auth_failures_are_systemic() {
        let io = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let e = SinkError::from_client(clickhouse::error::Error::Network(Box::new(io)));
        assert_eq!((e.class(), e.code()), (ErrorClass::Systemic, "clickhouse.tls"));
        assert!(e.to_string().contains("UnknownIssuer"), "the cause is named: {e}");
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = SinkError::from_client(clickhouse::error::Error::Network(Box::new(refused)));
        assert_eq!((e.class(), e.code()), (ErrorClass::Transient, "clickhouse.network"));
        let e = server("401 Unauthorized");
        assert_eq!((e.class(), e.code(), e.is_auth()), (ErrorClass::Systemic, "clickhouse.auth", true));
    }

    #[test]
    fn quoted_data_never_survives_in_the_message() {
        let e = server("Code: 27. DB::Exception: Cannot parse input: expected '\\t' before: 'secret-value'\nmore");
        assert!(!e.to_string().contains("secret-value"));
    }
}
