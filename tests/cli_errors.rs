//! The command line's answers to a person's mistakes: every refusal is one sentence naming what
//! is wrong and what to do, and a start that fails creates nothing. Also the credentials reminder,
//! log colours, the admin CLI's refusals and tables, and shell completions.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Options, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_stowage");

/// `stowage ARGS` in `dir`, with no inherited `STOWAGE_*` variable, plus `env`.
fn stowage(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("STOWAGE_") {
            command.env_remove(name);
        }
    }
    // Tests run side by side: an S3 API on a port of its own unless a test says otherwise.
    command
        .env("STOWAGE_S3_API_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run stowage")
}

/// Expects a failure; returns standard error, which must be exactly one line.
fn refusal(output: Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure; stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert_eq!(stderr.lines().count(), 1, "one sentence: {stderr:?}");
    stderr.trim_end().to_owned()
}

fn success(output: Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// `serve` with ephemeral port and `dir/data`, expected to fail at once.
fn serve_refused(dir: &Path, env: &[(&str, &str)], extra: &[&str]) -> String {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", "data"];
    args.extend_from_slice(extra);
    refusal(stowage(dir, env, &args))
}

#[test]
fn an_unknown_setting_in_the_file_is_refused_naming_it_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stowage.toml"),
        "listen = \"127.0.0.1:0\"\nmax_objet_size = 5\n",
    )
    .unwrap();
    assert_eq!(
        serve_refused(dir.path(), &[], &[]),
        "stowage: configuration: stowage.toml has an unknown setting \"max_objet_size\"; did you mean \
         max_object_size? the settings are listed in the README's Configuration section"
    );
    assert!(!dir.path().join("data").exists(), "a refused start creates nothing");
}

#[test]
fn a_misspelt_environment_variable_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        serve_refused(dir.path(), &[("STOWAGE_MAX_OBJECT_SIZ", "1 MB")], &[]),
        "stowage: configuration: the environment variable STOWAGE_MAX_OBJECT_SIZ is not a setting; did \
         you mean STOWAGE_MAX_OBJECT_SIZE? Rename or unset it"
    );
    assert!(!dir.path().join("data").exists());
}

#[test]
fn bad_values_name_the_setting_in_words() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        serve_refused(dir.path(), &[("STOWAGE_DEFAULT_MAX_BYTES", "lots")], &[]),
        "stowage: configuration: the setting default_max_bytes in the environment variable \
         STOWAGE_DEFAULT_MAX_BYTES: \"lots\" is not a size: write a number of bytes, or a number and a \
         unit such as \"500 MB\" or \"5 GiB\""
    );
    assert_eq!(
        serve_refused(dir.path(), &[("STOWAGE_BLOB_STORE", "gcs")], &[]),
        "stowage: configuration: the setting blob_store in the environment variable STOWAGE_BLOB_STORE: \
         \"gcs\" is neither \"local\" nor \"s3\""
    );
    std::fs::write(dir.path().join("stowage.toml"), "log_format = \"xml\"\n").unwrap();
    let error = serve_refused(dir.path(), &[], &[]);
    assert!(
        error.starts_with("stowage: configuration: the setting log_format in /")
            && error.ends_with("stowage.toml: \"xml\" is neither \"text\" nor \"json\""),
        "{error}"
    );
    assert!(!error.contains("default."), "no internal names: {error}");
    assert!(!dir.path().join("data").exists());
}

#[test]
fn a_port_in_use_is_said_once_in_words_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let error = refusal(stowage(
        dir.path(),
        &[],
        &["serve", "--listen", &addr, "--data-dir", "data"],
    ));
    assert_eq!(
        error,
        format!(
            "stowage: cannot listen on {addr}: another program is already listening on port {} (perhaps \
             another stowage serve); stop it, or choose another address with --listen or STOWAGE_LISTEN",
            holder.local_addr().unwrap().port()
        )
    );
    assert!(
        !dir.path().join("data").exists(),
        "no store without its credentials printed"
    );
}

#[test]
fn a_busy_s3_port_names_the_s3_setting_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let error = refusal(stowage(
        dir.path(),
        &[],
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--s3-api-listen",
            &addr,
            "--data-dir",
            "data",
        ],
    ));
    assert_eq!(
        error,
        format!(
            "stowage: cannot listen on {addr}: another program is already listening on port {} (perhaps \
             another stowage serve); stop it, choose another address for the S3 API with --s3-api-listen \
             or STOWAGE_S3_API_LISTEN, or turn the S3 API off with --s3-api-listen off",
            holder.local_addr().unwrap().port()
        )
    );
    assert!(!dir.path().join("data").exists());
    let bad = stowage(
        dir.path(),
        &[],
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--s3-api-listen",
            "nowhere",
            "--data-dir",
            "data",
        ],
    );
    assert!(!bad.status.success());
    let bad = String::from_utf8_lossy(&bad.stderr).into_owned();
    assert!(
        bad.contains("neither an address with a port (such as 127.0.0.1:5613) nor \"off\""),
        "{bad}"
    );
}

#[test]
fn a_data_dir_that_is_a_file_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), b"not a directory").unwrap();
    assert_eq!(
        serve_refused(dir.path(), &[], &[]),
        "stowage: the data directory data is a file, not a directory: pass --data-dir with a directory \
         (or a path that does not exist yet)"
    );
}

#[test]
fn admin_refuses_a_missing_data_directory_unless_asked_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        refusal(stowage(dir.path(), &[], &["admin", "org", "list"])),
        "stowage: the data directory ./stowage-data does not exist, so it holds no store: pass --data-dir \
         with the directory `stowage serve` uses (run from the folder holding stowage-data, or see \
         STOWAGE_DATA_DIR), or add --create-data-dir to start a new, empty store there"
    );
    assert!(!dir.path().join("stowage-data").exists(), "nothing created");
    let listed = success(stowage(
        dir.path(),
        &[],
        &["admin", "--create-data-dir", "--json", "org", "list"],
    ));
    assert_eq!(listed.trim(), "[]");
    assert!(dir.path().join("stowage-data").join("metadata.sqlite3").exists());
    // The store now exists: no flag needed any more.
    success(stowage(dir.path(), &[], &["admin", "user", "list"]));
}

#[test]
fn every_start_says_where_the_first_credentials_are_while_the_file_exists() {
    let server = TestServer::start_with(Options::new());
    let path = server.data_dir().join("initial-credentials.json");
    let server = server.restart();
    let reminder = format!(
        "stowage: the first user's credentials are in {}; keep them somewhere safe, then delete that file",
        std::fs::canonicalize(&path).unwrap().display()
    );
    assert_eq!(server.banner, [reminder], "the reminder, and no credentials");
    std::fs::remove_file(&path).unwrap();
    let server = server.restart();
    assert!(server.banner.is_empty(), "{:?}", server.banner);
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let server = TestServer::start();
    // The "listening" log line follows the stdout line the harness waits for: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut log = server.log();
    while !log.contains("listening") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        log = server.log();
    }
    assert!(log.contains("listening"), "the log has lines: {log}");
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a log file: {log:?}");
}

#[test]
fn admin_refusals_say_what_to_do() {
    let server = TestServer::start();
    let org = server.new_org("research", &[]);
    let (user, _) = server.new_user("alice");
    let error = server.admin_fails(&["org", "create", "--name", "research"]);
    assert_eq!(
        error.trim_end(),
        format!("stowage: an organization named \"research\" already exists ({org}): choose another name")
    );
    assert_eq!(server.admin(&["org", "list"]).as_array().map(Vec::len), Some(2));

    let error = server.admin_fails(&["org", "set-quota", "--org", &org]);
    assert!(
        error.contains("the following required arguments were not provided") && error.contains("--max-bytes"),
        "{error}"
    );
    let error = server.admin_fails(&["org", "set-quota", "--org", &org, "--max-bytes", "lots"]);
    assert_eq!(
        error.trim_end(),
        "stowage: \"lots\" is not a size: write a number of bytes, or a number and a unit such as \"500 MB\" or \"5 GiB\""
    );

    let member = |permissions: &str| {
        server.admin_fails(&[
            "member",
            "add",
            "--org",
            &org,
            "--user",
            &user,
            "--permissions",
            permissions,
        ])
    };
    assert_eq!(
        member("").trim_end(),
        "stowage: --permissions is empty: give at least one of read, write, delete (comma-separated)"
    );
    assert_eq!(
        member("read,fly").trim_end(),
        "stowage: unknown permission \"fly\": the permissions are read, write and delete (comma-separated); \
         --admin marks an administrator"
    );
    assert_eq!(server.admin(&["member", "list", "--org", &org]), serde_json::json!([]));
}

#[test]
fn admin_tables_line_up_with_sizes_and_names() {
    let server = TestServer::start();
    let org = server.new_org("a-much-longer-organization-name", &["--max-bytes", "50 GiB"]);
    let (user, _) = server.new_user("bob");
    server.add_member(&org, &user, "read,write");

    let orgs = server.admin_text(&["org", "list"]);
    let lines: Vec<&str> = orgs.lines().collect();
    assert_eq!(lines.len(), 3, "{orgs}");
    let column = |line: &str, word: &str| line.find(word).unwrap_or_else(|| panic!("{word:?} in {line:?}"));
    // Left-aligned names start where the header does; right-aligned sizes end where it does.
    let name = column(lines[0], "name");
    assert_eq!(column(lines[2], "a-much-longer"), name, "{orgs}");
    let max_end = column(lines[0], "max bytes") + "max bytes".len();
    assert_eq!(column(lines[2], "50.0 GiB") + "50.0 GiB".len(), max_end, "{orgs}");
    assert!(lines[1].contains("10.0 GiB (default)"), "{orgs}");
    assert!(!orgs.contains("10737418240"), "sizes for people: {orgs}");

    let members = server.admin_text(&["member", "list", "--org", &org]);
    let lines: Vec<&str> = members.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["user", "name", "permissions"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [user.as_str(), "bob", "read,write"]
    );
    assert_eq!(column(lines[1], "bob"), column(lines[0], "name"), "{members}");
}

#[test]
fn completions_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    let bash = success(stowage(dir.path(), &[], &["completions", "bash"]));
    assert!(
        bash.contains("complete -F _stowage") && bash.contains("set-quota"),
        "{bash}"
    );
    let zsh = success(stowage(dir.path(), &[], &["completions", "zsh"]));
    assert!(
        zsh.starts_with("#compdef stowage") && zsh.contains("--create-data-dir"),
        "{zsh}"
    );
    let fish = success(stowage(dir.path(), &[], &["completions", "fish"]));
    assert!(
        fish.contains("complete -c stowage") && fish.contains("rotate-token"),
        "{fish}"
    );
    let error = String::from_utf8(stowage(dir.path(), &[], &["completions", "tcsh"]).stderr).unwrap();
    assert!(error.contains("invalid value 'tcsh'"), "{error}");
}
