//! # `github_webhook`: a GitHub `pull_request` webhook receiver that stores each pull request once
//!
//! An axum server for GitHub's `pull_request` events. Every delivery is authenticated
//! (`X-Hub-Signature-256`: HMAC-SHA256 of the raw body with the webhook's secret, compared in
//! constant time), size-capped, parsed, and stored with `PullRequest::create_once`, so a
//! delivery GitHub sends twice, even to two instances of this server at the same moment,
//! creates one row. Answers:
//!
//! | status | when |
//! | --- | --- |
//! | 201 Created | the pull request was stored by this delivery |
//! | 200 OK | a duplicate: the pull request was already stored |
//! | 202 Accepted | an event or action it ignores (`ping`, `push`, `pull_request` `closed`, ...) |
//! | 400 Bad Request | no `X-GitHub-Event` / `X-GitHub-Delivery`, or a malformed payload |
//! | 401 Unauthorized | a missing, malformed or wrong signature |
//! | 413 Payload Too Large | a body over 1 MiB |
//! | 503 / 500 | the database failed (503 when a retry may succeed, e.g. a lock timeout) |
//!
//! Only `opened` and `reopened` actions store a pull request; the row keeps the delivery id
//! of the delivery that created it.
//!
//! ## Run it
//!
//! ```text
//! GITHUB_WEBHOOK_SECRET=s3cret cargo run --example github_webhook
//! GITHUB_WEBHOOK_SECRET=s3cret DATABASE_URL=postgres://postgres@127.0.0.1:5432/app \
//!     cargo run --example github_webhook -- --listen 0.0.0.0:3000
//! ```
//!
//! It listens on `--listen` (default `127.0.0.1:3000`; port 0 picks a free port) and prints
//! `listening on http://ADDR`. The database is `--database-url`, else `DATABASE_URL`, else an
//! embedded SQLite file `./github_webhook.db`, migrated at start. The secret is required: the
//! server refuses to start without it. Point a GitHub webhook (content type
//! `application/json`, event "Pull requests") at `http://HOST:PORT/webhooks/github`.
//!
//! ## Poke it
//!
//! Sign a sample payload and deliver it; run the `curl` line twice (201, then 200):
//!
//! ```text
//! body='{"action":"opened","number":7,"pull_request":{"id":1001,"number":7,"title":"Fix","state":"open","user":{"login":"mona"},"head":{"sha":"0123456789abcdef0123456789abcdef01234567"}},"repository":{"full_name":"octo-org/octo-repo"}}'
//! sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac s3cret | sed 's/^.*= //')
//! curl -i http://127.0.0.1:3000/webhooks/github -H 'Content-Type: application/json' \
//!     -H 'X-GitHub-Event: pull_request' -H 'X-GitHub-Delivery: 72d3162e-cc78-11e3-81ab-4c9367dc0958' \
//!     -H "X-Hub-Signature-256: sha256=$sig" --data "$body"
//! ```
//!
//! Change one byte of `$body` without re-signing: 401. Set `RUST_LOG=debug` to see each
//! delivery and the `create_once` span.

mod common;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use entity::{NewPullRequest, PullRequest};
use hmac::{Hmac, KeyInit, Mac};
use sea_orm::{DatabaseConnection, DbBackend};
use sea_orm_idempotent::{Error, IdempotentCreate, Outcome, Wait};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

/// The largest body accepted. GitHub caps payloads at 25 MB, but `pull_request` payloads are
/// tens of kilobytes; a small cap keeps an unauthenticated sender from making us buffer much.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a delivery waits for the pull request's lock on PostgreSQL before answering 503.
/// (On SQLite the wait is bounded by the connection's `busy_timeout` instead: SQLite has no
/// per-call lock timeout, and `create_once` refuses `Wait::Timeout` there.)
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The environment variable holding the webhook's secret.
const SECRET_VAR: &str = "GITHUB_WEBHOOK_SECRET";

/// Receives GitHub `pull_request` webhooks and stores each pull request exactly once.
#[derive(Debug, Parser)]
#[command(name = "github_webhook")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Database URL (default: DATABASE_URL, else an embedded SQLite file).
    #[arg(long)]
    database_url: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("github_webhook: {err}");
            ExitCode::from(2)
        }
    }
}

async fn serve(args: Args) -> Result<(), common::BoxError> {
    let secret = std::env::var(SECRET_VAR)
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            format!("set {SECRET_VAR} to the webhook's secret (the server never runs unsigned)")
        })?;
    let target = common::target(args.database_url, "github_webhook.db")?;
    eprintln!("{}", target.description);
    let db = common::connect(&target.url, 16).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    // One line on stdout, so a script (or a test) started with port 0 learns the address.
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(db, secret.into_bytes())).await?;
    Ok(())
}

/// What every request handler shares.
struct Receiver {
    db: DatabaseConnection,
    secret: Vec<u8>,
}

/// The router: `POST /webhooks/github`.
fn app(db: DatabaseConnection, secret: Vec<u8>) -> Router {
    Router::new()
        .route("/webhooks/github", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(Receiver { db, secret }))
}

/// An answer: a status and a small JSON body saying why.
fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn reject(status: StatusCode, reason: &str) -> Response {
    answer(status, json!({ "error": reason }))
}

async fn receive(State(receiver): State<Arc<Receiver>>, request: Request) -> Response {
    // 413 before reading a body that declares itself too large; the limit also stops a body
    // without Content-Length (chunked) once it grows past the cap.
    if declared_length(request.headers()).is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return reject(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
    let headers = request.headers().clone();
    let body = match Bytes::from_request(request, &()).await {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return reject(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        }
        Err(_) => return reject(StatusCode::BAD_REQUEST, "could not read the body"),
    };

    // Authenticate before looking at anything the sender controls.
    if !signature_is_valid(&receiver.secret, &headers, &body) {
        return reject(
            StatusCode::UNAUTHORIZED,
            "missing or invalid X-Hub-Signature-256",
        );
    }
    let Some(event) = header_str(&headers, "x-github-event") else {
        return reject(StatusCode::BAD_REQUEST, "missing X-GitHub-Event");
    };
    let Some(delivery) = header_str(&headers, "x-github-delivery")
        .filter(|d| d.len() <= 64 && d.bytes().all(|b| b.is_ascii_graphic()))
    else {
        return reject(
            StatusCode::BAD_REQUEST,
            "missing or invalid X-GitHub-Delivery",
        );
    };
    if event != "pull_request" {
        return answer(
            StatusCode::ACCEPTED,
            json!({ "ignored": format!("event {event}") }),
        );
    }
    let payload: PullRequestEvent = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(err) => {
            return reject(
                StatusCode::BAD_REQUEST,
                &format!("malformed pull_request payload: {err}"),
            );
        }
    };
    if !matches!(payload.action.as_str(), "opened" | "reopened") {
        return answer(
            StatusCode::ACCEPTED,
            json!({ "ignored": format!("action {}", payload.action) }),
        );
    }
    let (pr_id, new_pr) = match payload.into_new_pull_request(delivery) {
        Ok(pr) => pr,
        Err(reason) => return reject(StatusCode::BAD_REQUEST, reason),
    };
    let wait = match receiver.db.get_database_backend() {
        DbBackend::Postgres => Wait::Timeout(LOCK_WAIT),
        _ => Wait::Forever, // SQLite: bounded by the connection's busy_timeout
    };
    let created = PullRequest::create_once_waiting(&receiver.db, pr_id, wait, || async {
        Ok::<_, std::convert::Infallible>(new_pr)
    })
    .await;
    match created {
        Ok(Outcome::Created(pr)) => {
            tracing::info!(pr_id, delivery, "stored");
            answer(
                StatusCode::CREATED,
                json!({ "status": "created", "pr_id": pr.pr_id, "id": pr.id }),
            )
        }
        Ok(Outcome::Existing(pr)) => {
            tracing::info!(pr_id, delivery, first = %pr.first_delivery_id, "duplicate absorbed");
            answer(
                StatusCode::OK,
                json!({
                    "status": "duplicate",
                    "pr_id": pr.pr_id,
                    "id": pr.id,
                    "first_delivery_id": pr.first_delivery_id,
                }),
            )
        }
        Err(err) => database_failure(pr_id, delivery, &err),
    }
}

/// 503 (with `Retry-After`) when a retry may succeed, 500 otherwise; the details go to the log,
/// not to the sender.
fn database_failure(pr_id: i64, delivery: &str, err: &Error) -> Response {
    tracing::error!(pr_id, delivery, error = %err, "could not store the pull request");
    if err.is_retryable() {
        let mut response = reject(StatusCode::SERVICE_UNAVAILABLE, "busy, retry later");
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        response
    } else {
        reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not store the event",
        )
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, header::CONTENT_LENGTH.as_str())?
        .parse()
        .ok()
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .filter(|value| !value.is_empty())
}

/// Whether `X-Hub-Signature-256` is `sha256=` and the hex HMAC-SHA256 of `body` under
/// `secret`. The comparison is constant-time (`Mac::verify_slice`), so response timing tells
/// a forger nothing about how much of a guess was right.
fn signature_is_valid(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(signature) = header_str(headers, "x-hub-signature-256")
        .and_then(|value| value.strip_prefix("sha256="))
        .and_then(decode_hex)
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

/// The parts of GitHub's `pull_request` event payload this receiver stores.
#[derive(Debug, Deserialize)]
struct PullRequestEvent {
    action: String,
    pull_request: Option<PullRequestPayload>,
    repository: Option<RepositoryPayload>,
}

#[derive(Debug, Deserialize)]
struct PullRequestPayload {
    /// GitHub's global id of the pull request: the natural key.
    id: i64,
    number: i64,
    title: String,
    state: String,
    user: UserPayload,
    head: HeadPayload,
}

#[derive(Debug, Deserialize)]
struct UserPayload {
    login: String,
}

#[derive(Debug, Deserialize)]
struct HeadPayload {
    sha: String,
}

#[derive(Debug, Deserialize)]
struct RepositoryPayload {
    full_name: String,
}

impl PullRequestEvent {
    /// The key and the new row, or why the payload cannot be stored (a 400, not a database
    /// error: the schema's constraints are checked here first).
    fn into_new_pull_request(self, delivery: &str) -> Result<(i64, NewPullRequest), &'static str> {
        let pr = self.pull_request.ok_or("payload has no pull_request")?;
        let repository = self.repository.ok_or("payload has no repository")?;
        let number = i32::try_from(pr.number)
            .ok()
            .filter(|n| *n > 0)
            .ok_or("pull_request.number is not a positive 32-bit number")?;
        if pr.head.sha.len() != 40 || !pr.head.sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("pull_request.head.sha is not a 40-digit hex SHA");
        }
        if !matches!(pr.state.as_str(), "open" | "closed") {
            return Err("pull_request.state is neither open nor closed");
        }
        Ok((
            pr.id,
            NewPullRequest {
                repository: repository.full_name,
                number,
                title: pr.title,
                author: pr.user.login,
                state: pr.state,
                head_sha: pr.head.sha,
                delivery_id: delivery.to_owned(),
            },
        ))
    }
}
