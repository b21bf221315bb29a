//! Response compression (`compress = true`, the default outside the registry profile).
//! Phases: `response_filter` decides ([`berth_core::compress::decide`]) and rewrites the
//! header; `response_body_filter` encodes each chunk as it passes.
//!
//! Streamed: a body without a `Content-Length` (chunked, or read until close) has every chunk
//! compressed and flushed at once (a gzip or zstd block boundary, a brotli flush), so the
//! client can decode everything it has been sent and nothing waits for the rest of the body
//! — as Go's and Caddy's proxies flush such bodies. A body of known length is compressed in
//! the encoder's own blocks and never held whole. Each response being compressed holds one
//! encoder; the window sizes below bound what that costs.

use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, ETAG, TRANSFER_ENCODING, VARY,
};
use http::HeaderValue;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use berth_core::compress::{decide, Coding, Request};

use crate::plugin::{Plugin, RequestCtx};

/// gzip level: zlib's 5, where its ratio levels off and its cost has not yet climbed.
pub const GZIP_LEVEL: u32 = 5;
/// Brotli quality 4: about gzip 6's ratio at a fraction of its cost (higher qualities are
/// for files compressed once, not for every response).
pub const BROTLI_QUALITY: u32 = 4;
/// zstd level 3, its own default.
pub const ZSTD_LEVEL: i32 = 3;
/// Brotli's and zstd's window, as a power of two: 256 KiB, so an encoder holds about a
/// megabyte at most (zstd's default for level 3 would be 2 MiB of window alone), and
/// browsers decode it (they accept zstd windows up to 8 MiB).
pub const WINDOW_LOG: u32 = 18;

/// Compresses responses for clients that accept it.
#[derive(Debug, Default)]
pub struct Compress;

/// The encoder of a response being compressed (a slot of [`RequestCtx::slots`]).
#[derive(Clone)]
struct Compressing(Arc<Mutex<Encoder>>);

#[async_trait]
impl Plugin for Compress {
    fn name(&self) -> &'static str {
        "compress"
    }

    fn response_filter(
        &self,
        session: &Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // berth's own answers are short, and already sent whole.
        if ctx.generated {
            return Ok(());
        }
        let req = session.req_header();
        let request = Request {
            method: &req.method,
            version: req.version,
            headers: &req.headers,
        };
        let decision = decide(request, response.status, &response.headers);
        if decision.vary {
            add_vary(response)?;
        }
        let Some(coding) = decision.coding else {
            return Ok(());
        };
        if response.status == http::StatusCode::NOT_MODIFIED {
            // No body to encode: the tag its 200 would carry.
            weaken_etag(response);
            return Ok(());
        }
        // A body of known length is compressed in the encoder's own blocks; a streamed one
        // (no length) is flushed chunk by chunk, so each piece reaches the client as it comes.
        let flush_each = !response.headers.contains_key(CONTENT_LENGTH);
        let encoder = match Encoder::new(coding, flush_each) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(coding = coding.as_str(), error = %e, "could not start an encoder; the response is sent as it is");
                return Ok(());
            }
        };
        response.insert_header(CONTENT_ENCODING, coding.as_str())?;
        // The length and byte ranges were those of the uncompressed body.
        response.remove_header(&CONTENT_LENGTH);
        response.remove_header(&ACCEPT_RANGES);
        weaken_etag(response);
        if !session.as_downstream().is_http2() {
            response.insert_header(TRANSFER_ENCODING, "chunked")?;
            // Chunked framing is HTTP/1.1's: an HTTP/1.0 upstream's status line would make
            // clients read the body until the connection closes (RFC 9112 §6.1).
            response.set_version(http::Version::HTTP_11);
        }
        ctx.slots.insert(Compressing(Arc::new(Mutex::new(encoder))));
        Ok(())
    }

    fn response_body_filter(
        &self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(Compressing(encoder)) = ctx.slots.get::<Compressing>() else {
            return Ok(());
        };
        let input = body.as_deref().unwrap_or_default();
        if input.is_empty() && !end_of_stream {
            return Ok(());
        }
        let mut encoder = encoder
            .lock()
            .map_err(|_| Error::explain(ErrorType::InternalError, "encoder lock poisoned"))?;
        let out = encoder.encode(input, end_of_stream).map_err(|e| {
            Error::because(ErrorType::InternalError, "while compressing a response", e)
        })?;
        // Nothing ready yet (the encoder keeps the input for its next block): nothing to send,
        // never an empty chunk.
        *body = (!out.is_empty() || end_of_stream).then_some(out);
        Ok(())
    }
}

/// Adds `Accept-Encoding` to `Vary`, unless it is there already (or `Vary: *` says all).
fn add_vary(response: &mut ResponseHeader) -> Result<()> {
    let present = response.headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|t| {
                let t = t.trim();
                t == "*" || t.eq_ignore_ascii_case("accept-encoding")
            })
        })
    });
    if !present {
        response.append_header(VARY, "Accept-Encoding")?;
    }
    Ok(())
}

/// A strong `ETag` made weak (the compressed bytes differ from those it named); one that is
/// not a valid tag at all is dropped (RFC 9110 §8.8.3).
fn weaken_etag(response: &mut ResponseHeader) {
    let Some(tag) = response.headers.get(ETAG) else {
        return;
    };
    let bytes = tag.as_bytes();
    if bytes.starts_with(b"W/") {
        return;
    }
    let weak = bytes
        .starts_with(b"\"")
        .then(|| HeaderValue::from_bytes(&[b"W/", bytes].concat()).ok())
        .flatten();
    let kept = weak.is_some_and(|w| response.insert_header(ETAG, w).is_ok());
    if !kept {
        response.remove_header(&ETAG);
    }
}

/// A streaming encoder whose every [`Encoder::encode`] returns all the client needs to
/// decode what it was given so far.
struct Encoder {
    coding: Coder,
    /// Flush after every chunk (a streamed body), or only as blocks fill (a known length).
    flush_each: bool,
}

enum Coder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    /// `None` once finished.
    Br(Option<Box<brotli::CompressorWriter<Vec<u8>>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(coding: Coding, flush_each: bool) -> std::io::Result<Encoder> {
        Ok(Encoder {
            coding: Coder::new(coding)?,
            flush_each,
        })
    }

    /// Compresses `input` and returns what is ready (flushed, for a streamed body); with
    /// `end`, the rest of the stream too.
    fn encode(&mut self, input: &[u8], end: bool) -> std::io::Result<Bytes> {
        self.coding.encode(input, end, self.flush_each)
    }
}

impl Coder {
    fn new(coding: Coding) -> std::io::Result<Coder> {
        Ok(match coding {
            Coding::Gzip => Coder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            )),
            Coding::Br => Coder::Br(Some(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                BROTLI_QUALITY,
                WINDOW_LOG,
            )))),
            Coding::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?;
                e.window_log(WINDOW_LOG)?;
                Coder::Zstd(e)
            }
        })
    }

    fn encode(&mut self, input: &[u8], end: bool, flush: bool) -> std::io::Result<Bytes> {
        let out = match self {
            Coder::Gzip(e) => {
                e.write_all(input)?;
                if end {
                    e.try_finish()?;
                } else if flush {
                    e.flush()?;
                }
                std::mem::take(e.get_mut())
            }
            Coder::Br(slot) => {
                let Some(e) = slot.as_mut() else {
                    return Ok(Bytes::new());
                };
                e.write_all(input)?;
                if end {
                    slot.take().map(|e| e.into_inner()).unwrap_or_default()
                } else {
                    if flush {
                        e.flush()?;
                    }
                    std::mem::take(e.get_mut())
                }
            }
            Coder::Zstd(e) => {
                e.write_all(input)?;
                if end {
                    e.do_finish()?;
                } else if flush {
                    e.flush()?;
                }
                std::mem::take(e.get_mut())
            }
        };
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn decode(coding: Coding, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .map(|_| ()),
            Coding::Br => brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .map(|_| ()),
            Coding::Zstd => zstd::stream::read::Decoder::new(bytes)
                .and_then(|mut d| d.read_to_end(&mut out))
                .map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{coding:?}: {e}"));
        out
    }

    /// A prefix decoder: what a client can decode of `bytes` before the stream ends.
    fn decode_prefix(coding: Coding, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 1 << 20];
        let mut total = 0;
        let result: std::io::Result<()> = match coding {
            Coding::Gzip => {
                let mut d = flate2::read::GzDecoder::new(bytes);
                loop {
                    match d.read(&mut out[total..]) {
                        Ok(0) | Err(_) => break Ok(()),
                        Ok(n) => total += n,
                    }
                }
            }
            Coding::Br => {
                let mut d = brotli::Decompressor::new(bytes, 4096);
                loop {
                    match d.read(&mut out[total..]) {
                        Ok(0) | Err(_) => break Ok(()),
                        Ok(n) => total += n,
                    }
                }
            }
            Coding::Zstd => {
                let mut d =
                    zstd::stream::read::Decoder::new(bytes).unwrap_or_else(|e| panic!("{e}"));
                loop {
                    match d.read(&mut out[total..]) {
                        Ok(0) | Err(_) => break Ok(()),
                        Ok(n) => total += n,
                    }
                }
            }
        };
        result.unwrap_or_else(|e| panic!("{e}"));
        out.truncate(total);
        out
    }

    #[test]
    fn every_chunk_can_be_decoded_as_soon_as_it_is_sent_and_the_whole_round_trips() {
        let chunks: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                format!("<p>line {i} of a streamed page</p>\n")
                    .repeat(40)
                    .into_bytes()
            })
            .collect();
        for coding in Coding::PREFERRED {
            let mut encoder = Encoder::new(coding, true).unwrap_or_else(|e| panic!("{e}"));
            let mut sent = Vec::new();
            let mut plain = Vec::new();
            for chunk in &chunks {
                sent.extend_from_slice(
                    &encoder
                        .encode(chunk, false)
                        .unwrap_or_else(|e| panic!("{e}")),
                );
                plain.extend_from_slice(chunk);
                // Everything given so far decodes from what was sent so far.
                assert_eq!(decode_prefix(coding, &sent), plain, "{coding:?}");
            }
            sent.extend_from_slice(&encoder.encode(b"", true).unwrap_or_else(|e| panic!("{e}")));
            assert_eq!(decode(coding, &sent), plain, "{coding:?}");
            assert!(
                sent.len() * 5 < plain.len(),
                "{coding:?}: {} of {}",
                sent.len(),
                plain.len()
            );
        }
    }

    #[test]
    fn a_body_of_known_length_is_not_flushed_chunk_by_chunk() {
        let line = b"{\"id\": 1, \"name\": \"an item of a list\"}\n";
        for coding in Coding::PREFERRED {
            let mut sizes = Vec::new();
            for flush_each in [false, true] {
                let mut e = Encoder::new(coding, flush_each).unwrap_or_else(|e| panic!("{e}"));
                let mut sent = Vec::new();
                for _ in 0..2000 {
                    sent.extend_from_slice(
                        &e.encode(line, false).unwrap_or_else(|e| panic!("{e}")),
                    );
                }
                sent.extend_from_slice(&e.encode(b"", true).unwrap_or_else(|e| panic!("{e}")));
                assert_eq!(decode(coding, &sent), line.repeat(2000), "{coding:?}");
                sizes.push(sent.len());
            }
            // Unflushed, small chunks compress as one body; flushed, each costs a block.
            assert!(sizes[0] * 10 < sizes[1], "{coding:?}: {sizes:?}");
            assert!(sizes[0] * 20 < line.len() * 2000, "{coding:?}: {sizes:?}");
        }
    }

    #[test]
    fn etags_are_weakened_and_vary_is_added_once() {
        let mut r = ResponseHeader::build(200, None).unwrap_or_else(|e| panic!("{e}"));
        r.insert_header(ETAG, "\"abc\"")
            .unwrap_or_else(|e| panic!("{e}"));
        r.insert_header(VARY, "Origin")
            .unwrap_or_else(|e| panic!("{e}"));
        weaken_etag(&mut r);
        add_vary(&mut r).unwrap_or_else(|e| panic!("{e}"));
        add_vary(&mut r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.headers.get(ETAG).map(|v| v.as_bytes()),
            Some(&b"W/\"abc\""[..])
        );
        let vary: Vec<_> = r
            .headers
            .get_all(VARY)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        assert_eq!(vary, [b"Origin".to_vec(), b"Accept-Encoding".to_vec()]);
        weaken_etag(&mut r);
        assert_eq!(
            r.headers.get(ETAG).map(|v| v.as_bytes()),
            Some(&b"W/\"abc\""[..])
        );
        r.insert_header(ETAG, "abc")
            .unwrap_or_else(|e| panic!("{e}"));
        weaken_etag(&mut r);
        assert!(r.headers.get(ETAG).is_none());
        let mut star = ResponseHeader::build(200, None).unwrap_or_else(|e| panic!("{e}"));
        star.insert_header(VARY, "*")
            .unwrap_or_else(|e| panic!("{e}"));
        add_vary(&mut star).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(star.headers.get_all(VARY).iter().count(), 1);
    }
}
