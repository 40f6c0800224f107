//! Shared harness of the integration tests: a `stowage serve` process on its own temporary data
//! directory, a client that signs requests with the auth recipe of the spec (section 2), the admin
//! CLI, and readers for what comes back (JSON replies, zip archives, RFC 3339 times).
//!
//! Every test starts its own server, so tests never share organizations or usage counters.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const HELLO: &[u8] = b"Hello, world!";
pub const HELLO_MD5: &str = "6cd3556deb0da54bca060b4c39479839";

pub const DENY_READ: &str = "The current user does not have permission to read from the organization Object Store.";
pub const DENY_WRITE: &str = "The current user does not have permission to write to the organization Object Store.";
pub const DENY_DELETE: &str =
    "The current user does not have permission to delete objects from the organization Object Store.";

const BIN: &str = env!("CARGO_BIN_EXE_stowage");
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a server: extra environment variables and extra `serve` arguments, and the
/// PostgreSQL database made for it (dropped when the last server using it is gone).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    database: Option<std::sync::Arc<TestDatabase>>,
}

/// A database created on the test PostgreSQL server for one test; dropped (with any connection
/// still open to it) when this is dropped, so that test runs leave no databases behind.
#[derive(Debug)]
struct TestDatabase {
    admin_url: String,
    name: String,
}

impl TestDatabase {
    fn create(admin_url: &str, name: &str) -> TestDatabase {
        let created = Command::new("psql")
            .args([admin_url, "-q", "-c", &format!("CREATE DATABASE {name}")])
            .output()
            .expect("run psql (installed with PostgreSQL)");
        assert!(
            created.status.success(),
            "CREATE DATABASE: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        TestDatabase {
            admin_url: admin_url.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let dropped = Command::new("psql")
            .args([
                self.admin_url.as_str(),
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
        match dropped {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "note: could not drop the test database {}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => eprintln!("note: could not drop the test database {}: {e}", self.name),
        }
    }
}

impl Options {
    pub fn new() -> Options {
        Options::default()
    }

    pub fn env(mut self, name: &str, value: impl ToString) -> Options {
        self.env.push((name.to_owned(), value.to_string()));
        self
    }

    /// Collection every second, and replaced or deleted bodies collectable three seconds after
    /// their release: download links live three seconds (long enough for a test to fetch one on a
    /// busy machine), with no grace (a single-file link is recorded nowhere, so collection keeps
    /// released bodies for the link lifetime).
    pub fn collecting_promptly(self) -> Options {
        self.env("STOWAGE_GC_INTERVAL_SECS", 1)
            .env("STOWAGE_DOWNLOAD_URL_TTL_SECS", 3)
            .env("STOWAGE_DOWNLOAD_GRACE_SECS", 0)
    }

    pub fn arg(mut self, arg: impl ToString) -> Options {
        self.args.push(arg.to_string());
        self
    }
}

/// The identity printed and written on a first start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user_id: String,
    pub api_token: String,
    pub organization_id: String,
}

/// A running `stowage serve`; killed on drop. The temporary directory lives as long as it does.
pub struct TestServer {
    child: Option<Child>,
    home: tempfile::TempDir,
    options: Options,
    /// `http://127.0.0.1:PORT/api/v2`
    pub base: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// Stdout lines printed before the "listening" line (the credentials block on a first start).
    pub banner: Vec<String>,
    /// The "listening" line itself.
    pub listening_line: String,
    /// `http://127.0.0.1:PORT` of the S3 API, unless it was turned off.
    pub s3_url: Option<String>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(Options::new())
    }

    pub fn start_with(options: Options) -> TestServer {
        let home = tempfile::tempdir().expect("temporary directory");
        TestServer::launch(home, with_backend(quiet_collector(options)))
    }

    /// A server on the embedded store whatever the test run's backend (a migration's source).
    pub fn start_embedded() -> TestServer {
        TestServer::launch(tempfile::tempdir().expect("temporary directory"), Options::new())
    }

    /// A server whose data directory is `home/data`, with exactly `options` (no backend added).
    pub fn start_in(home: tempfile::TempDir, options: Options) -> TestServer {
        TestServer::launch(home, options)
    }

    /// The `STOWAGE_*` settings written in a TOML made from [`TestServer::backend_settings`].
    pub fn backend_settings_from(toml: &str) -> Vec<(String, String)> {
        toml.lines()
            .filter_map(|line| line.split_once(" = "))
            .filter(|(name, _)| !matches!(*name, "data_dir" | "server_key"))
            .map(|(name, value)| {
                (
                    format!("STOWAGE_{}", name.to_uppercase()),
                    value.trim_matches('"').to_owned(),
                )
            })
            .collect()
    }

    /// The settings of the test run's backend for a fresh store (no `env` on the embedded one).
    /// Keep the returned value as long as the store is used: its database is dropped with it.
    pub fn backend_settings() -> Options {
        with_backend(Options::new())
    }

    /// `n` servers sharing one metadata database, one body store and one server key, as behind a
    /// load balancer; the first one bootstraps the first identities. `None` on the embedded
    /// backend, which one machine serves alone.
    pub fn start_shared(n: usize, options: Options) -> Option<Vec<TestServer>> {
        if backend() == "embedded" {
            eprintln!(
                "note: several servers need shared storage; this test runs with STOWAGE_TEST_BACKEND=postgres-s3"
            );
            return None;
        }
        let key: String = (0..32)
            .map(|i| format!("{:02x}", (unique() as u64).wrapping_mul(i + 7) as u8))
            .collect();
        let options = with_backend(quiet_collector(options)).env("STOWAGE_SERVER_KEY", key);
        Some(
            (0..n)
                .map(|_| TestServer::launch(tempfile::tempdir().expect("temporary directory"), options.clone()))
                .collect(),
        )
    }

    /// Like [`TestServer::start_shared`], but all `n` processes are started at the same moment,
    /// each racing the others through its first start on the empty store.
    pub fn start_shared_at_once(n: usize, options: Options) -> Option<Vec<TestServer>> {
        if backend() == "embedded" {
            eprintln!(
                "note: several servers need shared storage; this test runs with STOWAGE_TEST_BACKEND=postgres-s3"
            );
            return None;
        }
        let key: String = (0..32)
            .map(|i| format!("{:02x}", (unique() as u64 ^ i) as u8))
            .collect();
        let options = with_backend(quiet_collector(options)).env("STOWAGE_SERVER_KEY", key);
        let start = std::sync::Barrier::new(n);
        Some(std::thread::scope(|scope| {
            let launches: Vec<_> = (0..n)
                .map(|_| {
                    let (options, start) = (options.clone(), &start);
                    scope.spawn(move || {
                        let home = tempfile::tempdir().expect("temporary directory");
                        start.wait();
                        TestServer::launch(home, options)
                    })
                })
                .collect();
            launches
                .into_iter()
                .map(|launch| launch.join().expect("a server started"))
                .collect()
        }))
    }

    /// Stops this server (SIGTERM, then SIGKILL) and starts a new one on the same data directory.
    pub fn restart(mut self) -> TestServer {
        self.stop();
        let home = std::mem::replace(&mut self.home, tempfile::tempdir().expect("temporary directory"));
        let options = self.options.clone();
        drop(self);
        TestServer::launch(home, options)
    }

    fn launch(home: tempfile::TempDir, options: Options) -> TestServer {
        let data = home.path().join("data");
        let log_path = home.path().join(format!("server-{}.log", unique()));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data)
            .args(&options.args);
        if !options.args.iter().any(|a| a == "--s3-api-listen") {
            // Servers run side by side: each S3 API on a port of its own.
            command.arg("--s3-api-listen").arg("127.0.0.1:0");
        }
        clean_env(&mut command);
        command
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = command.spawn().expect("start stowage serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        // After the listening line nobody reads: keep draining the pipe anyway.
                        let _ = tx.send(line.trim_end_matches(['\r', '\n']).to_owned());
                    }
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut banner = Vec::new();
        let listening_line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("stowage listening on ") => break line,
                Ok(line) => banner.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "stowage did not print its listening line; stdout so far: {banner:?}\nstderr:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
            }
        };
        let url = listening_line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no URL in {listening_line:?}"));
        assert!(url.ends_with("/api/v2"), "{listening_line}");
        let addr = url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches("/api/v2")
            .to_owned();
        let port: u16 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {listening_line:?}"));
        assert!(port > 0);
        let s3_off = options
            .args
            .windows(2)
            .any(|w| w[0] == "--s3-api-listen" && w[1] == "off")
            || options
                .env
                .iter()
                .any(|(k, v)| k == "STOWAGE_S3_API_LISTEN" && v == "off");
        let s3_url = if s3_off {
            None
        } else {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("stowage S3 API listening on ") => line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://") || w.starts_with("https://"))
                    .map(str::to_owned),
                other => panic!("stowage did not print its S3 API line next: {other:?}"),
            }
        };
        TestServer {
            child: Some(child),
            base: url.to_owned(),
            addr,
            home,
            options,
            banner,
            listening_line,
            s3_url,
        }
    }

    /// Asks the server to shut down (SIGTERM) and waits for it; kills it after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The server process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident memory of the server process so far, in bytes (Linux `VmHWM`).
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
    }

    /// Waits up to `timeout` for the process to end; returns whether it exited successfully.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<bool> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn data_dir(&self) -> PathBuf {
        self.home.path().join("data")
    }

    /// Everything the server wrote to stderr so far (its log).
    pub fn log(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.home.path()) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().ends_with(".log") {
                    out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    pub fn url(&self, endpoint: &str) -> String {
        format!("{}/{}", self.base, endpoint.trim_start_matches('/'))
    }

    pub fn credentials(&self) -> Credentials {
        let text = std::fs::read_to_string(self.data_dir().join("initial-credentials.json"))
            .expect("initial-credentials.json");
        let value: Value = serde_json::from_str(&text).expect("credentials JSON");
        Credentials {
            user_id: value["userId"].as_i64().expect("userId is an integer").to_string(),
            api_token: value["apiToken"].as_str().expect("apiToken").to_owned(),
            organization_id: value["organizationId"].as_str().expect("organizationId").to_owned(),
        }
    }

    /// A client for the first user in the first organization.
    pub fn client(&self) -> Client {
        let c = self.credentials();
        Client::new(&self.base, &c.user_id, &c.api_token, &c.organization_id)
    }

    pub fn client_for(&self, user: &str, token: &str, org: &str) -> Client {
        Client::new(&self.base, user, token, org)
    }

    // --- admin CLI ----------------------------------------------------------------------------

    fn admin_command(&self, json: bool, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command.arg("admin").arg("--data-dir").arg(self.data_dir());
        if json {
            command.arg("--json");
        }
        command.args(args);
        clean_env(&mut command);
        command
            .envs(self.options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.home.path())
            .stdin(Stdio::null());
        command
    }

    /// Runs `stowage fsck --json` on this server's store (its backend settings included): whether
    /// it found the store sound, and its report.
    pub fn fsck(&self) -> (bool, Value) {
        let mut command = Command::new(BIN);
        command.arg("fsck").arg("--json").arg("--data-dir").arg(self.data_dir());
        clean_env(&mut command);
        let output = command
            .envs(self.options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.home.path())
            .stdin(Stdio::null())
            .output()
            .expect("run stowage fsck");
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
        (output.status.success(), report)
    }

    /// Runs `stowage admin --json ARGS`, expects success and returns the parsed JSON.
    pub fn admin(&self, args: &[&str]) -> Value {
        let output = self.admin_output(true, args);
        assert!(
            output.status.success(),
            "admin {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("admin {args:?} printed no JSON ({e}): {stdout:?}"))
    }

    /// Runs `stowage admin ARGS` (text output), expects success and returns stdout.
    pub fn admin_text(&self, args: &[&str]) -> String {
        let output = self.admin_output(false, args);
        assert!(
            output.status.success(),
            "admin {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `stowage admin --json ARGS`, expects a failure and returns stderr.
    pub fn admin_fails(&self, args: &[&str]) -> String {
        let output = self.admin_output(true, args);
        assert!(
            !output.status.success(),
            "admin {args:?} should fail but printed {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    pub fn admin_output(&self, json: bool, args: &[&str]) -> Output {
        self.admin_command(json, args).output().expect("run stowage admin")
    }

    /// Creates a user; returns (userId, apiToken).
    pub fn new_user(&self, name: &str) -> (String, String) {
        let v = self.admin(&["user", "create", "--name", name]);
        let id = v["userId"].as_i64().expect("userId is an integer");
        let token = v["apiToken"].as_str().expect("apiToken").to_owned();
        (id.to_string(), token)
    }

    /// Creates an organization with optional extra flags (`--max-bytes`, `--max-files`).
    pub fn new_org(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["org", "create", "--name", name];
        args.extend_from_slice(extra);
        let v = self.admin(&args);
        let id = v["organizationId"].as_str().expect("organizationId").to_owned();
        assert_org_id_shape(&id);
        id
    }

    pub fn add_member(&self, org: &str, user: &str, permissions: &str) {
        self.admin(&[
            "member",
            "add",
            "--org",
            org,
            "--user",
            user,
            "--permissions",
            permissions,
        ]);
    }

    /// A new user, member of `org` with `permissions`, as a client of that organization.
    pub fn new_member(&self, name: &str, org: &str, permissions: &str) -> Client {
        let (user, token) = self.new_user(name);
        self.add_member(org, &user, permissions);
        self.client_for(&user, &token, org)
    }

    /// A new user with a new organization of its own (read, write, delete).
    pub fn new_tenant(&self, name: &str, org_flags: &[&str]) -> Client {
        let org = self.new_org(&format!("{name}-org"), org_flags);
        self.new_member(name, &org, "read,write,delete")
    }

    /// `admin org list` entry of one organization.
    pub fn org_entry(&self, org: &str) -> Value {
        let list = self.admin(&["org", "list"]);
        list.as_array()
            .expect("org list is an array")
            .iter()
            .find(|o| o["organizationId"] == org)
            .cloned()
            .unwrap_or_else(|| panic!("organization {org} not in {list}"))
    }

    // --- the data directory -------------------------------------------------------------------

    /// Regular files holding object bodies (`blobs/`, without the upload staging area `tmp/`).
    /// Stored bodies: files under `blobs/` on the embedded store, objects under this server's
    /// prefix on S3.
    pub fn blob_files(&self) -> usize {
        if backend() == "embedded" {
            let dir = self.data_dir().join("blobs");
            return std::thread::spawn(move || {
                use stowage::blob::BlobStore;
                let runtime = tokio::runtime::Runtime::new().expect("runtime");
                runtime.block_on(async {
                    let store = stowage::blob::small::SmallAndLocalBlobs::attach(&dir).expect("blob directory");
                    let mut n = 0;
                    for shard in store.shards() {
                        n += store.list_shard(&shard).await.expect("list shard").len();
                    }
                    n
                })
            })
            .join()
            .expect("count blobs");
        }
        s3_blobs(&self.options.env, false).expect("count S3 blobs")
    }

    /// Files in the upload staging area (S3 has none: an upload is invisible until complete).
    pub fn staged_files(&self) -> usize {
        if backend() != "embedded" {
            return 0;
        }
        count_files(&self.data_dir().join("blobs").join("tmp"), None)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Which storage the servers of this test run use: `embedded` (SQLite and local files, the
/// default) or `postgres-s3` (`STOWAGE_TEST_BACKEND`), with PostgreSQL and an S3-compatible server
/// that `scripts/test.sh` started (`STOWAGE_TEST_POSTGRES_URL`, `STOWAGE_TEST_S3_*`).
pub fn backend() -> String {
    std::env::var("STOWAGE_TEST_BACKEND").unwrap_or_else(|_| "embedded".into())
}

/// True on the embedded default; tests that look inside the data directory's database or blob
/// files run only there.
pub fn embedded() -> bool {
    let embedded = backend() == "embedded";
    if !embedded {
        eprintln!(
            "note: this test looks inside the embedded store; skipped on {}",
            backend()
        );
    }
    embedded
}

/// The settings of a server on the test PostgreSQL's database `name` (which must exist) and the
/// key prefix `name` of the test bucket.
pub fn postgres_s3_env(admin_url: &str, name: &str) -> Vec<(String, String)> {
    let url = match admin_url.rfind('/') {
        Some(i) => format!("{}/{name}", &admin_url[..i]),
        None => panic!("STOWAGE_TEST_POSTGRES_URL has no database part: {admin_url}"),
    };
    [
        ("STOWAGE_METADATA", url),
        ("STOWAGE_BLOB_STORE", "s3".into()),
        ("STOWAGE_S3_ENDPOINT", required("STOWAGE_TEST_S3_ENDPOINT")),
        ("STOWAGE_S3_BUCKET", required("STOWAGE_TEST_S3_BUCKET")),
        ("STOWAGE_S3_ACCESS_KEY_ID", required("STOWAGE_TEST_S3_ACCESS_KEY")),
        ("STOWAGE_S3_SECRET_ACCESS_KEY", required("STOWAGE_TEST_S3_SECRET_KEY")),
        ("STOWAGE_S3_ALLOW_HTTP", "true".into()),
        ("STOWAGE_S3_PREFIX", name.to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

pub fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("STOWAGE_TEST_BACKEND={} needs {name}", backend()))
}

/// Collection runs once at start and then only when a test asks for it (a short
/// `STOWAGE_GC_INTERVAL_SECS`), so that counts of stored bodies do not change under a test's feet.
fn quiet_collector(options: Options) -> Options {
    if options.env.iter().any(|(name, _)| name == "STOWAGE_GC_INTERVAL_SECS") {
        options
    } else {
        options.env("STOWAGE_GC_INTERVAL_SECS", 3600)
    }
}

/// Adds the settings of the test run's backend: on `postgres-s3`, a database and a key prefix of
/// this server's own.
fn with_backend(mut options: Options) -> Options {
    match backend().as_str() {
        "embedded" => options,
        "postgres-s3" => {
            let admin_url = required("STOWAGE_TEST_POSTGRES_URL");
            let name = format!("stowage_it_{}_{}", std::process::id(), unique());
            options.database = Some(std::sync::Arc::new(TestDatabase::create(&admin_url, &name)));
            options.env.extend(postgres_s3_env(&admin_url, &name));
            options
        }
        other => panic!("unknown STOWAGE_TEST_BACKEND {other:?}: use embedded or postgres-s3"),
    }
}

/// Counts the blobs under the S3 prefix that `env` (settings from [`with_backend`]) names, and
/// deletes each one when `delete` is set.
fn s3_blobs(env: &[(String, String)], delete: bool) -> Result<usize, String> {
    let env: std::collections::HashMap<String, String> = env.iter().cloned().collect();
    let setting = |name: &str| env.get(name).cloned().unwrap_or_default();
    let settings = stowage::blob::s3::S3Settings {
        bucket: setting("STOWAGE_S3_BUCKET"),
        endpoint: Some(setting("STOWAGE_S3_ENDPOINT")),
        region: "us-east-1".into(),
        access_key_id: setting("STOWAGE_S3_ACCESS_KEY_ID"),
        secret_access_key: setting("STOWAGE_S3_SECRET_ACCESS_KEY"),
        path_style: true,
        allow_http: true,
        prefix: Some(setting("STOWAGE_S3_PREFIX")),
    };
    std::thread::spawn(move || {
        use stowage::blob::BlobStore;
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let store = stowage::blob::s3::S3Blobs::connect(settings).map_err(|e| e.to_string())?;
            let mut n = 0;
            for shard in store.shards() {
                let blobs = store.list_shard(&shard).await.map_err(|e| e.to_string())?;
                n += blobs.len();
                if delete {
                    for blob in blobs {
                        store.delete(&blob.id).await.map_err(|e| e.to_string())?;
                    }
                }
            }
            Ok(n)
        })
    })
    .join()
    .map_err(|_| "the S3 listing thread panicked".to_owned())?
}

/// Removes a store made from [`TestServer::backend_settings`] on `postgres-s3`: its database and
/// every blob under its S3 prefix (nothing to do on the embedded store, whose folder is a
/// temporary directory). Returns how many blobs it deleted, or what failed.
pub fn remove_backend_store(env: &[(String, String)]) -> Result<usize, String> {
    let setting = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if let (Some(url), Ok(admin)) = (setting("STOWAGE_METADATA"), std::env::var("STOWAGE_TEST_POSTGRES_URL"))
        && let Some(i) = url.rfind('/')
    {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", &url[i + 1..]);
        let out = Command::new("psql")
            .args([admin.as_str(), "-q", "-c", &drop])
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if !out.status.success() {
            return Err(format!("{drop}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    match setting("STOWAGE_S3_PREFIX") {
        Some(_) => s3_blobs(env, true),
        None => Ok(0),
    }
}

/// Calls [`remove_backend_store`] when dropped, so that a failing test cleans up too. Declare it
/// before the servers that use the store: locals drop in reverse order, servers first.
pub struct RemoveStoreOnDrop(pub Vec<(String, String)>);

impl Drop for RemoveStoreOnDrop {
    fn drop(&mut self) {
        // No panic here: this may run while a failed test unwinds.
        if let Err(e) = remove_backend_store(&self.0) {
            eprintln!("warning: could not remove the test store: {e}");
        }
    }
}

fn clean_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("STOWAGE_") {
            command.env_remove(&name);
        }
    }
}

fn count_files(dir: &Path, skip: Option<&str>) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if skip.is_some_and(|s| name.to_string_lossy() == s) {
            continue;
        }
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            n += count_files(&entry.path(), None);
        } else if kind.is_file() {
            n += 1;
        }
    }
    n
}

/// A number no other call in this test process gets: the clock's nanoseconds and a counter (two
/// tests may read the same clock value: the clock's resolution is coarser than a nanosecond on
/// some machines, and a database name made twice fails to be created).
fn unique() -> u128 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    nanos * 1_000_000 + u128::from(count % 1_000_000)
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

pub fn assert_org_id_shape(id: &str) {
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "organization ids are 32 lowercase hex characters: {id:?}"
    );
}

// --- auth recipe --------------------------------------------------------------------------------

/// `lowercase_hex(sha256("<token>:<timestamp>"))`
pub fn request_hash(token: &str, timestamp: &str) -> String {
    hex::encode(Sha256::digest(format!("{token}:{timestamp}").as_bytes()))
}

/// `Basic base64("<user>:<hash>")`
pub fn basic(user: &str, hash: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{hash}"))
    )
}

/// The two auth headers for a user, token and timestamp.
pub fn auth_headers(user: &str, token: &str, timestamp: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "Authorization",
        HeaderValue::from_str(&basic(user, &request_hash(token, timestamp))).expect("header"),
    );
    headers.insert("Timestamp", HeaderValue::from_str(timestamp).expect("header"));
    headers
}

// --- replies ------------------------------------------------------------------------------------

/// An HTTP answer, its body decoded as JSON when it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body is a JSON object with `success` (bool) and `errors` (array of strings).
    pub fn assert_json_envelope(&self) {
        let ct = self.header("content-type").unwrap_or_default();
        assert!(ct.starts_with("application/json"), "content type {ct:?}: {}", self.text);
        assert!(self.body.is_object(), "not a JSON object: {:?}", self.text);
        assert!(self.body["success"].is_boolean(), "no success flag: {}", self.text);
        let errors = self.body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors array: {}", self.text));
        assert!(
            errors.iter().all(Value::is_string),
            "errors must be strings: {}",
            self.text
        );
    }

    /// HTTP 200, `success: true`, `errors: []`; returns the body.
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "{}", self.text);
        self.assert_json_envelope();
        assert_eq!(self.body["success"], true, "{}", self.text);
        assert_eq!(self.body["errors"], json!([]), "{}", self.text);
        &self.body
    }

    /// An ordinary failure: HTTP 200, `success: false`, at least one non-empty error sentence.
    pub fn failure(&self) -> Vec<String> {
        self.failure_with_status(200)
    }

    /// `success: false` with the given status and at least one non-empty error sentence.
    pub fn failure_with_status(&self, status: u16) -> Vec<String> {
        assert_eq!(self.status, status, "{}", self.text);
        self.assert_json_envelope();
        assert_eq!(self.body["success"], false, "{}", self.text);
        let errors = self.errors();
        assert!(
            !errors.is_empty() && errors.iter().all(|e| !e.trim().is_empty()),
            "errors must hold sentences: {}",
            self.text
        );
        errors
    }

    pub fn errors(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// 401 with `WWW-Authenticate: Basic realm="stowage"`; returns the errors.
    pub fn unauthorized(&self) -> Vec<String> {
        let errors = self.failure_with_status(401);
        assert_eq!(
            self.header("www-authenticate"),
            Some("Basic realm=\"stowage\""),
            "{:?}",
            self.headers
        );
        errors
    }
}

// --- client -------------------------------------------------------------------------------------

/// Speaks the API as one user in one organization, signing every request.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub user: String,
    pub token: String,
    pub org: String,
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("HTTP client")
}

impl Client {
    pub fn new(base: &str, user: &str, token: &str, org: &str) -> Client {
        Client {
            http: http_client(),
            base: base.trim_end_matches('/').to_owned(),
            user: user.to_owned(),
            token: token.to_owned(),
            org: org.to_owned(),
        }
    }

    /// The same user in another organization.
    pub fn in_org(&self, org: &str) -> Client {
        Client {
            org: org.to_owned(),
            ..self.clone()
        }
    }

    pub fn url(&self, endpoint: &str) -> String {
        format!("{}/{}", self.base, endpoint.trim_start_matches('/'))
    }

    pub fn headers(&self) -> HeaderMap {
        auth_headers(&self.user, &self.token, &now_secs().to_string())
    }

    /// POSTs JSON exactly as given (no organizationId added).
    pub async fn post_exact(&self, endpoint: &str, body: &Value) -> Reply {
        let response = self
            .http
            .post(self.url(endpoint))
            .headers(self.headers())
            .json(body)
            .send()
            .await
            .expect("request");
        Reply::read(response).await
    }

    /// POSTs JSON, adding this client's organizationId when the body has none.
    pub async fn post_json(&self, endpoint: &str, body: Value) -> Reply {
        let mut body = body;
        if let Value::Object(map) = &mut body {
            map.entry("organizationId").or_insert_with(|| json!(self.org));
        }
        self.post_exact(endpoint, &body).await
    }

    /// POSTs an `application/x-www-form-urlencoded` body made of these pairs.
    pub async fn post_form(&self, endpoint: &str, pairs: &[(&str, &str)]) -> Reply {
        let response = self
            .http
            .post(self.url(endpoint))
            .headers(self.headers())
            .form(pairs)
            .send()
            .await
            .expect("request");
        Reply::read(response).await
    }

    pub async fn ok(&self, endpoint: &str, body: Value) -> Value {
        self.post_json(endpoint, body).await.ok().clone()
    }

    pub async fn fails(&self, endpoint: &str, body: Value) -> Vec<String> {
        self.post_json(endpoint, body).await.failure()
    }

    pub async fn authenticate(&self) -> Reply {
        let response = self
            .http
            .get(self.url("authenticate"))
            .headers(self.headers())
            .send()
            .await
            .expect("request");
        Reply::read(response).await
    }

    /// `/object/set` into this client's organization; no assertion.
    pub async fn set_raw(&self, key: &str, data: &[u8]) -> Reply {
        self.set_raw_in(&self.org, key, data).await
    }

    pub async fn set_raw_in(&self, org: &str, key: &str, data: &[u8]) -> Reply {
        let form = reqwest::multipart::Form::new()
            .text("organizationId", org.to_owned())
            .text("key", key.to_owned())
            .part(
                "objectData",
                reqwest::multipart::Part::bytes(data.to_vec()).file_name("objectData"),
            );
        self.send_multipart(form).await
    }

    pub async fn send_multipart(&self, form: reqwest::multipart::Form) -> Reply {
        let response = self
            .http
            .post(self.url("object/set"))
            .headers(self.headers())
            .multipart(form)
            .send()
            .await
            .expect("request");
        Reply::read(response).await
    }

    /// `/object/set` that must succeed.
    pub async fn set(&self, key: &str, data: &[u8]) {
        let reply = self.set_raw(key, data).await;
        assert_eq!(reply.status, 200, "set {key:?}: {}", reply.text);
        reply.assert_json_envelope();
        assert_eq!(reply.body, json!({"success": true, "errors": []}), "set {key:?}");
    }

    /// `/object/properties` that must succeed; returns `metadata`.
    pub async fn properties(&self, key: &str) -> Value {
        let body = self.ok("object/properties", json!({ "key": key })).await;
        assert!(body["metadata"].is_object(), "{body}");
        body["metadata"].clone()
    }

    /// `/object/list` that must succeed.
    pub async fn list(&self, path: Option<&str>) -> Value {
        let body = match path {
            Some(p) => json!({ "path": p }),
            None => json!({}),
        };
        self.ok("object/list", body).await
    }

    pub async fn list_page(&self, path: &str, page: Value) -> Reply {
        self.post_json("object/list", json!({ "path": path, "page": page }))
            .await
    }

    /// Names of the entries of one folder listing (page 0).
    pub async fn names(&self, path: &str) -> Vec<String> {
        names(&self.list(Some(path)).await)
    }

    pub async fn used(&self) -> u64 {
        self.list(None).await["objectStorageUsed"]
            .as_u64()
            .expect("objectStorageUsed is an unsigned integer")
    }

    pub async fn delete(&self, key: &str) {
        self.ok("object/delete", json!({ "key": key })).await;
    }

    /// Creates a download job; returns (jobId, url if already ready).
    pub async fn create_job(&self, keys: Value) -> (String, Option<String>) {
        let body = self.ok("object/get", json!({ "keys": keys })).await;
        job_fields(&body)
    }

    /// Polls a job until it has a URL.
    pub async fn wait_for_url(&self, job: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let body = self.ok("object/get", json!({ "jobId": job })).await;
            let (id, url) = job_fields(&body);
            assert_eq!(id, job, "{body}");
            if let Some(url) = url {
                return url;
            }
            assert!(Instant::now() < deadline, "download job {job} did not finish");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Creates a job over `keys`, polls it until ready, and returns its URL.
    pub async fn download_url(&self, keys: Value) -> (String, String) {
        let (job, url) = self.create_job(keys).await;
        let url = match url {
            Some(url) => url,
            None => self.wait_for_url(&job).await,
        };
        (job, url)
    }

    /// Downloads `keys` as a zip and returns its entries.
    pub async fn download(&self, keys: Value) -> BTreeMap<String, Vec<u8>> {
        let (_, url) = self.download_url(keys).await;
        unzip(&fetch_zip(&url).await)
    }
}

/// `jobId` and `url` of a job answer; both keys must be present.
pub fn job_fields(body: &Value) -> (String, Option<String>) {
    let map = body.as_object().expect("object");
    assert!(
        map.contains_key("jobId") && map.contains_key("url"),
        "a job answer always has jobId and url: {body}"
    );
    let job = body["jobId"].as_str().expect("jobId is a string").to_owned();
    assert!(!job.is_empty());
    let url = match &body["url"] {
        Value::Null => None,
        Value::String(s) => {
            assert!(s.starts_with("http://") || s.starts_with("https://"), "{s}");
            Some(s.clone())
        }
        other => panic!("url must be a string or null: {other}"),
    };
    (job, url)
}

/// GETs a download URL without credentials; expects 200 and a zip.
pub async fn fetch_zip(url: &str) -> Vec<u8> {
    let response = http_client().get(url).send().await.expect("download");
    let status = response.status().as_u16();
    let ct = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response.bytes().await.expect("download body").to_vec();
    assert_eq!(
        status,
        200,
        "{}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
    );
    assert!(ct.starts_with("application/zip"), "content type {ct:?}");
    bytes
}

/// GETs a URL without credentials; returns the status.
pub async fn get_status(url: &str) -> u16 {
    http_client().get(url).send().await.expect("GET").status().as_u16()
}

/// Reads a zip archive with the `zip` crate (an implementation independent of the server's).
/// Entry names must be unique, relative, and free of `..`.
pub fn unzip(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a readable zip archive");
    let mut out = BTreeMap::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).expect("zip entry");
        let name = entry.name().to_owned();
        assert!(!name.starts_with('/'), "entry {name:?} has a leading '/'");
        assert!(!name.split('/').any(|s| s == ".."), "entry {name:?} has '..'");
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("entry data (CRC checked)");
        assert_eq!(data.len() as u64, entry.size(), "{name}");
        assert!(out.insert(name.clone(), data).is_none(), "entry {name:?} appears twice");
    }
    out
}

pub fn names(listing: &Value) -> Vec<String> {
    objects(listing)
        .iter()
        .map(|o| o["name"].as_str().expect("name").to_owned())
        .collect()
}

pub fn objects(listing: &Value) -> Vec<Value> {
    listing["objects"].as_array().expect("objects is an array").clone()
}

pub fn entry<'a>(listing: &'a Value, name: &str) -> &'a Value {
    listing["objects"]
        .as_array()
        .expect("objects is an array")
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no entry {name:?} in {listing}"))
}

/// Parses an RFC 3339 UTC time with milliseconds (`2021-11-26T15:18:27.693Z`) into Unix ms.
pub fn parse_time(text: &Value) -> i64 {
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("a time must be a string: {text}"));
    let b = text.as_bytes();
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22];
    let shape = b.len() == 24
        && digits.iter().all(|&i| b[i].is_ascii_digit())
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z';
    assert!(shape, "not RFC 3339 UTC with milliseconds: {text:?}");
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .timestamp_millis()
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(data))
}

/// Deterministic bytes that do not look like text.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

// --- a raw HTTP/1.1 client ----------------------------------------------------------------------

/// One part of a hand-built multipart body: (name, filename, data).
pub type RawPart<'a> = (&'a str, Option<&'a str>, &'a [u8]);

pub const RAW_BOUNDARY: &str = "stowage-test-boundary-7MA4YWxkTrZu0gW";

pub fn multipart_body(parts: &[RawPart<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{RAW_BOUNDARY}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => {
                body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes())
            }
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{RAW_BOUNDARY}--\r\n").as_bytes());
    body
}

/// POSTs with a plain socket, reading the answer while the body is still being written (as curl
/// and Python's urllib3 do), so an answer sent before the whole body was read is still seen.
pub async fn raw_post(addr: &str, path: &str, headers: &HeaderMap, content_type: &str, body: Vec<u8>) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().expect("ASCII header")));
    }
    head.push_str("\r\n");
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        for chunk in body.chunks(64 * 1024) {
            writer.write_all(chunk).await?;
        }
        writer.flush().await?;
        Ok::<_, std::io::Error>(writer)
    });
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let parsed = loop {
        let n = tokio::time::timeout(Duration::from_secs(60), reader.read(&mut buf))
            .await
            .expect("an answer within 60 s")
            .unwrap_or(0);
        raw.extend_from_slice(&buf[..n]);
        if let Some(parsed) = parse_raw_response(&raw) {
            break parsed;
        }
        assert!(
            n > 0,
            "connection closed before a whole answer: {:?}",
            String::from_utf8_lossy(&raw)
        );
    };
    sender.abort();
    parsed
}

fn parse_raw_response(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            headers.append(
                reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                HeaderValue::from_str(value.trim()).ok()?,
            );
        }
    }
    let length: usize = headers.get("content-length")?.to_str().ok()?.parse().ok()?;
    let body = raw.get(end + 4..end + 4 + length)?;
    let text = String::from_utf8_lossy(body).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Some(Reply {
        status,
        headers,
        text,
        body,
    })
}

impl TestServer {
    /// `/object/set` through [`raw_post`].
    pub async fn raw_set(&self, client: &Client, parts: &[RawPart<'_>]) -> Reply {
        raw_post(
            &self.addr,
            "/api/v2/object/set",
            &client.headers(),
            &format!("multipart/form-data; boundary={RAW_BOUNDARY}"),
            multipart_body(parts),
        )
        .await
    }
}

impl Client {
    /// `/object/set` through reqwest, returning the transport error instead of panicking.
    pub async fn try_set(&self, org: &str, key: &str, data: &[u8]) -> Result<Reply, String> {
        let form = reqwest::multipart::Form::new()
            .text("organizationId", org.to_owned())
            .text("key", key.to_owned())
            .part(
                "objectData",
                reqwest::multipart::Part::bytes(data.to_vec()).file_name("objectData"),
            );
        match self
            .http
            .post(self.url("object/set"))
            .headers(self.headers())
            .multipart(form)
            .send()
            .await
        {
            Ok(response) => Ok(Reply::read(response).await),
            Err(e) => Err(format!("{e:?}")),
        }
    }
}
