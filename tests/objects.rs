//! `/object/set` and `/object/properties` (spec 5.1, 5.2) and the key rules (spec 4).

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn set_then_properties() {
    let server = TestServer::start();
    let client = server.client();
    let before = now_ms();
    client.set("test_key_1", HELLO).await;
    let after = now_ms();
    let meta = client.properties("test_key_1").await;
    assert_eq!(meta["key"], "test_key_1");
    assert_eq!(meta["size"], json!(13));
    assert!(meta["size"].is_u64(), "size is an integer");
    assert_eq!(meta["md5"], HELLO_MD5);
    assert_eq!(meta["mime"], "text/plain");
    assert_eq!(meta["preview"], "Hello, world!");
    let created = parse_time(&meta["created"]);
    let modified = parse_time(&meta["modified"]);
    assert!(
        created >= before - 1000 && created <= after + 1000,
        "{created} not in [{before}, {after}]"
    );
    assert_eq!(modified, created, "a first write creates and modifies at once");
    let keys: Vec<_> = meta.as_object().unwrap().keys().cloned().collect();
    for field in ["key", "modified", "created", "size", "md5", "mime", "preview"] {
        assert!(keys.contains(&field.to_owned()), "metadata has {field}: {meta}");
    }
}

#[tokio::test]
async fn mime_by_extension_else_by_content() {
    let server = TestServer::start();
    let client = server.client();
    let binary = noise(5000, 1);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("m/model.json", br#"{"a": 1}"#.to_vec(), "application/json"),
        ("m/MODEL.JSON", br#"{"a": 1}"#.to_vec(), "application/json"),
        ("m/data.csv", b"a,b\n1,2\n".to_vec(), "text/csv"),
        ("m/Data.Csv", b"a,b\n".to_vec(), "text/csv"),
        ("m/page.html", b"<p>hi</p>".to_vec(), "text/html"),
        ("m/notes", b"plain words".to_vec(), "text/plain"),
        ("m/notes.zzqx", b"plain words".to_vec(), "text/plain"),
        ("m/notes.", b"plain words".to_vec(), "text/plain"),
        ("m/weights", binary.clone(), "application/octet-stream"),
        ("m/weights.zzqx", binary.clone(), "application/octet-stream"),
        ("m/binary.json", binary.clone(), "application/json"),
    ];
    for (key, data, mime) in &cases {
        client.set(key, data).await;
        let meta = client.properties(key).await;
        assert_eq!(meta["mime"], *mime, "{key}");
        assert_eq!(meta["size"], json!(data.len()), "{key}");
        assert_eq!(meta["md5"], md5_hex(data), "{key}");
    }
    // binary content has no preview, whatever the extension
    for key in ["m/weights", "m/weights.zzqx", "m/binary.json"] {
        assert_eq!(client.properties(key).await["preview"], Value::Null, "{key}");
    }
    assert_eq!(client.properties("m/model.json").await["preview"], r#"{"a": 1}"#);
}

#[tokio::test]
async fn text_is_judged_on_the_first_4_kib() {
    let server = TestServer::start();
    let client = server.client();

    // a NUL byte early: binary
    client.set("nul-early", b"abc\0def").await;
    let meta = client.properties("nul-early").await;
    assert_eq!(meta["preview"], Value::Null);
    assert_eq!(meta["mime"], "application/octet-stream");

    // invalid UTF-8 early: binary
    client.set("latin1", b"caf\xe9 cr\xe8me").await;
    assert_eq!(client.properties("latin1").await["preview"], Value::Null);

    // a NUL byte after the first 4 KiB: still text
    let mut late = vec![b'a'; 5000];
    late[4500] = 0;
    client.set("nul-late", &late).await;
    let meta = client.properties("nul-late").await;
    assert_eq!(meta["mime"], "text/plain");
    assert_eq!(meta["preview"], "a".repeat(1024));

    // a character cut by the 4 KiB boundary: still text
    let mut cut = "a".repeat(4095).into_bytes();
    cut.extend_from_slice("€ and more".as_bytes());
    client.set("cut", &cut).await;
    assert_eq!(client.properties("cut").await["preview"], "a".repeat(1024));

    // empty content is text
    client.set("empty", b"").await;
    let meta = client.properties("empty").await;
    assert_eq!(meta["size"], 0);
    assert_eq!(meta["md5"], "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(meta["mime"], "text/plain");
    assert_eq!(meta["preview"], "");
}

#[tokio::test]
async fn preview_is_the_first_kib_cut_at_a_character_boundary() {
    let server = TestServer::start();
    let client = server.client();
    let cases = [
        ("short.txt", "short text".to_owned(), "short text".to_owned()),
        ("exact.txt", "x".repeat(1024), "x".repeat(1024)),
        ("long.txt", "y".repeat(3000), "y".repeat(1024)),
        ("two-byte.txt", "é".repeat(3000), "é".repeat(512)),
        // 3-byte characters: byte 1024 falls inside the 342nd, so 341 whole ones
        ("three-byte.txt", "€".repeat(1000), "€".repeat(341)),
        ("four-byte.txt", "😀".repeat(300), "😀".repeat(256)),
        (
            "mixed.txt",
            format!("{}{}", "a".repeat(1023), "é".repeat(10)),
            "a".repeat(1023),
        ),
    ];
    for (key, content, preview) in cases {
        client.set(key, content.as_bytes()).await;
        let got = client.properties(key).await["preview"].as_str().unwrap().to_owned();
        assert!(got.len() <= 1024, "{key}");
        assert_eq!(got, preview, "{key}");
    }
}

#[tokio::test]
async fn overwrite_keeps_created_and_advances_modified() {
    let server = TestServer::start();
    let client = server.client();
    client.set("state", b"first").await;
    let first = client.properties("state").await;
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let blob = noise(3000, 7);
    client.set("state", &blob).await;
    let second = client.properties("state").await;
    assert_eq!(second["created"], first["created"]);
    assert!(
        parse_time(&second["modified"]) > parse_time(&first["modified"]),
        "{first} then {second}"
    );
    assert_eq!(second["size"], json!(blob.len()));
    assert_eq!(second["md5"], md5_hex(&blob));
    assert_eq!(second["mime"], "application/octet-stream");
    assert_eq!(second["preview"], Value::Null);
    // the usage counts the new size only
    assert_eq!(client.used().await, blob.len() as u64);
    assert_eq!(server.org_entry(&client.org)["usedFiles"], 1);
}

#[tokio::test]
async fn keys_are_normalized_on_every_endpoint() {
    let server = TestServer::start();
    let client = server.client();
    client.set("/a//b", b"one").await;
    for spelling in ["a/b", "/a/b", "a//b", "//a///b", "a\\b", "\\a\\b"] {
        let meta = client.properties(spelling).await;
        assert_eq!(meta["key"], "a/b", "{spelling}");
        assert_eq!(meta["md5"], md5_hex(b"one"));
    }
    client.set("x\\y\\z", b"two").await;
    assert_eq!(client.properties("x/y/z").await["key"], "x/y/z");
    // the same key, not a second one
    client.set("a/b", b"three").await;
    assert_eq!(client.properties("/a//b").await["md5"], md5_hex(b"three"));
    assert_eq!(server.org_entry(&client.org)["usedFiles"], 2);
    assert_eq!(client.names("").await, ["a", "x"]);
    client.delete("\\x//y/z").await;
    assert_eq!(
        client.fails("object/properties", json!({"key": "x/y/z"})).await,
        ["Object not found: x/y/z"]
    );
}

#[tokio::test]
async fn properties_of_a_missing_key_or_a_folder_is_an_ordinary_failure() {
    let server = TestServer::start();
    let client = server.client();
    client.set("dir/file", b"x").await;
    let errors = client
        .fails("object/properties", json!({"key": "dir/nothing-here"}))
        .await;
    assert!(errors[0].contains("dir/nothing-here"), "names the key: {errors:?}");
    for folder in ["dir", "/dir", "dir/"] {
        let errors = client.fails("object/properties", json!({"key": folder})).await;
        assert!(errors[0].contains("dir"), "{errors:?}");
        assert!(
            errors[0].to_lowercase().contains("folder"),
            "says it is a folder: {errors:?}"
        );
    }
}

#[tokio::test]
async fn unicode_and_spaces_are_fine() {
    let server = TestServer::start();
    let client = server.client();
    let key = "résumé 2024/Δ model #1.txt";
    client.set(key, b"ok").await;
    assert_eq!(client.properties(key).await["key"], key);
    assert_eq!(client.names("résumé 2024").await, ["Δ model #1.txt"]);
    client.set(" leading and trailing ", b"ok").await;
    assert_eq!(
        client.properties(" leading and trailing ").await["key"],
        " leading and trailing "
    );
    // only U+0000-U+001F and U+007F are refused: other code points, C1 controls included, are fine
    for key in [
        "c1/a\u{85}b",
        "c1/a\u{9f}b",
        "c1/a\u{a0}b",
        "c1/a\u{200b}b",
        "c1/\u{feff}bom",
        "c1/😀",
        "dots/.hidden",
        "dots/.../x",
        "dots/a./b..",
        "dots/..a",
    ] {
        client.set(key, b"ok").await;
        assert_eq!(client.properties(key).await["key"], key);
    }
    assert_eq!(client.names("c1").await.len(), 6);
}

fn rejected_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "",
        "/",
        "//",
        "\\",
        "/\\/",
        ".",
        "..",
        "./x",
        "x/.",
        "a/./b",
        "a/../b",
        "../escape",
        "a/..",
        "a\\..\\b",
        "a\u{0}b",
        "a\u{1}b",
        "a\tb",
        "a\nb",
        "a\rb",
        "a\u{1f}b",
        "a\u{7f}b",
        "trailing/",
        "a/b/",
        "a\\",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    keys.push("k".repeat(1025));
    keys.push(format!("dir/{}", "k".repeat(1021))); // 1025 bytes
    keys.push("é".repeat(513)); // 1026 bytes, 513 characters
    keys.push(vec!["d"; 101].join("/"));
    keys.push(vec!["segment"; 120].join("/"));
    keys
}

#[tokio::test]
async fn every_rejected_key_form_is_an_ordinary_failure_and_stores_nothing() {
    let server = TestServer::start();
    let client = server.client();
    for key in rejected_keys() {
        let reply = client.set_raw(&key, b"x").await;
        let errors = reply.failure();
        assert!(
            errors[0].to_lowercase().contains("key"),
            "{key:?}: a clear error about the key: {errors:?}"
        );
    }
    assert_eq!(client.used().await, 0);
    assert_eq!(client.list(None).await["objects"], json!([]));
    assert_eq!(server.org_entry(&client.org)["usedFiles"], 0);
    assert_eq!(server.blob_files(), 0, "refused uploads leave no body behind");
    assert_eq!(server.staged_files(), 0);
}

#[tokio::test]
async fn rejected_keys_fail_on_the_other_endpoints_too() {
    let server = TestServer::start();
    let client = server.client();
    client.set("a/b", b"x").await;
    for key in ["a/../b", "a/./b", "a\u{0}b", "a\u{7f}b", ".."] {
        let errors = client.fails("object/get", json!({"keys": [key]})).await;
        assert!(errors[0].contains(key), "{key:?}: {errors:?}");
        // The same refusal, naming the key and the rule, on every endpoint.
        assert!(errors[0].starts_with("Invalid key '"), "{key:?}: {errors:?}");
        assert_eq!(client.fails("object/properties", json!({"key": key})).await, errors);
        assert_eq!(client.fails("object/delete", json!({"key": key})).await, errors);
        assert_eq!(client.fails("object/list", json!({"path": key})).await, errors);
    }
    let long = "k".repeat(1025);
    let errors = client.fails("object/properties", json!({"key": long})).await;
    assert!(
        errors.len() == 1 && errors[0].ends_with("': it is 1025 bytes long, the limit is 1024 bytes"),
        "{errors:?}"
    );
    assert_eq!(
        client.fails("object/delete", json!({"key": ""})).await,
        ["Invalid key '': the key is empty"]
    );
    assert_eq!(
        client.fails("object/properties", json!({"key": "/"})).await,
        ["Invalid key '/': the key is empty"]
    );
    assert_eq!(client.properties("a/b").await["size"], 1);
}

#[tokio::test]
async fn the_exact_limits_are_accepted() {
    let server = TestServer::start();
    let client = server.client();
    let longest = "k".repeat(1024);
    let longest_nested = format!("dir/{}", "k".repeat(1020));
    let longest_multibyte = "é".repeat(512);
    let deepest = vec!["d"; 100].join("/");
    assert_eq!(longest_nested.len(), 1024);
    assert_eq!(longest_multibyte.len(), 1024);
    for key in [&longest, &longest_nested, &longest_multibyte, &deepest] {
        client.set(key, b"x").await;
        assert_eq!(client.properties(key).await["key"], json!(key));
    }
    // normalization happens before the limits: a leading slash and doubled slashes do not count
    client.set(&format!("/{}", "m".repeat(1024)), b"x").await;
    client.set(&format!("//{}", vec!["e"; 100].join("//")), b"x").await;
    assert_eq!(server.org_entry(&client.org)["usedFiles"], 6);
}

#[tokio::test]
async fn a_name_is_a_file_or_a_folder_not_both() {
    let server = TestServer::start();
    let client = server.client();
    client.set("f", b"file").await;
    for child in ["f/child", "f/deeper/child", "/f//x"] {
        let errors = client.set_raw(child, b"x").await.failure();
        assert!(errors[0].contains("f"), "{errors:?}");
    }
    client.set("d/child", b"x").await;
    client.set("e/deep/er/child", b"x").await;
    for folder in ["d", "/d", "e", "e/deep", "e/deep/er"] {
        client.set_raw(folder, b"x").await.failure();
    }
    assert_eq!(client.properties("f").await["size"], 4);
    assert_eq!(client.properties("d/child").await["size"], 1);
    assert_eq!(
        client.fails("object/properties", json!({"key": "d"})).await,
        ["d is a folder"]
    );
    assert_eq!(
        client.fails("object/properties", json!({"key": "f/child"})).await,
        ["Object not found: f/child"]
    );
    assert_eq!(client.used().await, 6);
    assert_eq!(server.org_entry(&client.org)["usedFiles"], 3);
    assert_eq!(server.blob_files(), 3, "refused uploads leave no body behind");
    // once the file is gone the name can become a folder, and the other way round
    client.delete("f").await;
    client.set("f/child", b"now a folder").await;
    client.delete("d").await;
    client.set("d", b"now a file").await;
    assert_eq!(client.properties("d").await["size"], 10);
}

#[tokio::test]
async fn a_key_created_again_after_a_delete_gets_a_new_created_time() {
    let server = TestServer::start();
    let client = server.client();
    client.set("phoenix", b"first life").await;
    let first = client.properties("phoenix").await;
    client.delete("phoenix").await;
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    client.set("phoenix", b"second life").await;
    let second = client.properties("phoenix").await;
    assert!(
        parse_time(&second["created"]) > parse_time(&first["created"]),
        "{first} / {second}"
    );
    assert_eq!(second["created"], second["modified"]);
}

/// Readers racing an overwrite see the old or the new content, never a mix.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_see_the_old_or_the_new_content_never_a_mix() {
    let server = TestServer::start();
    let client = server.client();
    let versions: Vec<Vec<u8>> = (0..2).map(|i| noise(400_000, 100 + i)).collect();
    let digests: Vec<String> = versions.iter().map(|v| md5_hex(v)).collect();
    client.set("hot", &versions[0]).await;
    let writer = {
        let client = client.clone();
        let versions = versions.clone();
        tokio::spawn(async move {
            for round in 0..12 {
                client.set("hot", &versions[(round + 1) % 2]).await;
            }
        })
    };
    let readers = (0..3).map(|_| {
        let client = client.clone();
        let versions = versions.clone();
        let digests = digests.clone();
        tokio::spawn(async move {
            for _ in 0..6 {
                let meta = client.properties("hot").await;
                assert!(digests.contains(&meta["md5"].as_str().unwrap().to_owned()), "{meta}");
                assert_eq!(meta["size"], 400_000);
                let got = client.download(json!(["hot"])).await;
                assert!(versions.contains(&got["hot"]), "a download held neither version");
            }
        })
    });
    for reader in readers.collect::<Vec<_>>() {
        reader.await.expect("reader");
    }
    writer.await.expect("writer");
    assert_eq!(client.used().await, 400_000);
}

/// Spec 4: "for files a trailing `/` is an error" on every endpoint. `/object/properties` (and
/// the legacy single-key `/object/get`) name one file, so `f/` does not name the file `f`.
#[tokio::test]
async fn a_trailing_slash_does_not_name_a_file_in_properties() {
    let server = TestServer::start();
    let client = server.client();
    client.set("f", b"file").await;
    client.set("dir/inner", b"x").await;
    for key in ["f/", "/f/", "f//", "f\\"] {
        let refusal = [format!(
            "Invalid key '{key}': a trailing '/' names a folder, and a file key cannot end with '/'"
        )];
        assert_eq!(client.fails("object/properties", json!({"key": key})).await, refusal);
        assert_eq!(client.fails("object/get", json!({"key": key})).await, refusal);
    }
    assert_eq!(
        client.fails("object/properties", json!({"key": "dir/inner/"})).await,
        ["Invalid key 'dir/inner/': a trailing '/' names a folder, and a file key cannot end with '/'"]
    );
    assert_eq!(client.properties("f").await["size"], 4);
}
