//! Wire helpers both sides of the Debezium format share: the decoder reads them, the capture in
//! `cdc-tools` (wal2json → Debezium events) writes them. One copy each, so the two cannot drift.
//!
//! Enters and leaves plain values; no I/O. The decimal and timestamp encodings live with the
//! decoder ([`crate::decode::encoding`]: `decimal_to_base64`, the ±infinity sentinels).

/// Parses a PostgreSQL LSN `XXXXXXXX/XXXXXXXX` (hex, 1-8 digits each) into its u64 position.
pub fn parse_pg_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    let part = |p: &str| {
        if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(p, 16).ok()
    };
    Some((u64::from(part(hi)?) << 32) | u64::from(part(lo)?))
}

/// Formats a 64-bit WAL position as PostgreSQL's `X/Y` text (the inverse of [`parse_pg_lsn`]).
#[cfg(test)]
fn format_pg_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_parsing() {
        assert_eq!(parse_pg_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_pg_lsn("00000001/00000002"), Some((1 << 32) | 2));
        assert_eq!(parse_pg_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        assert_eq!(parse_pg_lsn("1/"), None);
        assert_eq!(parse_pg_lsn("123456789/0"), None);
        assert_eq!(parse_pg_lsn("+1/0"), None);
        // wal2json's and the slot functions' forms.
        assert_eq!(parse_pg_lsn("0/1932850"), Some(0x1932850));
        assert_eq!(parse_pg_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_pg_lsn("x"), None);
        assert_eq!(parse_pg_lsn("100000000/0"), None);
    }

    #[test]
    fn lsn_round_trips() {
        assert_eq!(format_pg_lsn(0x1_0193_2850), "1/1932850");
        for lsn in [0, 1, 0x1932850, 1 << 32, u64::MAX] {
            assert_eq!(parse_pg_lsn(&format_pg_lsn(lsn)), Some(lsn));
        }
    }
}
