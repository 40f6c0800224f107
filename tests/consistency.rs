//! What the listings say must agree with what is stored, after any mix of writes, overwrites,
//! refusals and (folder) deletes, sequential or concurrent: a folder's size is the bytes under
//! it, its time the newest under it, the usage counters equal the sums, every page count is exact
//! and empty folders are gone.

mod common;

use std::collections::BTreeMap;

use common::*;
use futures::future::join_all;
use serde_json::{Value, json};

/// What one subtree holds, according to the listings.
#[derive(Default, Debug)]
struct Walk {
    files: BTreeMap<String, (u64, i64)>, // key -> (size, modified)
}

/// Lists every folder from `path` down (all pages), checking each listing on the way.
/// Returns (bytes, newest modified, file count) of the subtree.
fn walk<'a>(
    client: &'a Client,
    path: String,
    page_size: u64,
    out: &'a mut Walk,
) -> futures::future::BoxFuture<'a, (u64, i64, u64)> {
    Box::pin(async move {
        let first = client.list(Some(&path)).await;
        let pages = first["totalPages"].as_u64().unwrap();
        let mut entries: Vec<Value> = objects(&first);
        for page in 1..pages {
            let reply = client.list_page(&path, json!(page)).await;
            entries.extend(objects(reply.ok()));
        }
        let beyond = client.list_page(&path, json!(pages)).await;
        assert_eq!(
            beyond.ok()["objects"],
            json!([]),
            "{path}: a page past the last is empty"
        );
        assert_eq!(
            pages,
            (entries.len() as u64).div_ceil(page_size).max(1),
            "{path}: totalPages"
        );
        if path.is_empty() {
            assert!(first["path"] == "/");
        }
        // folders first, then files, each in byte order, no duplicates
        let folders: Vec<&str> = entries
            .iter()
            .filter(|e| e["folder"] == true)
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        let files: Vec<&str> = entries
            .iter()
            .filter(|e| e["folder"] == false)
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        let order: Vec<&str> = entries.iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert_eq!(
            order,
            [folders.clone(), files.clone()].concat(),
            "{path}: folders first"
        );
        for list in [&folders, &files] {
            let mut sorted = list.to_vec();
            sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            sorted.dedup();
            assert_eq!(*list, sorted, "{path}: byte order, no duplicates");
        }
        let (mut bytes, mut newest, mut count) = (0u64, i64::MIN, 0u64);
        for e in &entries {
            assert_eq!(e["folder"], e["isFolder"]);
            let name = e["name"].as_str().unwrap();
            let child = if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}/{name}")
            };
            let expected_key = if path.is_empty() {
                format!("/{name}")
            } else {
                child.clone()
            };
            assert_eq!(e["key"], expected_key.as_str());
            let size = e["size"].as_u64().unwrap();
            let modified = parse_time(&e["modified"]);
            if e["folder"] == true {
                assert_eq!(e["mime"], "directory");
                let (b, m, c) = walk(client, child.clone(), page_size, out).await;
                assert!(c > 0, "{child}: an empty folder is listed");
                assert_eq!(size, b, "{child}: folder size is the bytes under it");
                assert_eq!(modified, m, "{child}: folder time is the newest under it");
                bytes += b;
                count += c;
                newest = newest.max(m);
            } else {
                out.files.insert(child, (size, modified));
                bytes += size;
                count += 1;
                newest = newest.max(modified);
            }
        }
        (bytes, newest, count)
    })
}

async fn check(server: &TestServer, client: &Client, page_size: u64) -> Walk {
    let mut found = Walk::default();
    let (bytes, _, count) = walk(client, String::new(), page_size, &mut found).await;
    let used = client.used().await;
    assert_eq!(used, bytes, "objectStorageUsed is the sum of the file sizes");
    let org = server.org_entry(&client.org);
    assert_eq!(org["usedBytes"], bytes);
    assert_eq!(org["usedFiles"], count);
    // every listed file answers properties with the same size and time
    for (key, (size, modified)) in &found.files {
        let meta = client.properties(key).await;
        assert_eq!(meta["size"], *size, "{key}");
        assert_eq!(parse_time(&meta["modified"]), *modified, "{key}");
    }
    found
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const SEGMENTS: [&str; 5] = ["a", "b", "a b", "é", "a.b"];

fn random_key(rng: &mut Rng) -> String {
    let depth = 1 + rng.next() % 4;
    (0..depth).map(|_| rng.pick(&SEGMENTS)).collect::<Vec<_>>().join("/")
}

#[derive(Debug, Clone)]
enum Op {
    Set(String, usize),
    Delete(String),
}

fn random_ops(seed: u64, n: usize) -> Vec<Op> {
    let mut rng = Rng(seed | 1);
    (0..n)
        .map(|_| {
            let key = random_key(&mut rng);
            if rng.next().is_multiple_of(4) {
                Op::Delete(key)
            } else {
                Op::Set(key, (rng.next() % 3000) as usize)
            }
        })
        .collect()
}

/// The sentence the model says `op` is refused with (the only refusals a valid key can meet:
/// deleting nothing, a file under a file, a file where a folder is).
fn expected_refusal(model: &BTreeMap<String, usize>, op: &Op) -> String {
    match op {
        Op::Delete(key) => format!("Object not found: {key}"),
        Op::Set(key, _) => {
            let segments: Vec<&str> = key.split('/').collect();
            let file = (1..segments.len())
                .map(|n| segments[..n].join("/"))
                .find(|ancestor| model.contains_key(ancestor));
            match file {
                Some(file) => {
                    format!("Cannot store '{key}': '{file}' is a file, so it cannot also be a folder")
                }
                None => format!("Cannot store '{key}': it is a folder, so it cannot also be a file"),
            }
        }
    }
}

async fn apply(client: &Client, op: &Op, i: usize) -> Reply {
    match op {
        Op::Set(key, size) => client.set_raw(key, &noise(*size, i as u64)).await,
        Op::Delete(key) => client.post_json("object/delete", json!({ "key": key })).await,
    }
}

#[tokio::test]
async fn sequential_random_operations_keep_listings_exact() {
    let page_size = 2;
    let server = TestServer::start_with(Options::new().env("STOWAGE_LIST_PAGE_SIZE", page_size));
    let client = server.client();
    // a model of the store, from the answers
    let mut model: BTreeMap<String, usize> = BTreeMap::new();
    let (mut stored, mut deleted, mut refused) = (0, 0, 0);
    for (i, op) in random_ops(0x5eed, 150).iter().enumerate() {
        let reply = apply(&client, op, i).await;
        assert_eq!(reply.status, 200, "{op:?}: {}", reply.text);
        if reply.body["success"] == true {
            match op {
                Op::Set(key, size) => {
                    stored += 1;
                    model.insert(key.clone(), *size);
                }
                Op::Delete(key) => {
                    deleted += 1;
                    let prefix = format!("{key}/");
                    model.retain(|k, _| k != key && !k.starts_with(&prefix));
                }
            }
        } else {
            refused += 1;
            assert_eq!(reply.failure(), [expected_refusal(&model, op)], "{op:?}");
        }
        if i % 50 == 49 {
            let found = check(&server, &client, page_size).await;
            let sizes: BTreeMap<String, usize> =
                found.files.iter().map(|(k, (s, _))| (k.clone(), *s as usize)).collect();
            assert_eq!(sizes, model, "after operation {i}");
        }
    }
    let found = check(&server, &client, page_size).await;
    let sizes: BTreeMap<String, usize> = found.files.iter().map(|(k, (s, _))| (k.clone(), *s as usize)).collect();
    assert_eq!(sizes, model);
    // the sequence exercised every path
    assert!(
        stored >= 30 && deleted >= 5 && refused >= 10,
        "{stored} stored, {deleted} deleted, {refused} refused"
    );
    // a whole download agrees with the listings
    if !model.is_empty() {
        let zip = client.download(json!(SEGMENTS)).await;
        let zipped: BTreeMap<String, usize> = zip.iter().map(|(k, v)| (k.clone(), v.len())).collect();
        assert_eq!(zipped, model);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_random_operations_keep_listings_exact() {
    let page_size = 3;
    let server = TestServer::start_with(Options::new().env("STOWAGE_LIST_PAGE_SIZE", page_size));
    let client = server.client();
    let ops = random_ops(0xfeed, 240);
    for (batch, chunk) in ops.chunks(16).enumerate() {
        let replies = join_all(chunk.iter().enumerate().map(|(j, op)| {
            let client = client.clone();
            let op = op.clone();
            async move { apply(&client, &op, batch * 16 + j).await }
        }))
        .await;
        for reply in replies {
            assert_eq!(reply.status, 200, "{}", reply.text);
        }
        if batch % 5 == 4 {
            check(&server, &client, page_size).await;
        }
    }
    check(&server, &client, page_size).await;
    // deleting every top-level name empties the store exactly
    for top in SEGMENTS {
        let _ = client.post_json("object/delete", json!({ "key": top })).await;
    }
    assert_eq!(client.list(None).await["objects"], json!([]));
    assert_eq!(client.used().await, 0);
    assert_eq!(server.org_entry(&client.org)["usedFiles"], 0);
}
