//! A real browser for tests: Debian's `chromium`, headless, driven over the Chrome DevTools
//! Protocol (a WebSocket of JSON commands and events). It loads a page, evaluates
//! expressions in it, collects console errors and uncaught exceptions, and takes
//! screenshots.

use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A headless chromium; killed when dropped.
pub struct Browser {
    child: Child,
    /// `127.0.0.1:PORT` of its DevTools endpoint.
    devtools: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromium with a fresh profile and waits for its DevTools endpoint.
    ///
    /// # Errors
    /// When chromium is missing (`scripts/test` installs it) or does not start.
    pub fn start() -> io::Result<Browser> {
        let profile = tempfile::tempdir()?;
        let mut child = crate::process::tied("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("chromium (apt-get install chromium): {e}"),
                )
            })?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("chromium gave no stderr"))?;
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(rest) = line.split("ws://").nth(1) {
                        let host = rest.split('/').next().unwrap_or("").to_string();
                        let _ = tx.send(host);
                        sent = true;
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(devtools) => Ok(Browser {
                child,
                devtools,
                _profile: profile,
            }),
            Err(_) => {
                let _ = child.kill();
                Err(io::Error::other(
                    "chromium did not open its DevTools endpoint within 30 s",
                ))
            }
        }
    }

    /// Opens a new tab on `url` and connects to it.
    ///
    /// # Errors
    /// When the DevTools endpoint does not answer.
    pub async fn open(&self, url: &str) -> io::Result<Page> {
        let target: Value = {
            let addr = self
                .devtools
                .parse()
                .map_err(|e| io::Error::other(format!("{}: {e}", self.devtools)))?;
            let request = format!(
                "PUT /json/new?about:blank HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.devtools
            );
            let text =
                crate::client::send_raw(addr, request.as_bytes(), Duration::from_secs(10)).await?;
            let body = text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b)
                .ok_or_else(|| io::Error::other(format!("DevTools answered {text}")))?;
            serde_json::from_str(body).map_err(|e| io::Error::other(format!("{e}: {body}")))?
        };
        let ws_url = target["webSocketDebuggerUrl"]
            .as_str()
            .ok_or_else(|| io::Error::other(format!("no webSocketDebuggerUrl in {target}")))?;
        let (ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .map_err(io::Error::other)?;
        let mut page = Page {
            ws,
            next_id: 0,
            events: Vec::new(),
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({})).await?;
        }
        page.call("Page.navigate", json!({ "url": url })).await?;
        page.wait_for_event("Page.loadEventFired", Duration::from_secs(30))
            .await?;
        Ok(page)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tab.
pub struct Page {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    events: Vec<Value>,
}

impl Page {
    /// Sends a command and waits for its result; events that arrive meanwhile are kept.
    ///
    /// # Errors
    /// When the connection fails or the command returns an error.
    pub async fn call(&mut self, method: &str, params: Value) -> io::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(Message::Text(message.to_string().into()))
            .await
            .map_err(io::Error::other)?;
        loop {
            let value = self.receive(Duration::from_secs(30)).await?;
            if value["id"] == id {
                if let Some(error) = value.get("error") {
                    return Err(io::Error::other(format!("{method}: {error}")));
                }
                return Ok(value["result"].clone());
            }
            self.events.push(value);
        }
    }

    async fn receive(&mut self, limit: Duration) -> io::Result<Value> {
        loop {
            let next = tokio::time::timeout(limit, self.ws.next())
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no message from chromium"))?;
            match next {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text).map_err(io::Error::other)
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Err(io::Error::other("chromium closed the connection")),
            }
        }
    }

    async fn wait_for_event(&mut self, method: &str, limit: Duration) -> io::Result<Value> {
        if let Some(found) = self.events.iter().find(|e| e["method"] == method) {
            return Ok(found.clone());
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let value = self.receive(left).await?;
            self.events.push(value.clone());
            if value["method"] == method {
                return Ok(value);
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    ///
    /// # Errors
    /// When the expression throws or the connection fails.
    pub async fn eval(&mut self, expression: &str) -> io::Result<Value> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(io::Error::other(format!("{expression}: {exception}")));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression` until it is true, for up to `limit`; the last value otherwise.
    ///
    /// # Errors
    /// When it never becomes true, naming the expression and the page's text.
    pub async fn wait_until(&mut self, expression: &str, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.eval(expression).await? == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let text = self.eval("document.body.innerText").await?;
                return Err(io::Error::other(format!(
                    "{expression} never became true; the page says:\n{}",
                    text.as_str().unwrap_or("")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Console errors, failed loads and uncaught exceptions so far.
    pub async fn errors(&mut self) -> Vec<String> {
        // Collect whatever has arrived.
        while let Ok(value) = self.receive(Duration::from_millis(50)).await {
            self.events.push(value);
        }
        self.events
            .iter()
            .filter_map(|e| match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => {
                    Some(e["params"]["exceptionDetails"].to_string())
                }
                Some("Runtime.consoleAPICalled") if e["params"]["type"] == "error" => {
                    Some(e["params"]["args"].to_string())
                }
                Some("Log.entryAdded") if e["params"]["entry"]["level"] == "error" => {
                    Some(e["params"]["entry"].to_string())
                }
                _ => None,
            })
            .collect()
    }

    /// Writes a PNG of the whole page to `path`.
    ///
    /// # Errors
    /// When the screenshot or the write fails.
    pub async fn screenshot(&mut self, path: &Path) -> io::Result<()> {
        let result = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await?;
        let data = result["data"]
            .as_str()
            .ok_or_else(|| io::Error::other("no screenshot data"))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(io::Error::other)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)
    }
}
