//! `stowage bench`: a load generator. It drives a running stowage through the API (or an
//! S3-compatible server through the `object_store` crate, or the bare disk with the same durable
//! write sequence stowage uses) with C concurrent keep-alive connections, for a duration or a
//! number of operations, and reports operations/s, MB/s, latency percentiles and errors.
//!
//! Keys: prepared objects are `<prefix>/<i>` (8 digits) with `--layout flat`, or `<prefix>/<i>/o`
//! with `--layout folders` (so listing `<prefix>` shows files or folders); new objects written by
//! `set` are `<prefix>/new/<run>-<worker>-<n>`, fresh on every run.

mod report;
mod spec;
mod target;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::Deserialize;

use report::{MultipartSummary, PrepareSummary, Report, Tally};
use spec::{Op, Workload, parse_duration, parse_size, pick};
use target::{Multipart, Payload, Target, TargetConfig};

use crate::client::{Credentials, DEFAULT_URL};

/// Which system to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TargetKind {
    /// stowage's Object Store API (--url and credentials).
    Stowage,
    /// An S3-compatible server (--endpoint, --bucket, --access-key, --secret-key).
    S3,
    /// The local disk under --dir: write, fsync, rename, fsync the folder (set only; no server).
    RawDisk,
    /// md5 over --size bytes of the payload on one core (set only; no server, no disk): the
    /// ceiling of an upload, which must hash its body.
    Md5,
}

/// How prepared objects are laid out under the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Layout {
    /// `<prefix>/<i>`: one folder holding every object.
    Flat,
    /// `<prefix>/<i>/o`: one folder holding a folder per object.
    Folders,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The system to drive.
    #[arg(long, value_enum, default_value = "stowage")]
    pub(crate) target: TargetKind,
    /// What the workers do.
    #[arg(long, value_enum, default_value = "set")]
    pub(crate) workload: Workload,
    /// Concurrent connections (one worker each, requests back to back).
    #[arg(short = 'c', long, default_value_t = 16)]
    pub(crate) concurrency: usize,
    /// How long to run (e.g. 10s, 2m); default 10s unless --ops is given.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Stop after this many operations in all (instead of a duration).
    #[arg(long, conflicts_with = "duration")]
    pub(crate) ops: Option<u64>,
    /// Run this long before measuring (with --duration).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub(crate) warmup: Duration,
    /// Object size: 4096, 4KiB, 1GiB, 500MB … (bodies are streamed, never held whole).
    #[arg(long, value_parser = parse_size, default_value = "4KiB")]
    pub(crate) size: u64,
    /// Upload this many objects before the measured run (what get, properties, delete, list
    /// and mixed work on).
    #[arg(long, default_value_t = 0)]
    pub(crate) prepare: u64,
    /// This many objects already exist from an earlier --prepare with the same --prefix and
    /// --layout; use them without uploading.
    #[arg(long, default_value_t = 0, conflicts_with = "prepare")]
    pub(crate) existing: u64,
    /// Only prepare; measure nothing.
    #[arg(long)]
    pub(crate) prepare_only: bool,
    /// Connections used to prepare (default: --concurrency).
    #[arg(long)]
    pub(crate) prepare_concurrency: Option<usize>,
    /// Size of prepared objects (default: --size).
    #[arg(long, value_parser = parse_size)]
    pub(crate) prepare_size: Option<u64>,
    /// Layout of prepared objects.
    #[arg(long, value_enum, default_value = "flat")]
    pub(crate) layout: Layout,
    /// Key prefix (default bench/<random>); may be empty for the root.
    #[arg(long)]
    pub(crate) prefix: Option<String>,
    /// Folder that `list` reads (default: the prefix).
    #[arg(long)]
    pub(crate) list_path: Option<String>,
    /// Page that `list` reads: a number, or `random` for any page of the prepared objects (the s3
    /// target reads the first page only).
    #[arg(long, default_value = "0")]
    pub(crate) list_page: String,
    /// Count an operation as failed after this long (default 60 s plus 1 s per 10 MB).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,

    /// stowage: API base URL.
    #[arg(long, env = "STOWAGE_URL", default_value = DEFAULT_URL)]
    pub(crate) url: String,
    /// stowage: a JSON file with userId, apiToken, organizationId (initial-credentials.json).
    #[arg(long)]
    pub(crate) credentials: Option<PathBuf>,
    /// stowage: user id.
    #[arg(long, env = "STOWAGE_USER_ID")]
    pub(crate) user_id: Option<String>,
    /// stowage: API token.
    #[arg(long, env = "STOWAGE_API_TOKEN", hide_env_values = true)]
    pub(crate) api_token: Option<String>,
    /// stowage: organization id.
    #[arg(long, env = "STOWAGE_ORGANIZATION_ID")]
    pub(crate) organization_id: Option<String>,

    /// s3: endpoint URL, e.g. http://127.0.0.1:8333.
    #[arg(long)]
    pub(crate) endpoint: Option<String>,
    /// s3: bucket.
    #[arg(long)]
    pub(crate) bucket: Option<String>,
    /// s3: access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    pub(crate) access_key: Option<String>,
    /// s3: secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub(crate) secret_key: Option<String>,
    /// s3: region.
    #[arg(long, default_value = "us-east-1")]
    pub(crate) region: String,
    /// s3: objects larger than this go up as a multipart upload in parts of this size (S3 wants
    /// at least 5 MiB for every part but the last).
    #[arg(long, value_parser = parse_size, default_value = "16MiB")]
    pub(crate) multipart_part_size: u64,
    /// s3: parts of one multipart upload in flight at once.
    #[arg(long, default_value_t = 4)]
    pub(crate) multipart_concurrency: usize,

    /// raw-disk: the folder to write into.
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

/// The shape of `initial-credentials.json` (userId may be a number or a string).
#[derive(Deserialize)]
struct CredentialsFile {
    #[serde(rename = "userId")]
    user_id: serde_json::Value,
    #[serde(rename = "apiToken")]
    api_token: String,
    #[serde(rename = "organizationId")]
    organization_id: String,
}

fn target_config(args: &BenchArgs) -> Result<TargetConfig, String> {
    match args.target {
        TargetKind::Stowage => {
            let mut user_id = args.user_id.clone();
            let mut api_token = args.api_token.clone();
            let mut organization_id = args.organization_id.clone();
            if let Some(path) = &args.credentials {
                let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let file: CredentialsFile =
                    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                let id = match file.user_id {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                user_id = user_id.or(Some(id));
                api_token = api_token.or(Some(file.api_token));
                organization_id = organization_id.or(Some(file.organization_id));
            }
            let missing = |what: &str| format!("the stowage target needs {what} (or --credentials FILE)");
            Ok(TargetConfig::Stowage {
                credentials: Credentials {
                    url: args.url.clone(),
                    user_id: user_id.ok_or_else(|| missing("--user-id"))?,
                    api_token: api_token.ok_or_else(|| missing("--api-token"))?,
                },
                organization_id: organization_id.ok_or_else(|| missing("--organization-id"))?,
            })
        }
        TargetKind::S3 => {
            let need =
                |value: &Option<String>, flag: &str| value.clone().ok_or_else(|| format!("the s3 target needs {flag}"));
            Ok(TargetConfig::S3 {
                endpoint: need(&args.endpoint, "--endpoint")?,
                bucket: need(&args.bucket, "--bucket")?,
                access_key: need(&args.access_key, "--access-key")?,
                secret_key: need(&args.secret_key, "--secret-key")?,
                region: args.region.clone(),
                multipart: multipart(args)?,
            })
        }
        TargetKind::RawDisk => {
            if !matches!(args.workload, Workload::Set) {
                return Err("the raw-disk target runs the set workload only".into());
            }
            Ok(TargetConfig::RawDisk {
                dir: args
                    .dir
                    .clone()
                    .ok_or_else(|| "the raw-disk target needs --dir".to_string())?,
            })
        }
        TargetKind::Md5 => {
            if !matches!(args.workload, Workload::Set) {
                return Err("the md5 target runs the set workload only".into());
            }
            Ok(TargetConfig::Md5)
        }
    }
}

/// The S3 target's multipart settings, checked.
fn multipart(args: &BenchArgs) -> Result<Multipart, String> {
    if args.multipart_part_size == 0 {
        return Err("--multipart-part-size must be at least 1 byte (S3 servers want 5 MiB or more)".into());
    }
    if args.multipart_concurrency == 0 {
        return Err("--multipart-concurrency must be at least 1".into());
    }
    Ok(Multipart {
        part_size: args.multipart_part_size,
        concurrency: args.multipart_concurrency,
    })
}

/// How a run's uploads of `size` bytes were split, when the target split them.
fn multipart_summary(config: &TargetConfig, uploads: bool, size: u64) -> Option<MultipartSummary> {
    match config {
        TargetConfig::S3 { multipart, .. } if uploads && multipart.parts(size) > 0 => Some(MultipartSummary {
            part_size: multipart.part_size,
            parts: multipart.parts(size),
            concurrency: multipart.concurrency,
        }),
        _ => None,
    }
}

/// A key the workers can read or delete.
#[derive(Debug, Clone)]
enum Key {
    Prepared(u64),
    New(String),
}

/// Which page `list` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageChoice {
    Fixed(u64),
    Random,
}

fn parse_page(text: &str) -> Result<PageChoice, String> {
    if text.eq_ignore_ascii_case("random") {
        return Ok(PageChoice::Random);
    }
    text.parse()
        .map(PageChoice::Fixed)
        .map_err(|_| format!("--list-page takes a number or 'random', not '{text}'"))
}

/// How keys are named in one run.
#[derive(Debug, Clone)]
struct Naming {
    prefix: String,
    layout: Layout,
    run: String,
}

impl Naming {
    fn join(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_owned()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }

    fn prepared(&self, i: u64) -> String {
        match self.layout {
            Layout::Flat => self.join(&format!("{i:08}")),
            Layout::Folders => self.join(&format!("{i:08}/o")),
        }
    }

    fn new_key(&self, worker: usize, n: u64) -> String {
        self.join(&format!("new/{}-{worker}-{n}", self.run))
    }

    fn key(&self, key: &Key) -> String {
        match key {
            Key::Prepared(i) => self.prepared(*i),
            Key::New(name) => name.clone(),
        }
    }
}

/// What every worker shares.
struct Shared {
    workload: Workload,
    naming: Naming,
    payload: Payload,
    /// Prepared objects (indices `0..objects`).
    objects: u64,
    /// Reads pick among the prepared objects `0..readable`, which nothing deletes.
    readable: u64,
    /// Keys that delete may take (picked and removed at random): every prepared object for the
    /// delete workload; for mixed, the prepared objects past `readable` and whatever its sets add,
    /// so a read never races a delete of the same key.
    pool: Option<Mutex<Vec<Key>>>,
    list_folder: String,
    list_page: PageChoice,
    timeout: Duration,
    /// When measuring starts (after the warm-up) and ends.
    measure_from: Instant,
    deadline: Option<Instant>,
    ops_limit: Option<u64>,
    issued: AtomicU64,
    stop: AtomicBool,
    list_entries: AtomicU64,
    samples: Mutex<Vec<String>>,
}

const ERROR_SAMPLES: usize = 5;

impl Shared {
    fn note_error(&self, op: Op, message: String) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() < ERROR_SAMPLES {
            samples.push(format!("{}: {message}", op.name()));
        }
    }

    /// Whether a worker may start another operation.
    fn go_on(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if let Some(deadline) = self.deadline
            && Instant::now() >= deadline
        {
            return false;
        }
        if let Some(limit) = self.ops_limit {
            return self.issued.fetch_add(1, Ordering::Relaxed) < limit;
        }
        true
    }

    fn random_key(&self, rng: &mut impl Rng) -> Option<Key> {
        (self.readable > 0).then(|| Key::Prepared(rng.gen_range(0..self.readable)))
    }

    fn take_key(&self, rng: &mut impl Rng) -> Option<Key> {
        let mut pool = self.pool.as_ref()?.lock().unwrap_or_else(|e| e.into_inner());
        if pool.is_empty() {
            return None;
        }
        let at = rng.gen_range(0..pool.len());
        Some(pool.swap_remove(at))
    }
}

async fn timed<F>(limit: Duration, future: F) -> Result<u64, String>
where
    F: std::future::Future<Output = Result<u64, String>>,
{
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:.0} s", limit.as_secs_f64())),
    }
}

/// One worker: operations back to back on its own connection until the run ends.
async fn worker(id: usize, target: Target, shared: Arc<Shared>) -> Vec<Tally> {
    let mut tallies: Vec<Tally> = Op::ALL.iter().map(|_| Tally::new()).collect();
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut n = 0u64;
    while shared.go_on() {
        let op = pick(shared.workload, rng.gen_range(0..100));
        let started = Instant::now();
        let result = match op {
            Op::Set => {
                let key = shared.naming.new_key(id, n);
                n += 1;
                let result = timed(shared.timeout, target.set(&key, &shared.payload)).await;
                if result.is_ok()
                    && let Some(pool) = &shared.pool
                {
                    pool.lock().unwrap_or_else(|e| e.into_inner()).push(Key::New(key));
                }
                result
            }
            Op::Properties | Op::Get => match shared.random_key(&mut rng) {
                Some(key) => {
                    let key = shared.naming.key(&key);
                    if op == Op::Get {
                        timed(shared.timeout, target.get(&key)).await
                    } else {
                        timed(shared.timeout, target.properties(&key)).await
                    }
                }
                None => Err("no objects to read (use --prepare or --existing)".into()),
            },
            Op::Delete => match shared.take_key(&mut rng) {
                Some(key) => timed(shared.timeout, target.delete(&shared.naming.key(&key))).await,
                None if shared.workload == Workload::Delete => {
                    // Everything is deleted: the run is over.
                    shared.stop.store(true, Ordering::Relaxed);
                    break;
                }
                None => continue,
            },
            Op::List => {
                let page = match shared.list_page {
                    PageChoice::Fixed(page) => page,
                    PageChoice::Random => rng.gen_range(0..shared.objects.div_ceil(1000).max(1)),
                };
                timed(shared.timeout, async {
                    let (bytes, entries) = target.list(&shared.list_folder, page).await?;
                    shared.list_entries.fetch_max(entries as u64, Ordering::Relaxed);
                    Ok(bytes)
                })
                .await
            }
        };
        if started < shared.measure_from {
            continue;
        }
        let tally = &mut tallies[op.index()];
        match result {
            Ok(bytes) => tally.success(started.elapsed(), bytes),
            Err(message) => {
                tally.error();
                shared.note_error(op, message);
            }
        }
    }
    tallies
}

/// Uploads prepared objects `0..count` with `concurrency` connections.
async fn prepare(
    config: &TargetConfig,
    naming: &Naming,
    count: u64,
    size: u64,
    concurrency: usize,
) -> Result<PrepareSummary, String> {
    let payload = Payload::new(size);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let target = config.connect()?;
        let (next, errors, first_error) = (next.clone(), errors.clone(), first_error.clone());
        let (naming, payload) = (naming.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                if let Err(e) = target.set(&naming.prepared(i), &payload).await {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                }
            }
        }));
    }
    let progress = {
        let next = next.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                let done = next.load(Ordering::Relaxed).min(count);
                let rate = done as f64 / started.elapsed().as_secs_f64();
                eprintln!("stowage bench: prepared {done}/{count} objects ({rate:.0}/s)");
            }
        })
    };
    for task in tasks {
        task.await.map_err(|e| e.to_string())?;
    }
    progress.abort();
    let seconds = started.elapsed().as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    if errors > 0 {
        let first = first_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        return Err(format!(
            "{errors} of {count} prepared uploads failed; the first: {}",
            first.unwrap_or_default()
        ));
    }
    Ok(PrepareSummary {
        objects: count,
        connections: concurrency.max(1),
        seconds,
        ops_per_s: count as f64 / seconds.max(1e-9),
        errors,
    })
}

/// Runs `stowage bench` and returns its report, as text or JSON.
pub async fn run(args: BenchArgs) -> Result<String, String> {
    let report = execute(&args).await?;
    if args.json {
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())
    } else {
        Ok(report.to_text())
    }
}

/// Runs a benchmark and returns its figures.
pub(crate) async fn execute(args: &BenchArgs) -> Result<Report, String> {
    let config = target_config(args)?;
    let concurrency = args.concurrency.max(1);
    let list_page = parse_page(&args.list_page)?;
    let naming = naming(args);
    let prepared = if args.prepare > 0 {
        let size = args.prepare_size.unwrap_or(args.size);
        let connections = args.prepare_concurrency.unwrap_or(concurrency).max(1);
        Some(prepare(&config, &naming, args.prepare, size, connections).await?)
    } else {
        None
    };
    if args.prepare_only {
        return Ok(prepare_report(args, &config, concurrency, prepared));
    }
    let objects = args.prepare.max(args.existing);
    if args.workload.needs_objects() && objects == 0 {
        return Err(format!(
            "the {} workload needs objects: use --prepare N (or --existing N)",
            workload_name(args.workload)
        ));
    }
    let targets = connect_workers(&config, concurrency).await?;
    let shared = Arc::new(shared_state(args, naming, objects, list_page));
    let by_op = run_workers(targets, &shared).await?;
    let elapsed = Instant::now().saturating_duration_since(shared.measure_from);
    Ok(workload_report(
        args,
        &config,
        concurrency,
        prepared,
        &shared,
        &by_op,
        elapsed,
    ))
}

/// How this run names its objects: under `--prefix`, or `bench/<random run id>`.
fn naming(args: &BenchArgs) -> Naming {
    let run: String = {
        let mut rng = rand::thread_rng();
        (0..6).map(|_| format!("{:x}", rng.gen_range(0..16u8))).collect()
    };
    Naming {
        prefix: args
            .prefix
            .clone()
            .unwrap_or_else(|| format!("bench/{run}"))
            .trim_matches('/')
            .to_owned(),
        layout: args.layout,
        run,
    }
}

/// The report of a `--prepare-only` run: how long preparing took.
fn prepare_report(
    args: &BenchArgs,
    config: &TargetConfig,
    concurrency: usize,
    prepared: Option<PrepareSummary>,
) -> Report {
    let size = args.prepare_size.unwrap_or(args.size);
    let multipart = multipart_summary(config, prepared.is_some(), size);
    Report {
        target: config.name().into(),
        workload: "prepare".into(),
        concurrency,
        object_size: size,
        seconds: prepared.as_ref().map_or(0.0, |p| p.seconds),
        prepare: prepared,
        total: Tally::new().summary(Duration::from_secs(1)),
        by_op: Default::default(),
        error_samples: vec![],
        list_entries: None,
        multipart,
    }
}

/// Connects every worker first, and checks the credentials once.
async fn connect_workers(config: &TargetConfig, concurrency: usize) -> Result<Vec<Target>, String> {
    let mut targets = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let target = config.connect()?;
        target.warm().await?;
        targets.push(target);
    }
    Ok(targets)
}

/// What the workers share: the workload, its objects, its clock (warm-up, then the measured
/// duration or operation count) and what they report.
fn shared_state(args: &BenchArgs, naming: Naming, objects: u64, list_page: PageChoice) -> Shared {
    let readable = readable_objects(args.workload, objects);
    let pool = matches!(args.workload, Workload::Delete | Workload::Mixed)
        .then(|| Mutex::new((readable..objects).map(Key::Prepared).collect::<Vec<_>>()));
    let list_folder = args.list_path.clone().unwrap_or_else(|| naming.prefix.clone());
    let ops_limit = args.ops;
    let duration = match (args.duration, ops_limit) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let warmup = if duration.is_some() {
        args.warmup
    } else {
        Duration::ZERO
    };
    let measure_from = Instant::now() + warmup;
    Shared {
        workload: args.workload,
        naming,
        payload: Payload::new(args.size),
        objects,
        readable,
        pool,
        list_folder: if list_folder.is_empty() {
            "/".into()
        } else {
            list_folder
        },
        list_page,
        timeout: args.timeout.unwrap_or_else(|| target::default_timeout(args.size)),
        measure_from,
        deadline: duration.map(|d| measure_from + d),
        ops_limit,
        issued: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        list_entries: AtomicU64::new(0),
        samples: Mutex::new(Vec::new()),
    }
}

/// Runs one worker per target until the run ends; returns the tallies by operation.
async fn run_workers(targets: Vec<Target>, shared: &Arc<Shared>) -> Result<Vec<Tally>, String> {
    let tasks: Vec<_> = targets
        .into_iter()
        .enumerate()
        .map(|(id, target)| tokio::spawn(worker(id, target, shared.clone())))
        .collect();
    let mut by_op: Vec<Tally> = Op::ALL.iter().map(|_| Tally::new()).collect();
    for task in tasks {
        let tallies = task.await.map_err(|e| e.to_string())?;
        for (sum, tally) in by_op.iter_mut().zip(&tallies) {
            sum.merge(tally);
        }
    }
    Ok(by_op)
}

/// The report of a measured run: the totals, and for the mixed workload each operation's.
fn workload_report(
    args: &BenchArgs,
    config: &TargetConfig,
    concurrency: usize,
    prepared: Option<PrepareSummary>,
    shared: &Shared,
    by_op: &[Tally],
    elapsed: Duration,
) -> Report {
    let mut total = Tally::new();
    for tally in by_op {
        total.merge(tally);
    }
    let by_op = if args.workload == Workload::Mixed {
        Op::ALL
            .iter()
            .filter(|op| by_op[op.index()].ops + by_op[op.index()].errors > 0)
            .map(|op| (op.name().to_owned(), by_op[op.index()].summary(elapsed)))
            .collect()
    } else {
        Default::default()
    };
    let samples = shared.samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let list_entries = shared.list_entries.load(Ordering::Relaxed);
    Report {
        target: config.name().into(),
        workload: workload_name(args.workload).into(),
        concurrency,
        object_size: args.size,
        seconds: elapsed.as_secs_f64(),
        prepare: prepared,
        total: total.summary(elapsed),
        by_op,
        error_samples: samples,
        list_entries: (args.workload == Workload::List).then_some(list_entries),
        multipart: multipart_summary(
            config,
            matches!(args.workload, Workload::Set | Workload::Mixed),
            args.size,
        ),
    }
}

fn readable_objects(workload: Workload, objects: u64) -> u64 {
    match workload {
        Workload::Delete => 0,
        Workload::Mixed if objects > 1 => objects - objects / 4,
        _ => objects,
    }
}

fn workload_name(workload: Workload) -> &'static str {
    match workload {
        Workload::Set => "set",
        Workload::Properties => "properties",
        Workload::Get => "get",
        Workload::List => "list",
        Workload::Delete => "delete",
        Workload::Mixed => "mixed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_naming() {
        let flat = Naming {
            prefix: "b/x".into(),
            layout: Layout::Flat,
            run: "abc".into(),
        };
        assert_eq!(flat.prepared(7), "b/x/00000007");
        assert_eq!(flat.new_key(3, 9), "b/x/new/abc-3-9");
        let folders = Naming {
            prefix: String::new(),
            layout: Layout::Folders,
            run: "abc".into(),
        };
        assert_eq!(folders.prepared(12), "00000012/o");
        assert_eq!(folders.key(&Key::New("k".into())), "k");
    }

    #[test]
    fn mixed_reads_never_touch_what_it_deletes() {
        assert_eq!(readable_objects(Workload::Mixed, 10_000), 7_500);
        assert_eq!(readable_objects(Workload::Mixed, 1), 1);
        assert_eq!(readable_objects(Workload::Delete, 10_000), 0);
        assert_eq!(readable_objects(Workload::Get, 10_000), 10_000);
        assert_eq!(readable_objects(Workload::Properties, 3), 3);
    }

    #[test]
    fn pages() {
        assert_eq!(parse_page("0"), Ok(PageChoice::Fixed(0)));
        assert_eq!(parse_page("12"), Ok(PageChoice::Fixed(12)));
        assert_eq!(parse_page("Random"), Ok(PageChoice::Random));
        assert!(parse_page("-1").is_err());
    }

    fn args(extra: &[&str]) -> BenchArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: BenchArgs,
        }
        let mut argv = vec!["bench"];
        argv.extend_from_slice(extra);
        Wrapper::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn raw_disk_set_runs_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let dir_arg = dir.path().to_str().unwrap().to_owned();
        let args = args(&[
            "--target", "raw-disk", "--dir", &dir_arg, "--ops", "40", "-c", "4", "--size", "8KiB",
        ]);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let report = runtime.block_on(execute(&args)).unwrap();
        assert_eq!(report.total.ops, 40);
        assert_eq!(report.total.errors, 0);
        assert_eq!(report.total.bytes, 40 * 8192);
        assert!(report.total.latency_ms.p50 > 0.0);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["target"], "raw-disk");
        assert_eq!(json["workload"], "set");
    }

    #[test]
    fn md5_reference_runs_set_only() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let report = runtime
            .block_on(execute(&args(&[
                "--target", "md5", "--ops", "2", "-c", "1", "--size", "3MiB",
            ])))
            .unwrap();
        assert_eq!(report.total.ops, 2);
        assert_eq!(report.total.errors, 0);
        assert_eq!(report.total.bytes, 2 * 3 * 1024 * 1024);
        assert_eq!(serde_json::to_value(&report).unwrap()["target"], "md5");
        let refused = runtime.block_on(execute(&args(&["--target", "md5", "--workload", "get"])));
        assert!(refused.is_err());
    }

    #[test]
    fn s3_multipart_options() {
        let defaults = args(&["--target", "s3"]);
        assert_eq!(defaults.multipart_part_size, 16 << 20);
        assert_eq!(
            multipart(&defaults),
            Ok(Multipart {
                part_size: 16 << 20,
                concurrency: 4
            })
        );
        let set = args(&["--multipart-part-size", "8MiB", "--multipart-concurrency", "2"]);
        assert_eq!(
            multipart(&set),
            Ok(Multipart {
                part_size: 8 << 20,
                concurrency: 2
            })
        );
        assert!(multipart(&args(&["--multipart-part-size", "0"])).is_err());
        assert!(multipart(&args(&["--multipart-concurrency", "0"])).is_err());

        let config = |part_size| TargetConfig::S3 {
            endpoint: "http://127.0.0.1:1".into(),
            bucket: "b".into(),
            access_key: "k".into(),
            secret_key: "s".into(),
            region: "us-east-1".into(),
            multipart: Multipart {
                part_size,
                concurrency: 4,
            },
        };
        assert_eq!(
            multipart_summary(&config(16 << 20), true, 1 << 30),
            Some(MultipartSummary {
                part_size: 16 << 20,
                parts: 64,
                concurrency: 4
            })
        );
        // Small objects go in one PUT; runs without uploads say nothing.
        assert_eq!(multipart_summary(&config(16 << 20), true, 4096), None);
        assert_eq!(multipart_summary(&config(16 << 20), false, 1 << 30), None);
        let raw = TargetConfig::RawDisk { dir: PathBuf::new() };
        assert_eq!(multipart_summary(&raw, true, 1 << 30), None);
    }

    #[test]
    fn workloads_that_read_need_objects() {
        let dir = tempfile::tempdir().unwrap();
        let dir_arg = dir.path().to_str().unwrap().to_owned();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let error = runtime
            .block_on(execute(&args(&[
                "--target",
                "raw-disk",
                "--dir",
                &dir_arg,
                "--workload",
                "get",
            ])))
            .unwrap_err();
        assert!(error.contains("set workload only"), "{error}");
        let error = runtime
            .block_on(execute(&args(&["--target", "s3", "--workload", "get"])))
            .unwrap_err();
        assert!(error.contains("--endpoint"), "{error}");
    }
}
