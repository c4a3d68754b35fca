//! Accepts the HTTP/2 `:authority` that real gRPC clients send over a Unix socket.
//!
//! kube-apiserver's KMS v1 client (grpc-go dialing the socket path), grpc-java, grpc-swift and
//! Secrets Store CSI driver releases before v1.6.0 send the socket path itself as `:authority`
//! (`/var/run/kube-kms/kms.sock`); grpcio ≥ 1.57 sends it percent-encoded. h2, under tonic and
//! hyper, parses `:authority` as a URI authority and answers anything else with RST_STREAM
//! PROTOCOL_ERROR, so none of those clients could make a single call. [`AuthorityAdapter`] sits
//! between the accepted stream and hyper: it HPACK-decodes every header block the client sends
//! (following the client's dynamic table and its size updates), and replaces an `:authority`
//! that `http::uri::Authority` refuses — exactly h2's test — with `localhost`. Blocks pass
//! byte-for-byte while no rewrite was ever needed on the connection; from the first block that
//! needs one on, every header block is re-encoded with literals without indexing (so the
//! server's decoder table stays frozen with what it had, which stays consistent), re-framed
//! within 16384-byte frames, and the client's table size updates are dropped. Every other frame,
//! and the whole server→client direction, passes untouched.
//!
//! It parses what any local process sends, so it must never panic on input, never hold more
//! than [`MAX_HEADER_BLOCK_BYTES`] of one header block nor produce more than
//! [`MAX_HEADER_LIST_BYTES`] of rewritten headers (either fails the connection with an
//! [`AuthorityError`]), and never change anything but an `:authority` h2 would refuse.
//!
//! HPACK blocks are decoded by [`hpack`], with Huffman strings decoded by `loona-hpack` (the
//! maintained continuation of the `hpack` crate); `loona-hpack`'s own decoder, which builds a
//! Huffman tree for every coded string, cost the socket most of its throughput here (see that
//! module), and remains the independent check of the adapter's output in [`crate::fuzzing`].

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

pub mod hpack;

use hpack::{BlockDecoder, HpackError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;

/// The largest frame payload the adapter writes: SETTINGS_MAX_FRAME_SIZE's initial and smallest
/// allowed value, so always within the server's limit.
pub const MAX_FRAME_PAYLOAD: usize = 16_384;
/// The most bytes of one header block, as received (frame headers, padding and all), that the
/// adapter holds before it has the whole block; more fails the connection. hyper refuses a
/// decoded header list over 16 KiB anyway.
pub const MAX_HEADER_BLOCK_BYTES: usize = 64 * 1024;
/// The largest header list (RFC 7541 sizes: name + value + 32 per field) the adapter re-encodes;
/// a block whose rewrite would be larger fails the connection.
pub const MAX_HEADER_LIST_BYTES: usize = 64 * 1024;
/// The dynamic table size the server's HPACK decoder allows: SETTINGS_HEADER_TABLE_SIZE's
/// default, which tonic's server never changes. A client's size update above it is an error.
pub const HEADER_TABLE_SIZE: usize = 4096;
/// What replaces an `:authority` h2 would refuse; what kube-apiserver's KMS v2 client sends.
pub const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const PRIORITY_LEN: usize = 5;

/// Why the adapter failed a connection. Each is a connection error in HTTP/2 too, except the
/// two size limits, which are the adapter's own.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AuthorityError {
    /// A header block grew past [`MAX_HEADER_BLOCK_BYTES`] before its END_HEADERS flag.
    HeaderBlockTooLarge {
        /// The stream the block opens.
        stream_id: u32,
    },
    /// The re-encoded header list would be larger than [`MAX_HEADER_LIST_BYTES`].
    HeaderListTooLarge {
        /// The stream the block opens.
        stream_id: u32,
    },
    /// A HEADERS frame whose PADDED or PRIORITY fields do not fit in its payload.
    MalformedHeadersFrame {
        /// The frame's stream.
        stream_id: u32,
        /// Which field did not fit.
        reason: &'static str,
    },
    /// Another frame arrived while a header block waited for its CONTINUATION frames.
    ExpectedContinuation {
        /// The stream whose header block is open.
        stream_id: u32,
        /// The type of the frame that came instead.
        frame_type: u8,
        /// The stream of the frame that came instead.
        frame_stream_id: u32,
    },
    /// A CONTINUATION frame with no header block open.
    UnexpectedContinuation {
        /// The frame's stream.
        stream_id: u32,
    },
    /// A PUSH_PROMISE frame, which only a server may send.
    PushPromiseFromClient {
        /// The frame's stream.
        stream_id: u32,
    },
    /// A header block that is not valid HPACK for the connection's dynamic table.
    Hpack {
        /// The stream the block opens.
        stream_id: u32,
        /// What the HPACK decoder found.
        error: HpackError,
    },
    /// The client closed its side in the middle of a frame or a header block.
    EndedMidFrame,
}

impl fmt::Display for AuthorityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeaderBlockTooLarge { stream_id } => write!(
                f,
                "HTTP/2 header block on stream {stream_id} is larger than \
                 {MAX_HEADER_BLOCK_BYTES} bytes"
            ),
            Self::HeaderListTooLarge { stream_id } => write!(
                f,
                "HTTP/2 header list on stream {stream_id} is larger than \
                 {MAX_HEADER_LIST_BYTES} bytes once decoded"
            ),
            Self::MalformedHeadersFrame { stream_id, reason } => {
                write!(
                    f,
                    "malformed HTTP/2 HEADERS frame on stream {stream_id}: {reason}"
                )
            }
            Self::ExpectedContinuation {
                stream_id,
                frame_type,
                frame_stream_id,
            } => write!(
                f,
                "expected a CONTINUATION frame on stream {stream_id}, got frame type \
                 {frame_type:#x} on stream {frame_stream_id}"
            ),
            Self::UnexpectedContinuation { stream_id } => write!(
                f,
                "HTTP/2 CONTINUATION frame on stream {stream_id} without an open header block"
            ),
            Self::PushPromiseFromClient { stream_id } => write!(
                f,
                "HTTP/2 client sent PUSH_PROMISE on stream {stream_id}; only servers may"
            ),
            Self::Hpack { stream_id, error } => {
                write!(
                    f,
                    "HTTP/2 header block on stream {stream_id} is not valid HPACK: {error}"
                )
            }
            Self::EndedMidFrame => {
                f.write_str("HTTP/2 client closed the connection in the middle of a frame")
            }
        }
    }
}

impl std::error::Error for AuthorityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Hpack { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<AuthorityError> for io::Error {
    fn from(error: AuthorityError) -> Self {
        let kind = match error {
            AuthorityError::EndedMidFrame => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, error)
    }
}

/// Whether h2's server would take `authority` (it parses it with `http::uri::Authority`, as
/// here, and refuses the request otherwise).
pub fn h2_accepts(authority: &[u8]) -> bool {
    http::uri::Authority::try_from(authority).is_ok()
}

#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHeader {
    fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> Self {
        Self {
            len: usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream_id: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }
}

#[derive(Debug)]
enum State {
    /// Matching the client preface; `seen` bytes of it have passed.
    Preface {
        seen: usize,
    },
    /// Not HTTP/2 with prior knowledge: everything passes, and the server refuses it.
    Transparent,
    /// Reading a frame header.
    FrameHeader {
        bytes: [u8; FRAME_HEADER_LEN],
        have: usize,
    },
    /// Passing the rest of a frame that is not part of a header block.
    Passing {
        remaining: usize,
    },
    /// Holding the rest of a HEADERS or CONTINUATION frame.
    Holding {
        remaining: usize,
    },
    Failed(AuthorityError),
}

/// The header block being collected, from its HEADERS frame to END_HEADERS.
#[derive(Debug, Default)]
struct Block {
    open: bool,
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_LEN]>,
    /// The frames as received, to pass byte-for-byte.
    raw: Vec<u8>,
    /// The header block fragments, without padding and priority.
    fragment: Vec<u8>,
    /// The current frame's header, and where its payload starts in `raw`.
    frame: Option<(FrameHeader, usize)>,
}

/// The client→server direction of one connection, without I/O: the client's bytes in, the
/// bytes for the server out. [`AuthorityAdapter`] drives it; tests and the fuzzer feed it.
#[derive(Debug)]
pub struct ClientStream {
    state: State,
    decoder: BlockDecoder,
    rewriting: bool,
    block: Block,
    reencoded: Vec<u8>,
}

impl Default for ClientStream {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientStream {
    /// A connection whose client has sent nothing yet.
    pub fn new() -> Self {
        let decoder = BlockDecoder::new(HEADER_TABLE_SIZE);
        Self {
            state: State::Preface { seen: 0 },
            decoder,
            rewriting: false,
            block: Block::default(),
            reencoded: Vec::new(),
        }
    }

    /// Whether this connection re-encodes its header blocks (a rewrite was needed).
    pub fn is_rewriting(&self) -> bool {
        self.rewriting
    }

    /// Takes the next bytes the client sent and appends what the server should read to `out`.
    /// Once it has failed, it fails again on every call.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        if let State::Failed(error) = &self.state {
            return Err(error.clone());
        }
        self.feed_frames(input, out).inspect_err(|error| {
            self.state = State::Failed(error.clone());
            self.block = Block::default();
        })
    }

    /// Checks that the client's stream ended between frames, as it may.
    pub fn finish(&self) -> Result<(), AuthorityError> {
        match &self.state {
            State::Failed(error) => Err(error.clone()),
            State::Preface { .. } | State::Transparent => Ok(()),
            State::FrameHeader { have: 0, .. } if !self.block.open => Ok(()),
            State::FrameHeader { .. } | State::Passing { .. } | State::Holding { .. } => {
                Err(AuthorityError::EndedMidFrame)
            }
        }
    }

    fn feed_frames(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        while !input.is_empty() {
            match &mut self.state {
                State::Failed(error) => return Err(error.clone()),
                State::Transparent => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                State::Preface { seen } => {
                    let expected = &PREFACE[*seen..];
                    let n = expected.len().min(input.len());
                    if expected[..n] != input[..n] {
                        self.state = State::Transparent;
                        continue;
                    }
                    out.extend_from_slice(&input[..n]);
                    *seen += n;
                    input = &input[n..];
                    if *seen == PREFACE.len() {
                        self.state = next_frame();
                    }
                }
                State::FrameHeader { bytes, have } => {
                    let n = (FRAME_HEADER_LEN - *have).min(input.len());
                    bytes[*have..*have + n].copy_from_slice(&input[..n]);
                    *have += n;
                    input = &input[n..];
                    if *have == FRAME_HEADER_LEN {
                        let bytes = *bytes;
                        self.start_frame(&bytes, out)?;
                    }
                }
                State::Passing { remaining } => {
                    let n = (*remaining).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    *remaining -= n;
                    input = &input[n..];
                    if *remaining == 0 {
                        self.state = next_frame();
                    }
                }
                State::Holding { remaining } => {
                    let n = (*remaining).min(input.len());
                    self.block.raw.extend_from_slice(&input[..n]);
                    *remaining -= n;
                    input = &input[n..];
                    if *remaining == 0 {
                        self.state = next_frame();
                        self.end_block_frame(out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn start_frame(
        &mut self,
        bytes: &[u8; FRAME_HEADER_LEN],
        out: &mut Vec<u8>,
    ) -> Result<(), AuthorityError> {
        let header = FrameHeader::parse(bytes);
        if self.block.open {
            if header.kind != CONTINUATION || header.stream_id != self.block.stream_id {
                return Err(AuthorityError::ExpectedContinuation {
                    stream_id: self.block.stream_id,
                    frame_type: header.kind,
                    frame_stream_id: header.stream_id,
                });
            }
        } else if header.kind == CONTINUATION {
            return Err(AuthorityError::UnexpectedContinuation {
                stream_id: header.stream_id,
            });
        }
        match header.kind {
            HEADERS | CONTINUATION => {
                if header.kind == HEADERS {
                    self.block.open = true;
                    self.block.stream_id = header.stream_id;
                    self.block.end_stream = header.flags & END_STREAM != 0;
                }
                // header.len < 2^24: no overflow.
                if self.block.raw.len() + FRAME_HEADER_LEN + header.len > MAX_HEADER_BLOCK_BYTES {
                    return Err(AuthorityError::HeaderBlockTooLarge {
                        stream_id: self.block.stream_id,
                    });
                }
                self.block.raw.extend_from_slice(bytes);
                self.block.frame = Some((header, self.block.raw.len()));
                if header.len == 0 {
                    self.state = next_frame();
                    self.end_block_frame(out)?;
                } else {
                    self.state = State::Holding {
                        remaining: header.len,
                    };
                }
            }
            PUSH_PROMISE => {
                return Err(AuthorityError::PushPromiseFromClient {
                    stream_id: header.stream_id,
                });
            }
            _ => {
                out.extend_from_slice(bytes);
                self.state = if header.len == 0 {
                    next_frame()
                } else {
                    State::Passing {
                        remaining: header.len,
                    }
                };
            }
        }
        Ok(())
    }

    /// A HEADERS or CONTINUATION frame is complete: adds its fragment to the block, and
    /// finishes the block on END_HEADERS.
    fn end_block_frame(&mut self, out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        let Some((header, start)) = self.block.frame.take() else {
            return Ok(());
        };
        let mut payload = self.block.raw.get(start..).unwrap_or_default();
        if header.kind == HEADERS {
            let malformed = |reason| AuthorityError::MalformedHeadersFrame {
                stream_id: header.stream_id,
                reason,
            };
            let mut padding = 0;
            if header.flags & PADDED != 0 {
                let (&pad_length, rest) = payload
                    .split_first()
                    .ok_or_else(|| malformed("PADDED flag without a pad length"))?;
                padding = usize::from(pad_length);
                payload = rest;
            }
            if header.flags & PRIORITY != 0 {
                let (priority, rest) = payload
                    .split_first_chunk::<PRIORITY_LEN>()
                    .ok_or_else(|| malformed("PRIORITY flag without its 5 bytes"))?;
                self.block.priority = Some(*priority);
                payload = rest;
            }
            let Some(end) = payload.len().checked_sub(padding) else {
                return Err(malformed("padding longer than the frame payload"));
            };
            payload = &payload[..end];
        }
        self.block.fragment.extend_from_slice(payload);
        if header.flags & END_HEADERS != 0 {
            self.end_block(out)?;
        }
        Ok(())
    }

    /// A header block is complete: decodes it and sends it on, as received or rewritten.
    fn end_block(&mut self, out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        let stream_id = self.block.stream_id;
        let mut refused_authority = false;
        let mut list_bytes = 0usize;
        let reencoded = &mut self.reencoded;
        reencoded.clear();
        self.decoder
            .decode(&self.block.fragment, |name, value| {
                let value: &[u8] = if name == b":authority" && !h2_accepts(value) {
                    refused_authority = true;
                    REPLACEMENT_AUTHORITY
                } else {
                    value
                };
                list_bytes = list_bytes.saturating_add(name.len() + value.len() + 32);
                if list_bytes <= MAX_HEADER_LIST_BYTES {
                    encode_literal(reencoded, name, value);
                }
            })
            .map_err(|error| AuthorityError::Hpack { stream_id, error })?;
        if refused_authority && !self.rewriting {
            self.rewriting = true;
            tracing::debug!(
                stream_id,
                "HTTP/2 client sent an :authority h2 refuses (a socket path?); this \
                 connection's header blocks are rewritten with :authority localhost"
            );
        }
        if self.rewriting {
            if list_bytes > MAX_HEADER_LIST_BYTES {
                return Err(AuthorityError::HeaderListTooLarge { stream_id });
            }
            write_block(
                out,
                stream_id,
                self.block.end_stream,
                self.block.priority,
                &self.reencoded,
            );
        } else {
            out.extend_from_slice(&self.block.raw);
        }
        self.block.open = false;
        self.block.priority = None;
        self.block.raw.clear();
        self.block.fragment.clear();
        // A rare large block does not keep its buffers for the life of the connection.
        for buffer in [
            &mut self.block.raw,
            &mut self.block.fragment,
            &mut self.reencoded,
        ] {
            buffer.shrink_to(MAX_FRAME_PAYLOAD);
        }
        Ok(())
    }
}

fn next_frame() -> State {
    State::FrameHeader {
        bytes: [0; FRAME_HEADER_LEN],
        have: 0,
    }
}

/// Appends an HPACK integer with a `prefix_bits`-bit prefix (RFC 7541 §5.1) after `first`'s
/// high bits.
pub(crate) fn encode_integer(out: &mut Vec<u8>, first: u8, prefix_bits: u32, value: usize) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        // value < 2^prefix_bits ≤ 128
        out.push(first | value as u8);
        return;
    }
    out.push(first | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// Appends a literal header field without indexing, with a literal name and no Huffman
/// coding (RFC 7541 §6.2.2): it neither reads nor changes the server's dynamic table.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    for string in [name, value] {
        encode_integer(out, 0x00, 7, string.len());
        out.extend_from_slice(string);
    }
}

/// Frames a header block as one HEADERS and as many CONTINUATION frames as it needs, each
/// payload at most [`MAX_FRAME_PAYLOAD`], without padding.
fn write_block(
    out: &mut Vec<u8>,
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_LEN]>,
    block: &[u8],
) {
    let mut rest = block;
    let mut first = true;
    loop {
        let prefix: &[u8] = match (first, &priority) {
            (true, Some(priority)) => priority,
            _ => &[],
        };
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME_PAYLOAD - prefix.len()));
        let (kind, mut flags) = if first {
            let end_stream = if end_stream { END_STREAM } else { 0 };
            let priority = if prefix.is_empty() { 0 } else { PRIORITY };
            (HEADERS, end_stream | priority)
        } else {
            (CONTINUATION, 0)
        };
        if tail.is_empty() {
            flags |= END_HEADERS;
        }
        let len = prefix.len() + chunk.len();
        // len ≤ MAX_FRAME_PAYLOAD < 2^24
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(prefix);
        out.extend_from_slice(chunk);
        if tail.is_empty() {
            return;
        }
        rest = tail;
        first = false;
    }
}

/// How many bytes of the client's stream one read takes.
const READ_CHUNK: usize = 16 * 1024;

/// A server-side connection whose client→server bytes pass through a [`ClientStream`]: what
/// hyper reads has every `:authority` h2 would refuse replaced with `localhost`. Writes go
/// straight to the inner stream.
pub struct AuthorityAdapter<IO> {
    io: IO,
    client: ClientStream,
    input: Box<[u8]>,
    output: Vec<u8>,
    sent: usize,
}

impl<IO> fmt::Debug for AuthorityAdapter<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorityAdapter")
            .field("rewriting", &self.client.rewriting)
            .finish_non_exhaustive()
    }
}

impl<IO> AuthorityAdapter<IO> {
    /// Wraps a freshly accepted connection, before the client's preface.
    pub fn new(io: IO) -> Self {
        Self {
            io,
            client: ClientStream::new(),
            input: vec![0; READ_CHUNK].into_boxed_slice(),
            output: Vec::new(),
            sent: 0,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Whether this connection re-encodes its header blocks (a rewrite was needed).
    pub fn is_rewriting(&self) -> bool {
        self.client.rewriting
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityAdapter<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.sent < this.output.len() {
                let n = (this.output.len() - this.sent).min(buf.remaining());
                buf.put_slice(&this.output[this.sent..this.sent + n]);
                this.sent += n;
                if this.sent == this.output.len() {
                    this.output.clear();
                    this.sent = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.input);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                this.client.finish()?;
                return Poll::Ready(Ok(()));
            }
            this.client.feed(&this.input[..n], &mut this.output)?;
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityAdapter<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// tonic's per-request connection info is the inner stream's (`UdsConnectInfo` for a
/// `UnixStream`).
impl<IO: Connected> Connected for AuthorityAdapter<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// The connections a [`UnixListener`] accepts, each wrapped in an [`AuthorityAdapter`]: the
/// `incoming` stream for tonic's `serve_with_incoming` and `serve_with_incoming_shutdown`.
#[derive(Debug)]
pub struct Incoming {
    listener: UnixListener,
}

/// Serves `listener`'s connections through [`AuthorityAdapter`].
pub fn incoming(listener: UnixListener) -> Incoming {
    Incoming { listener }
}

impl tokio_stream::Stream for Incoming {
    type Item = io::Result<AuthorityAdapter<UnixStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let accepted = ready!(self.listener.poll_accept(cx));
        Poll::Ready(Some(
            accepted.map(|(stream, _address)| AuthorityAdapter::new(stream)),
        ))
    }
}

#[cfg(test)]
mod tests;
