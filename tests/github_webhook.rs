//! `examples/github_webhook.rs` over real HTTP: the example program is started on port 0 (it
//! prints the address it got), and requests go to it over TCP. Two identical signed
//! deliveries sent at once store one row (one 201, one 200), on SQLite and on PostgreSQL, and
//! every error has its answer.

#![cfg(all(feature = "postgres", feature = "sqlite"))]

mod common;
mod webhook_support;

use std::process::Stdio;

use common::{TempDir, rows_for, total_rows};
use hmac::{Hmac, KeyInit, Mac};
use sea_orm::{Database, DatabaseConnection};
use sha2::Sha256;
use test_support::TestDb;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use webhook_support::example_binary;

const SECRET: &str = "it's a secret to everybody";
const PATH: &str = "/webhooks/github";
/// The receiver's body cap (`MAX_BODY_BYTES` in the example).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A running `github_webhook`, killed when dropped.
struct Receiver {
    child: Child,
    addr: String,
}

impl Receiver {
    /// Starts the example on `database_url` with port 0 and waits for the line that says
    /// where it listens.
    async fn start(dir: &TempDir, database_url: &str) -> Receiver {
        let mut child = Command::new(example_binary("github_webhook"))
            .current_dir(&dir.0)
            .args(["--listen", "127.0.0.1:0", "--database-url", database_url])
            .env_remove("DATABASE_URL")
            .env("GITHUB_WEBHOOK_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start github_webhook");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).await.unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Receiver { child, addr }
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
        .signed("pull_request", "d-4", &payload("closed", 4))
        .await;
    assert_eq!(status, 202, "closed");

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
    let head = "Transfer-Encoding: chunked\r\nX-GitHub-Event: pull_request\r\n";
    let (status, _) = receiver.send(receiver.request(head, &chunked)).await;
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
