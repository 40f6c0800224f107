//! Concurrency: many writers racing on one key end with exactly one writer's whole body, and
//! writers racing deleters over a folder tree leave listings, usage counters and stored bodies
//! that agree with each other.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures::future::{BoxFuture, join_all};
use serde_json::{Value, json};

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Waits until the stored bodies number `expected` (replaced bodies are collected in the
/// background), and returns how many there are.
async fn settle_blobs(server: &TestServer, expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.blob_files() != expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.blob_files()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn sixty_four_writers_on_one_key_leave_one_whole_body() {
    let server = TestServer::start_with(Options::new().collecting_promptly());
    let client = server.client();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let bodies: Vec<Vec<u8>> = (0..64)
        .map(|i| noise(1024 + rng.below(1024 * 1024 - 1024 + 1) as usize, 1000 + i))
        .collect();
    let by_md5: HashMap<String, usize> = bodies.iter().enumerate().map(|(i, b)| (md5_hex(b), i)).collect();
    assert_eq!(by_md5.len(), 64, "the bodies are distinct");
    // an earlier version, so that readers always find the key
    client.set("contended/key.bin", b"before the storm").await;
    let mut known: HashMap<String, u64> = bodies.iter().map(|b| (md5_hex(b), b.len() as u64)).collect();
    known.insert(md5_hex(b"before the storm"), 16);

    // readers: while the writers run, properties always pairs a known md5 with its size
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (client, done, known) = (client.clone(), done.clone(), known.clone());
            tokio::spawn(async move {
                let mut seen = 0;
                while !done.load(Ordering::Relaxed) {
                    let meta = client.properties("contended/key.bin").await;
                    let md5 = meta["md5"].as_str().unwrap().to_owned();
                    let size = known
                        .get(&md5)
                        .unwrap_or_else(|| panic!("a reader saw an md5 no writer sent: {meta}"));
                    assert_eq!(meta["size"], *size, "md5 and size of one version: {meta}");
                    seen += 1;
                }
                seen
            })
        })
        .collect();

    let writers = bodies.iter().map(|body| {
        let (client, body) = (client.clone(), body.clone());
        tokio::spawn(async move { client.set_raw("contended/key.bin", &body).await })
    });
    for reply in join_all(writers).await {
        reply.expect("writer task").ok();
    }
    done.store(true, Ordering::Relaxed);
    for reader in join_all(readers).await {
        assert!(reader.expect("reader task") > 0);
    }

    let meta = client.properties("contended/key.bin").await;
    let md5 = meta["md5"].as_str().unwrap();
    let winner = *by_md5
        .get(md5)
        .unwrap_or_else(|| panic!("the key holds no writer's body: {meta}"));
    let body = &bodies[winner];
    assert_eq!(meta["size"], body.len(), "{meta}");
    let zip = client.download(json!(["contended/key.bin"])).await;
    assert_eq!(zip.len(), 1);
    assert!(
        zip["contended/key.bin"] == *body,
        "the download is exactly the winner's body"
    );
    assert_eq!(client.used().await, body.len() as u64);
    let org = server.org_entry(&client.org);
    assert_eq!(org["usedFiles"], 1);
    assert_eq!(org["usedBytes"], body.len());
    let listing = client.list(Some("contended")).await;
    assert_eq!(names(&listing), ["key.bin"]);
    assert_eq!(entry(&listing, "key.bin")["size"], body.len());
    assert_eq!(server.staged_files(), 0, "no upload left half-written");
    assert_eq!(
        settle_blobs(&server, 1).await,
        1,
        "one stored body: the losers' are collected"
    );
}

/// What a full walk of the listings found.
#[derive(Default, Debug)]
struct Tree {
    files: BTreeMap<String, u64>,
}

/// Lists `path` (every page) and everything below; checks each folder's size against the bytes
/// found under it. Returns the bytes under `path`.
fn walk<'a>(client: &'a Client, path: String, tree: &'a mut Tree) -> BoxFuture<'a, u64> {
    Box::pin(async move {
        let first = client.list(Some(&path)).await;
        let pages = first["totalPages"].as_u64().unwrap();
        let mut entries = objects(&first);
        for page in 1..pages {
            entries.extend(objects(client.list_page(&path, json!(page)).await.ok()));
        }
        let mut bytes = 0;
        for e in entries {
            let name = e["name"].as_str().unwrap();
            let child = if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}/{name}")
            };
            let size = e["size"].as_u64().unwrap();
            if e["folder"] == true {
                let under = walk(client, child.clone(), tree).await;
                assert!(
                    under > 0 || tree.files.keys().any(|k| k.starts_with(&format!("{child}/"))),
                    "{child}: an empty folder is listed"
                );
                assert_eq!(size, under, "{child}: the folder size is the bytes under it");
                bytes += under;
            } else {
                assert!(tree.files.insert(child, size).is_none());
                bytes += size;
            }
        }
        bytes
    })
}

const SEGMENTS: [&str; 3] = ["a", "b", "c"];

fn random_key(rng: &mut Rng) -> String {
    let depth = 1 + rng.below(3) as usize;
    let mut key = String::from("tree");
    for _ in 0..depth {
        key.push('/');
        key.push_str(SEGMENTS[rng.below(3) as usize]);
    }
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn writers_and_deleters_on_a_folder_tree_keep_usage_exact() {
    let server = TestServer::start_with(Options::new().collecting_promptly().env("STOWAGE_LIST_PAGE_SIZE", 2));
    let client = server.client();
    client.set("outside/untouched", b"not in the tree").await;
    let mut tasks = Vec::new();
    for w in 0..10u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0xabc0_0000 + w * 7919 + 1);
            let mut statuses = Vec::new();
            for i in 0..25 {
                let key = random_key(&mut rng);
                let size = rng.below(20_000) as usize;
                let reply = client.set_raw(&key, &noise(size, w * 1000 + i)).await;
                statuses.push((format!("set {key}"), reply.status, reply.text));
            }
            statuses
        }));
    }
    for d in 0..4u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0xdef0_0000 + d * 104_729 + 1);
            let mut statuses = Vec::new();
            for _ in 0..25 {
                // files, folders, and now and then the whole tree
                let key = if rng.below(10) == 0 {
                    "tree".to_owned()
                } else {
                    random_key(&mut rng)
                };
                let reply = client.post_json("object/delete", json!({ "key": key })).await;
                statuses.push((format!("delete {key}"), reply.status, reply.text));
                tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
            }
            statuses
        }));
    }
    let mut outcomes = 0;
    for task in join_all(tasks).await {
        for (what, status, text) in task.expect("task") {
            assert_eq!(status, 200, "{what}: {text}");
            let body: Value = serde_json::from_str(&text).unwrap();
            assert!(body["success"].is_boolean(), "{what}: {text}");
            outcomes += 1;
        }
    }
    assert_eq!(outcomes, 10 * 25 + 4 * 25);

    let mut tree = Tree::default();
    let bytes = walk(&client, String::new(), &mut tree).await;
    let used = client.used().await;
    assert_eq!(used, bytes, "objectStorageUsed is the sum over a full listing");
    let org = server.org_entry(&client.org);
    assert_eq!(org["usedBytes"], bytes);
    assert_eq!(org["usedFiles"], tree.files.len());
    assert_eq!(tree.files.get("outside/untouched"), Some(&15));
    for (key, size) in &tree.files {
        let meta = client.properties(key).await;
        assert_eq!(meta["size"], *size, "{key}");
    }
    // every listed file downloads whole, and nothing else is in the archive
    let all: Vec<&str> = tree.files.keys().map(String::as_str).collect();
    let zip = client.download(json!(all)).await;
    assert_eq!(
        zip.iter()
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect::<BTreeMap<_, _>>(),
        tree.files
    );
    assert_eq!(server.staged_files(), 0);
    let live = tree.files.len();
    assert_eq!(settle_blobs(&server, live).await, live, "one stored body per live file");
}
