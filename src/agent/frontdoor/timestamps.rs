//! One point, one timestamp. influxd stamps a line that carries no
//! timestamp with its own clock when the line arrives, so a replicated line
//! would be a different point on every node. With `--replicate` the front
//! door that accepts a write stamps such lines itself, once, in the
//! request's precision (influxd's own rounding), before the write is
//! written here or queued for any peer.
//!
//! Lines are read as influxd reads them ([`line_protocol`]); blank lines
//! and `#` comments are left alone, and so is a line without fields, for
//! influxd to refuse in its own words.

use bytes::{Bytes, BytesMut};

use super::line_protocol;

/// The nanoseconds in one unit of a write's `precision` parameter, as
/// `/write` (`n`, `u`, `ms`, `s`, `m`, `h`) and `/api/v2/write` (`ns`,
/// `us`, `ms`, `s`) name them; absent means nanoseconds. `None` for a
/// precision influxd will refuse.
pub fn precision_ns(query: Option<&str>) -> Option<i64> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("precision="))
        .unwrap_or("");
    Some(match value {
        "" | "n" | "ns" => 1,
        "u" | "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// `body` with ` <stamp>` appended to every line that has fields and no
/// timestamp; `None` when every line has one already (the body is used as
/// it is).
pub fn stamp(body: &[u8], stamp: i64) -> Option<Bytes> {
    let missing = missing_timestamps(body);
    if missing.is_empty() {
        return None;
    }
    let suffix = format!(" {stamp}");
    let mut out = BytesMut::with_capacity(body.len() + missing.len() * suffix.len());
    let mut copied = 0;
    for at in missing {
        out.extend_from_slice(&body[copied..at]);
        out.extend_from_slice(suffix.as_bytes());
        copied = at;
    }
    out.extend_from_slice(&body[copied..]);
    Some(out.freeze())
}

/// Where each point with fields and no timestamp ends: the offsets to
/// insert a timestamp at.
fn missing_timestamps(b: &[u8]) -> Vec<usize> {
    line_protocol::points(b)
        .iter()
        .filter(|p| p.fields && p.timestamp.is_none())
        .map(|p| p.start + p.text.len())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(body: &str) -> String {
        stamp(body.as_bytes(), 7).map_or_else(
            || body.to_owned(),
            |b| String::from_utf8(b.to_vec()).unwrap(),
        )
    }

    #[test]
    fn lines_without_a_timestamp_get_one() {
        assert_eq!(stamped("cpu v=1\nmem v=2 5\n"), "cpu v=1 7\nmem v=2 5\n");
        assert_eq!(stamped("cpu,host=a v=1,w=2i"), "cpu,host=a v=1,w=2i 7");
        assert_eq!(stamped("cpu v=1   \r\n"), "cpu v=1 7   \r\n");
        assert!(stamp(b"cpu v=1 1\n\n# note\n  mem v=2 2", 7).is_none());
    }

    #[test]
    fn escapes_and_strings_are_read_as_influxd_reads_them() {
        // An escaped space in the key, spaces and a newline in a string field.
        assert_eq!(
            stamped("my\\ cpu,host=a\\ b s=\"x y\\\" 9\nz\"\nnext v=1 3\n"),
            "my\\ cpu,host=a\\ b s=\"x y\\\" 9\nz\" 7\nnext v=1 3\n"
        );
        assert!(stamp(b"cpu s=\"a b\" 12", 7).is_none());
    }

    #[test]
    fn comments_blank_lines_and_lines_without_fields_stay() {
        assert_eq!(
            stamped("# cpu v=1\n\n   \nbroken\ncpu v=1\n"),
            "# cpu v=1\n\n   \nbroken\ncpu v=1 7\n"
        );
    }

    #[test]
    fn precisions() {
        assert_eq!(precision_ns(None), Some(1));
        assert_eq!(precision_ns(Some("db=x&precision=s")), Some(1_000_000_000));
        assert_eq!(precision_ns(Some("precision=us&bucket=b")), Some(1_000));
        assert_eq!(precision_ns(Some("precision=h")), Some(3_600_000_000_000));
        assert_eq!(precision_ns(Some("precision=fortnight")), None);
    }
}
