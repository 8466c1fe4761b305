//! Request targets that influxd takes and hyper refuses.
//!
//! influxd (Go's net/http) takes any byte in a request target but controls
//! and the space. hyper takes less: httparse refuses a target that is not
//! UTF-8, then `http::Uri` refuses `"`, `<` and `>` in a query and `<`, `>`
//! and `` ` `` in a path — hyper answers 400 with an empty body — and ends
//! the target at `#`, dropping the rest, where Go keeps it (`q=...#...`).
//! Clients that build URLs by hand do send these bytes: InfluxDB's own HTTP
//! test suite sends `/query?q=CREATE+RETENTION+POLICY+rp0+ON+"db0"+...`.
//!
//! [`TargetEncoder`] sits between the connection and hyper and
//! percent-encodes exactly those bytes in the target of each HTTP/1 request
//! line. Go decodes `%XX` in a path and in query values back to the same
//! bytes, so influxd reads the forwarded request as it would have read the
//! original; the front door's own query parsing decodes it the same way.
//! Everything else passes byte for byte and at once (only the bytes of an
//! unfinished UTF-8 sequence in a target wait for the next read), so hyper's
//! header timeout and limits see what they saw without it. To find each
//! next request line of a keep-alive connection the encoder follows the
//! HTTP/1 framing (`Content-Length`, chunked); on what it cannot follow —
//! HTTP/2, an upgrade, `CONNECT`, a malformed head — it stops touching the
//! connection, and hyper answers as it does without it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest header, chunk-size or trailer line kept to read the framing
/// from; a longer one that matters for the framing ends the following.
const MAX_LINE: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before a request line (empty lines pass).
    Start,
    /// The method, up to the first space.
    Method,
    /// The request target, up to the next space: encoded.
    Target,
    /// The rest of the request line: the version.
    Version,
    /// Header lines, up to an empty one.
    Header,
    /// `n` more body bytes (`Content-Length`).
    Body(u64),
    /// A chunk-size line.
    ChunkSize,
    /// `n` more bytes of a chunk's data.
    ChunkData(u64),
    /// The line break after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to an empty one.
    Trailers,
    /// Not HTTP/1 that the encoder can follow: everything passes untouched.
    Passthrough,
}

/// What the headers of the current request said about its body.
#[derive(Default)]
struct Framing {
    connect: bool,
    length: Option<u64>,
    transfer_encoding: Option<Vec<u8>>,
    unfollowable: bool,
}

/// A connection whose HTTP/1 request targets reach hyper percent-encoded
/// where hyper would refuse or cut them (see the module docs).
pub struct TargetEncoder<T> {
    inner: T,
    state: State,
    /// The current line (method, version, header, chunk line), up to `MAX_LINE`.
    line: Vec<u8>,
    line_cut: bool,
    /// An unfinished UTF-8 sequence of the target (at most 3 bytes).
    utf8: Vec<u8>,
    framing: Framing,
    /// Bytes ready for hyper, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
}

impl<T> TargetEncoder<T> {
    pub fn new(inner: T) -> Self {
        TargetEncoder {
            inner,
            state: State::Start,
            line: Vec::new(),
            line_cut: false,
            utf8: Vec::new(),
            framing: Framing::default(),
            out: Vec::new(),
            out_pos: 0,
        }
    }

    /// Takes bytes read from the connection; what is ready goes to `out`.
    fn feed(&mut self, mut input: &[u8]) {
        while let Some(&b) = input.first() {
            match self.state {
                State::Passthrough => {
                    self.out.extend_from_slice(input);
                    return;
                }
                State::Body(n) | State::ChunkData(n) => {
                    let k = input.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    self.out.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    self.consumed(k);
                }
                State::Target => {
                    self.target_byte(b);
                    input = &input[1..];
                }
                _ => {
                    self.out.push(b);
                    self.line_byte(b);
                    input = &input[1..];
                }
            }
        }
    }

    /// `k` bytes of a body or a chunk passed.
    fn consumed(&mut self, k: usize) {
        self.state = match self.state {
            State::Body(n) if n == k as u64 => State::Start,
            State::Body(n) => State::Body(n - k as u64),
            State::ChunkData(n) if n == k as u64 => State::ChunkEnd,
            State::ChunkData(n) => State::ChunkData(n - k as u64),
            other => other,
        };
    }

    /// A byte of the target, percent-encoded if hyper would refuse or cut it.
    fn target_byte(&mut self, b: u8) {
        if b >= 0x80 {
            self.utf8.push(b);
            while !self.utf8.is_empty() {
                let Err(e) = std::str::from_utf8(&self.utf8) else {
                    self.out.append(&mut self.utf8);
                    return;
                };
                let valid = e.valid_up_to();
                self.out.extend_from_slice(&self.utf8[..valid]);
                let Some(bad) = e.error_len() else {
                    // Unfinished: wait for the next byte.
                    self.utf8.drain(..valid);
                    return;
                };
                for &b in &self.utf8[valid..valid + bad] {
                    percent(b, &mut self.out);
                }
                self.utf8.drain(..valid + bad);
            }
            return;
        }
        // An unfinished sequence followed by ASCII is not UTF-8.
        for &b in &self.utf8 {
            percent(b, &mut self.out);
        }
        self.utf8.clear();
        match b {
            b'"' | b'#' | b'<' | b'>' | b'`' => percent(b, &mut self.out),
            b' ' => {
                self.out.push(b);
                self.state = State::Version;
            }
            b'\n' => {
                // No version: not a request line hyper takes.
                self.out.push(b);
                self.state = State::Passthrough;
            }
            _ => self.out.push(b),
        }
    }

    /// A byte (already handed on) of a line the framing is read from.
    fn line_byte(&mut self, b: u8) {
        if self.state == State::Method && b == b' ' {
            self.framing = Framing {
                connect: self.line == b"CONNECT",
                ..Framing::default()
            };
            self.line.clear();
            self.state = State::Target;
            return;
        }
        if b != b'\n' {
            if self.line.len() < MAX_LINE {
                self.line.push(b);
            } else {
                self.line_cut = true;
            }
            if self.state == State::Start && b != b'\r' {
                self.state = State::Method;
            }
            return;
        }
        let mut line = std::mem::take(&mut self.line);
        let cut = std::mem::take(&mut self.line_cut);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        self.state = match self.state {
            State::Start => State::Start,
            // A request line without a target and a version.
            State::Method | State::Target => State::Passthrough,
            State::Version if matches!(&line[..], b"HTTP/1.1" | b"HTTP/1.0") => State::Header,
            State::Version => State::Passthrough,
            State::Header if line.is_empty() => self.framing.next(),
            State::Header => {
                self.framing.header(&line, cut);
                State::Header
            }
            State::ChunkSize => match chunk_size(&line, cut) {
                Some(0) => State::Trailers,
                Some(n) => State::ChunkData(n),
                None => State::Passthrough,
            },
            State::ChunkEnd if line.is_empty() => State::ChunkSize,
            State::ChunkEnd => State::Passthrough,
            State::Trailers if line.is_empty() => State::Start,
            State::Trailers => State::Trailers,
            State::Body(_) | State::ChunkData(_) | State::Passthrough => unreachable!(),
        };
        line.clear();
        self.line = line;
    }

    /// Hands on what is held as it is and stops following the connection.
    fn give_up(&mut self) {
        self.out.append(&mut self.utf8);
        self.state = State::Passthrough;
    }
}

impl Framing {
    fn header(&mut self, line: &[u8], cut: bool) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            self.unfollowable = true;
            return;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        let framing = name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade");
        if !framing {
            return;
        }
        if cut || name.eq_ignore_ascii_case(b"upgrade") {
            self.unfollowable = true;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = Some(value.to_vec());
        } else {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            match (n, self.length) {
                (Some(n), None) => self.length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => self.unfollowable = true,
            }
        }
    }

    /// What follows the head: its body, or `Passthrough` for what hyper
    /// refuses or turns into something else (`CONNECT`, upgrades).
    fn next(&self) -> State {
        if self.unfollowable || self.connect {
            return State::Passthrough;
        }
        match (&self.transfer_encoding, self.length) {
            (None, None | Some(0)) => State::Start,
            (None, Some(n)) => State::Body(n),
            (Some(te), None) => {
                let last = te.rsplit(|&b| b == b',').next().unwrap_or_default();
                if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    State::ChunkSize
                } else {
                    State::Passthrough
                }
            }
            // Both: hyper decides, unfollowed.
            (Some(_), Some(_)) => State::Passthrough,
        }
    }
}

fn percent(b: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// The size of a chunk-size line (`1a;ext=v`, without its line break).
fn chunk_size(line: &[u8], cut: bool) -> Option<u64> {
    let digits = line.split(|&b| b == b';').next()?.trim_ascii();
    if cut || digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

impl<T: AsyncRead + Unpin> AsyncRead for TargetEncoder<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match this.state {
                // Bodies and what is not followed go straight into hyper's buffer.
                State::Passthrough => return Pin::new(&mut this.inner).poll_read(cx, buf),
                State::Body(n) | State::ChunkData(n) => {
                    let want = buf
                        .remaining()
                        .min(usize::try_from(n).unwrap_or(usize::MAX));
                    let mut part = ReadBuf::new(buf.initialize_unfilled_to(want));
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
                    let k = part.filled().len();
                    buf.advance(k);
                    this.consumed(k);
                    return Poll::Ready(Ok(()));
                }
                _ => {}
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                // End of the connection: hand on what is held, then the end.
                this.give_up();
                if this.out.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.feed(&chunk[..n]);
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TargetEncoder<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Hands out its bytes `step` at a time.
    struct Trickle<'a>(&'a [u8], usize);

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.1.min(self.0.len()).min(buf.remaining());
            buf.put_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Poll::Ready(Ok(()))
        }
    }

    async fn encoded(input: &[u8]) -> Vec<u8> {
        let mut all = Vec::new();
        for step in [1, 2, 7, 8192, usize::MAX] {
            let mut out = Vec::new();
            TargetEncoder::new(Trickle(input, step))
                .read_to_end(&mut out)
                .await
                .unwrap();
            if step == 1 {
                all = out;
            } else {
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&all),
                    "read {step} at a time"
                );
            }
        }
        all
    }

    #[tokio::test]
    async fn a_quote_in_a_query_is_percent_encoded() {
        let got = encoded(
            b"POST /query?q=CREATE+RETENTION+POLICY+rp0+ON+\"db0\"+DEFAULT HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        assert_eq!(
            got,
            b"POST /query?q=CREATE+RETENTION+POLICY+rp0+ON+%22db0%22+DEFAULT HTTP/1.1\r\nHost: x\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn exactly_what_hyper_refuses_or_cuts_is_encoded() {
        let cases: [(&[u8], &[u8]); 4] = [
            (b"/p\"<>`#?q=\"<>`#", b"/p%22%3C%3E%60%23?q=%22%3C%3E%60%23"),
            (b"/caf\xc3\xa9?q=caf\xc3\xa9", b"/caf\xc3\xa9?q=caf\xc3\xa9"),
            (b"/x?q=\xe9\xff\xc3", b"/x?q=%E9%FF%C3"),
            (
                b"/a{}|^[]\\~!$%25&'()*+,;=:@?b={}|^[]\\/?",
                b"/a{}|^[]\\~!$%25&'()*+,;=:@?b={}|^[]\\/?",
            ),
        ];
        for (raw, want) in cases {
            let line = |target: &[u8]| [&b"GET "[..], target, b" HTTP/1.1\r\n\r\n"].concat();
            let got = encoded(&line(raw)).await;
            assert_eq!(got, line(want));
            let target = &got[4..got.len() - 13];
            let uri = http::Uri::try_from(target).expect("hyper takes the encoded target");
            assert_eq!(uri.path_and_query().unwrap().as_str().as_bytes(), target);
        }
    }

    #[tokio::test]
    async fn bodies_pass_untouched_and_each_request_line_is_encoded() {
        let body = b"GET /x?\"a\" HTTP/1.1\r\n\r\n";
        let chunked = b"5;ext=1\r\nGET /\r\n3\r\n?\"x\r\n0\r\nTrailer: \"\r\n\r\n";
        let input: [&[u8]; 6] = [
            b"\r\nPOST /write?db=\"d\" HTTP/1.1\r\ncontent-length: 23\r\n\r\n",
            body,
            b"POST /write?db=\"d\" HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            chunked,
            b"GET /ping?\"\n\n",
            b"GET /ping?\" HTTP/1.0\nContent-Length: 0\n\n",
        ];
        let want: [&[u8]; 6] = [
            b"\r\nPOST /write?db=%22d%22 HTTP/1.1\r\ncontent-length: 23\r\n\r\n",
            body,
            b"POST /write?db=%22d%22 HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            chunked,
            // Not a request line hyper takes (no version): nothing after it
            // is followed.
            b"GET /ping?%22\n\n",
            b"GET /ping?\" HTTP/1.0\nContent-Length: 0\n\n",
        ];
        assert_eq!(
            String::from_utf8_lossy(&encoded(&input.concat()).await),
            String::from_utf8_lossy(&want.concat())
        );
    }

    #[test]
    fn bytes_are_handed_on_at_once() {
        // hyper's header timeout and limits must see a slow client's bytes.
        let slow = b"GET /nodes HTTP/1.1\r\nHost: manager\r\nX-Slow: ";
        let mut e = TargetEncoder::new(());
        e.feed(slow);
        assert_eq!(e.out, slow);
        let mut e = TargetEncoder::new(());
        e.feed(b"GET /caf");
        assert_eq!(e.out, b"GET /caf");
        // Only an unfinished UTF-8 sequence of the target waits.
        e.feed(b"\xc3");
        assert_eq!(e.out, b"GET /caf");
        e.feed(b"\xa9\"");
        assert_eq!(e.out, b"GET /caf\xc3\xa9%22");
    }

    #[tokio::test]
    async fn http2_upgrades_and_connect_are_not_followed() {
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04GET /\"x\" HTTP/1.1\r\n\r\n";
        assert_eq!(encoded(h2).await, h2);
        let upgrade = b"GET /\"a HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET /\"b HTTP/1.1\r\n\r\n";
        assert_eq!(
            encoded(upgrade).await,
            b"GET /%22a HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET /\"b HTTP/1.1\r\n\r\n"
        );
        let connect = b"CONNECT h:1 HTTP/1.1\r\n\r\nGET /\"b HTTP/1.1\r\n\r\n";
        assert_eq!(encoded(connect).await, connect);
    }

    #[tokio::test]
    async fn hyper_serves_what_it_refused_before() {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        use tokio::io::AsyncWriteExt;

        let request =
            b"GET /query?q=SHOW+RETENTION+POLICIES+ON+\"db0\"#x HTTP/1.1\r\nHost: x\r\n\r\n\
                        GET /query?db=\xe9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        for encode in [false, true] {
            let (client, server) = tokio::io::duplex(1 << 16);
            let service = service_fn(|r: hyper::Request<hyper::body::Incoming>| async move {
                let uri = r.uri().to_string();
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from(uri),
                )))
            });
            let serving = tokio::spawn(async move {
                let http1 = hyper::server::conn::http1::Builder::new();
                if encode {
                    let _ = http1
                        .serve_connection(TokioIo::new(TargetEncoder::new(server)), service)
                        .await;
                } else {
                    let _ = http1.serve_connection(TokioIo::new(server), service).await;
                }
            });
            let (mut read, mut write) = tokio::io::split(client);
            write.write_all(request).await.unwrap();
            let mut answer = Vec::new();
            read.read_to_end(&mut answer).await.unwrap();
            serving.await.unwrap();
            let answer = String::from_utf8_lossy(&answer);
            if encode {
                assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
                assert!(
                    answer.contains("/query?q=SHOW+RETENTION+POLICIES+ON+%22db0%22%23x"),
                    "{answer}"
                );
                assert!(answer.contains("/query?db=%E9"), "{answer}");
            } else {
                assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
            }
        }
    }
}
