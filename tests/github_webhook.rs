//! `examples/github_webhook.rs` over real HTTP: the example program is started on port 0 (it
//! prints the address it got), and requests go to it over TCP. Two identical signed
//! deliveries sent at once store one row (one 201, one 200), on SQLite and on PostgreSQL, and
//! every error has its answer. The events after `opened` (`edited`, `synchronize`, `closed`,
//! `reopened`), delivered twice at once, in every order, sequentially and at once, leave the
//! row at the newest event's state, each applied by one delivery at most. Hostile clients (slow headers, idle keep-alive, slow bodies,
//! many held unsigned bodies) are shed without costing memory, while signed deliveries are
//! still answered; a payload the schema cannot store is a 400 on every backend, and one at the
//! edge of what it stores is stored on every backend (SQLite, PostgreSQL and MariaDB).
//!
//! (Over 400 lines: every test here starts the real program and speaks HTTP to it by hand,
//! and the hostile-client tests share its raw-socket helpers.)

#![cfg(all(feature = "postgres", feature = "sqlite"))]

mod common;
mod webhook_support;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TempDir, rows_for, total_rows};
use entity::{PullRequest, pull_requests};
use hmac::{Hmac, KeyInit, Mac};
use sea_orm::prelude::DateTimeWithTimeZone;
use sea_orm::{ColumnTrait, Database, DatabaseConnection, EntityTrait, QueryFilter};
use sha2::Sha256;
use test_support::TestDb;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::timeout;
use webhook_support::example_binary;

const SECRET: &str = "it's a secret to everybody";
const PATH: &str = "/webhooks/github";
/// The receiver's body cap (`MAX_BODY_BYTES` in the example).
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A signature of the right shape that matches nothing: what an attacker who read GitHub's
/// docs, but has no secret, sends to get past the receiver's cheap checks.
const FORGED_SIGNATURE: &str =
    "sha256=0000000000000000000000000000000000000000000000000000000000000000";

/// A running `github_webhook`, killed when dropped.
struct Receiver {
    child: Child,
    addr: String,
    /// What it has logged so far (stderr, line by line).
    log: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    /// Starts the example on `database_url` with port 0 and waits for the line that says
    /// where it listens.
    async fn start(dir: &TempDir, database_url: &str) -> Receiver {
        Receiver::start_with(dir, database_url, &[], None).await
    }

    /// [`Receiver::start`] with more flags, and with `ulimit -n open_files` if given.
    async fn start_with(
        dir: &TempDir,
        database_url: &str,
        flags: &[&str],
        open_files: Option<u32>,
    ) -> Receiver {
        let binary = example_binary("github_webhook");
        let mut command = match open_files {
            // `exec`, so the child is the receiver itself (its pid, its memory).
            Some(limit) => {
                let mut command = Command::new("sh");
                let script = format!("ulimit -n {limit} && exec \"$0\" \"$@\"");
                command.arg("-c").arg(script).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let mut child = command
            .current_dir(&dir.0)
            .args(["--listen", "127.0.0.1:0", "--database-url", database_url])
            .args(flags)
            .env_remove("DATABASE_URL")
            .env("GITHUB_WEBHOOK_SECRET", SECRET)
            .env("RUST_LOG", "warn,github_webhook=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start github_webhook");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let lines = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                eprintln!("github_webhook: {line}");
                lines.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).await.unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Receiver { child, addr, log }
    }

    /// How many lines logged so far contain `text`.
    fn logged(&self, text: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|line| line.contains(text)).count()
    }

    /// Lines containing `text` once there are at least `at_least` of them, or after 5 s: the
    /// server writes its log line after it closed the connection, so the last ones may arrive
    /// just after the client saw the close.
    async fn logged_at_least(&self, text: &str, at_least: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let count = self.logged(text);
            if count >= at_least || Instant::now() >= deadline {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A request: `head` (header lines, each ending in CRLF, without Host and Connection),
    /// then `body`.
    fn request(&self, head: &str, body: &[u8]) -> Vec<u8> {
        let mut bytes = format!(
            "POST {PATH} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{head}\r\n",
            self.addr
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }

    /// A request with these headers and a body of its own length.
    fn delivery(&self, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut head = format!("Content-Length: {}\r\n", body.len());
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        self.request(&head, body)
    }

    /// A correctly signed delivery of `body`.
    fn signed_delivery(&self, event: &str, delivery: &str, body: &[u8]) -> Vec<u8> {
        let signature = sign(SECRET, body);
        self.delivery(
            &[
                ("Content-Type", "application/json"),
                ("X-GitHub-Event", event),
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", &signature),
            ],
            body,
        )
    }

    /// Sends `request` on a connection of its own and returns the status code and the body
    /// of the answer.
    async fn send(&self, request: Vec<u8>) -> (u16, String) {
        let stream = TcpStream::connect(&self.addr).await.unwrap();
        exchange(stream, &request).await
    }

    /// A delivery with these headers.
    async fn deliver(&self, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        self.send(self.delivery(headers, body)).await
    }

    /// A correctly signed delivery.
    async fn signed(&self, event: &str, delivery: &str, body: &[u8]) -> (u16, String) {
        self.send(self.signed_delivery(event, delivery, body)).await
    }

    /// Sends `requests` so that they arrive at the same moment: each on its own connection,
    /// all but the last byte first (the server parses the headers and its handler waits for
    /// the rest of the body), then every last byte, back to back. The handlers then run
    /// together, as when GitHub delivers twice to two workers; no sleeps involved.
    async fn send_at_once(&self, requests: Vec<Vec<u8>>) -> Vec<(u16, String)> {
        let mut held = Vec::new();
        for request in requests {
            let mut stream = TcpStream::connect(&self.addr).await.unwrap();
            let (all_but_last, last) = request.split_at(request.len() - 1);
            stream.write_all(all_but_last).await.unwrap();
            held.push((stream, last.to_vec()));
        }
        let mut answers = tokio::task::JoinSet::new();
        for (index, (stream, last)) in held.into_iter().enumerate() {
            answers.spawn(async move { (index, exchange(stream, &last).await) });
        }
        let mut answers = answers.join_all().await;
        answers.sort_by_key(|(index, _)| *index);
        answers.into_iter().map(|(_, answer)| answer).collect()
    }
}

/// Writes `bytes` on `stream` while reading the answer, so a server that answers before
/// reading the whole body (413) is heard; returns the status code and the answer's body.
async fn exchange(stream: TcpStream, bytes: &[u8]) -> (u16, String) {
    let (mut reader, mut writer) = stream.into_split();
    // Not shut down (nor dropped, which shuts it down) before the answer is read: hyper takes
    // a half-closed connection for a client that left.
    let write = async {
        // The server may close before reading everything (413): not an error here.
        let _ = writer.write_all(bytes).await;
    };
    let read = async {
        let mut response = Vec::new();
        // A reset after the answer (the rest of a rejected body was unread) is fine too: what
        // was read up to it stays in `response`.
        let _ = reader.read_to_end(&mut response).await;
        response
    };
    let ((), response) = tokio::join!(write, read);
    drop(writer);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    (status, body)
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`, as GitHub signs.
fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// A GitHub `pull_request` payload (the fields the receiver reads, and some it does not).
fn payload(action: &str, pr_id: i64) -> Vec<u8> {
    serde_json::json!({
        "action": action,
        "number": 7,
        "pull_request": {
            "id": pr_id,
            "number": 7,
            "title": "Fix the flaky webhook test",
            "state": "open",
            "updated_at": "2026-11-26T10:00:00Z",
            "user": { "login": "mona", "id": 1 },
            "head": { "sha": "0123456789abcdef0123456789abcdef01234567", "ref": "fix" },
            "html_url": "https://github.com/octo-org/octo-repo/pull/7",
        },
        "repository": { "full_name": "octo-org/octo-repo", "id": 99 },
        "sender": { "login": "mona" },
    })
    .to_string()
    .into_bytes()
}

async fn sqlite(url: &str) -> DatabaseConnection {
    Database::connect(url).await.unwrap()
}

/// Two identical signed deliveries at once (GitHub delivering twice): one 201, one 200, one
/// row, holding the delivery id.
async fn two_at_once(receiver: &Receiver, db: &DatabaseConnection) {
    let body = payload("opened", 4242);
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let request = receiver.signed_delivery("pull_request", delivery, &body);
    let answers = receiver.send_at_once(vec![request.clone(), request]).await;
    let mut statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 201], "{answers:?}");
    let (_, duplicate) = answers.iter().find(|(status, _)| *status == 200).unwrap();
    assert!(
        duplicate.contains("\"status\":\"duplicate\""),
        "{duplicate}"
    );
    assert!(duplicate.contains(delivery), "{duplicate}");
    assert_eq!(rows_for(db, 4242).await, 1);
}

/// A burst: `COPIES` identical deliveries of each of `KEYS` pull requests, all at once. Each
/// pull request is created by exactly one of its deliveries; the others are answered 200.
///
/// This is the test that catches the race: with `create_once` replaced by find-then-insert
/// in the example, the copies of a pull request all miss the row and insert, and all but one
/// fail on the unique constraint (answered 500), so the counts below do not hold.
async fn burst_at_once(receiver: &Receiver, db: &DatabaseConnection) {
    const KEYS: i64 = 10;
    const COPIES: usize = 4;
    const FIRST: i64 = 9_000;
    let mut requests = Vec::new();
    for pr_id in FIRST..FIRST + KEYS {
        let body = payload("opened", pr_id);
        let request = receiver.signed_delivery("pull_request", &format!("d-{pr_id}"), &body);
        requests.extend(std::iter::repeat_n(request, COPIES));
    }
    let answers = receiver.send_at_once(requests).await;
    let count = |code: u16| answers.iter().filter(|(status, _)| *status == code).count();
    assert_eq!(
        (count(201), count(200)),
        (KEYS as usize, KEYS as usize * (COPIES - 1)),
        "{answers:?}"
    );
    for pr_id in FIRST..FIRST + KEYS {
        assert_eq!(rows_for(db, pr_id).await, 1, "pr_id {pr_id}");
    }
}

#[tokio::test]
async fn identical_deliveries_at_once_store_one_row_on_sqlite() {
    let dir = TempDir::new("webhook-sqlite");
    let url = dir.sqlite_url("receiver.db");
    let receiver = Receiver::start(&dir, &url).await;
    let db = sqlite(&url).await;
    two_at_once(&receiver, &db).await;
    burst_at_once(&receiver, &db).await;
}

#[tokio::test]
async fn identical_deliveries_at_once_store_one_row_on_postgres() {
    let test_db = TestDb::new().await;
    let dir = TempDir::new("webhook-pg");
    let receiver = Receiver::start(&dir, &test_db.url).await;
    let db = test_db.connect(1).await;
    two_at_once(&receiver, &db).await;
    burst_at_once(&receiver, &db).await;
}

/// Every answer that is not 201/200, and that none of them writes a row.
#[tokio::test]
async fn each_error_has_its_answer_and_writes_nothing() {
    let dir = TempDir::new("webhook-errors");
    let url = dir.sqlite_url("errors.db");
    let receiver = Receiver::start(&dir, &url).await;
    let body = payload("opened", 1);
    let delivery = ("X-GitHub-Delivery", "d-1");
    let event = ("X-GitHub-Event", "pull_request");
    let good = sign(SECRET, &body);

    // 401: no signature, a wrong one, one with another secret, a malformed one.
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    for (label, signature, sent) in [
        ("missing", None, &body),
        ("another secret", Some(sign("guess", &body)), &body),
        ("body changed after signing", Some(good.clone()), &tampered),
        ("not hex", Some("sha256=zz".repeat(2)), &body),
        (
            "wrong algorithm",
            Some(good.replace("sha256=", "sha1=")),
            &body,
        ),
        ("truncated", Some(good[..good.len() - 2].to_owned()), &body),
    ] {
        let mut headers = vec![event, delivery];
        if let Some(signature) = &signature {
            headers.push(("X-Hub-Signature-256", signature));
        }
        let (status, _) = receiver.deliver(&headers, sent).await;
        assert_eq!(status, 401, "{label}");
    }

    // 400: headers GitHub always sends are missing; the payload is malformed or unstorable.
    let signature = ("X-Hub-Signature-256", good.as_str());
    let (status, _) = receiver.deliver(&[delivery, signature], &body).await;
    assert_eq!(status, 400, "no X-GitHub-Event");
    let (status, _) = receiver.deliver(&[event, signature], &body).await;
    assert_eq!(status, 400, "no X-GitHub-Delivery");
    for (label, bad) in [
        ("not JSON", b"{\"action\": \"opened\"".to_vec()),
        ("no pull_request", br#"{"action":"opened"}"#.to_vec()),
        (
            "sha not hex",
            String::from_utf8(payload("opened", 2))
                .unwrap()
                .replace("0123456789abcdef0123456789abcdef01234567", "not-a-sha")
                .into_bytes(),
        ),
        (
            "updated_at not a time",
            String::from_utf8(payload("closed", 2))
                .unwrap()
                .replace("2026-11-26T10:00:00Z", "yesterday")
                .into_bytes(),
        ),
        (
            "number 0",
            String::from_utf8(payload("opened", 3))
                .unwrap()
                .replace("\"number\":7", "\"number\":0")
                .into_bytes(),
        ),
    ] {
        let (status, answer) = receiver.signed("pull_request", "d-2", &bad).await;
        assert_eq!(status, 400, "{label}: {answer}");
    }

    // 202: events and actions the receiver ignores (still authenticated first).
    let (status, _) = receiver
        .signed("ping", "d-3", br#"{"zen":"Keep it logically awesome."}"#)
        .await;
    assert_eq!(status, 202, "ping");
    let (status, _) = receiver
        .signed("pull_request", "d-4", &payload("labeled", 4))
        .await;
    assert_eq!(status, 202, "labeled");

    // 413: a body declared too large is refused before it is read; a chunked body is cut off
    // once it passes the cap.
    let head = format!(
        "Content-Length: {}\r\nX-GitHub-Event: pull_request\r\n",
        MAX_BODY_BYTES + 1
    );
    let (status, _) = receiver.send(receiver.request(&head, b"")).await;
    assert_eq!(status, 413, "declared too large");
    let mut chunked = Vec::new();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..(MAX_BODY_BYTES / chunk.len() + 1) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    // (With a signature of the right shape: without one, the receiver answers 401 before
    // reading any body.)
    let head = format!(
        "Transfer-Encoding: chunked\r\nX-GitHub-Event: pull_request\r\n\
         X-Hub-Signature-256: {FORGED_SIGNATURE}\r\n"
    );
    let (status, _) = receiver.send(receiver.request(&head, &chunked)).await;
    assert_eq!(status, 413, "chunked past the cap");

    assert_eq!(total_rows(&sqlite(&url).await).await, 0, "nothing written");

    // The receiver still works after all that.
    let (status, _) = receiver.signed("pull_request", "d-5", &body).await;
    assert_eq!(status, 201);
}

/// Without a secret the receiver refuses to start (it would accept forged deliveries).
#[tokio::test]
async fn the_receiver_refuses_to_start_without_a_secret() {
    let dir = TempDir::new("webhook-nosecret");
    let output = Command::new(example_binary("github_webhook"))
        .current_dir(&dir.0)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .env_remove("GITHUB_WEBHOOK_SECRET")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("GITHUB_WEBHOOK_SECRET"));
    assert!(
        !dir.0.join("github_webhook.db").exists(),
        "checked before anything else"
    );
}

/// A secret too short to mean anything is refused like a missing one: a space, a word, and
/// 15 characters padded with whitespace (the minimum is 16, not counting surrounding
/// whitespace). Without the length check, each of these starts a server.
#[tokio::test]
async fn the_receiver_refuses_a_short_secret() {
    for secret in [" ", "s3cret", "  fifteen chars!  "] {
        let dir = TempDir::new("webhook-shortsecret");
        let mut child = Command::new(example_binary("github_webhook"))
            .current_dir(&dir.0)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("DATABASE_URL")
            .env("GITHUB_WEBHOOK_SECRET", secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // A server that (wrongly) starts would run until killed: bound the wait.
        let exited = timeout(Duration::from_secs(30), child.wait()).await;
        let status = exited.unwrap_or_else(|_| panic!("{secret:?}: the server started"));
        assert_eq!(status.unwrap().code(), Some(2), "{secret:?}");
        let mut stderr = String::new();
        let mut pipe = child.stderr.take().unwrap();
        pipe.read_to_string(&mut stderr).await.unwrap();
        assert!(
            stderr.contains("GITHUB_WEBHOOK_SECRET") && stderr.contains("at least 16"),
            "{secret:?}: {stderr}"
        );
        assert!(!dir.0.join("github_webhook.db").exists(), "{secret:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads the schema cannot store

/// A signed payload with a NUL character in each stored string field in turn, then the same
/// delivery again: a 400 each time, naming the field, and no row. Without the check in the
/// example, SQLite stores the title (201) and PostgreSQL fails (500, and 500 again on every
/// redelivery), so both tests fail.
async fn nul_characters_are_refused(receiver: &Receiver, db: &DatabaseConnection) {
    let clean: serde_json::Value = serde_json::from_slice(&payload("opened", 77)).unwrap();
    for (field, pointer) in [
        ("pull_request.title", "/pull_request/title"),
        ("repository.full_name", "/repository/full_name"),
        ("pull_request.user.login", "/pull_request/user/login"),
    ] {
        let mut hostile = clean.clone();
        let value = hostile.pointer_mut(pointer).unwrap();
        *value = "before\u{0}after".into();
        let hostile = hostile.to_string();
        assert!(hostile.contains("\\u0000"), "{hostile}");
        for attempt in ["first delivery", "redelivery"] {
            let (status, answer) = receiver
                .signed("pull_request", "d-nul", hostile.as_bytes())
                .await;
            assert_eq!(status, 400, "{field}, {attempt}: {answer}");
            assert!(answer.contains(field), "{field}, {attempt}: {answer}");
        }
    }
    assert_eq!(rows_for(db, 77).await, 0);
    let clean = clean.to_string();
    let (status, answer) = receiver
        .signed("pull_request", "d-ok", clean.as_bytes())
        .await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn a_nul_character_is_refused_on_sqlite() {
    let dir = TempDir::new("webhook-nul-sqlite");
    let url = dir.sqlite_url("nul.db");
    let receiver = Receiver::start(&dir, &url).await;
    nul_characters_are_refused(&receiver, &sqlite(&url).await).await;
}

#[tokio::test]
async fn a_nul_character_is_refused_on_postgres() {
    let test_db = TestDb::new().await;
    let dir = TempDir::new("webhook-nul-pg");
    let receiver = Receiver::start(&dir, &test_db.url).await;
    nul_characters_are_refused(&receiver, &test_db.connect(1).await).await;
}

/// The stored row of `pr_id`: its title, author, repository and `updated_at`.
async fn stored_fields(
    db: &DatabaseConnection,
    pr_id: i64,
) -> (String, String, String, Option<DateTimeWithTimeZone>) {
    let row = PullRequest::find()
        .filter(pull_requests::Column::PrId.eq(pr_id))
        .one(db)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no row for pr_id {pr_id}"));
    (row.title, row.author, row.repository, row.updated_at)
}

/// Signed, well-formed payloads at the edges of what the schema holds, each answered the same
/// on every backend: stored (201, and read back as sent) or refused (400 naming the field, no
/// row). The limits are the sample schema's on MariaDB (`VARCHAR(255)`: characters; `TEXT`:
/// 65,535 bytes; `DATETIME(6)`: years 1000 to 9999), checked by the receiver everywhere.
///
/// Before, MariaDB answered 500 for three of them where PostgreSQL and SQLite answered 201:
/// an `updated_at` after 2038 (the column was a `TIMESTAMP`), a title over 64 KiB and a login
/// over 255 characters (strict mode's "Data too long"); and PostgreSQL and SQLite stored what
/// MariaDB could not.
async fn payloads_at_the_schemas_edges_are_answered_alike(
    receiver: &Receiver,
    db: &DatabaseConnection,
) {
    let base: serde_json::Value = serde_json::from_slice(&payload("opened", 1)).unwrap();
    let with = |pr_id: i64, pointer: &str, value: serde_json::Value| {
        let mut payload = base.clone();
        payload["pull_request"]["id"] = pr_id.into();
        *payload.pointer_mut(pointer).unwrap() = value;
        payload.to_string()
    };
    // 'é' is two bytes in UTF-8: the title limit counts bytes, the others characters.
    let title_at_limit = format!("{}a", "é".repeat(32_767));
    assert_eq!(title_at_limit.len(), 65_535);
    let stored_cases = [
        (
            "updated_at after 2038",
            with(
                31_001,
                "/pull_request/updated_at",
                "2040-06-01T12:00:00Z".into(),
            ),
        ),
        (
            "updated_at in 9999",
            with(
                31_002,
                "/pull_request/updated_at",
                "9999-12-31T23:59:59Z".into(),
            ),
        ),
        (
            "updated_at in 1000",
            with(
                31_003,
                "/pull_request/updated_at",
                "1000-01-01T00:00:00Z".into(),
            ),
        ),
        (
            "a title of 65,535 bytes",
            with(31_004, "/pull_request/title", title_at_limit.clone().into()),
        ),
        (
            "a login of 255 characters",
            with(31_005, "/pull_request/user/login", "é".repeat(255).into()),
        ),
        (
            "a repository name of 255 characters",
            with(31_006, "/repository/full_name", "é".repeat(255).into()),
        ),
    ];
    for (label, body) in &stored_cases {
        let (status, answer) = receiver
            .signed("pull_request", "d-edge", body.as_bytes())
            .await;
        assert_eq!(status, 201, "{label}: {answer}");
        let sent: serde_json::Value = serde_json::from_str(body).unwrap();
        let pr_id = sent["pull_request"]["id"].as_i64().unwrap();
        let updated_at = DateTimeWithTimeZone::parse_from_rfc3339(
            sent["pull_request"]["updated_at"].as_str().unwrap(),
        )
        .unwrap();
        let expected = (
            sent["pull_request"]["title"].as_str().unwrap().to_owned(),
            sent["pull_request"]["user"]["login"]
                .as_str()
                .unwrap()
                .to_owned(),
            sent["repository"]["full_name"].as_str().unwrap().to_owned(),
            Some(updated_at),
        );
        assert!(
            stored_fields(db, pr_id).await == expected,
            "{label}: stored as sent"
        );
    }

    let refused_cases = [
        (
            "pull_request.updated_at",
            with(
                32_001,
                "/pull_request/updated_at",
                "0999-12-31T23:59:59Z".into(),
            ),
        ),
        (
            "pull_request.updated_at",
            // 10000-01-01T00:59:59Z in UTC.
            with(
                32_002,
                "/pull_request/updated_at",
                "9999-12-31T23:59:59-01:00".into(),
            ),
        ),
        (
            "pull_request.title",
            with(
                32_003,
                "/pull_request/title",
                format!("{title_at_limit}b").into(),
            ),
        ),
        (
            "pull_request.title",
            with(32_004, "/pull_request/title", "x".repeat(70_000).into()),
        ),
        (
            "pull_request.user.login",
            with(32_005, "/pull_request/user/login", "é".repeat(256).into()),
        ),
        (
            "repository.full_name",
            with(32_006, "/repository/full_name", "x".repeat(256).into()),
        ),
    ];
    for (field, body) in &refused_cases {
        for attempt in ["first delivery", "redelivery"] {
            let (status, answer) = receiver
                .signed("pull_request", "d-edge", body.as_bytes())
                .await;
            assert_eq!(status, 400, "{field}, {attempt}: {answer}");
            assert!(answer.contains(field), "{field}, {attempt}: {answer}");
        }
    }
    for pr_id in 32_001..=32_006 {
        assert_eq!(rows_for(db, pr_id).await, 0, "pr_id {pr_id}");
    }
}

#[tokio::test]
async fn payloads_at_the_schemas_edges_are_answered_alike_on_sqlite() {
    let dir = TempDir::new("webhook-edges-sqlite");
    let url = dir.sqlite_url("edges.db");
    let receiver = Receiver::start(&dir, &url).await;
    payloads_at_the_schemas_edges_are_answered_alike(&receiver, &sqlite(&url).await).await;
}

#[tokio::test]
async fn payloads_at_the_schemas_edges_are_answered_alike_on_postgres() {
    let test_db = TestDb::new().await;
    let dir = TempDir::new("webhook-edges-pg");
    let receiver = Receiver::start(&dir, &test_db.url).await;
    payloads_at_the_schemas_edges_are_answered_alike(&receiver, &test_db.connect(1).await).await;
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn payloads_at_the_schemas_edges_are_answered_alike_on_mariadb() {
    let Some(test_db) = TestDb::mysql().await else {
        return;
    };
    let dir = TempDir::new("webhook-edges-mariadb");
    let receiver = Receiver::start(&dir, &test_db.url).await;
    payloads_at_the_schemas_edges_are_answered_alike(&receiver, &test_db.connect(1).await).await;
}

// ---------------------------------------------------------------------------------------------
// The events that follow `opened`: each applied under the pull request's lock, only if newer

/// The actions the receiver applies to a stored pull request.
const UPDATES: [&str; 4] = ["edited", "synchronize", "closed", "reopened"];

/// `updated_at` `t` seconds into the story, as GitHub writes it (whole seconds, UTC).
fn at(t: u32) -> String {
    format!("2026-11-26T10:00:{t:02}Z")
}

/// A signed-ready `pull_request` payload of `action` for `pr_id`, as GitHub sends it after the
/// pull request changed at time `t`: `closed` closes it, every other action leaves it open, and
/// the title and head SHA name `t`, so the stored row tells which event it came from.
fn event(action: &str, pr_id: i64, t: u32) -> Vec<u8> {
    let mut payload: serde_json::Value = serde_json::from_slice(&payload(action, pr_id)).unwrap();
    let pr = &mut payload["pull_request"];
    pr["updated_at"] = at(t).into();
    pr["title"] = format!("As of t={t}").into();
    pr["head"]["sha"] = format!("{t:040x}").into();
    pr["state"] = if action == "closed" { "closed" } else { "open" }.into();
    payload.to_string().into_bytes()
}

/// What the row of `event(action, _, t)` holds: state, title, head SHA, `updated_at`.
fn state_of(action: &str, t: u32) -> (String, String, String, DateTimeWithTimeZone) {
    let state = if action == "closed" { "closed" } else { "open" };
    let updated_at = DateTimeWithTimeZone::parse_from_rfc3339(&at(t)).unwrap();
    (
        state.into(),
        format!("As of t={t}"),
        format!("{t:040x}"),
        updated_at,
    )
}

/// The stored row of `pr_id`, in the shape of [`state_of`].
async fn stored(
    db: &DatabaseConnection,
    pr_id: i64,
) -> (String, String, String, DateTimeWithTimeZone) {
    let row = PullRequest::find()
        .filter(pull_requests::Column::PrId.eq(pr_id))
        .one(db)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no row for pr_id {pr_id}"));
    let updated_at = row
        .updated_at
        .unwrap_or_else(|| panic!("pr_id {pr_id}: no updated_at"));
    (row.state, row.title, row.head_sha, updated_at)
}

/// The `"status"` of an answer's body.
fn status_of(body: &str) -> String {
    let body: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    body["status"].as_str().unwrap_or_default().to_owned()
}

/// A signed delivery of `event(action, pr_id, t)`, with a delivery id of its own.
fn signed_event(receiver: &Receiver, action: &str, pr_id: i64, t: u32) -> Vec<u8> {
    let delivery = format!("d-{pr_id}-{action}-{t}");
    receiver.signed_delivery("pull_request", &delivery, &event(action, pr_id, t))
}

/// Each action delivered `COPIES` times at once, to a stored pull request (opened at t=1) and
/// to one never seen: of the copies, exactly one writes (`updated`, or `created` with 201) and
/// the others answer `unchanged`; the row is the event's. All the batches go at once.
///
/// Catches a check and a write that are not atomic. With the example's update made a find, the
/// same comparison and an UPDATE, without the lock, copies read the same old row and 2 to 4 of
/// the 4 answer `updated`, and copies for the unknown pull request collide on the unique
/// constraint (500): this failed on both backends. Without the newer-than check, all 4 answer
/// `updated`.
async fn each_update_delivered_at_once_writes_once(receiver: &Receiver, db: &DatabaseConnection) {
    const COPIES: usize = 4;
    const STORED: i64 = 20_000;
    const UNKNOWN: i64 = 21_000;
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for (i, action) in UPDATES.into_iter().enumerate() {
        let stored_pr = STORED + i as i64;
        let (status, answer) = receiver
            .send(signed_event(receiver, "opened", stored_pr, 1))
            .await;
        assert_eq!(status, 201, "{answer}");
        for (pr_id, writes_as) in [(stored_pr, "updated"), (UNKNOWN + i as i64, "created")] {
            let request = signed_event(receiver, action, pr_id, 2);
            requests.extend(std::iter::repeat_n(request, COPIES));
            expected.push((action, pr_id, writes_as));
        }
    }
    let answers = receiver.send_at_once(requests).await;
    for ((action, pr_id, writes_as), copies) in expected.into_iter().zip(answers.chunks(COPIES)) {
        let statuses: Vec<String> = copies.iter().map(|(_, body)| status_of(body)).collect();
        let writes = statuses.iter().filter(|s| *s == writes_as).count();
        let unchanged = statuses.iter().filter(|s| *s == "unchanged").count();
        assert_eq!(
            (writes, unchanged),
            (1, COPIES - 1),
            "{action} to {pr_id}: {copies:?}"
        );
        let codes: Vec<u16> = copies.iter().map(|(code, _)| *code).collect();
        let created = codes.iter().filter(|code| **code == 201).count();
        assert_eq!(
            created,
            usize::from(writes_as == "created"),
            "{action}: {codes:?}"
        );
        assert!(
            codes.iter().all(|code| matches!(code, 200 | 201)),
            "{codes:?}"
        );
        assert_eq!(rows_for(db, pr_id).await, 1, "{action} to {pr_id}");
        assert_eq!(
            stored(db, pr_id).await,
            state_of(action, 2),
            "{action} to {pr_id}"
        );
    }
}

/// `opened` (t=1), `edited` (t=2), `closed` (t=3) and `reopened` (t=4), delivered in each of
/// their 24 orders, one pull request per order.
///
/// One by one: whichever arrives first creates the row (201, even `closed`); a later
/// `opened` is a `duplicate`; any other event answers `updated` exactly when it is newer than
/// every event before it, else `unchanged`. At once (each event twice, all orders together):
/// one 201 per pull request, no error, no event applied by both its copies. Either way the row
/// ends as `reopened` at t=4 left it.
///
/// Catches a receiver that applies events in arrival order: without the newer-than check,
/// `closed` (t=3) delivered after `reopened` (t=4) answers `updated` and the row ends closed.
/// Without the lock (see [`each_update_delivered_at_once_writes_once`]) the part at once
/// fails: both copies of an event answer `updated`, or 500s on SQLite.
async fn late_older_events_never_overwrite_newer_ones(
    receiver: &Receiver,
    db: &DatabaseConnection,
) {
    const STORY: [(&str, u32); 4] = [("opened", 1), ("edited", 2), ("closed", 3), ("reopened", 4)];
    let newest = state_of("reopened", 4);
    let orders = permutations(&STORY);
    assert_eq!(orders.len(), 24);

    for (n, order) in orders.iter().enumerate() {
        let pr_id = 30_000 + n as i64;
        let mut newest_so_far = 0;
        for (i, &(action, t)) in order.iter().enumerate() {
            let (code, body) = receiver
                .send(signed_event(receiver, action, pr_id, t))
                .await;
            let expected = match (i, action) {
                (0, _) => (201, "created"),
                (_, "opened") => (200, "duplicate"),
                _ if t > newest_so_far => (200, "updated"),
                _ => (200, "unchanged"),
            };
            newest_so_far = newest_so_far.max(t);
            assert_eq!(
                (code, status_of(&body).as_str()),
                expected,
                "{order:?}, {action}: {body}"
            );
        }
        assert_eq!(stored(db, pr_id).await, newest, "one by one, {order:?}");
    }

    let mut requests = Vec::new();
    for (n, order) in orders.iter().enumerate() {
        let pr_id = 31_000 + n as i64;
        for &(action, t) in order {
            let request = signed_event(receiver, action, pr_id, t);
            requests.extend([request.clone(), request]);
        }
    }
    let answers = receiver.send_at_once(requests).await;
    for (n, (order, answers)) in orders.iter().zip(answers.chunks(8)).enumerate() {
        let pr_id = 31_000 + n as i64;
        let codes: Vec<u16> = answers.iter().map(|(code, _)| *code).collect();
        assert!(
            codes.iter().all(|code| matches!(code, 200 | 201)),
            "{order:?}: {answers:?}"
        );
        assert_eq!(
            codes.iter().filter(|code| **code == 201).count(),
            1,
            "{order:?}: {answers:?}"
        );
        for copies in answers.chunks(2) {
            let wrote = copies
                .iter()
                .filter(|(_, body)| matches!(status_of(body).as_str(), "created" | "updated"))
                .count();
            assert!(wrote <= 1, "one event applied twice, {order:?}: {copies:?}");
        }
        assert_eq!(rows_for(db, pr_id).await, 1);
        assert_eq!(stored(db, pr_id).await, newest, "at once, {order:?}");
    }
}

/// Every order of `items`.
fn permutations<T: Copy>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            all.push(tail);
        }
    }
    all
}

/// Two different events of the same second (`edited` and `closed`, both at t=5, after `opened`
/// at t=1), in both orders, one by one and at once: every pull request ends the same (the
/// receiver's tie-break: the larger payload, here the open one), and a redelivery of either
/// event afterwards changes nothing.
///
/// Catches a tie decided by arrival order (a `>=` check keeps the last one delivered, a `>`
/// check the first one), which leaves these rows different from one another: with `>` on
/// `updated_at` alone, the pull request that got `closed` first ends closed, the others open.
async fn events_of_one_second_settle_alike_in_any_order(
    receiver: &Receiver,
    db: &DatabaseConnection,
) {
    const FIRST: i64 = 40_000;
    const PRS: i64 = 8;
    for pr_id in FIRST..FIRST + PRS {
        let (status, answer) = receiver
            .send(signed_event(receiver, "opened", pr_id, 1))
            .await;
        assert_eq!(status, 201, "{answer}");
    }
    let edited = |pr_id| signed_event(receiver, "edited", pr_id, 5);
    let closed = |pr_id| signed_event(receiver, "closed", pr_id, 5);
    // One by one, edited first and closed first.
    for (pr_id, order) in [
        (FIRST, ["edited", "closed"]),
        (FIRST + 1, ["closed", "edited"]),
    ] {
        for action in order {
            let (status, answer) = receiver
                .send(signed_event(receiver, action, pr_id, 5))
                .await;
            assert_eq!(status, 200, "{answer}");
        }
    }
    // At once, in both orders.
    let mut requests = Vec::new();
    for pr_id in FIRST + 2..FIRST + PRS {
        if pr_id % 2 == 0 {
            requests.extend([edited(pr_id), closed(pr_id)]);
        } else {
            requests.extend([closed(pr_id), edited(pr_id)]);
        }
    }
    for (status, answer) in receiver.send_at_once(requests).await {
        assert_eq!(status, 200, "{answer}");
    }
    for pr_id in FIRST..FIRST + PRS {
        assert_eq!(
            stored(db, pr_id).await,
            state_of("edited", 5),
            "pr_id {pr_id}"
        );
        for redelivery in [edited(pr_id), closed(pr_id)] {
            let (status, answer) = receiver.send(redelivery).await;
            assert_eq!(
                (status, status_of(&answer).as_str()),
                (200, "unchanged"),
                "{answer}"
            );
        }
        assert_eq!(
            stored(db, pr_id).await,
            state_of("edited", 5),
            "pr_id {pr_id}"
        );
    }
}

#[tokio::test]
async fn each_update_delivered_at_once_writes_once_on_sqlite() {
    let dir = TempDir::new("webhook-updates-once-sqlite");
    let url = dir.sqlite_url("updates.db");
    let receiver = Receiver::start(&dir, &url).await;
    each_update_delivered_at_once_writes_once(&receiver, &sqlite(&url).await).await;
}

#[tokio::test]
async fn each_update_delivered_at_once_writes_once_on_postgres() {
    let test_db = TestDb::new().await;
    let dir = TempDir::new("webhook-updates-once-pg");
    let receiver = Receiver::start(&dir, &test_db.url).await;
    each_update_delivered_at_once_writes_once(&receiver, &test_db.connect(1).await).await;
}

#[tokio::test]
async fn late_older_events_never_overwrite_newer_ones_on_sqlite() {
    let dir = TempDir::new("webhook-updates-order-sqlite");
    let url = dir.sqlite_url("order.db");
    let receiver = Receiver::start(&dir, &url).await;
    late_older_events_never_overwrite_newer_ones(&receiver, &sqlite(&url).await).await;
}

#[tokio::test]
async fn late_older_events_never_overwrite_newer_ones_on_postgres() {
    let test_db = TestDb::new().await;
    let dir = TempDir::new("webhook-updates-order-pg");
    let receiver = Receiver::start(&dir, &test_db.url).await;
    late_older_events_never_overwrite_newer_ones(&receiver, &test_db.connect(1).await).await;
}

#[tokio::test]
async fn events_of_one_second_settle_alike_in_any_order_on_sqlite() {
    let dir = TempDir::new("webhook-updates-tie-sqlite");
    let url = dir.sqlite_url("tie.db");
    let receiver = Receiver::start(&dir, &url).await;
    events_of_one_second_settle_alike_in_any_order(&receiver, &sqlite(&url).await).await;
}

#[tokio::test]
async fn events_of_one_second_settle_alike_in_any_order_on_postgres() {
    let test_db = TestDb::new().await;
    let dir = TempDir::new("webhook-updates-tie-pg");
    let receiver = Receiver::start(&dir, &test_db.url).await;
    events_of_one_second_settle_alike_in_any_order(&receiver, &test_db.connect(1).await).await;
}

// ---------------------------------------------------------------------------------------------
// Hostile clients: each test holds many connections the way an attacker without the secret
// would, checks that a signed delivery is answered promptly meanwhile, and that the server
// closes every hostile connection itself. The example runs with short limits, so the tests are
// fast; the defaults are seconds longer.

/// The receiver's header and body timeouts in these tests.
const SHORT: &str = "1s";
/// How soon a signed delivery must be answered while the hostile connections are held: a
/// few times the short timeouts (it may wait for a slot one of them holds).
const PROMPT: Duration = Duration::from_secs(5);
/// How long the hostile connections are watched before one still open fails the test.
const WATCH: Duration = Duration::from_secs(15);
/// An attacker's pace: one byte this often (faster than the timeouts, so a timer restarted at
/// every byte would never fire).
const DRIP: Duration = Duration::from_millis(250);

/// Sends `burst` at once, then `drip` one byte every [`DRIP`] (an idle client if both are
/// empty), while watching for the server to close the connection. Returns what the server
/// sent before closing, or `None` if the connection was still open at `deadline`.
async fn drip_until_closed(
    mut stream: TcpStream,
    (burst, drip): (Vec<u8>, Vec<u8>),
    deadline: Instant,
) -> Option<String> {
    // A server that closes early makes this fail: it shows in the reads below.
    let _ = stream.write_all(&burst).await;
    let mut drip = drip.into_iter();
    let mut received = Vec::new();
    let mut buffer = [0; 64 * 1024];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        if let Some(byte) = drip.next()
            && stream.write_all(&[byte]).await.is_err()
        {
            // Reset by the server: stop dripping, read what it sent before.
            drip = Vec::new().into_iter();
        }
        match timeout(DRIP.min(left), stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => break, // closed (or reset) by the server
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => {} // still open: the next byte
        }
    }
    Some(String::from_utf8_lossy(&received).into_owned())
}

/// Connects `count` clients, each sending `bytes()`: a burst, then a drip (see
/// [`drip_until_closed`]).
async fn hostile_clients(
    receiver: &Receiver,
    count: usize,
    deadline: Instant,
    bytes: impl Fn() -> (Vec<u8>, Vec<u8>),
) -> tokio::task::JoinSet<Option<String>> {
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..count {
        let stream = TcpStream::connect(&receiver.addr).await.unwrap();
        clients.spawn(drip_until_closed(stream, bytes(), deadline));
    }
    clients
}

/// Asserts that the server closed every connection (`ended`, from [`drip_until_closed`])
/// before the deadline, and returns what each received.
fn all_closed_by_the_server(label: &str, ended: Vec<Option<String>>) -> Vec<String> {
    let open = ended.iter().filter(|ended| ended.is_none()).count();
    assert_eq!(open, 0, "{label}: {open} of {} still open", ended.len());
    ended.into_iter().flatten().collect()
}

/// A signed delivery of a new pull request, answered 201 within [`PROMPT`].
async fn signed_delivery_is_answered_promptly(receiver: &Receiver, pr_id: i64) {
    let started = Instant::now();
    let body = payload("opened", pr_id);
    let answer = timeout(
        PROMPT,
        receiver.signed("pull_request", "d-meanwhile", &body),
    )
    .await;
    let (status, answer) = answer.unwrap_or_else(|_| panic!("no answer within {PROMPT:?}"));
    assert_eq!(status, 201, "{answer}");
    eprintln!("signed delivery answered in {:?}", started.elapsed());
}

/// The head of a delivery of `event` whose body is `length` bytes, with this signature.
fn head_with_body(event: &str, length: usize, signature: Option<&str>) -> Vec<u8> {
    let mut head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\
         X-GitHub-Event: {event}\r\nX-GitHub-Delivery: d-hostile\r\n"
    );
    if let Some(signature) = signature {
        head.push_str(&format!("X-Hub-Signature-256: {signature}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Slowloris: clients send a request head one byte at a time, others connect and send
/// nothing, others finish a request and leave the connection idle; more of them than the
/// process has file descriptors for (`ulimit -n 128`). The receiver caps its connections
/// below that limit (here 128 - 64 = 64), sheds each one after the 1 s header timeout, and a
/// signed delivery waiting in the listen backlog is answered within a few seconds.
///
/// Without the fix (`axum::serve`: no header timer, no connection cap) the slow connections
/// stay open until the test gives up, the process runs out of descriptors, and the signed
/// delivery is never even accepted: both assertions fail.
#[tokio::test]
async fn slow_headers_and_idle_connections_are_shed() {
    const SLOW: usize = 100;
    const IDLE: usize = 10;
    const KEPT_ALIVE: usize = 10;
    let dir = TempDir::new("webhook-slowloris");
    let url = dir.sqlite_url("slowloris.db");
    let flags = ["--header-timeout", SHORT];
    let receiver = Receiver::start_with(&dir, &url, &flags, Some(128)).await;
    let deadline = Instant::now() + WATCH;

    // Kept alive: a whole request (a `ping`, answered 202) without `Connection: close`, then
    // nothing. The answer arrives, then the close.
    let ping = br#"{"zen":"Keep it logically awesome."}"#.to_vec();
    let signature = sign(SECRET, &ping);
    let kept_alive = hostile_clients(&receiver, KEPT_ALIVE, deadline, || {
        let mut request = head_with_body("ping", ping.len(), Some(&signature));
        request.extend_from_slice(&ping);
        (request, Vec::new())
    })
    .await;
    let idle = hostile_clients(&receiver, IDLE, deadline, || (Vec::new(), Vec::new())).await;
    let slow = hostile_clients(&receiver, SLOW, deadline, || {
        let mut head = format!("POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Slow: ").into_bytes();
        head.resize(head.len() + 1000, b'a');
        (Vec::new(), head)
    })
    .await;

    signed_delivery_is_answered_promptly(&receiver, 501).await;
    all_closed_by_the_server("slow headers", slow.join_all().await);
    all_closed_by_the_server("idle", idle.join_all().await);
    for answer in all_closed_by_the_server("kept alive", kept_alive.join_all().await) {
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    }
    let shed = receiver
        .logged_at_least("shed a connection", SLOW + IDLE + KEPT_ALIVE)
        .await;
    assert!(shed >= SLOW + IDLE + KEPT_ALIVE, "{shed} sheddings logged");
}

/// Slow bodies: clients with a signature of the right shape (so they get past the cheap
/// checks) send their body one byte at a time, taking every body slot (`--max-bodies 4`);
/// unsigned ones do the same. The unsigned are answered 401 before their body is read; the
/// others 408 after the 1 s body timeout; all are closed by the server, and a signed delivery
/// (which may wait for a slot) is answered meanwhile.
///
/// Without the fix (no body deadline, no signature check before the body) every one of them
/// stays open as long as it drips, and the test fails.
#[tokio::test]
async fn slow_bodies_are_shed() {
    const SLOTS: usize = 4;
    const UNSIGNED: usize = 20;
    let dir = TempDir::new("webhook-slowbody");
    let url = dir.sqlite_url("slowbody.db");
    let slots = SLOTS.to_string();
    let flags = ["--body-timeout", SHORT, "--max-bodies", &slots];
    let receiver = Receiver::start_with(&dir, &url, &flags, None).await;
    let deadline = Instant::now() + WATCH;
    let slow_body = |signature| {
        let head = head_with_body("pull_request", 1000, signature);
        (head, vec![b'x'; 1000])
    };
    let forged = hostile_clients(&receiver, SLOTS, deadline, || {
        slow_body(Some(FORGED_SIGNATURE))
    })
    .await;
    let unsigned = hostile_clients(&receiver, UNSIGNED, deadline, || slow_body(None)).await;

    signed_delivery_is_answered_promptly(&receiver, 502).await;
    for answer in all_closed_by_the_server("slow forged bodies", forged.join_all().await) {
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    for answer in all_closed_by_the_server("slow unsigned bodies", unsigned.join_all().await) {
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    assert!(
        receiver.logged_at_least("shed a connection", SLOTS).await >= SLOTS,
        "shedding is logged"
    );
}

/// Held bodies: 200 unsigned clients each send all but the last byte of a body just under the
/// cap and hold it there; 4 with a forged signature do the same. Before the fix the receiver
/// buffered every one of them (the issue measured 20 MB growing to 336 MB for 300 clients).
/// Now the unsigned are answered 401 unread, the forged hold the 4 body slots until the 1 s
/// body timeout, the process's peak memory grows by a few MiB, and a signed delivery is
/// answered meanwhile. (Linux: memory is read from `/proc`.)
///
/// Without the fix, the connections stay open and the peak grows by about 200 MiB: the test
/// fails on both.
#[tokio::test]
async fn held_unsigned_bodies_cost_no_memory() {
    const SLOTS: usize = 4;
    const UNSIGNED: usize = 200;
    /// Growth allowed over the memory at start: the 4 body slots of up to 1 MiB (times two: a
    /// body is collected, then copied into one buffer), the connections, the allocator's slack.
    const GROWTH: u64 = 48 * 1024 * 1024;
    let dir = TempDir::new("webhook-heldbodies");
    let url = dir.sqlite_url("held.db");
    let slots = SLOTS.to_string();
    let flags = ["--body-timeout", SHORT, "--max-bodies", &slots];
    let receiver = Receiver::start_with(&dir, &url, &flags, None).await;
    let pid = receiver.child.id().unwrap();
    let at_start = memory(pid, "VmRSS");
    let deadline = Instant::now() + WATCH;
    let held = |signature| {
        let mut request = head_with_body("pull_request", MAX_BODY_BYTES - 1, signature);
        request.resize(request.len() + MAX_BODY_BYTES - 2, b'x');
        (request, Vec::new())
    };
    let forged = hostile_clients(&receiver, SLOTS, deadline, || held(Some(FORGED_SIGNATURE))).await;
    let unsigned = hostile_clients(&receiver, UNSIGNED, deadline, || held(None)).await;

    signed_delivery_is_answered_promptly(&receiver, 503).await;
    let (forged, unsigned) = (forged.join_all().await, unsigned.join_all().await);
    let peak = memory(pid, "VmHWM");
    let (peak_mib, start_mib) = (peak >> 20, at_start >> 20);
    eprintln!("memory: {start_mib} MiB at start, peak {peak_mib} MiB");
    assert!(
        peak < at_start + GROWTH,
        "peak {peak_mib} MiB, {start_mib} MiB at start"
    );
    all_closed_by_the_server("held forged bodies", forged);
    all_closed_by_the_server("held unsigned bodies", unsigned);
}

/// A memory figure of process `pid` from `/proc/PID/status` (`VmRSS`, `VmHWM`: the peak), in
/// bytes.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line.trim().trim_end_matches(" kB").parse().unwrap();
    kib * 1024
}
