//! `stowage login` and `stowage object …` against a live server: credentials from flags, the
//! environment and the saved file; every subcommand; byte-for-byte downloads; errors; progress
//! bars only on a terminal; and safe extraction whatever a server sends.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::TestServer;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_stowage");

/// A `stowage` command with no inherited `STOWAGE_*` settings and its own credentials file.
fn stowage(creds_file: &Path) -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("STOWAGE_") {
            command.env_remove(name);
        }
    }
    command.env("STOWAGE_CREDENTIALS", creds_file);
    command
}

fn run(mut command: Command) -> Output {
    command.stdin(Stdio::null()).output().expect("run stowage")
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn fails(output: Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).expect("UTF-8 errors")
}

struct Session {
    server: TestServer,
    dir: tempfile::TempDir,
}

impl Session {
    /// A server, and a client logged in to it with `stowage login`.
    fn logged_in() -> Session {
        let server = TestServer::start();
        let dir = tempfile::tempdir().expect("temporary directory");
        let session = Session { server, dir };
        let c = session.server.credentials();
        let mut login = session.cmd();
        login.args([
            "login",
            "--url",
            &session.server.base,
            "--user-id",
            &c.user_id,
            "--api-token",
            &c.api_token,
        ]);
        login.args(["--organization-id", &c.organization_id]);
        let out = ok(run(login));
        assert!(out.contains("logged in"), "{out}");
        session
    }

    fn creds_file(&self) -> std::path::PathBuf {
        self.dir.path().join("config").join("credentials.json")
    }

    fn cmd(&self) -> Command {
        let mut command = stowage(&self.creds_file());
        command.current_dir(self.dir.path());
        command
    }

    fn object(&self, args: &[&str]) -> Output {
        let mut command = self.cmd();
        command.arg("object").args(args);
        run(command)
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn login_saves_private_credentials_that_later_commands_use() {
    let session = Session::logged_in();
    let file = session.creds_file();
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let c = session.server.credentials();
    assert_eq!(saved["userId"], c.user_id.as_str());
    assert_eq!(saved["apiToken"], c.api_token.as_str());
    assert_eq!(saved["organizationId"], c.organization_id.as_str());
    assert_eq!(saved["url"], session.server.base.as_str());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    std::fs::write(session.path("a.txt"), b"Hello, world!").unwrap();
    assert!(ok(session.object(&["set", "notes/a.txt", "a.txt"])).contains("notes/a.txt"));
}

#[test]
fn login_with_a_wrong_token_fails_and_saves_nothing() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("creds.json");
    let c = server.credentials();
    let mut login = stowage(&file);
    login.args([
        "login",
        "--url",
        &server.base,
        "--user-id",
        &c.user_id,
        "--api-token",
        &"0".repeat(64),
    ]);
    let err = fails(run(login));
    assert_eq!(
        err.trim_end(),
        format!(
            "stowage: {}/authenticate refused the credentials of user {}: either the API token is wrong \
             for that user id, or this machine's clock is off from the server's by more than it accepts \
             (compare `date -u` on both)",
            server.base, c.user_id
        )
    );
    assert!(!file.exists());

    // Right credentials, but an organization the user cannot read: refused, nothing saved.
    let other_org = server.new_org("elsewhere", &[]);
    let mut login = stowage(&file);
    login.args(["login", "--url", &server.base, "--user-id", &c.user_id]);
    login.args(["--api-token", &c.api_token, "--organization-id", &other_org]);
    let err = fails(run(login));
    assert!(
        err.starts_with(&format!(
            "stowage: user {} cannot read organization {other_org}: ",
            c.user_id
        )),
        "{err}"
    );
    assert!(err.trim_end().ends_with("nothing was saved"), "{err}");
    assert!(!file.exists());
}

#[test]
fn environment_credentials_work_without_a_file() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let c = server.credentials();
    let env_cmd = |args: &[&str]| {
        let mut command = stowage(&dir.path().join("absent.json"));
        command
            .env("STOWAGE_URL", &server.base)
            .env("STOWAGE_USER_ID", &c.user_id)
            .env("STOWAGE_API_TOKEN", &c.api_token)
            .env("STOWAGE_ORGANIZATION_ID", &c.organization_id)
            .current_dir(dir.path())
            .arg("object")
            .args(args);
        run(command)
    };
    std::fs::write(dir.path().join("x.bin"), [1u8, 2, 3]).unwrap();
    ok(env_cmd(&["set", "env/x.bin", "x.bin"]));
    let props: Value = serde_json::from_str(&ok(env_cmd(&["properties", "env/x.bin", "--json"]))).unwrap();
    assert_eq!(props["size"], 3);
    // Without any credentials the command says what is missing.
    let mut bare = stowage(&dir.path().join("absent.json"));
    bare.args(["object", "list"]);
    let err = fails(run(bare));
    assert!(err.contains("user id") && err.contains("stowage login"), "{err}");
}

#[test]
fn set_list_properties_get_delete_round_trip() {
    let session = Session::logged_in();
    let text = b"Hello, world!".to_vec();
    let binary: Vec<u8> = (0..5 * 1024 * 1024 + 3).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(session.path("hello.txt"), &text).unwrap();
    std::fs::write(session.path("weights.bin"), &binary).unwrap();
    ok(session.object(&["set", "models/hello.txt", "hello.txt"]));
    ok(session.object(&["set", "models/deep/weights.bin", "weights.bin"]));

    // Standard input, with `-` and with no FILE at all.
    for (key, args) in [("models/stdin-dash.json", vec!["-"]), ("models/stdin.json", vec![])] {
        let mut command = session.cmd();
        command
            .arg("object")
            .arg("set")
            .arg(key)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = command.spawn().unwrap();
        child.stdin.take().unwrap().write_all(br#"{"a": 1}"#).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }

    let table = ok(session.object(&["list", "models"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].contains("name") && lines[0].contains("size") && lines[0].contains("modified"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("deep/") && lines[1].contains("folder") && lines[1].contains("5.24 MB"),
        "{table}"
    );
    assert!(table.contains("hello.txt") && table.contains("13 B"), "{table}");
    assert!(lines.last().unwrap().contains("4 entries"), "{table}");

    let listed: Value = serde_json::from_str(&ok(session.object(&["list", "models", "--json"]))).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["deep", "hello.txt", "stdin-dash.json", "stdin.json"]);
    assert_eq!(listed[0]["folder"], true);

    let props = ok(session.object(&["properties", "models/hello.txt"]));
    assert!(
        props.contains("6cd3556deb0da54bca060b4c39479839") && props.contains("text/plain"),
        "{props}"
    );
    let json: Value =
        serde_json::from_str(&ok(session.object(&["properties", "models/stdin.json", "--json"]))).unwrap();
    assert_eq!(json["mime"], "application/json");
    assert_eq!(json["size"], 8);

    // A folder and a file into a destination, byte for byte.
    let out = ok(session.object(&["get", "models", "--destination", "restore"]));
    assert!(out.contains("4 file(s)"), "{out}");
    assert_eq!(std::fs::read(session.path("restore/models/hello.txt")).unwrap(), text);
    assert_eq!(
        std::fs::read(session.path("restore/models/deep/weights.bin")).unwrap(),
        binary
    );
    let leftovers: Vec<_> = std::fs::read_dir(session.path("restore"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, ["models"], "no temporary archive is left behind");

    // One file to standard output.
    let bytes = session.object(&["get", "models/deep/weights.bin", "--stdout"]);
    assert!(bytes.status.success());
    assert_eq!(bytes.stdout, binary);
    let err = fails(session.object(&["get", "models", "--stdout"]));
    assert!(err.contains("folder"), "{err}");

    ok(session.object(&["delete", "models/hello.txt"]));
    let err = fails(session.object(&["properties", "models/hello.txt"]));
    assert!(
        err.contains("Object not found: models/hello.txt"),
        "prints the server's sentence: {err}"
    );
    ok(session.object(&["delete", "models"]));
    let listed: Value = serde_json::from_str(&ok(session.object(&["list", "--json"]))).unwrap();
    assert_eq!(listed, serde_json::json!([]));
}

#[test]
fn errors_are_sentences_and_exit_non_zero() {
    let session = Session::logged_in();
    let err = fails(session.object(&["delete", "nothing/here"]));
    assert!(err.contains("Object not found"), "{err}");
    let err = fails(session.object(&["set", "bad/../key", "-"]));
    assert!(err.contains("Invalid key"), "{err}");
    let err = fails(session.object(&["set", "k", "does-not-exist.bin"]));
    assert!(err.contains("does-not-exist.bin"), "{err}");
    let err = fails(session.object(&["get", "missing"]));
    assert!(err.contains("None of the requested keys exist"), "{err}");
    // A network failure says which URL failed.
    let err = fails(session.object(&["list", "--url", "http://127.0.0.1:9/api/v2"]));
    assert!(err.contains("http://127.0.0.1:9/api/v2/object/list"), "{err}");
}

#[test]
fn progress_bars_only_on_a_terminal() {
    let session = Session::logged_in();
    let big = vec![b'x'; 6 * 1024 * 1024];
    std::fs::write(session.path("big.bin"), &big).unwrap();
    // Piped: no progress output at all.
    let piped = session.object(&["set", "big.bin", "big.bin"]);
    assert!(piped.status.success());
    assert!(
        piped.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&piped.stderr)
    );
    // On a terminal (util-linux `script` gives the command a pseudo-terminal), a bar appears.
    let shell = format!("{BIN} object set big2.bin big.bin");
    let mut command = Command::new("script");
    command
        .args(["-qec", &shell, "/dev/null"])
        .current_dir(session.path(""));
    command.env("STOWAGE_CREDENTIALS", session.creds_file());
    let tty = run(command);
    assert!(tty.status.success(), "{}", String::from_utf8_lossy(&tty.stdout));
    let screen = String::from_utf8_lossy(&tty.stdout);
    assert!(
        screen.contains("uploading big2.bin"),
        "a progress bar on the terminal: {screen:?}"
    );
    // Small transfers stay quiet even on a terminal.
    std::fs::write(session.path("small.txt"), b"tiny").unwrap();
    let shell = format!("{BIN} object set small.txt small.txt");
    let mut command = Command::new("script");
    command
        .args(["-qec", &shell, "/dev/null"])
        .current_dir(session.path(""));
    command.env("STOWAGE_CREDENTIALS", session.creds_file());
    let screen = ok(run(command));
    assert!(!screen.contains("uploading"), "{screen:?}");
}

/// A hostile "server": it announces `announced` bytes for any file and hands out `zip_bytes` as
/// the job's archive. Answers its base URL.
async fn hostile_server(announced: u64, zip_bytes: Vec<u8>) -> String {
    use axum::Router;
    use axum::routing::{get, post};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}/evil.zip");
    let app = Router::new()
        .route(
            "/api/v2/object/get",
            post(move || async move {
                axum::Json(serde_json::json!({"success": true, "errors": [], "jobId": "j", "url": url}))
            }),
        )
        .route(
            "/api/v2/object/properties",
            post(move || async move {
                axum::Json(serde_json::json!({"success": true, "errors": [], "metadata": {
                    "key": "anything", "modified": "2024-01-01T00:00:00Z", "created": "2024-01-01T00:00:00Z",
                    "size": announced, "md5": "", "mime": "application/octet-stream", "preview": null}}))
            }),
        )
        .route("/evil.zip", get(move || async move { zip_bytes }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/api/v2")
}

/// A zip of `entries`, deflated.
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip_bytes = Vec::new();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut zip_bytes));
    for (name, data) in entries {
        zip.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
    zip_bytes
}

/// A hostile "server" that hands out an archive with an entry escaping the destination.
#[tokio::test(flavor = "multi_thread")]
async fn extraction_refuses_entries_outside_the_destination() {
    let base = hostile_server(8, zip_of(&[("fine.txt", b"ok"), ("../escaped.txt", b"gotcha")])).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("inside");
    let mut command = stowage(&dir.path().join("none.json"));
    command.args([
        "object",
        "get",
        "anything",
        "--destination",
        dest.to_str().unwrap(),
        "--url",
        &base,
    ]);
    command.args(["--user-id", "1", "--api-token", "t", "--organization-id", "o"]);
    let output = tokio::task::spawn_blocking(move || run(command)).await.unwrap();
    let err = fails(output);
    assert!(
        err.contains("../escaped.txt") && err.contains("outside the destination"),
        "{err}"
    );
    assert!(
        !dir.path().join("escaped.txt").exists(),
        "nothing lands outside the destination"
    );
}

/// Item 9: a server that announces 10 bytes and sends a zip bomb (64 MiB of zeros, deflated to
/// ~64 KiB) gets a sentence, and nothing is left in the destination.
#[tokio::test(flavor = "multi_thread")]
async fn extraction_stops_at_what_the_server_announced() {
    let zeros = vec![0u8; 64 << 20];
    let bomb = zip_of(&[("anything", &zeros)]);
    assert!(bomb.len() < 1 << 20, "the bomb is small on the wire: {}", bomb.len());
    let base = hostile_server(10, bomb).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("inside");
    let mut command = stowage(&dir.path().join("none.json"));
    command.args(["object", "get", "anything", "--destination", dest.to_str().unwrap()]);
    command.args([
        "--url",
        &base,
        "--user-id",
        "1",
        "--api-token",
        "t",
        "--organization-id",
        "o",
    ]);
    let err = fails(tokio::task::spawn_blocking(move || run(command)).await.unwrap());
    assert!(
        err.starts_with("stowage: refusing the download: the archive holds more than 1.05 MB (the server announced 10 B for these keys; if they grew since, run the command again); nothing was written"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&dest).unwrap().collect();
    assert!(left.is_empty(), "no partial output: {left:?}");
}

/// Item 9: `--max-size` bounds what `object get` writes, in human sizes; within it the download
/// works. And `--api-token-stdin` takes the token from standard input, for login and object
/// commands alike, so it never appears in the process list.
#[test]
fn max_size_and_the_token_on_standard_input() {
    let server = TestServer::start();
    let c = server.credentials();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("config").join("credentials.json");
    let with_token_on_stdin = |args: &[&str], input: &str| {
        let mut command = stowage(&creds);
        command.current_dir(dir.path()).args(args);
        command.args(["--url", &server.base, "--user-id", &c.user_id, "--api-token-stdin"]);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("run stowage");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let token_line = format!("{}\n", c.api_token);
    std::fs::write(dir.path().join("k.bin"), vec![b'k'; 3000]).unwrap();
    for name in ["d/one", "d/two", "d/three"] {
        let out = ok(with_token_on_stdin(
            &["object", "set", name, "k.bin", "--organization-id", &c.organization_id],
            &token_line,
        ));
        assert_eq!(out.trim(), format!("stored {name}"));
    }
    let refused = fails(with_token_on_stdin(
        &["object", "set", "d/four", "--organization-id", &c.organization_id],
        &token_line,
    ));
    assert!(
        refused.contains(
            "--api-token-stdin reads the token from standard input, so the upload cannot come from there too"
        ),
        "{refused}"
    );
    let empty = fails(with_token_on_stdin(&["login"], "\n"));
    assert!(
        empty.contains("--api-token-stdin: standard input held no token"),
        "{empty}"
    );
    let wrong = fails(with_token_on_stdin(&["login"], "not-the-token\n"));
    assert!(wrong.contains("refused the credentials of user"), "{wrong}");
    assert!(!creds.exists(), "a refused login saves nothing");
    let out = ok(with_token_on_stdin(
        &["login", "--organization-id", &c.organization_id],
        &token_line,
    ));
    assert!(out.starts_with("logged in to "), "{out}");
    let saved: Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    assert_eq!(saved["apiToken"], c.api_token.as_str());

    // 9,000 bytes under d/: refused at 8 KB, written at 10GiB.
    let get = |max: &str, dest: &str| {
        let mut command = stowage(&creds);
        command
            .current_dir(dir.path())
            .args(["object", "get", "d", "--destination", dest, "--max-size", max]);
        run(command)
    };
    let refused = fails(get("8KB", "small"));
    assert_eq!(
        refused.trim_end(),
        "stowage: refusing the download: the archive holds more than 8.00 KB (--max-size 8.00 KB); nothing was written"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path().join("small")).unwrap().collect();
    assert!(left.is_empty(), "no partial output: {left:?}");
    let out = ok(get("10GiB", "big"));
    assert!(out.starts_with("downloaded 3 file(s)"), "{out}");
    assert_eq!(std::fs::read(dir.path().join("big/d/two")).unwrap(), vec![b'k'; 3000]);
    let bad = fails(get("lots", "x"));
    assert!(bad.contains("\"lots\" is not a size"), "{bad}");
}
