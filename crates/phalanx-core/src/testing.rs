//! Support for tests that talk to real services (feature `testing`).
//!
//! Tests read `REDIS_URL` / `DATABASE_URL` (defaulting to the local servers). Where a server
//! cannot be reached they print that they are skipped — unless `PHALANX_REQUIRE_SERVICES=1`,
//! which CI sets, so that there they fail instead.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Whether missing services fail the test run (`PHALANX_REQUIRE_SERVICES=1`).
pub fn services_required() -> bool {
    std::env::var("PHALANX_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Report a missing service: panics when services are required, else says the test is skipped.
/// Returns so the caller can `return` from the test.
///
/// The line goes straight to the terminal's stderr, past the test harness's output capture, so
/// `cargo test` shows it next to the `ok` of a test that did not really run.
pub fn skip(test: &str, why: impl std::fmt::Display) {
    if services_required() {
        panic!("{test}: required service unavailable: {why}");
    }
    let line = format!("\nSKIPPED {test}: {why} (set PHALANX_REQUIRE_SERVICES=1 to fail instead)\n");
    // Not `eprintln!`: the harness captures that and hides it for a passing test.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Whether the Redis server at `url` answers `PING`, over a plain TCP connection of its own: a
/// test's reachability probe must not go through the client or pool under test.
pub fn redis_reachable(url: &str) -> Result<(), String> {
    let addr = socket_addr(url, 6379)?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| format!("{addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 64];
    s.write_all(b"PING\r\n").map_err(|e| format!("{addr}: {e}"))?;
    let n = s.read(&mut buf).map_err(|e| format!("{addr}: {e}"))?;
    // A password-protected server answers -NOAUTH: it is there.
    if buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH") {
        Ok(())
    } else {
        Err(format!("{addr} is not a Redis server"))
    }
}

/// `REDIS_URL` (or the local server) when it answers a plain `PING`; else reports `test` skipped
/// (or fails it, under `PHALANX_REQUIRE_SERVICES=1`) and returns `None`.
pub fn require_redis(test: &str) -> Option<String> {
    let url = redis_url();
    match redis_reachable(&url) {
        Ok(()) => Some(url),
        Err(why) => {
            skip(test, format!("no Redis: {why}"));
            None
        }
    }
}

/// Whether something accepts TCP connections at the host and port of the PostgreSQL `url`,
/// probed without sqlx.
pub fn postgres_reachable(url: &str) -> Result<(), String> {
    let addr = socket_addr(url, 5432)?;
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map(drop).map_err(|e| format!("{addr}: {e}"))
}

/// The first socket address of a `scheme://[user@]host[:port]/...` URL.
fn socket_addr(url: &str, default_port: u16) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let with_port = if host_port.ends_with(']') || !host_port.contains(':') {
        format!("{host_port}:{default_port}")
    } else {
        host_port.to_owned()
    };
    with_port.to_socket_addrs().map_err(|e| format!("{url}: {e}"))?.next().ok_or_else(|| format!("{url}: no address"))
}

/// `REDIS_URL`, or `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `DATABASE_URL` when it names PostgreSQL, or `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A unique prefix for keys a test writes to a shared Redis, so parallel tests never collide.
pub fn unique_prefix(test: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("phx-test:{test}:{}:{nanos}:{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// A local meter provider whose figures a test reads back: pass [`TestMetrics::meter`] to a
/// layer's builder, exercise the layer, then ask for a figure by instrument name and attributes.
#[derive(Debug)]
pub struct TestMetrics {
    provider: opentelemetry_sdk::metrics::SdkMeterProvider,
    exporter: opentelemetry_sdk::metrics::InMemoryMetricExporter,
}

/// One data point: its attributes (sorted `(key, value)` strings), its value (a sum, a gauge's
/// value, or a histogram's sum) and, for a histogram, its count.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The point's attributes, sorted by key.
    pub attributes: Vec<(String, String)>,
    /// The value; for a histogram, the sum of its measurements.
    pub value: f64,
    /// For a histogram, how many measurements; else 1.
    pub count: u64,
}

impl Point {
    /// Whether every `(key, value)` pair is among the point's attributes.
    pub fn has(&self, attributes: &[(&str, &str)]) -> bool {
        attributes.iter().all(|(k, v)| self.attributes.iter().any(|(pk, pv)| pk == k && pv == v))
    }
}

impl Default for TestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl TestMetrics {
    /// A provider with an in-memory exporter, read on demand.
    pub fn new() -> Self {
        use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
        let exporter = InMemoryMetricExporter::default();
        let reader = PeriodicReader::builder(exporter.clone()).build();
        TestMetrics { provider: SdkMeterProvider::builder().with_reader(reader).build(), exporter }
    }

    /// A meter of this provider.
    pub fn meter(&self) -> opentelemetry::metrics::Meter {
        use opentelemetry::metrics::MeterProvider;
        self.provider.meter("test")
    }

    /// Every data point of the instrument `name`, as collected now.
    pub fn points(&self, name: &str) -> Vec<Point> {
        use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
        fn attrs<'a>(kvs: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> Vec<(String, String)> {
            let mut v: Vec<(String, String)> = kvs.map(|kv| (kv.key.to_string(), kv.value.to_string())).collect();
            v.sort();
            v
        }
        macro_rules! points_of {
            ($data:expr, $out:expr) => {
                match $data {
                    MetricData::Sum(s) => $out.extend(s.data_points().map(|p| Point {
                        attributes: attrs(p.attributes()),
                        value: p.value() as f64,
                        count: 1,
                    })),
                    MetricData::Gauge(g) => $out.extend(g.data_points().map(|p| Point {
                        attributes: attrs(p.attributes()),
                        value: p.value() as f64,
                        count: 1,
                    })),
                    MetricData::Histogram(h) => $out.extend(h.data_points().map(|p| Point {
                        attributes: attrs(p.attributes()),
                        value: p.sum() as f64,
                        count: p.count(),
                    })),
                    MetricData::ExponentialHistogram(_) => {}
                }
            };
        }
        self.exporter.reset();
        self.provider.force_flush().expect("flush the test meter provider");
        let collected = self.exporter.get_finished_metrics().expect("read the in-memory exporter");
        let mut out = Vec::new();
        for metric in collected.iter().flat_map(|r| r.scope_metrics()).flat_map(|s| s.metrics()) {
            if metric.name() != name {
                continue;
            }
            match metric.data() {
                AggregatedMetrics::F64(data) => points_of!(data, out),
                AggregatedMetrics::U64(data) => points_of!(data, out),
                AggregatedMetrics::I64(data) => points_of!(data, out),
            }
        }
        out
    }

    /// The summed value of the points of `name` carrying every given attribute; `None` when
    /// there is no such point.
    pub fn value(&self, name: &str, attributes: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<Point> = self.points(name).into_iter().filter(|p| p.has(attributes)).collect();
        (!matching.is_empty()).then(|| matching.iter().map(|p| p.value).sum())
    }

    /// The summed histogram count of the points of `name` carrying every given attribute.
    pub fn count(&self, name: &str, attributes: &[(&str, &str)]) -> u64 {
        self.points(name).into_iter().filter(|p| p.has(attributes)).map(|p| p.count).sum()
    }
}

/// A private `redis-server` child process on a free loopback port, for tests that stop and
/// restart Redis without disturbing the shared server. Killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// For a TLS server: the directory of its CA and certificate, removed on drop.
    tls_dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Start one; `None` (after [`skip`]-style reporting is left to the caller) when the
    /// `redis-server` binary is missing or does not come up within 5 s.
    pub fn start() -> Option<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let mut server = RedisServer { port, child: None, tls_dir: None };
        server.spawn().then_some(server)
    }

    /// Start one that speaks only TLS, with a fresh private CA and a certificate for 127.0.0.1
    /// made by `openssl`; [`RedisServer::ca_file`] is the CA a client must trust. `None` when
    /// `openssl` or `redis-server` (built with TLS) is missing.
    pub fn start_tls() -> Option<RedisServer> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let dir = std::env::temp_dir().join(format!(
            "phalanx-tls-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).ok()?;
        let mut server = RedisServer { port, child: None, tls_dir: Some(dir.clone()) };
        std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost").ok()?;
        let openssl = |args: &[&str]| {
            Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let made = openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=phalanx-test-ca",
        ]) && openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]) && openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        (made && server.spawn()).then_some(server)
    }

    /// Its URL (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls_dir.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA certificate (PEM) of a TLS server.
    pub fn ca_file(&self) -> Option<std::path::PathBuf> {
        self.tls_dir.as_ref().map(|d| d.join("ca.crt"))
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kill the server (Redis is "gone").
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freeze the server (SIGSTOP): its connections stay open and nothing answers, as a hung
    /// Redis behaves. `false` if it is not running or the signal could not be sent.
    pub fn pause(&self) -> bool {
        self.signal("-STOP")
    }

    /// Thaw a paused server (SIGCONT).
    pub fn resume(&self) -> bool {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> bool {
        let Some(child) = &self.child else { return false };
        Command::new("kill").args([signal, &child.id().to_string()]).status().is_ok_and(|s| s.success())
    }

    /// Start it again on the same port; `false` if it did not come up.
    pub fn restart(&mut self) -> bool {
        self.stop();
        self.spawn()
    }

    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match &self.tls_dir {
            None => command.args(["--port", &port]),
            Some(dir) => command
                .args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("ca.crt")),
        };
        let Ok(child) = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn() else { return false };
        self.child = Some(child);
        let up = match self.ca_file() {
            None => wait_for_ping(self.port),
            Some(ca) => wait_for_tls_ping(self.port, &ca),
        };
        if up {
            return true;
        }
        self.stop();
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.tls_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A private Redis Cluster of `redis-server` children on loopback (masters, each with its
/// replicas), for tests of cluster behaviour: slots, redirections, a master killed mid-test.
/// Built with `redis-cli --cluster create`; node timeout 1 s, so a killed master's replica takes
/// over within a few seconds. Killed on drop, its files removed.
#[derive(Debug)]
pub struct RedisCluster {
    dir: std::path::PathBuf,
    nodes: Vec<ClusterNode>,
}

#[derive(Debug)]
struct ClusterNode {
    port: u16,
    child: Option<Child>,
}

impl RedisCluster {
    /// Start `masters` masters with `replicas` replicas each and wait (up to 20 s) until every
    /// node reports `cluster_state:ok`. `None` when `redis-server`/`redis-cli` are missing or the
    /// cluster does not form in three tries (each on fresh ports: a port found free can be taken
    /// by another process's connection before its node binds it).
    pub fn start(masters: usize, replicas: usize) -> Option<RedisCluster> {
        (0..3).find_map(|_| Self::try_start(masters, replicas))
    }

    fn try_start(masters: usize, replicas: usize) -> Option<RedisCluster> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "phalanx-cluster-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).ok()?;
        let mut cluster = RedisCluster { dir, nodes: Vec::new() };
        for _ in 0..masters * (1 + replicas) {
            let port = cluster_port()?;
            cluster.nodes.push(ClusterNode { port, child: None });
            let index = cluster.nodes.len() - 1;
            if !cluster.spawn(index) {
                return None;
            }
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let created = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        (created.success() && cluster.wait_ok(Duration::from_secs(20))).then_some(cluster)
    }

    /// A fred `redis-cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port);
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", node.port));
        }
        url
    }

    /// The ports of every node, masters and replicas.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The ports of the nodes that are masters now (as a live node reports them).
    pub fn master_ports(&self) -> Vec<u16> {
        let Some(text) = self.live_ports().into_iter().find_map(|p| redis_cli(p, &["cluster", "nodes"])) else {
            return Vec::new();
        };
        let mut ports: Vec<u16> = text
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
            .filter_map(|line| line.split_whitespace().nth(1)?.split(['@', ':']).nth(1)?.parse().ok())
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The master that serves `key`'s slot.
    pub fn master_of(&self, key: &str) -> Option<u16> {
        let slot: u16 = self
            .live_ports()
            .into_iter()
            .find_map(|p| redis_cli(p, &["cluster", "keyslot", key]))?
            .trim()
            .parse()
            .ok()?;
        self.slot_ranges().into_iter().find(|(start, end, _)| (*start..=*end).contains(&slot)).map(|(_, _, port)| port)
    }

    /// `(first slot, last slot, master port)` of each range, as a live node sees it.
    fn slot_ranges(&self) -> Vec<(u16, u16, u16)> {
        let Some(text) = self.live_ports().into_iter().find_map(|p| redis_cli(p, &["cluster", "slots"])) else {
            return Vec::new();
        };
        // `redis-cli cluster slots` prints each range's start and end, then its master's host and
        // port (and id), then its replicas.
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        lines
            .windows(4)
            .filter_map(|w| {
                let (start, end) = (w[0].parse::<u16>().ok()?, w[1].parse::<u16>().ok()?);
                (w[2] == "127.0.0.1" && start <= end).then_some((start, end, w[3].parse().ok()?))
            })
            .collect()
    }

    /// Kill one node (SIGKILL): with replicas, the cluster fails over after the node timeout.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Start a killed node again on its port; it rejoins with its saved cluster configuration.
    pub fn restart(&mut self, port: u16) -> bool {
        self.kill(port);
        match self.nodes.iter().position(|n| n.port == port) {
            Some(index) => self.spawn(index),
            None => false,
        }
    }

    /// Wait until every live node reports `cluster_state:ok` and every slot is served by a live
    /// master.
    pub fn wait_ok(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let live = self.live_ports();
            let ranges = self.slot_ranges();
            let served: u32 = ranges.iter().map(|(start, end, _)| u32::from(end - start) + 1).sum();
            if !live.is_empty()
                && served == 16_384
                && ranges.iter().all(|(_, _, master)| live.contains(master))
                && live
                    .iter()
                    .all(|&p| redis_cli(p, &["cluster", "info"]).is_some_and(|t| t.contains("cluster_state:ok")))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.port).collect()
    }

    fn spawn(&mut self, index: usize) -> bool {
        let port = self.nodes[index].port;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            // A replica takes over even if it has not finished its first sync: tests kill masters
            // moments after the cluster forms.
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.nodes[index].child = Some(child);
        wait_for_ping(port)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port whose cluster bus port (+10000) is free too, away from the ephemeral range.
fn cluster_port() -> Option<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Nodes on 11000..17000, their buses on 21000..27000: both under Linux's ephemeral range
    // (32768 up), where a connection of any process could take a port found free a moment ago.
    let offset = (std::process::id() % 375) as u16 * 16;
    for _ in 0..2_000 {
        let port = 11_000 + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % 6_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Some(port);
        }
    }
    None
}

fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for_tls_ping(port: u16, ca: &std::path::Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let pong = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--tls", "--cacert"])
            .arg(ca)
            .arg("ping")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"PONG"));
        if pong {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn wait_for_ping(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if ping(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_read_host_and_port_from_urls() {
        assert_eq!(socket_addr("redis://127.0.0.1", 6379).unwrap().port(), 6379);
        assert_eq!(socket_addr("rediss://user:pw@127.0.0.1:7000/0", 6379).unwrap().port(), 7000);
        assert_eq!(socket_addr("postgres://postgres@[::1]/test", 5432).unwrap().port(), 5432);
        assert!(socket_addr("postgres://postgres@[::1]/test", 5432).unwrap().is_ipv6());
        // Nothing listens on a port just freed: the probe says so rather than hanging.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(redis_reachable(&format!("redis://127.0.0.1:{port}")).is_err());
        assert!(postgres_reachable(&format!("postgres://127.0.0.1:{port}/test")).is_err());
    }

    #[test]
    fn test_metrics_read_back_sums_gauges_and_histograms() {
        let metrics = TestMetrics::new();
        let meter = metrics.meter();
        let counter = meter.u64_counter("c").build();
        let histogram = meter.f64_histogram("h").build();
        let up_down = meter.i64_up_down_counter("g").build();
        counter.add(2, &[opentelemetry::KeyValue::new("k", "a")]);
        counter.add(3, &[opentelemetry::KeyValue::new("k", "b")]);
        histogram.record(0.5, &[opentelemetry::KeyValue::new("k", "a")]);
        histogram.record(1.5, &[opentelemetry::KeyValue::new("k", "a")]);
        up_down.add(-4, &[]);
        assert_eq!(metrics.value("c", &[("k", "a")]), Some(2.0));
        assert_eq!(metrics.value("c", &[]), Some(5.0));
        assert_eq!(metrics.value("c", &[("k", "z")]), None);
        assert_eq!(metrics.count("h", &[("k", "a")]), 2);
        assert_eq!(metrics.value("h", &[("k", "a")]), Some(2.0));
        assert_eq!(metrics.value("g", &[]), Some(-4.0));
    }

    #[test]
    fn private_redis_server_pauses_and_resumes() {
        let Some(server) = RedisServer::start() else {
            skip("private_redis_server_pauses_and_resumes", "redis-server binary not found");
            return;
        };
        assert!(server.pause());
        assert!(!ping(server.port()), "a paused server must not answer");
        assert!(server.resume());
        assert!(wait_for_ping(server.port()));
    }

    #[test]
    fn private_redis_cluster_forms_and_fails_over() {
        let Some(mut cluster) = RedisCluster::start(3, 1) else {
            skip("private_redis_cluster_forms_and_fails_over", "redis-server/redis-cli not found or no cluster");
            return;
        };
        assert_eq!(cluster.ports().len(), 6);
        let masters = cluster.master_ports();
        assert_eq!(masters.len(), 3, "three masters: {masters:?}");
        assert!(cluster.url().starts_with("redis-cluster://127.0.0.1:"));
        let owner = cluster.master_of("{tag}:a").expect("slot owner");
        assert!(masters.contains(&owner));
        cluster.kill(owner);
        assert!(cluster.wait_ok(Duration::from_secs(20)), "a replica takes over the killed master's slots");
        let promoted = cluster.master_of("{tag}:a").expect("new slot owner");
        assert_ne!(promoted, owner);
        assert!(cluster.restart(owner));
        assert!(cluster.wait_ok(Duration::from_secs(20)));
    }

    #[test]
    fn private_redis_server_stops_and_restarts() {
        let Some(mut server) = RedisServer::start() else {
            skip("private_redis_server_stops_and_restarts", "redis-server binary not found");
            return;
        };
        assert!(ping(server.port()));
        server.stop();
        assert!(!ping(server.port()));
        assert!(server.restart());
        assert!(ping(server.port()));
    }
}
