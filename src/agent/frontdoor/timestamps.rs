//! One point, one timestamp. influxd stamps a line that carries no
//! timestamp with its own clock when the line arrives, so a replicated line
//! would be a different point on every node. With `--replicate` the front
//! door that accepts a write stamps such lines itself, once, in the
//! request's precision (influxd's own rounding), before the write is
//! written here or queued for any peer.
//!
//! The scan follows line protocol as influxd reads it: the series key ends
//! at the first unescaped space, the fields at the next unescaped space
//! outside a double-quoted string (a string field may hold spaces and
//! newlines), and whatever follows is the timestamp. Blank lines and `#`
//! comments are left alone, and so is a line without fields, for influxd to
//! refuse in its own words.

use bytes::{Bytes, BytesMut};

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

/// Where each line without a timestamp ends its fields: the offsets to
/// insert a timestamp at.
fn missing_timestamps(b: &[u8]) -> Vec<usize> {
    let mut missing = Vec::new();
    let mut i = 0;
    while i < b.len() {
        // Leading blanks, then a blank line or a comment.
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        if b[i] == b'\n' {
            i += 1;
            continue;
        }
        if b[i] == b'#' {
            i = line_end(b, i);
            continue;
        }
        // The series key.
        i = unescaped(b, i, |c| c == b' ' || c == b'\n');
        if i >= b.len() || b[i] == b'\n' {
            continue;
        }
        i = skip_spaces(b, i);
        // The fields, strings quoted.
        let fields = i;
        let mut quoted = false;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 1,
                b'"' => quoted = !quoted,
                b' ' | b'\n' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        let fields_end = i.min(b.len());
        if fields_end == fields {
            i = line_end(b, i);
            continue;
        }
        i = skip_spaces(b, fields_end);
        let rest = line_end(b, i);
        let has_time = b[i..rest].iter().any(|c| !c.is_ascii_whitespace());
        if !has_time {
            missing.push(fields_end);
        }
        i = rest;
    }
    missing
}

/// The first byte from `i` that `stop` accepts, skipping `\`-escaped ones.
fn unescaped(b: &[u8], mut i: usize, stop: impl Fn(u8) -> bool) -> usize {
    while i < b.len() && !stop(b[i]) {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    i.min(b.len())
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r') {
        i += 1;
    }
    i
}

/// Past the end of the line `i` is on.
fn line_end(b: &[u8], i: usize) -> usize {
    b[i.min(b.len())..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| i + p + 1)
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
