//! The fan-out phase's watchers: `WatchMeta` streams read by a minimal
//! HTTP/2 client written for this generator, so that 10,000 of them cost
//! the generator little and its CPU stays with the manager being measured.
//!
//! hyper's client spends two tasks per connection (the connection and the
//! body's reader) and its stream state machine on every message; here one
//! task per connection writes the request frames once and then reads: it
//! answers the manager's SETTINGS and PINGs, keeps the flow-control windows
//! hyper's client (so every agent) opens — 2 MiB per stream, 5 MiB per
//! connection — topping each up with a WINDOW_UPDATE once half of it was
//! received, as h2 does, and reports each snapshot's version as it arrives.
//! Anything it does not expect (a stream reset, GOAWAY, trailers) ends the
//! connection with an error naming it.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{anyhow, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use cflux::proto;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
/// SETTINGS_ENABLE_PUSH and SETTINGS_INITIAL_WINDOW_SIZE.
const ENABLE_PUSH: u16 = 0x2;
const INITIAL_WINDOW_SIZE: u16 = 0x4;
const WINDOW_UPDATE: u8 = 0x8;
/// A stream ID is the frame header's last 31 bits.
const STREAM_ID_BITS: u32 = (1 << 31) - 1;
/// Every connection's window before any SETTINGS or WINDOW_UPDATE.
const DEFAULT_WINDOW: u32 = 65_535;
/// hyper's client's windows, per stream and per connection.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

fn put_frame_header(buf: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    buf.put_uint(len as u64, 3);
    buf.put_u8(kind);
    buf.put_u8(flags);
    buf.put_u32(stream);
}

fn put_window_update(buf: &mut BytesMut, stream: u32, increment: u32) {
    put_frame_header(buf, 4, WINDOW_UPDATE, 0, stream);
    buf.put_u32(increment);
}

/// Flow-control bytes received and not yet given back, per stream and for
/// the connection; each is given back once it reaches half its window.
struct Unreleased {
    connection: u32,
    streams: Vec<u32>,
}

impl Unreleased {
    /// Counts a DATA frame's `len` on `stream` (its index); the
    /// WINDOW_UPDATE frames due, if any.
    fn received(&mut self, index: usize, len: u32) -> Option<BytesMut> {
        let mut due = BytesMut::new();
        self.connection += len;
        if self.connection >= CONNECTION_WINDOW / 2 {
            put_window_update(&mut due, 0, std::mem::take(&mut self.connection));
        }
        let stream = &mut self.streams[index];
        *stream += len;
        if *stream >= STREAM_WINDOW / 2 {
            put_window_update(&mut due, 2 * index as u32 + 1, std::mem::take(stream));
        }
        (!due.is_empty()).then_some(due)
    }
}

/// An HPACK string literal, not Huffman-coded (every value here is short).
fn put_hpack_string(block: &mut BytesMut, s: &str) {
    assert!(s.len() < 127, "an HPACK length this short fits one byte");
    block.put_u8(s.len() as u8);
    block.put_slice(s.as_bytes());
}

/// The request's header block: `POST`, `http` and `:path`, `:authority`
/// and `content-type` from HPACK's static table (indexes 3, 6, 4, 1, 31),
/// `te: trailers` as a new name; nothing is added to the dynamic table.
fn request_headers(addr: SocketAddr, path: &str) -> BytesMut {
    let mut block = BytesMut::new();
    block.put_u8(0x80 | 3); // :method POST
    block.put_u8(0x80 | 6); // :scheme http
    block.put_u8(0x04); // :path, literal without indexing
    put_hpack_string(&mut block, path);
    block.put_u8(0x01); // :authority, literal without indexing
    put_hpack_string(&mut block, &addr.to_string());
    block.put_slice(&[0x0f, 31 - 15]); // content-type, its index past the 4-bit prefix
    put_hpack_string(&mut block, "application/grpc");
    block.put_u8(0x00); // a new name, literal without indexing
    put_hpack_string(&mut block, "te");
    put_hpack_string(&mut block, "trailers");
    block
}

/// Everything the client sends: the preface, its SETTINGS, the connection
/// window opened wide, and one `WatchMeta` request per stream (HEADERS,
/// then the request message as DATA ending the stream's half).
fn opening(addr: SocketAddr, path: &str, request: &Bytes, streams: usize) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_slice(PREFACE);
    put_frame_header(&mut out, 12, SETTINGS, 0, 0);
    out.put_u16(ENABLE_PUSH);
    out.put_u32(0);
    out.put_u16(INITIAL_WINDOW_SIZE);
    out.put_u32(STREAM_WINDOW);
    put_window_update(&mut out, 0, CONNECTION_WINDOW - DEFAULT_WINDOW);
    let headers = request_headers(addr, path);
    for i in 0..streams {
        let stream = 2 * i as u32 + 1;
        put_frame_header(&mut out, headers.len(), HEADERS, END_HEADERS, stream);
        out.put_slice(&headers);
        put_frame_header(&mut out, request.len(), DATA, END_STREAM, stream);
        out.put_slice(request);
    }
    out
}

/// Opens `streams` `WatchMeta` streams of `cluster` on one connection to
/// `addr` and reports (version, arrival) of every snapshot any of them
/// receives to `arrivals`, until the connection fails or `arrivals` closes.
/// `opening` is released once as many snapshots as streams have come (each
/// stream's first is the current catalog).
pub async fn watch_connection(
    addr: SocketAddr,
    cluster: &str,
    streams: usize,
    arrivals: mpsc::UnboundedSender<(u64, Instant)>,
    opening_permit: OwnedSemaphorePermit,
) -> anyhow::Result<()> {
    let mut opening_permit = Some(opening_permit);
    let mut received = 0;
    let mut unreleased = Unreleased {
        connection: 0,
        streams: vec![0; streams],
    };
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let request = super::grpc_frame(&proto::WatchMetaRequest {
        cluster: cluster.to_owned(),
        version: 0,
    });
    let path = "/clusterflux.v1.Clusterflux/WatchMeta";
    tcp.write_all(&opening(addr, path, &request, streams))
        .await?;
    // Each stream's gRPC bytes not yet a whole message.
    let mut pending: Vec<BytesMut> = vec![BytesMut::new(); streams];
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & STREAM_ID_BITS;
            buf.advance(9);
            let mut payload = buf.split_to(len);
            match kind {
                DATA => {
                    // Padding counts against the windows too.
                    let window_bytes = payload.len() as u32;
                    if flags & PADDED != 0 {
                        let pad = usize::from(
                            *payload
                                .first()
                                .ok_or_else(|| anyhow!("empty padded DATA"))?,
                        );
                        payload.advance(1);
                        payload.truncate(payload.len().saturating_sub(pad));
                    }
                    let index = (stream as usize)
                        .checked_sub(1)
                        .map(|i| i / 2)
                        .filter(|&i| i < streams)
                        .ok_or_else(|| {
                            anyhow!("DATA on stream {stream}, which was never opened")
                        })?;
                    if let Some(updates) = unreleased.received(index, window_bytes) {
                        tcp.write_all(&updates).await?;
                    }
                    let slot = &mut pending[index];
                    slot.extend_from_slice(&payload);
                    match report_messages(slot, &arrivals)? {
                        Some(n) => received += n,
                        None => return Ok(()),
                    }
                    if received >= streams {
                        opening_permit.take();
                    }
                    if flags & END_STREAM != 0 {
                        bail!("watch stream {stream} ended");
                    }
                }
                HEADERS if flags & END_STREAM != 0 => {
                    bail!("watch stream {stream} ended (trailers)")
                }
                SETTINGS if flags & ACK == 0 => {
                    let mut ack = BytesMut::new();
                    put_frame_header(&mut ack, 0, SETTINGS, ACK, 0);
                    tcp.write_all(&ack).await?;
                }
                PING if flags & ACK == 0 => {
                    let mut pong = BytesMut::new();
                    put_frame_header(&mut pong, payload.len(), PING, ACK, 0);
                    pong.put_slice(&payload);
                    tcp.write_all(&pong).await?;
                }
                RST_STREAM => bail!("the manager reset watch stream {stream}"),
                GOAWAY => bail!("the manager sent GOAWAY"),
                // Response headers, WINDOW_UPDATE, acknowledgements.
                _ => {}
            }
        }
        buf.reserve(16 * 1024);
        if tcp.read_buf(&mut buf).await? == 0 {
            bail!("the manager closed the connection");
        }
    }
}

/// Reports every whole gRPC message in `pending` (the uncompressed flag,
/// the length, a `MetaSnapshot`): how many, or `None` once nobody listens
/// any more.
fn report_messages(
    pending: &mut BytesMut,
    arrivals: &mpsc::UnboundedSender<(u64, Instant)>,
) -> anyhow::Result<Option<usize>> {
    let mut reported = 0;
    while pending.len() >= 5 {
        let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
        if pending.len() < 5 + len {
            break;
        }
        pending.advance(5);
        let snapshot = proto::MetaSnapshot::decode(pending.split_to(len).freeze())?;
        if arrivals.send((snapshot.version, Instant::now())).is_err() {
            return Ok(None);
        }
        reported += 1;
    }
    Ok(Some(reported))
}
