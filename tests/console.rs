//! The web console over HTTP, without a browser: sign-in and sessions (cookie attributes, expiry,
//! sign out, sessions ended by a rotated token, a disabled user or a removed membership), the
//! security headers, CSRF and Origin refusals, escaping of hostile names, uploads, downloads,
//! deletes with their confirmation, paging, and every management action's permission check.

mod common;

use common::*;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::json;

/// A browser stand-in: keeps the console's cookies by hand, follows no redirects, and sends the
/// server's own Origin on every POST unless told otherwise.
struct Browser {
    http: reqwest::Client,
    root: String,
    cookies: Vec<(String, String)>,
    csrf: String,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

/// The value of the first hidden `csrf` field of a page.
fn csrf_of(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    html[start..].split('"').next().unwrap().to_owned()
}

impl Browser {
    fn new(server: &TestServer) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            root: format!("http://{}", server.addr),
            cookies: Vec::new(),
            csrf: String::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, page: &Page) {
        for line in page.set_cookies() {
            let pair = line.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(k, _)| k != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    async fn read(response: reqwest::Response) -> Page {
        Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let response = self
            .http
            .get(format!("{}{path}", self.root))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        let page = Browser::read(response).await;
        self.keep_cookies(&page);
        page
    }

    async fn post_from(&mut self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Page {
        let mut request = self
            .http
            .post(format!("{}{path}", self.root))
            .header("cookie", self.cookie_header())
            .form(form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let page = Browser::read(request.send().await.unwrap()).await;
        self.keep_cookies(&page);
        page
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.root.clone();
        self.post_from(path, form, Some(&origin)).await
    }

    /// A state change carrying the session's CSRF token.
    async fn act(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(form);
        self.post(path, &all).await
    }

    async fn try_sign_in(&mut self, user: &str, token: &str, next: &str) -> Page {
        let form = self.get(&format!("/console/sign-in?next={}", urlencode(next))).await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = csrf_of(&form.body);
        self.post(
            "/console/sign-in",
            &[("csrf", &csrf), ("next", next), ("user", user), ("token", token)],
        )
        .await
    }

    async fn signed_in(server: &TestServer, user: &str, token: &str) -> Browser {
        let mut browser = Browser::new(server);
        let answer = browser.try_sign_in(user, token, "/console/").await;
        assert_eq!(answer.status, 303, "{}", answer.body);
        let home = browser.get("/console/").await;
        assert_eq!(home.status, 200, "{}", home.body);
        browser.csrf = csrf_of(&home.body);
        browser
    }

    async fn upload(
        &mut self,
        org: &str,
        key: &str,
        data: Vec<u8>,
        csrf: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = self
            .http
            .put(format!("{}/console/o/{org}/upload?key={}", self.root, urlencode(key)))
            .header("cookie", self.cookie_header())
            .header("origin", self.root.clone())
            .body(data);
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn first_user(server: &TestServer) -> (Browser, Credentials) {
    let c = server.credentials();
    (Browser::signed_in(server, &c.user_id, &c.api_token).await, c)
}

#[tokio::test]
async fn sign_in_sets_a_strict_session_cookie_and_every_page_carries_the_security_headers() {
    let server = TestServer::start();
    let c = server.credentials();
    let mut browser = Browser::new(&server);
    let form = browser.get("/console/sign-in").await;
    assert!(
        form.body.contains(">User ID<") && form.body.contains(">API token<"),
        "{}",
        form.body
    );
    assert!(form.body.contains(">Sign in</button>"));
    let answer = browser.try_sign_in(&c.user_id, &c.api_token, "/console/").await;
    assert_eq!(answer.status, 303);
    assert_eq!(answer.location(), "/console/");
    let session = answer
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("stowage_session="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(attribute), "{session} lacks {attribute}");
    }
    assert!(!session.contains("Secure"), "plain HTTP: no Secure flag: {session}");

    let home = browser.get("/console/").await;
    assert_eq!(home.status, 200);
    let csp = home.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(home.headers["x-frame-options"], "DENY");
    assert_eq!(home.headers["x-content-type-options"], "nosniff");
    assert_eq!(home.headers["cache-control"], "no-store");
    assert!(!home.body.contains("<script>"), "no inline script");
    // The API token never reaches a page after sign-in.
    assert!(!home.body.contains(&c.api_token));
    let folder = browser.get(&format!("/console/o/{}/", c.organization_id)).await;
    assert_eq!(folder.status, 200);
    assert!(!folder.body.contains(&c.api_token));
    let js = browser.get("/console/assets/console.js").await;
    assert_eq!(js.headers["content-type"], "text/javascript; charset=utf-8");
    // An address the console does not have: a page saying so, not the API's JSON.
    let unknown = browser.get("/console/no/such/page").await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        unknown.body.contains("There is no console page at this address"),
        "{}",
        unknown.body
    );
    assert!(unknown.headers.contains_key("content-security-policy"));
}

#[tokio::test]
async fn behind_a_trusted_https_proxy_the_cookie_is_secure() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_TRUSTED_PROXIES", "127.0.0.1"));
    let c = server.credentials();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = format!("http://{}", server.addr);
    let form = http
        .get(format!("{root}/console/sign-in"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let pre = form.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(form.headers()["set-cookie"].to_str().unwrap().contains("; Secure"));
    let csrf = csrf_of(&form.text().await.unwrap());
    let host = server.addr.clone();
    let answer = http
        .post(format!("{root}/console/sign-in"))
        .header("x-forwarded-proto", "https")
        .header("origin", format!("https://{host}"))
        .header("cookie", pre)
        .form(&[("csrf", csrf.as_str()), ("user", &c.user_id), ("token", &c.api_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    let session = answer
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("stowage_session="))
        .unwrap();
    assert!(session.contains("; Secure"), "{session}");
}

#[tokio::test]
async fn a_wrong_token_is_refused_in_words_and_counts_against_the_same_limit_as_the_api() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_AUTH_FAILURE_LIMIT", 3));
    let c = server.credentials();
    let mut browser = Browser::new(&server);
    // As for the API: the failure that reaches the limit is answered 429.
    for _ in 0..2 {
        let answer = browser.try_sign_in(&c.user_id, "not-the-token", "/console/").await;
        assert_eq!(answer.status, 401);
        assert!(
            answer.body.contains("The user ID or the API token is not right"),
            "{}",
            answer.body
        );
        assert!(!answer.set_cookies().iter().any(|c| c.starts_with("stowage_session=")));
    }
    let answer = browser.try_sign_in(&c.user_id, "not-the-token", "/console/").await;
    assert_eq!(answer.status, 429);
    assert!(
        answer.body.contains("Too many failed authentications"),
        "{}",
        answer.body
    );
    // The API counts the same failures.
    let api = server.client_for(&c.user_id, "not-the-token", &c.organization_id);
    assert_eq!(api.authenticate().await.status, 429);
}

#[tokio::test]
async fn an_expired_session_goes_to_sign_in_and_then_back_to_the_page_asked_for() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_CONSOLE_IDLE_TIMEOUT_SECS", 2));
    let (mut browser, c) = first_user(&server).await;
    let asked = format!("/console/o/{}/?path=reports", c.organization_id);
    assert_eq!(browser.get(&asked).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let expired = browser.get(&asked).await;
    assert_eq!(expired.status, 303);
    let sign_in = expired.location().to_owned();
    assert_eq!(sign_in, format!("/console/sign-in?next={}", urlencode(&asked)));
    let next = browser.get(&sign_in).await;
    assert!(
        next.body.contains(&format!("name=\"next\" value=\"{asked}\"")),
        "{}",
        next.body
    );
    let answer = browser.try_sign_in(&c.user_id, &c.api_token, &asked).await;
    assert_eq!(answer.status, 303);
    assert_eq!(answer.location(), asked);
    assert_eq!(browser.get(&asked).await.status, 200);
}

#[tokio::test]
async fn sign_out_ends_the_session_and_the_old_cookie_no_longer_works() {
    let server = TestServer::start();
    let (mut browser, c) = first_user(&server).await;
    let old_cookies = browser.cookies.clone();
    let answer = browser.act("/console/sign-out", &[]).await;
    assert_eq!(answer.status, 303);
    assert_eq!(answer.location(), "/console/sign-in");
    browser.cookies = old_cookies;
    let page = browser.get(&format!("/console/o/{}/", c.organization_id)).await;
    assert_eq!(page.status, 303, "the old cookie still works");
    assert!(page.location().starts_with("/console/sign-in"));
}

#[tokio::test]
async fn rotating_the_token_or_disabling_the_user_ends_sessions_at_once() {
    let server = TestServer::start();
    let c = server.credentials();
    let (user, token) = server.new_user("rotating");
    server.add_member(&c.organization_id, &user, "read");
    let org_page = format!("/console/o/{}/", c.organization_id);

    let mut browser = Browser::signed_in(&server, &user, &token).await;
    assert_eq!(browser.get(&org_page).await.status, 200);
    server.admin(&["user", "rotate-token", "--user", &user]);
    assert_eq!(
        browser.get(&org_page).await.status,
        303,
        "a rotated token ends the session"
    );

    let (other, other_token) = server.new_user("disabled");
    server.add_member(&c.organization_id, &other, "read");
    let mut browser = Browser::signed_in(&server, &other, &other_token).await;
    server.admin(&["user", "disable", "--user", &other]);
    assert_eq!(
        browser.get(&org_page).await.status,
        303,
        "a disabled user's session ends"
    );
    // ... and a disabled user cannot sign in again.
    let again = Browser::new(&server)
        .try_sign_in(&other, &other_token, "/console/")
        .await;
    assert_eq!(again.status, 401);
}

#[tokio::test]
async fn rotating_ones_own_token_shows_it_once_and_ends_the_session() {
    let server = TestServer::start();
    let (mut browser, c) = first_user(&server).await;
    let answer = browser.act("/console/account/rotate", &[]).await;
    assert_eq!(answer.status, 200);
    let start = answer.body.find("<code id=\"new-token\">").unwrap() + "<code id=\"new-token\">".len();
    let token = answer.body[start..].split('<').next().unwrap().to_owned();
    assert_eq!(token.len(), 64);
    // The new token works for the API, the old one does not.
    let api = server.client_for(&c.user_id, &token, &c.organization_id);
    assert_eq!(api.authenticate().await.status, 200);
    let old = server.client_for(&c.user_id, &c.api_token, &c.organization_id);
    assert_eq!(old.authenticate().await.status, 401);
    assert_eq!(browser.get("/console/").await.status, 303);
}

#[tokio::test]
async fn state_changes_without_the_csrf_token_or_the_own_origin_are_refused() {
    let server = TestServer::start();
    let (mut browser, c) = first_user(&server).await;
    let api = server.client();
    api.set("keep/me.txt", b"still here").await;
    let delete = format!("/console/o/{}/delete", c.organization_id);
    let csrf = browser.csrf.clone();

    let no_origin = browser
        .post_from(&delete, &[("csrf", &csrf), ("key", "keep")], None)
        .await;
    assert_eq!(no_origin.status, 403);
    assert!(
        no_origin.body.contains("Origin is missing or another site"),
        "{}",
        no_origin.body
    );
    let foreign = browser
        .post_from(
            &delete,
            &[("csrf", &csrf), ("key", "keep")],
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(foreign.status, 403);
    let wrong_token = browser.post(&delete, &[("csrf", "0000"), ("key", "keep")]).await;
    assert_eq!(wrong_token.status, 403);
    assert!(
        wrong_token.body.contains("CSRF token does not match"),
        "{}",
        wrong_token.body
    );
    let no_token = browser.post(&delete, &[("key", "keep")]).await;
    assert_eq!(no_token.status, 403);
    // The sign-in form needs its own token too.
    let forged_sign_in = Browser::new(&server)
        .post("/console/sign-in", &[("user", &c.user_id), ("token", &c.api_token)])
        .await;
    assert_eq!(forged_sign_in.status, 403);
    // An upload without the header is refused the same way.
    let (status, answer) = browser
        .upload(&c.organization_id, "keep/forged", b"x".to_vec(), None)
        .await;
    assert_eq!(status, 403);
    assert!(answer["error"].as_str().unwrap().contains("CSRF"), "{answer}");
    api.properties("keep/me.txt").await;

    let done = browser.act(&delete, &[("key", "keep")]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(api.fails("object/properties", json!({"key": "keep/me.txt"})).await[0].contains("not found"));
}

#[tokio::test]
async fn folders_list_folders_first_escape_hostile_names_and_page() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_LIST_PAGE_SIZE", 10));
    let (mut browser, c) = first_user(&server).await;
    let api = server.client();
    let hostile = "<img src=x onerror=alert(1)>.txt";
    api.set(&format!("big/{hostile}"), b"<script>alert(2)</script>").await;
    api.set("big/zz-folder/inner", b"1").await;
    for i in 0..23 {
        api.set(&format!("big/file-{i:02}"), b"12345").await;
    }
    let page = browser
        .get(&format!("/console/o/{}/?path=big", c.organization_id))
        .await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(hostile), "the hostile name reached the page raw");
    assert!(
        page.body.contains("&#60;img src=x onerror=alert(1)&#62;.txt")
            || page.body.contains("&lt;img src=x onerror=alert(1)&gt;.txt"),
        "{}",
        page.body
    );
    // Folders first: the folder is the first row although it sorts last by name.
    let folder = page.body.find("zz-folder/").unwrap();
    let file = page.body.find("file-00").unwrap();
    assert!(folder < file);
    assert!(page.body.contains("page 1 of 3"), "{}", page.body);
    // Each file's md5 beside it (md5 of "12345").
    assert!(
        page.body
            .contains("<td class=\"md5\">827ccb0eea8a706c4c34a16891f84e7b</td>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Next page"));
    let last = browser
        .get(&format!("/console/o/{}/?path=big&page=3", c.organization_id))
        .await;
    assert!(last.body.contains("page 3 of 3") && !last.body.contains("Next page"));
    assert!(last.body.contains("Previous page"));
    // Breadcrumbs and the usage bar with figures.
    assert!(
        page.body
            .contains(&format!("href=\"/console/o/{}/\"", c.organization_id))
    );
    assert!(page.body.contains("Files: 25 of 10000"), "{}", page.body);

    let props = browser
        .get(&format!(
            "/console/o/{}/props?key={}",
            c.organization_id,
            urlencode(&format!("big/{hostile}"))
        ))
        .await;
    assert_eq!(props.status, 200);
    assert!(!props.body.contains("<script>alert(2)</script>"));
    assert!(
        props.body.contains("&#60;script&#62;alert(2)&#60;/script&#62;")
            || props.body.contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
        "{}",
        props.body
    );
}

#[tokio::test]
async fn uploads_stream_in_and_downloads_come_back_byte_for_byte() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_MAX_OBJECT_SIZE", 4 * 1024 * 1024));
    let (mut browser, c) = first_user(&server).await;
    let csrf = browser.csrf.clone();
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (status, answer) = browser
        .upload(&c.organization_id, "up/new folder/data.bin", data.clone(), Some(&csrf))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["success"], true);
    let api = server.client();
    let props = api.properties("up/new folder/data.bin").await;
    assert_eq!(props["size"], data.len() as u64);
    assert_eq!(props["md5"], md5_hex(&data));

    let file = browser
        .http
        .get(format!(
            "{}/console/o/{}/file?key={}",
            browser.root,
            c.organization_id,
            urlencode("up/new folder/data.bin")
        ))
        .header("cookie", browser.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(
        file.headers()["content-disposition"],
        "attachment; filename=\"data.bin\"; filename*=UTF-8''data.bin"
    );
    assert_eq!(file.bytes().await.unwrap().to_vec(), data);

    // Refusals come back in words: size limit, key rule, a folder in the way.
    let (status, answer) = browser
        .upload(&c.organization_id, "up/too-big", vec![0; 5 * 1024 * 1024], Some(&csrf))
        .await;
    assert_eq!(status, 413);
    assert!(
        answer["error"].as_str().unwrap().contains("maximum object size"),
        "{answer}"
    );
    let (status, answer) = browser
        .upload(&c.organization_id, "up/", b"x".to_vec(), Some(&csrf))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(!answer["error"].as_str().unwrap().is_empty());
    let (_, answer) = browser
        .upload(&c.organization_id, "up/new folder", b"x".to_vec(), Some(&csrf))
        .await;
    assert!(answer["error"].as_str().unwrap().contains("is a folder"), "{answer}");

    // A folder as a zip: the console makes a job and sends the browser to its signed link.
    let zip = browser
        .act(&format!("/console/o/{}/zip", c.organization_id), &[("key", "up")])
        .await;
    assert_eq!(zip.status, 303, "{}", zip.body);
    assert!(zip.location().contains("/api/v2/download/"), "{}", zip.location());
    let archive = browser.http.get(zip.location()).send().await.unwrap();
    assert_eq!(archive.status(), 200);
    assert_eq!(archive.headers()["content-type"], "application/zip");
    assert!(archive.bytes().await.unwrap().starts_with(b"PK"), "not a zip");
}

#[tokio::test]
async fn quota_refusals_are_shown_in_words() {
    let server = TestServer::start();
    let c = server.credentials();
    let org = server.new_org("small", &["--max-files", "1"]);
    server.add_member(&org, &c.user_id, "read,write,delete");
    let (mut browser, _) = first_user(&server).await;
    let csrf = browser.csrf.clone();
    let (status, _) = browser.upload(&org, "one", b"1".to_vec(), Some(&csrf)).await;
    assert_eq!(status, 200);
    let (status, answer) = browser.upload(&org, "two", b"2".to_vec(), Some(&csrf)).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().to_lowercase().contains("quota"),
        "{answer}"
    );
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

#[tokio::test]
async fn delete_asks_first_saying_how_many_files_and_bytes_go() {
    let server = TestServer::start();
    let (mut browser, c) = first_user(&server).await;
    let api = server.client();
    api.set("old/a.txt", b"12345").await;
    api.set("old/deep/b.txt", b"1234567").await;
    let ask = browser
        .get(&format!("/console/o/{}/delete?key=old", c.organization_id))
        .await;
    assert_eq!(ask.status, 200);
    assert!(ask.body.contains("2 files, 12 B (12 bytes)"), "{}", ask.body);
    let done = browser
        .act(&format!("/console/o/{}/delete", c.organization_id), &[("key", "old")])
        .await;
    assert_eq!(done.status, 303);
    assert_eq!(done.location(), format!("/console/o/{}/", c.organization_id));
    assert_eq!(api.ok("object/list", json!({"path": "/"})).await["objects"], json!([]));
    assert!(api.fails("object/properties", json!({"key": "old/deep/b.txt"})).await[0].contains("not found"));
}

#[tokio::test]
async fn a_read_only_member_is_offered_no_changes_and_forged_ones_are_refused() {
    let server = TestServer::start();
    let c = server.credentials();
    server.client().set("shared/report.txt", b"numbers").await;
    let (user, token) = server.new_user("reader");
    server.add_member(&c.organization_id, &user, "read");
    let mut browser = Browser::signed_in(&server, &user, &token).await;
    let folder = browser
        .get(&format!("/console/o/{}/?path=shared", c.organization_id))
        .await;
    assert_eq!(folder.status, 200);
    assert!(!folder.body.contains("Upload files"));
    assert!(!folder.body.contains(">delete<") && !folder.body.contains("Delete this folder"));
    assert!(
        !folder.body.contains("Members"),
        "a non-admin is offered the members page"
    );
    let csrf = browser.csrf.clone();
    let (status, answer) = browser
        .upload(&c.organization_id, "shared/forged", b"x".to_vec(), Some(&csrf))
        .await;
    assert_eq!(status, 403);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("does not have permission to write"),
        "{answer}"
    );
    let delete = browser
        .act(
            &format!("/console/o/{}/delete", c.organization_id),
            &[("key", "shared")],
        )
        .await;
    assert_eq!(delete.status, 403);
    assert!(
        delete.body.contains("does not have permission to delete"),
        "{}",
        delete.body
    );
    let ask = browser
        .get(&format!("/console/o/{}/delete?key=shared", c.organization_id))
        .await;
    assert_eq!(ask.status, 403);
    server.client().properties("shared/report.txt").await;
}

#[tokio::test]
async fn members_are_managed_by_org_admins_only() {
    let server = TestServer::start();
    let c = server.credentials();
    let org = c.organization_id.clone();
    let members = format!("/console/o/{org}/members");
    let remove = format!("/console/o/{org}/members/remove");
    let (admin_browser, _) = first_user(&server).await;
    let mut admin = admin_browser;
    let (plain, plain_token) = server.new_user("plain");
    server.add_member(&org, &plain, "read,write,delete");
    let (newcomer, newcomer_token) = server.new_user("newcomer");

    // A member without admin: the page and every action are refused.
    let mut member = Browser::signed_in(&server, &plain, &plain_token).await;
    let page = member.get(&members).await;
    assert_eq!(page.status, 403);
    assert!(
        page.body.contains("does not have permission to manage the members"),
        "{}",
        page.body
    );
    for (path, form) in [
        (&members, vec![("user", newcomer.as_str()), ("read", "on")]),
        (
            &members,
            vec![("user", plain.as_str()), ("read", "on"), ("admin", "on")],
        ),
        (&remove, vec![("user", c.user_id.as_str())]),
    ] {
        let answer = member.act(path, &form).await;
        assert_eq!(answer.status, 403, "{path} {form:?}: {}", answer.body);
    }
    let newcomer_api = server.client_for(&newcomer, &newcomer_token, &org);
    assert!(newcomer_api.fails("object/list", json!({})).await[0].contains("Organization not found"));

    // The admin sees members with their permissions, adds one, changes and removes.
    let page = admin.get(&members).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("plain"));
    let added = admin.act(&members, &[("user", &newcomer), ("read", "on")]).await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert!(added.body.contains(&format!("User {newcomer} now has: read.")));
    newcomer_api.ok("object/list", json!({})).await;
    assert!(newcomer_api.set_raw("x", b"1").await.failure()[0].contains("permission to write"));
    admin
        .act(&members, &[("user", &newcomer), ("read", "on"), ("write", "on")])
        .await;
    newcomer_api.set("x", b"1").await;
    let unknown = admin.act(&members, &[("user", "999999"), ("read", "on")]).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("There is no user with id"));
    // The last admin cannot remove themselves.
    let last = admin.act(&remove, &[("user", &c.user_id)]).await;
    assert_eq!(last.status, 400);
    assert!(last.body.contains("without an admin"), "{}", last.body);

    // Removing a member ends their use of the organization at once.
    let mut newcomer_browser = Browser::signed_in(&server, &newcomer, &newcomer_token).await;
    assert_eq!(newcomer_browser.get(&format!("/console/o/{org}/")).await.status, 200);
    let removed = admin.act(&remove, &[("user", &newcomer)]).await;
    assert_eq!(removed.status, 200);
    let after = newcomer_browser.get(&format!("/console/o/{org}/")).await;
    assert_eq!(after.status, 403);
    assert!(after.body.contains("Organization not found or access denied"));
}

#[tokio::test]
async fn several_servers_share_sessions() {
    let Some(servers) = TestServer::start_shared(2, Options::new()) else {
        return;
    };
    let c = servers[0].credentials();
    let mut browser = Browser::signed_in(&servers[0], &c.user_id, &c.api_token).await;
    let mut other = Browser::new(&servers[1]);
    other.cookies = browser.cookies.clone();
    let page = other.get(&format!("/console/o/{}/", c.organization_id)).await;
    assert_eq!(page.status, 200, "the second server does not know the session");
    browser.act("/console/sign-out", &[]).await;
    assert_eq!(other.get("/console/").await.status, 303);
}

#[tokio::test]
async fn a_storage_failure_shows_a_sentence_and_a_retry() {
    if !embedded() {
        eprintln!("note: this test removes a body file of the embedded store; it runs on the embedded backend");
        return;
    }
    let server = TestServer::start();
    let (mut browser, c) = first_user(&server).await;
    // Over the small-body threshold: the body is a file of its own.
    server.client().set("lost/body.bin", &[7u8; 40 * 1024]).await;
    let mut removed = 0;
    let mut dirs = vec![server.data_dir().join("blobs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                dirs.push(path);
            } else if !name.starts_with("small.sqlite3") {
                std::fs::remove_file(&path).unwrap();
                removed += 1;
            }
        }
    }
    assert_eq!(removed, 1);
    let asked = format!("/console/o/{}/file?key=lost%2Fbody.bin", c.organization_id);
    let page = browser.get(&asked).await;
    assert_eq!(page.status, 503);
    assert!(page.body.contains("Storage unavailable"), "{}", page.body);
    assert!(
        page.body.contains(&format!("href=\"{}\"", asked.replace('&', "&#38;")))
            || page.body.contains(&format!("href=\"{asked}\"")),
        "{}",
        page.body
    );
    assert!(page.body.contains("Try again"));
    assert!(!page.body.contains("No such file"), "backend text reached the page");
}

/// A console upload of 1 GiB streams through: the server's peak memory stays far below the
/// body's size, and the stored md5 is the body's.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_one_gib_upload_streams_with_bounded_memory() {
    use futures::StreamExt;
    use md5::Digest;
    const MIB: usize = 1024 * 1024;
    const CHUNK: usize = MIB;
    const SIZE: usize = 1024 * MIB;
    if !embedded() {
        eprintln!("note: the 1 GiB console upload runs on the embedded backend only (CI time)");
        return;
    }
    let server = TestServer::start();
    let (browser, c) = first_user(&server).await;
    let baseline = server.peak_rss().expect("VmHWM");
    let chunk: bytes::Bytes = (0..CHUNK).map(|i| (i % 253) as u8).collect::<Vec<_>>().into();
    let body = {
        let chunk = chunk.clone();
        futures::stream::iter(0..SIZE / CHUNK).map(move |_| Ok::<_, std::io::Error>(chunk.clone()))
    };
    let response = browser
        .http
        .put(format!(
            "{}/console/o/{}/upload?key=big%2Fone-gib.bin",
            browser.root, c.organization_id
        ))
        .header("cookie", browser.cookie_header())
        .header("origin", browser.root.clone())
        .header("x-csrf-token", browser.csrf.clone())
        .header("content-length", SIZE)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let after = server.peak_rss().unwrap();
    eprintln!("server peak memory: {baseline} bytes before, {after} bytes after a 1 GiB upload");
    let mut expected = md5::Md5::new();
    for _ in 0..SIZE / CHUNK {
        expected.update(&chunk);
    }
    let props = server.client().properties("big/one-gib.bin").await;
    assert_eq!(props["size"], SIZE as u64);
    assert_eq!(props["md5"], hex::encode(expected.finalize()));
    assert!(
        after < baseline + 48 * MIB as u64,
        "a 1 GiB console upload raised the server's peak memory from {baseline} to {after} bytes"
    );
}

#[tokio::test]
async fn server_pages_are_for_server_administrators_only() {
    let server = TestServer::start();
    let c = server.credentials();
    let (plain, plain_token) = server.new_user("plain");
    server.admin(&[
        "member",
        "add",
        "--org",
        &c.organization_id,
        "--user",
        &plain,
        "--permissions",
        "read,write,delete",
        "--admin",
    ]);

    // An organization admin who is not a server administrator: nothing, and forged requests fail.
    let mut member = Browser::signed_in(&server, &plain, &plain_token).await;
    let home = member.get("/console/").await;
    assert!(
        !home.body.contains("href=\"/console/server\""),
        "the Server page is offered"
    );
    let page = member.get("/console/server").await;
    assert_eq!(page.status, 403);
    assert!(
        page.body.contains("Only a server administrator can do this"),
        "{}",
        page.body
    );
    for (path, form) in [
        ("/console/server/orgs", vec![("name", "sneaky")]),
        ("/console/server/users", vec![("name", "sneaky")]),
        (
            "/console/server/quota",
            vec![("org", c.organization_id.as_str()), ("max_files", "1")],
        ),
        ("/console/server/users/disable", vec![("user", c.user_id.as_str())]),
    ] {
        let answer = member.act(path, &form).await;
        assert_eq!(answer.status, 403, "{path}: {}", answer.body);
        assert!(
            answer.body.contains("Only a server administrator"),
            "{path}: {}",
            answer.body
        );
    }
    let listed = server.admin(&["org", "list"]);
    assert!(!listed.to_string().contains("sneaky"), "{listed}");

    // The first user is a server administrator.
    let (mut admin, _) = first_user(&server).await;
    let home = admin.get("/console/").await;
    assert!(home.body.contains("href=\"/console/server\""));
    let created = admin.act("/console/server/orgs", &[("name", "research")]).await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert!(
        created.body.contains("Created organization research"),
        "{}",
        created.body
    );
    let duplicate = admin.act("/console/server/orgs", &[("name", "research")]).await;
    assert_eq!(duplicate.status, 400);
    assert!(duplicate.body.contains("already exists"));
    let org = created.body.split("Created organization research (").nth(1).unwrap()[..32].to_owned();
    let quota = admin
        .act(
            "/console/server/quota",
            &[("org", &org), ("max_bytes", "1 KiB"), ("max_files", "3")],
        )
        .await;
    assert_eq!(quota.status, 200, "{}", quota.body);
    let folder = admin.get(&format!("/console/o/{org}/")).await;
    assert!(
        folder.body.contains("of 1.02 KB") && folder.body.contains("Files: 0 of 3"),
        "{}",
        folder.body
    );
    let bad = admin
        .act("/console/server/quota", &[("org", &org), ("max_bytes", "lots")])
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("is not a size"));

    let made = admin.act("/console/server/users", &[("name", "newbie")]).await;
    assert_eq!(made.status, 200);
    let start = made.body.find("<code id=\"new-token\">").unwrap() + "<code id=\"new-token\">".len();
    let token = made.body[start..].split('<').next().unwrap().to_owned();
    let id = made
        .body
        .split("Created user ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let newbie = server.client_for(&id, &token, &org);
    assert_eq!(newbie.authenticate().await.status, 200);
    admin.act("/console/server/users/disable", &[("user", &id)]).await;
    assert_eq!(newbie.authenticate().await.status, 401);
    admin.act("/console/server/users/enable", &[("user", &id)]).await;
    assert_eq!(newbie.authenticate().await.status, 200);
    let own = admin
        .act("/console/server/users/disable", &[("user", &c.user_id)])
        .await;
    assert_eq!(own.status, 400);
    assert!(own.body.contains("cannot disable your own account"));
}
