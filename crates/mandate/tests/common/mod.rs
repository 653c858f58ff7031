//! The harness shared by the tests that drive the real server: each test
//! starts the built `mandate serve` on a fresh data directory and port 0,
//! reads the admin key and the address from what it prints, and talks to it
//! over real HTTP/1.1 sockets, as any client would.
//!
//! The HTTP client is a few lines over `std::net::TcpStream` (one request per
//! connection, `Connection: close`, chunked or sized bodies), so that this
//! crate needs no HTTP dependency of its own.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long a server may take to start (builds may be running beside the tests).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long one HTTP exchange may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The server's limit on request bodies (SPEC: 256 KiB).
pub const BODY_BYTES_MAX: usize = 256 * 1024;

// ---------------------------------------------------------------- HTTP

/// One HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `METHOD path`, for messages.
    pub request: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or_default()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{}: not JSON ({error}): {}", self.request, self.text()))
    }

    /// Asserts the status and returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}: {}", self.request, self.text());
        self.json()
    }

    /// Asserts the status and returns the text body.
    pub fn expect_text(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}: {}", self.request, self.text());
        self.text()
    }

    /// Asserts an RFC 9457 problem with this status and code, and returns it.
    pub fn problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{}: {}", self.request, self.text());
        assert_eq!(self.content_type(), "application/problem+json", "{}: {}", self.request, self.text());
        let problem = self.json();
        assert_eq!(problem["code"], code, "{}: {problem}", self.request);
        assert_eq!(problem["status"], status, "{}: {problem}", self.request);
        assert_eq!(problem["type"], format!("/problems/{code}"), "{}: {problem}", self.request);
        assert!(problem["title"].as_str().is_some_and(|title| !title.is_empty()), "{}: {problem}", self.request);
        assert!(problem["detail"].as_str().is_some_and(|detail| !detail.is_empty()), "{}: {problem}", self.request);
        problem
    }
}

/// One request on its own connection.
pub fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: Option<&[u8]>) -> Response {
    try_http(addr, method, path, token, body).unwrap_or_else(|error| panic!("{error}"))
}

/// One request on its own connection, or why no whole answer came back (a
/// refused connection, or an answer cut short, as when the server is killed
/// while answering).
pub fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> Result<Response, String> {
    let request = format!("{method} {path}");
    let mut stream = TcpStream::connect(addr).map_err(|error| format!("{request}: connecting to {addr}: {error}"))?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    } else if method != "GET" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    // A server may answer (413) before reading a body it refuses and close:
    // the verdict is its answer, not whether the rest of the body got through.
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.unwrap_or_default()));
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    if raw.is_empty() {
        return Err(format!("{request}: no answer ({read:?})"));
    }
    try_parse_response(request, &raw)
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

pub fn parse_response(request: String, raw: &[u8]) -> Response {
    try_parse_response(request, raw).unwrap_or_else(|error| panic!("{error}"))
}

/// Parses a whole answer; an answer cut short is an error.
pub fn try_parse_response(request: String, raw: &[u8]) -> Result<Response, String> {
    let split = find(raw, b"\r\n\r\n").ok_or_else(|| format!("{request}: no end of head"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|error| format!("{request}: head: {error}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{request}: bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers.iter().any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked {
        dechunk(rest).ok_or_else(|| format!("{request}: chunked body cut short"))?
    } else if let Some((_, length)) = headers.iter().find(|(name, _)| name == "content-length") {
        let length: usize = length.parse().map_err(|_| format!("{request}: bad content-length {length:?}"))?;
        if rest.len() < length {
            return Err(format!("{request}: body cut short"));
        }
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, headers, body, request })
}

/// A chunked body, or `None` if it is cut short or malformed.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let end = find(rest, b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = rest.get(end + 2..)?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------- the server

/// The built binary.
pub fn mandate<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mandate")).args(args).output().unwrap()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A running `mandate serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The default tenant's admin key.
    pub key: String,
    /// The key printed by this start, if it created the tenant.
    pub printed_key: Option<String>,
    /// The data directory (empty on PostgreSQL).
    pub data: PathBuf,
    /// The PostgreSQL database, when the server runs on one.
    pub database: Option<String>,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
    pub readers: Vec<JoinHandle<()>>,
}

/// How a stopped server ended.
pub struct Stopped {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Copies a pipe's lines into `buffer`, and each into `lines` if given.
pub fn reader(
    pipe: impl Read + Send + 'static,
    buffer: Arc<Mutex<String>>,
    lines: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            buffer.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(lines) = &lines {
                let _ = lines.send(line);
            }
        }
    })
}

impl Server {
    /// A fresh data directory (not yet existing, so that the server makes it)
    /// and a server on it.
    pub fn fresh() -> (tempfile::TempDir, Server) {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(&dir.path().join("data"));
        (dir, server)
    }

    pub fn start(data: &Path) -> Server {
        Server::start_with(data, &[])
    }

    /// `mandate serve` on `data` with `env` added to its environment.
    pub fn start_with(data: &Path, env: &[(&str, &str)]) -> Server {
        Server::spawn(&["--data", path_str(data)], env, &format!("(data in {})", data.display()), Some(data))
    }

    /// `mandate serve --database url`. The default tenant's key is the one
    /// this start printed, else `key` (from the server that created it).
    pub fn start_on_database(url: &str, key: Option<&str>, env: &[(&str, &str)]) -> Server {
        let mut server = Server::spawn(&["--database", url], env, "(data in PostgreSQL)", None);
        server.database = Some(url.to_owned());
        if let Some(key) = key {
            server.key = key.to_owned();
        }
        server
    }

    fn spawn(store: &[&str], env: &[(&str, &str)], note: &str, data: Option<&Path>) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mandate"))
            .arg("serve")
            .args(store)
            .args(["--addr", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdout, stderr) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
        let (sender, lines) = mpsc::channel();
        let readers = vec![
            reader(child.stdout.take().unwrap(), stdout.clone(), Some(sender)),
            reader(child.stderr.take().unwrap(), stderr.clone(), None),
        ];
        let deadline = Instant::now() + START_TIMEOUT;
        let mut printed_key = None;
        let mut key_follows = false;
        let addr = loop {
            let line = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "the server did not start; stdout: {}; stderr: {}",
                    stdout.lock().unwrap(),
                    stderr.lock().unwrap()
                )
            });
            if key_follows {
                printed_key = Some(line.trim().to_owned());
                key_follows = false;
            } else if line.starts_with("Created tenant `default`. Its admin key, shown once") {
                key_follows = true;
            } else if let Some(rest) = line.strip_prefix("mandate: listening on http://") {
                let (addr, data_note) = rest.split_once(' ').unwrap();
                assert_eq!(data_note, note);
                break addr.to_owned();
            }
        };
        let key = match (&printed_key, data) {
            (Some(key), _) => key.clone(),
            (None, Some(data)) => std::fs::read_to_string(data.join("admin.key")).unwrap().trim().to_owned(),
            (None, None) => String::new(),
        };
        let data = data.map(Path::to_owned).unwrap_or_default();
        Server { child, addr, key, printed_key, data, database: None, stdout, stderr, readers }
    }

    /// Creates tenant `name` beside the running server and waits until its
    /// admin key works there; returns the key.
    pub fn create_tenant(&self, name: &str) -> String {
        let created = match &self.database {
            Some(url) => mandate(&["tenant", "create", name, "--database", url]),
            None => mandate(&["tenant", "create", name, "--data", path_str(&self.data)]),
        };
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
        let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let response = self.get_as(&key, "/v1/log/checkpoint");
            if response.status == 200 {
                return key;
            }
            response.problem(401, "unauthorized");
            assert!(Instant::now() < deadline, "tenant {name}'s key never worked");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then wait for the process to end.
    pub fn stop(&mut self) -> Stopped {
        let pid = self.child.id().to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(kill.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in std::mem::take(&mut self.readers) {
            reader.join().unwrap();
        }
        Stopped { status, stdout: self.stdout.lock().unwrap().clone(), stderr: self.stderr.lock().unwrap().clone() }
    }

    /// SIGKILL (`kill -9`): no chance to finish anything; waits for the
    /// process to end.
    pub fn kill(&mut self) -> ExitStatus {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        for reader in std::mem::take(&mut self.readers) {
            reader.join().unwrap();
        }
        status
    }

    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Response {
        let bytes = body.map(|body| serde_json::to_vec(body).unwrap());
        http(&self.addr, method, path, token, bytes.as_deref())
    }

    /// A request with a raw body, as the admin.
    pub fn raw(&self, method: &str, path: &str, body: &[u8]) -> Response {
        http(&self.addr, method, path, Some(&self.key), Some(body))
    }

    pub fn get(&self, path: &str) -> Response {
        self.call("GET", path, Some(&self.key), None)
    }

    pub fn post(&self, path: &str, body: Value) -> Response {
        self.call("POST", path, Some(&self.key), Some(&body))
    }

    pub fn get_as(&self, token: &str, path: &str) -> Response {
        self.call("GET", path, Some(token), None)
    }

    pub fn post_as(&self, token: &str, path: &str, body: Value) -> Response {
        self.call("POST", path, Some(token), Some(&body))
    }

    pub fn put_policies(&self, policies: &str) -> Value {
        self.call("PUT", "/v1/policies", Some(&self.key), Some(&json!({ "policies": policies }))).expect(200)
    }

    pub fn patch_settings(&self, settings: Value) -> Value {
        self.call("PATCH", "/v1/settings", Some(&self.key), Some(&settings)).expect(200)
    }

    pub fn patch(&self, path: &str, body: Value) -> Response {
        self.call("PATCH", path, Some(&self.key), Some(&body))
    }

    /// Every entry `GET /v1/log/search` finds for `query` (e.g.
    /// `type=decision`), following `next_cursor` to the end.
    pub fn search_all(&self, query: &str) -> Vec<Value> {
        let mut found = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/log/search?{query}&limit=1000");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.get(&path).expect(200);
            found.extend(page["entries"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return found,
            }
        }
    }

    /// Registers an identity; asserts 201.
    pub fn identity(&self, id: &str, kind: &str, parent: Option<&str>) -> Value {
        self.post("/v1/identities", json!({ "id": id, "kind": kind, "parent": parent })).expect(201)
    }

    /// Stores a grant; asserts 201.
    pub fn grant(&self, grant: Value) -> Value {
        self.post("/v1/grants", grant).expect(201)
    }

    /// Asks; asserts 200 (a deny is an answer).
    pub fn authorize(&self, request: Value) -> Value {
        self.post("/v1/authorize", request).expect(200)
    }

    /// The signed checkpoint's text.
    pub fn checkpoint(&self) -> String {
        let response = self.get("/v1/log/checkpoint");
        assert!(response.content_type().starts_with("text/plain"), "{}", response.content_type());
        response.expect_text(200)
    }

    /// The log's size, from a signed checkpoint.
    pub fn log_size(&self) -> u64 {
        checkpoint_size(&self.checkpoint())
    }

    /// Entries `[start, end)` as their lines.
    pub fn entries_as(&self, token: &str, start: u64, end: u64) -> Vec<String> {
        let response = self.get_as(token, &format!("/v1/log/entries?start={start}&end={end}"));
        assert_eq!(response.content_type(), "application/x-ndjson");
        let text = response.expect_text(200);
        assert!(text.is_empty() || text.ends_with('\n'), "JSONL ends with a newline");
        text.lines().map(str::to_owned).collect()
    }

    pub fn entries(&self, start: u64, end: u64) -> Vec<String> {
        self.entries_as(&self.key, start, end)
    }

    /// One entry, parsed.
    pub fn entry(&self, index: u64) -> Value {
        let lines = self.entries(index, index + 1);
        assert_eq!(lines.len(), 1);
        serde_json::from_str(&lines[0]).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn checkpoint_size(note: &str) -> u64 {
    note.lines().nth(1).and_then(|size| size.parse().ok()).unwrap_or_else(|| panic!("not a checkpoint: {note}"))
}

/// RFC 3339, `seconds` from now.
pub fn from_now(seconds: i64) -> String {
    jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_secs(seconds)).unwrap().to_string()
}

// ---------------------------------------------------------------- shared fixtures

pub fn charge(identity: &str, resource: &str, cents: u64) -> Value {
    json!({ "identity": identity, "action": "payments.charge", "resource": resource, "amounts": {"usd_cents": cents} })
}

/// Asserts an allow with no reasons, and returns its log index.
pub fn assert_allowed(answer: &Value) -> u64 {
    assert_eq!(answer["decision"], "allow", "{answer}");
    assert_eq!(answer["reasons"], json!([]), "{answer}");
    assert!(answer["decision_id"].as_str().is_some_and(|id| !id.is_empty()), "{answer}");
    answer["log_index"].as_u64().unwrap_or_else(|| panic!("no log_index: {answer}"))
}

/// Asserts a deny for exactly one reason with this code, naming `identity`
/// (or no identity), and returns the reason.
pub fn assert_denied<'a>(answer: &'a Value, code: &str, identity: Option<&str>) -> &'a Value {
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert!(answer["log_index"].is_u64(), "a deny is logged too: {answer}");
    let reasons = answer["reasons"].as_array().unwrap_or_else(|| panic!("no reasons: {answer}"));
    assert_eq!(reasons.len(), 1, "{answer}");
    let reason = &reasons[0];
    assert_eq!(reason["code"], code, "{answer}");
    assert_eq!(reason["identity"].as_str(), identity, "{answer}");
    assert!(reason["message"].as_str().is_some_and(|message| !message.is_empty()), "{answer}");
    reason
}

pub fn strings(values: &[&str]) -> Value {
    Value::Array(values.iter().map(|value| Value::from(*value)).collect())
}
