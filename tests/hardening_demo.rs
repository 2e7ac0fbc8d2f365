//! The built demo binary, run as a container runs it: from an empty directory away from the
//! source tree, on a fresh SQLite file. It must migrate and serve, keep its ops routes off the
//! public port, refuse with problem+json only, guard writes with a key, and close slow clients.
//!
//! The test builds the demo example with the cargo that runs it (a no-op when it is built).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Ports of this test: inside the range reserved for the hardening work.
const PORTS: std::ops::Range<u16> = 17420..17460;

fn free_port(skip: &[u16]) -> u16 {
    PORTS
        .clone()
        .find(|p| !skip.contains(p) && TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 17420..17460")
}

fn demo_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = !cfg!(debug_assertions);
    let mut build = Command::new(cargo);
    build.current_dir(root).args(["build", "--quiet", "--example", "demo"]);
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("running cargo build --example demo");
    assert!(status.success(), "cargo build --example demo failed");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    target.join(if release { "release" } else { "debug" }).join("examples").join("demo")
}

struct Demo {
    child: Child,
    public: SocketAddr,
    admin: SocketAddr,
    dir: PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The demo's own sample configuration with a small catalog, a short header-read timeout and
/// a small connection cap, so the test sees them act.
fn test_config() -> String {
    let sample = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo/demo.toml"))
        .expect("examples/demo/demo.toml");
    let replace = |text: String, key: &str, value: &str| {
        let line = text.lines().find(|l| l.starts_with(&format!("{key} "))).unwrap_or_else(|| panic!("{key}"));
        text.replacen(line, &format!("{key} = {value}"), 1)
    };
    let text = replace(sample, "seed_items", "500");
    let text = replace(text, "header_read_timeout", "\"600ms\"");
    replace(text, "max_connections", "12")
}

fn namespaces_work() -> bool {
    let root = env!("CARGO_MANIFEST_DIR");
    Command::new("unshare")
        .args(["-rm", "sh", "-c", r#"mount -t tmpfs none "$1" && test ! -e "$1/Cargo.toml""#, "sh", root])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start() -> Demo {
    let binary = demo_binary();
    let dir = std::env::temp_dir().join(format!("phalanx-hardening-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("demo.toml"), test_config()).unwrap();
    let public_port = free_port(&[]);
    let admin_port = free_port(&[public_port]);
    let public: SocketAddr = ([127, 0, 0, 1], public_port).into();
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    // A container holds the binary, not the source tree: copy the binary out, and where user
    // and mount namespaces are allowed, hide the source tree from it altogether.
    let copied = dir.join("demo");
    std::fs::copy(&binary, &copied).unwrap();
    let mut command = if namespaces_work() {
        let mut c = Command::new("unshare");
        c.args(["-rm", "sh", "-c", r#"mount -t tmpfs none "$1" && exec "$2""#, "sh"])
            .arg(env!("CARGO_MANIFEST_DIR"))
            .arg(&copied);
        c
    } else {
        eprintln!("unshare -rm is not available: the source tree stays visible to the demo");
        Command::new(&copied)
    };
    let child = command
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PHALANX_CONFIG", dir.join("demo.toml"))
        .env("BIND", public.to_string())
        .env("ADMIN_BIND", admin.to_string())
        .env("DATABASE_URL", format!("sqlite://{}?mode=rwc", dir.join("catalog.db").display()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", copied.display()));
    let mut demo = Demo { child, public, admin, dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = demo.child.try_wait().unwrap() {
            panic!("the demo exited before it was ready: {status}");
        }
        if let Ok(res) = request(public, "GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n") {
            if res.status == 200 {
                return demo;
            }
        }
        assert!(Instant::now() < deadline, "no /readyz 200 within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn assert_problem(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        let doc: serde_json::Value = serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"));
        assert_eq!(doc["status"], status, "{self:?}");
        assert!(doc["title"].is_string(), "{self:?}");
    }
}

/// One request on a new connection (`Connection: close`), read to the end.
fn request(addr: SocketAddr, raw: &str) -> std::io::Result<Answer> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.write_all(raw.as_bytes())?;
    let mut bytes = Vec::new();
    tcp.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Ok(Answer { status, head: head.to_owned(), body })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn get(addr: SocketAddr, path: &str, headers: &str) -> Answer {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n")).unwrap()
}

fn put(addr: SocketAddr, path: &str, headers: &str, body: &str) -> Answer {
    let raw = format!(
        "PUT {path} HTTP/1.1\r\nHost: t\r\n{headers}content-type: application/json\r\ncontent-length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    request(addr, &raw).unwrap()
}

/// Whether the server closes `tcp` (EOF or reset) within `within`.
fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    tcp.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            // A 408 or similar before the close is fine; keep reading to the close.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn the_demo_binary_migrates_from_an_empty_directory_and_serves_safely() {
    let demo = start();
    let (public, admin) = (demo.public, demo.admin);

    // Migrated and seeded in a directory with no source tree.
    let item = get(public, "/items/1", "");
    assert_eq!(item.status, 200, "{item:?}");
    assert!(item.body.contains("\"id\":1"), "{item:?}");
    assert!(demo.dir.join("catalog.db").exists());
    assert!(item.header("cache-tag").is_none(), "the internal Cache-Tag header stays inside: {item:?}");

    // Ops routes live on the admin listener only.
    for path in ["/metrics", "/status", "/upstream/control", "/stats/writes"] {
        get(public, path, "").assert_problem(404);
    }
    assert_eq!(get(admin, "/metrics", "").status, 200);
    let status = get(admin, "/status", "");
    assert_eq!(status.status, 200);
    // The demo's [scaling] section puts the HPA recommendation in /status.
    let report: serde_json::Value = serde_json::from_str(&status.body).expect("/status is JSON");
    let scaling = &report["scaling_recommendations"];
    assert_eq!(scaling["capacity_rps"].as_f64(), Some(1000.0), "{scaling}");
    assert_eq!(scaling["target_rps"].as_f64(), Some(600.0), "{scaling}");
    assert!(scaling["desired_replicas"].as_u64().is_some_and(|n| n >= 1), "{scaling}");
    assert_eq!(get(admin, "/upstream/control", "").status, 200);
    assert_eq!(get(public, "/healthz", "").status, 200);

    // Writes need a key with write permission.
    let update = r#"{"name":"renamed","price_cents":100,"stock":5}"#;
    put(public, "/items/2", "", update).assert_problem(401);
    put(public, "/items/2", "x-api-key: made-up\r\n", update).assert_problem(401);
    put(public, "/items/2", "x-api-key: demo-basic-key\r\n", update).assert_problem(403);
    let written = put(public, "/items/2", "x-api-key: demo-writer-key\r\n", update);
    assert_eq!(written.status, 200, "{written:?}");
    assert!(written.body.contains("renamed"));

    // Every refusal has one shape: extractor rejections too.
    put(public, "/items/2", "x-api-key: demo-writer-key\r\n", "{not json").assert_problem(400);
    put(public, "/items/2", "x-api-key: demo-writer-key\r\n", r#"{"name":"x"}"#).assert_problem(422);
    get(public, "/items/not-a-number", "").assert_problem(400);
    get(public, "/items?page=abc", "").assert_problem(400);
    get(public, "/no/such/route", "").assert_problem(404);
    request(public, "DELETE /items/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap().assert_problem(405);

    // A failing upstream: a problem document that names no internal address.
    let control = r#"{"fail_ratio":1.0}"#;
    let raw = format!(
        "POST /upstream/control HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         Connection: close\r\n\r\n{control}",
        control.len()
    );
    assert_eq!(request(admin, &raw).unwrap().status, 200);
    let quote = get(public, "/upstream/quote", "");
    quote.assert_problem(502);
    assert!(!quote.body.contains("127.0.0.1") && !quote.body.contains("http://"), "{quote:?}");

    // A slow client: half a request head is closed after the header-read timeout (600 ms).
    let mut slow = TcpStream::connect(public).unwrap();
    slow.write_all(b"GET /items/1 HTTP/1.1\r\nHost: t\r\n").unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut slow, Duration::from_secs(5)), "half a request head kept the connection open");
    assert!(started.elapsed() >= Duration::from_millis(400), "closed before the timeout: {:?}", started.elapsed());
    // A client that sends nothing, or a part of the HTTP/2 preface, is closed as well.
    let mut silent = TcpStream::connect(public).unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(5)), "a silent connection stayed open");
    let mut half_preface = TcpStream::connect(public).unwrap();
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    assert!(closed_within(&mut half_preface, Duration::from_secs(5)), "half an HTTP/2 preface stayed open");
    // An idle keep-alive connection is closed by the same timer.
    let mut idle = TcpStream::connect(public).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(5)), "an idle keep-alive connection stayed open");

    // The connection cap (12): the 13th open connection gets a 503 problem and is closed.
    std::thread::sleep(Duration::from_millis(200));
    let held: Vec<TcpStream> = (0..12).map(|_| TcpStream::connect(public).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let refused = get(public, "/items/1", "");
    refused.assert_problem(503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    drop(held);
    // Slots come back when those connections go.
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(public, "/healthz", "").status != 200 {
        assert!(Instant::now() < deadline, "slots did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
}
