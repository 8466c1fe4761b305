//! Line protocol as influxd reads it: the series key ends at the first
//! unescaped space, the fields at the next unescaped space outside a
//! double-quoted string (a string field may hold spaces and newlines), and
//! what follows on the line is the timestamp; blank lines and `#` comments
//! are no points. Shared by the timestamps the front door adds and the
//! subscriptions it fires.

/// One point of line protocol: where it starts in the body, its text
/// (without the blanks after it), whether it has fields, and where its
/// timestamp is in the text.
#[derive(Debug, PartialEq)]
pub struct Point<'a> {
    pub start: usize,
    pub text: &'a [u8],
    pub fields: bool,
    pub timestamp: Option<std::ops::Range<usize>>,
}

/// The points of `body`, read as influxd reads line protocol (a string
/// field may hold a newline); blank lines and `#` comments left out.
pub fn points(b: &[u8]) -> Vec<Point<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        if b[i] == b'#' {
            i = line_end(b, i);
            continue;
        }
        // The series key, to the first unescaped space.
        while i < b.len() && b[i] != b' ' && b[i] != b'\n' {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        i = i.min(b.len());
        // The fields, strings quoted.
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let fields_start = i;
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
        i = i.min(b.len());
        let fields = i > fields_start;
        // The timestamp, if any, to the end of the line.
        let end = line_end(b, i);
        let mut text_end = end;
        while text_end > start && b[text_end - 1].is_ascii_whitespace() {
            text_end -= 1;
        }
        let text = &b[start..text_end];
        let mut ts = i.min(text_end);
        while ts < text_end && b[ts] == b' ' {
            ts += 1;
        }
        let timestamp = (ts < text_end).then(|| ts - start..text_end - start);
        out.push(Point {
            start,
            text,
            fields,
            timestamp,
        });
        i = end;
    }
    out
}

/// Past the end of the line `i` is on.
fn line_end(b: &[u8], i: usize) -> usize {
    b[i.min(b.len())..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| i + p + 1)
}
