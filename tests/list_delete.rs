//! `/object/list` (spec 5.5) and `/object/delete` (spec 5.4).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The answer to a `page` that is not a non-negative integer.
const BAD_PAGE: &str = "Invalid field 'page': it must be a non-negative integer";

async fn tick() {
    // modification times have millisecond resolution: make consecutive writes distinct
    tokio::time::sleep(Duration::from_millis(15)).await;
}

#[tokio::test]
async fn root_listing_and_the_path_echo() {
    let server = TestServer::start();
    let client = server.client();
    client.set("top/child_file", HELLO).await;
    client.set("top/child_directory/grandchild_file", HELLO).await;
    client.set("file.txt", b"abc").await;

    for body in [
        json!({}),
        json!({"path": ""}),
        json!({"path": "/"}),
        json!({"path": null}),
    ] {
        let listing = client.ok("object/list", body.clone()).await;
        assert_eq!(listing["path"], "/", "{body}");
        assert_eq!(names(&listing), ["top", "file.txt"], "{body}");
        let top = entry(&listing, "top");
        assert_eq!(top["key"], "/top", "at the root an entry key is /name");
        assert_eq!(top["folder"], true);
        assert_eq!(top["isFolder"], true);
        assert_eq!(top["mime"], "directory");
        assert_eq!(top["size"], json!(2 * HELLO.len()));
        parse_time(&top["modified"]);
        let file = entry(&listing, "file.txt");
        assert_eq!(file["key"], "/file.txt");
        assert_eq!(file["folder"], false);
        assert_eq!(file["isFolder"], false);
        assert_eq!(file["mime"], "text/plain");
        assert_eq!(file["size"], 3);
        assert_eq!(listing["page"], 0);
        assert_eq!(listing["totalPages"], 1);
        assert_eq!(listing["objectStorageUsed"], json!(2 * HELLO.len() + 3));
    }
    // exactly the documented fields on every entry
    let listing = client.list(None).await;
    for object in objects(&listing) {
        let mut fields: Vec<_> = object.as_object().unwrap().keys().cloned().collect();
        fields.sort();
        assert_eq!(
            fields,
            ["folder", "isFolder", "key", "mime", "modified", "name", "size"],
            "{object}"
        );
    }
}

#[tokio::test]
async fn folders_first_then_files_each_in_byte_order() {
    let server = TestServer::start();
    let client = server.client();
    for name in [
        "b.txt",
        "a.txt",
        "C.txt",
        "_u",
        "Z",
        "é-accent",
        "z",
        "a-b",
        "a0",
        "10",
        "9",
    ] {
        client.set(&format!("r/{name}"), b"f").await;
    }
    for dir in ["zdir", "adir", "Bdir", "édir", "_dir"] {
        client.set(&format!("r/{dir}/x"), b"d").await;
    }
    let listing = client.list(Some("r")).await;
    assert_eq!(
        names(&listing),
        [
            // folders, byte order
            "Bdir",
            "_dir",
            "adir",
            "zdir",
            "édir", // then files, byte order
            "10",
            "9",
            "C.txt",
            "Z",
            "_u",
            "a-b",
            "a.txt",
            "a0",
            "b.txt",
            "z",
            "é-accent",
        ]
    );
    let kinds: Vec<bool> = objects(&listing).iter().map(|o| o["folder"] == true).collect();
    assert_eq!(kinds, [vec![true; 5], vec![false; 11]].concat());
}

#[tokio::test]
async fn only_direct_children_with_folder_sizes_and_times() {
    let server = TestServer::start();
    let client = server.client();
    client.set("m/daily/2024/a.bin", &noise(1000, 1)).await;
    tick().await;
    client.set("m/daily/b.bin", &noise(1048, 2)).await;
    tick().await;
    client.set("m/m1.json", br#"{"hello": "world"}"#).await;
    tick().await;
    client.set("other/x", b"12345").await;

    let listing = client.list(Some("m")).await;
    assert_eq!(listing["path"], "m");
    assert_eq!(names(&listing), ["daily", "m1.json"]);
    let daily = entry(&listing, "daily");
    assert_eq!(daily["key"], "m/daily");
    assert_eq!(daily["size"], 2048, "a folder's size is every byte under it");
    let newest = parse_time(&client.properties("m/daily/b.bin").await["modified"]);
    assert_eq!(parse_time(&daily["modified"]), newest);
    let m1 = entry(&listing, "m1.json");
    assert_eq!(m1["key"], "m/m1.json");
    assert_eq!(m1["mime"], "application/json");
    assert_eq!(m1["size"], 18);
    assert_eq!(m1["modified"], client.properties("m/m1.json").await["modified"]);
    // the usage is the whole organization's, whatever the folder listed
    assert_eq!(listing["objectStorageUsed"], 2048 + 18 + 5);

    // a deeper write moves the folder's time; a folder's time is the newest under it
    tick().await;
    client.set("m/daily/2024/c.bin", b"c").await;
    let newest = parse_time(&client.properties("m/daily/2024/c.bin").await["modified"]);
    let root = client.list(None).await;
    assert_eq!(parse_time(&entry(&root, "m")["modified"]), newest);
    assert_eq!(entry(&root, "m")["size"], 2048 + 18 + 1);
    let listing = client.list(Some("m")).await;
    assert_eq!(parse_time(&entry(&listing, "daily")["modified"]), newest);
    assert_eq!(entry(&listing, "daily")["size"], 2049);
}

#[tokio::test]
async fn folder_time_falls_back_when_the_newest_file_is_deleted() {
    let server = TestServer::start();
    let client = server.client();
    client.set("p/old/one", b"1").await;
    tick().await;
    client.set("p/two", b"22").await;
    tick().await;
    client.set("p/new/three", b"333").await;
    let t_one = parse_time(&client.properties("p/old/one").await["modified"]);
    let t_two = parse_time(&client.properties("p/two").await["modified"]);
    let t_three = parse_time(&client.properties("p/new/three").await["modified"]);
    assert!(t_one < t_two && t_two < t_three);

    let p = |listing: Value| entry(&listing, "p").clone();
    assert_eq!(parse_time(&p(client.list(None).await)["modified"]), t_three);
    client.delete("p/new/three").await;
    let folder = p(client.list(None).await);
    assert_eq!(
        parse_time(&folder["modified"]),
        t_two,
        "falls back to the newest remaining"
    );
    assert_eq!(folder["size"], 3);
    client.delete("p/two").await;
    let folder = p(client.list(None).await);
    assert_eq!(parse_time(&folder["modified"]), t_one);
    assert_eq!(folder["size"], 1);
    // overwriting an old file makes it the newest again
    tick().await;
    client.set("p/old/one", b"1!").await;
    let t_again = parse_time(&client.properties("p/old/one").await["modified"]);
    assert_eq!(parse_time(&p(client.list(None).await)["modified"]), t_again);
}

#[tokio::test]
async fn entry_keys_follow_the_path_as_sent() {
    let server = TestServer::start();
    let client = server.client();
    client.set("a/b/deep/x", b"x").await;
    client.set("a/b/file", b"y").await;
    let cases = [
        ("a/b", "a/b"),
        ("a/b/", "a/b"),
        ("a/b//", "a/b"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b"),
        ("a//b", "a//b"),
        ("a\\b", "a\\b"),
    ];
    for (path, prefix) in cases {
        let listing = client.list(Some(path)).await;
        assert_eq!(listing["path"], path, "the path is echoed as given");
        let keys: Vec<_> = objects(&listing)
            .iter()
            .map(|o| o["key"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(keys, [format!("{prefix}/deep"), format!("{prefix}/file")], "{path:?}");
    }
}

#[tokio::test]
async fn a_missing_path_or_a_file_path_lists_as_empty() {
    let server = TestServer::start();
    let client = server.client();
    client.set("plain", b"x").await;
    client.set("dir/inner", b"y").await;
    for path in [
        "does/not/exist",
        "nothing",
        "plain",
        "plain/below",
        "dir/inner",
        "dir/in",
        "di",
    ] {
        let listing = client.list(Some(path)).await;
        assert_eq!(listing["objects"], json!([]), "{path}");
        assert_eq!(listing["path"], path);
        assert!(listing["totalPages"].as_u64().unwrap() >= 1);
        assert_eq!(listing["objectStorageUsed"], 2);
    }
    // an empty organization lists an empty root
    let other = server.new_tenant("empty", &[]);
    let listing = other.list(None).await;
    assert_eq!(listing["objects"], json!([]));
    assert_eq!(listing["totalPages"], 1);
    assert_eq!(listing["objectStorageUsed"], 0);
    assert_eq!(listing["objectStorageUsedHuman"], "0 B");
}

#[tokio::test]
async fn paging_with_a_small_page_size() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_LIST_PAGE_SIZE", 3));
    let client = server.client();
    for name in ["f5", "f1", "f3", "f2", "f4"] {
        client.set(&format!("pg/{name}"), b"x").await;
    }
    client.set("pg/d2/x", b"x").await;
    client.set("pg/d1/x", b"x").await;

    let page = |n: Value| {
        let client = client.clone();
        async move {
            let reply = client.list_page("pg", n).await;
            reply.ok().clone()
        }
    };
    let p0 = client.list(Some("pg")).await;
    assert_eq!(p0["page"], 0);
    assert_eq!(p0["totalPages"], 3);
    assert_eq!(names(&p0), ["d1", "d2", "f1"]);
    let p0_explicit = page(json!(0)).await;
    assert_eq!(names(&p0_explicit), ["d1", "d2", "f1"]);
    let p1 = page(json!(1)).await;
    assert_eq!(p1["page"], 1);
    assert_eq!(p1["totalPages"], 3);
    assert_eq!(names(&p1), ["f2", "f3", "f4"]);
    let p2 = page(json!(2)).await;
    assert_eq!(names(&p2), ["f5"]);
    assert_eq!(p2["totalPages"], 3);
    for past in [json!(3), json!(10), json!(1_000_000)] {
        let beyond = page(past.clone()).await;
        assert_eq!(beyond["objects"], json!([]), "{past}");
        assert_eq!(beyond["totalPages"], 3);
        assert_eq!(beyond["page"], past);
        assert_eq!(beyond["objectStorageUsed"], 7);
    }
    // a page number as decimal text (form bodies send text)
    assert_eq!(names(&page(json!("1")).await), ["f2", "f3", "f4"]);
    let form = client
        .post_form(
            "object/list",
            &[("organizationId", &client.org), ("path", "pg"), ("page", "2")],
        )
        .await;
    assert_eq!(names(form.ok()), ["f5"]);

    for bad in [
        json!(-1),
        json!(1.5),
        json!("-1"),
        json!("x"),
        json!("1.0"),
        json!(true),
        json!([1]),
        json!({}),
    ] {
        assert_eq!(
            client.list_page("pg", bad.clone()).await.failure(),
            [BAD_PAGE],
            "page {bad}"
        );
    }
    let form = client
        .post_form(
            "object/list",
            &[("organizationId", &client.org), ("path", "pg"), ("page", "-2")],
        )
        .await;
    assert_eq!(form.failure(), [BAD_PAGE]);

    // a folder with exactly a page of entries has one page; an empty one has one page too
    for name in ["a", "b", "c"] {
        client.set(&format!("three/{name}"), b"x").await;
    }
    assert_eq!(client.list(Some("three")).await["totalPages"], 1);
    assert_eq!(page_count(&client, "nowhere").await, 1);
    // the root: pg, three
    assert_eq!(page_count(&client, "").await, 1);
}

async fn page_count(client: &Client, path: &str) -> u64 {
    client.list(Some(path)).await["totalPages"].as_u64().unwrap()
}

#[tokio::test]
async fn storage_used_and_its_human_form() {
    let server = TestServer::start();
    let client = server.client();
    let human = |listing: &Value| listing["objectStorageUsedHuman"].as_str().unwrap().to_owned();
    let listing = client.list(None).await;
    assert_eq!(listing["objectStorageUsed"], 0);
    assert_eq!(human(&listing), "0 B");
    let steps: [(usize, u64, &str); 6] = [
        (512, 512, "512 B"),
        (999, 999, "999 B"),
        (1000, 1000, "1.00 KB"),
        (1500, 1500, "1.50 KB"),
        (900_000, 900_000, "900.00 KB"),
        (2_270_000, 2_270_000, "2.27 MB"),
    ];
    for (size, used, text) in steps {
        client.set("usage/blob", &vec![b'u'; size]).await;
        let listing = client.list(Some("usage")).await;
        assert_eq!(listing["objectStorageUsed"], used, "{size}");
        assert!(listing["objectStorageUsed"].is_u64());
        assert_eq!(human(&listing), text, "{size}");
    }
    client.set("usage/second", &vec![b'v'; 3_000_000]).await;
    let listing = client.list(None).await;
    assert_eq!(listing["objectStorageUsed"], 5_270_000);
    assert_eq!(human(&listing), "5.27 MB");
}

#[tokio::test]
async fn delete_a_file() {
    let server = TestServer::start();
    let client = server.client();
    client.set("d/keep", b"keep").await;
    client.set("d/gone", b"gone!").await;
    assert_eq!(client.used().await, 9);
    let reply = client.post_json("object/delete", json!({"key": "d/gone"})).await;
    assert_eq!(reply.ok(), &json!({"success": true, "errors": []}));
    assert_eq!(client.used().await, 4, "usage drops at once");
    assert_eq!(server.org_entry(&client.org)["usedFiles"], 1);
    assert_eq!(
        client.fails("object/properties", json!({"key": "d/gone"})).await,
        ["Object not found: d/gone"]
    );
    assert_eq!(client.names("d").await, ["keep"]);
    assert_eq!(entry(&client.list(None).await, "d")["size"], 4);
    // a second delete is an ordinary failure naming the key
    assert_eq!(
        client.fails("object/delete", json!({"key": "d/gone"})).await,
        ["Object not found: d/gone"]
    );
}

#[tokio::test]
async fn delete_a_folder_subtree() {
    let server = TestServer::start();
    let client = server.client();
    client.set("tree/a", b"a").await;
    client.set("tree/sub/b", b"bb").await;
    client.set("tree/sub/deeper/c", b"ccc").await;
    // neighbours whose names share the prefix must survive
    client.set("tree.txt", b"1").await;
    client.set("tree0", b"2").await;
    client.set("tree-b/x", b"3").await;
    client.set("treehouse/y", b"4").await;
    client.set("other/tree/z", b"5").await;
    assert_eq!(client.used().await, 11);

    client.delete("/tree/").await;
    for key in ["tree/a", "tree/sub/b", "tree/sub/deeper/c"] {
        assert_eq!(
            client.fails("object/properties", json!({"key": key})).await,
            [format!("Object not found: {key}")]
        );
    }
    for key in ["tree.txt", "tree0", "tree-b/x", "treehouse/y", "other/tree/z"] {
        client.properties(key).await;
    }
    assert_eq!(client.used().await, 5);
    assert_eq!(server.org_entry(&client.org)["usedFiles"], 5);
    assert_eq!(
        client.names("").await,
        ["other", "tree-b", "treehouse", "tree.txt", "tree0"]
    );
    assert_eq!(client.list(Some("tree")).await["objects"], json!([]));
    assert_eq!(
        client.fails("object/delete", json!({"key": "tree"})).await,
        ["Object not found: tree"]
    );
    // a prefix that is not a folder is not a folder
    for key in ["tree-", "treeh"] {
        assert_eq!(
            client.fails("object/delete", json!({ "key": key })).await,
            [format!("Object not found: {key}")]
        );
    }
    assert_eq!(client.used().await, 5);
    // the root cannot be deleted by an empty key
    assert_eq!(
        client.fails("object/delete", json!({"key": "/"})).await,
        ["Invalid key '/': the key is empty"]
    );
    assert_eq!(client.used().await, 5);
}

#[tokio::test]
async fn empty_parent_folders_disappear() {
    let server = TestServer::start();
    let client = server.client();
    client.set("a/b/c/only", b"x").await;
    client.set("a/sibling", b"y").await;
    client.delete("a/b/c/only").await;
    assert_eq!(client.names("a").await, ["sibling"], "b and c held nothing else");
    assert_eq!(client.list(Some("a/b")).await["objects"], json!([]));
    client.delete("a/sibling").await;
    assert_eq!(client.list(None).await["objects"], json!([]));
    assert_eq!(client.used().await, 0);
    assert_eq!(
        client.fails("object/delete", json!({"key": "a"})).await,
        ["Object not found: a"]
    );
    // a file can now take the name of the vanished folder
    client.set("a", b"file").await;
    assert_eq!(client.names("").await, ["a"]);
}

#[tokio::test]
async fn missing_key_or_field_on_delete_is_an_ordinary_failure() {
    let server = TestServer::start();
    let client = server.client();
    assert_eq!(
        client.fails("object/delete", json!({"key": "never-existed"})).await,
        ["Object not found: never-existed"]
    );
    for body in [json!({}), json!({"key": null})] {
        assert_eq!(
            client.fails("object/delete", body).await,
            ["Missing required field 'key'"]
        );
    }
}
