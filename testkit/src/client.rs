//! A raw HTTP/1.1 client: one request per connection, every byte on the wire chosen by the
//! test. Bodies of random data are generated on the fly (never held in memory) and hashed
//! while they are sent, so a 2 GiB upload costs no RAM on the client side.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use crate::origin::Seen;

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body, no framing headers.
    Empty,
    /// These bytes, with `Content-Length`.
    Bytes(Vec<u8>),
    /// `len` bytes of random data.
    Random {
        /// Bytes to send.
        len: u64,
        /// `Transfer-Encoding: chunked` instead of `Content-Length`.
        chunked: bool,
        /// Send `bytes` then sleep `every`, repeatedly (a slow client); `None` = full speed.
        pace: Option<(usize, Duration)>,
    },
    /// `len` bytes repeating one random block, not hashed: for benchmarks, where the client
    /// must cost as little CPU as possible.
    Repeat {
        /// Bytes to send.
        len: u64,
        /// `Transfer-Encoding: chunked` instead of `Content-Length`.
        chunked: bool,
    },
}

impl Body {
    /// `len` random bytes at full speed.
    pub fn random(len: u64, chunked: bool) -> Body {
        Body::Random {
            len,
            chunked,
            pace: None,
        }
    }
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Request target as written on the request line.
    pub target: String,
    /// Headers, in order, as written.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Body,
    /// Send `Expect: 100-continue` and wait for the interim answer before the body.
    pub expect_continue: bool,
}

impl Request {
    /// A request with a `Host` header and no body.
    pub fn new(method: &str, host: &str, target: &str) -> Request {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            headers: vec![("Host".to_string(), host.to_string())],
            body: Body::Empty,
            expect_continue: false,
        }
    }

    /// `GET` with a `Host`.
    pub fn get(host: &str, target: &str) -> Request {
        Request::new("GET", host, target)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: Body) -> Request {
        self.body = body;
        self
    }

    /// Sends `Expect: 100-continue`.
    pub fn expect_continue(mut self) -> Request {
        self.expect_continue = true;
        self
    }
}

/// What came back, and what was sent.
#[derive(Debug, Clone)]
pub struct Response {
    /// Final status.
    pub status: u16,
    /// Headers of the final response.
    pub headers: Vec<(String, String)>,
    /// Body of the final response.
    pub body: Vec<u8>,
    /// Whether a `100 Continue` came before the final response.
    pub got_continue: bool,
    /// Body bytes the client managed to send.
    pub sent_bytes: u64,
    /// SHA-256 of the body bytes sent, hex.
    pub sent_sha256: String,
}

impl Response {
    /// The first value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as the origin's echo.
    ///
    /// # Errors
    /// If the body is not an origin echo (e.g. berth answered itself).
    pub fn seen(&self) -> Result<Seen, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "not an origin echo ({e}): status {} {}",
                self.status,
                self.text()
            )
        })
    }
}

/// Sends one request on a new connection and reads the answer.
///
/// # Errors
/// Connection failures, and a connection closed before a complete response.
pub async fn send(addr: SocketAddr, req: &Request) -> io::Result<Response> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 * 1024, rd);

    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match &req.body {
        Body::Empty => {}
        Body::Bytes(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
        Body::Random { len, chunked, .. } | Body::Repeat { len, chunked } => {
            if *chunked {
                head.push_str("Transfer-Encoding: chunked\r\n");
            } else {
                head.push_str(&format!("Content-Length: {len}\r\n"));
            }
        }
    }
    if req.expect_continue {
        head.push_str("Expect: 100-continue\r\n");
    }
    head.push_str("\r\n");
    wr.write_all(head.as_bytes()).await?;

    let mut got_continue = false;
    if req.expect_continue {
        match tokio::time::timeout(Duration::from_secs(3), read_head(&mut rd)).await {
            Ok(Ok((100, _))) => got_continue = true,
            Ok(Ok((status, headers))) => {
                // A final answer before the body: the body is never sent.
                let body = read_body(&mut rd, &req.method, status, &headers).await?;
                return Ok(Response {
                    status,
                    headers,
                    body,
                    got_continue,
                    sent_bytes: 0,
                    sent_sha256: hex::encode(Sha256::digest([])),
                });
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {} // no interim answer: send the body anyway, as curl does
        }
    }

    let body = req.body.clone();
    let writer = tokio::spawn(async move {
        let mut sent = 0u64;
        let mut hasher = Sha256::new();
        let result = write_body(&mut wr, &body, &mut sent, &mut hasher).await;
        (result, sent, hex::encode(hasher.finalize()), wr)
    });

    let answer = async {
        loop {
            let (status, headers) = read_head(&mut rd).await?;
            if status == 100 {
                got_continue = true;
                continue;
            }
            let body = read_body(&mut rd, &req.method, status, &headers).await?;
            return Ok::<_, io::Error>((status, headers, body));
        }
    }
    .await;
    let (sent_bytes, sent_sha256) = match tokio::time::timeout(Duration::from_secs(5), writer).await
    {
        Ok(Ok((_, sent, sha, _wr))) => (sent, sha),
        _ => (0, String::new()),
    };
    let (status, headers, body) = answer?;
    Ok(Response {
        status,
        headers,
        body,
        got_continue,
        sent_bytes,
        sent_sha256,
    })
}

async fn write_body(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    body: &Body,
    sent: &mut u64,
    hasher: &mut Sha256,
) -> io::Result<()> {
    match body {
        Body::Empty => Ok(()),
        Body::Bytes(b) => {
            wr.write_all(b).await?;
            *sent += b.len() as u64;
            hasher.update(b);
            Ok(())
        }
        Body::Random { len, chunked, pace } => {
            let block = pace.map_or(256 * 1024, |(n, _)| n.max(1));
            let mut rng = SmallRng::seed_from_u64(*len ^ 0x5eed);
            let mut buf = vec![0u8; block];
            let mut left = *len;
            while left > 0 {
                let n = left.min(block as u64) as usize;
                rng.fill_bytes(&mut buf[..n]);
                if *chunked {
                    wr.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                    wr.write_all(&buf[..n]).await?;
                    wr.write_all(b"\r\n").await?;
                } else {
                    wr.write_all(&buf[..n]).await?;
                }
                hasher.update(&buf[..n]);
                *sent += n as u64;
                left -= n as u64;
                if let Some((_, every)) = pace {
                    tokio::time::sleep(*every).await;
                }
            }
            if *chunked {
                wr.write_all(b"0\r\n\r\n").await?;
            }
            wr.flush().await
        }
        Body::Repeat { len, chunked } => {
            const BLOCK: usize = 256 * 1024;
            let mut block = vec![0u8; BLOCK];
            SmallRng::seed_from_u64(*len).fill_bytes(&mut block);
            let chunk_head = format!("{BLOCK:x}\r\n");
            let mut left = *len;
            while left > 0 {
                let n = left.min(BLOCK as u64) as usize;
                if *chunked {
                    if n == BLOCK {
                        wr.write_all(chunk_head.as_bytes()).await?;
                    } else {
                        wr.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                    }
                    wr.write_all(&block[..n]).await?;
                    wr.write_all(b"\r\n").await?;
                } else {
                    wr.write_all(&block[..n]).await?;
                }
                *sent += n as u64;
                left -= n as u64;
            }
            if *chunked {
                wr.write_all(b"0\r\n\r\n").await?;
            }
            wr.flush().await
        }
    }
}

type Head = (u16, Vec<(String, String)>);

async fn read_head(rd: &mut BufReader<OwnedReadHalf>) -> io::Result<Head> {
    let mut line = String::new();
    if rd.read_line(&mut line).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {line:?}"),
            )
        })?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        rd.read_line(&mut line).await?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

async fn read_body(
    rd: &mut BufReader<OwnedReadHalf>,
    method: &str,
    status: u16,
    headers: &[(String, String)],
) -> io::Result<Vec<u8>> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if method == "HEAD" || status == 204 || status == 304 {
        return Ok(Vec::new());
    }
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        let mut line = String::new();
        loop {
            line.clear();
            rd.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // trailers, then the empty line
                loop {
                    line.clear();
                    if rd.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                        return Ok(body);
                    }
                }
            }
            let start = body.len();
            body.resize(start + size, 0);
            rd.read_exact(&mut body[start..]).await?;
            line.clear();
            rd.read_line(&mut line).await?;
        }
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        rd.read_exact(&mut body).await?;
        Ok(body)
    } else {
        rd.read_to_end(&mut body).await?;
        Ok(body)
    }
}

/// Writes raw bytes on a new connection and returns everything the server sends until it
/// closes the connection or `wait` passes.
///
/// # Errors
/// When the connection cannot be made.
pub async fn send_raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Steady background traffic: a `GET /` to one host on a new connection every 20 ms, counting
/// what succeeded (200) and what did not, until stopped. For "nothing failed meanwhile".
pub struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl Traffic {
    /// Starts sending to `addr` with `Host: host` (on the current tokio runtime).
    pub fn start(addr: SocketAddr, host: &str) -> Traffic {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, host) = (stop.clone(), host.to_string());
        let task = tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match send(addr, &Request::get(&host, "/")).await {
                    Ok(r) if r.status == 200 => ok += 1,
                    Ok(r) => failed.push(format!("status {}", r.status)),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        });
        Traffic { stop, task }
    }

    /// Stops, and returns the number of successes and a description of each failure.
    ///
    /// # Panics
    /// If the sending task panicked.
    #[allow(clippy::unwrap_used)]
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}
