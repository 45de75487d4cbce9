//! # `github_webhook`: a GitHub `pull_request` webhook receiver that stores each pull request once
//!
//! (Longer than most examples, because it is meant to face the internet: besides the handler it
//! spells out the serve loop and its limits against hostile clients, `serve_connections`, which
//! `axum::serve` would hide and does not provide. That loop is the part to copy into other axum
//! services.)
//!
//! An axum server for GitHub's `pull_request` events. Every delivery is authenticated
//! (`X-Hub-Signature-256`: HMAC-SHA256 of the raw body with the webhook's secret, compared in
//! constant time), size-capped, parsed, checked against the schema, and stored with the
//! crate's one call per key, so a delivery GitHub sends twice, even to two instances of this
//! server at the same moment, is stored once, and a late delivery never undoes a newer one.
//! Answers:
//!
//! | status | when |
//! | --- | --- |
//! | 201 Created | the pull request was stored by this delivery (`"status": "created"`) |
//! | 200 OK | the pull request was already stored: `"duplicate"` (`opened`), `"updated"` (a newer event, applied) or `"unchanged"` (a redelivery, or an event older than the row) |
//! | 202 Accepted | an event or action it ignores (`ping`, `push`, `pull_request` `labeled`, ...) |
//! | 400 Bad Request | no `X-GitHub-Event` / `X-GitHub-Delivery`, a malformed payload, or one the schema cannot store on every backend (a NUL character in a string, a login or repository name over 255 characters, a title over 65,535 bytes, an `updated_at` outside the years 1000 to 9999) |
//! | 401 Unauthorized | a missing, malformed or wrong signature |
//! | 408 Request Timeout | the body did not arrive within `--body-timeout` |
//! | 413 Payload Too Large | a body over 1 MiB |
//! | 503 / 500 | busy (no body slot freed up in time) or the database failed (503 when a retry may succeed, e.g. a lock timeout) |
//!
//! ## What each action does
//!
//! - `opened` creates the row once (`PullRequest::once(pr_id, data)`); the row keeps the
//!   delivery id of the delivery that created it. A redelivery is a duplicate.
//! - `edited`, `synchronize`, `closed` and `reopened` carry the whole pull request as of the
//!   payload's `pull_request.updated_at`. They run `PullRequest::once(pr_id, data).update(f)`:
//!   under the pull request's lock, `f` compares the event with the row and writes the event's
//!   title, state, head SHA, repository name and `updated_at` only if the event is newer
//!   (`apply_if_newer`). GitHub delivers in no particular order and retries late, so `closed`
//!   at 10:00:03 may arrive before `edited` at 10:00:02: the edit then answers `unchanged` and
//!   the row stays closed. Because the comparison and the write happen under the lock, two
//!   deliveries at the same moment cannot both read the old row and let the older one write
//!   last, on one server or several.
//! - Such an event for a pull request not stored yet creates the row from its payload (201):
//!   the payload has the whole pull request, and GitHub never sends `opened` for pull requests
//!   opened before the webhook was installed, or may deliver it after a later event. A late
//!   `opened` is then a duplicate.
//! - Equal `updated_at` (GitHub's times have whole seconds, so two changes in one second share
//!   one): the payload that compares larger field by field wins, the same whatever order they
//!   arrive in; an identical redelivery is `unchanged`. Other actions are ignored (202).
//!
//! ## On the internet: limits against slow and unauthenticated clients
//!
//! Anyone can connect, so nothing a client without the secret does may hold the server's
//! sockets or memory for long. Each limit is a flag, or an environment variable:
//!
//! | flag (env) | default | what it bounds |
//! | --- | --- | --- |
//! | `--header-timeout` (`GITHUB_WEBHOOK_HEADER_TIMEOUT`) | `5s` | time to send a request's headers; hyper starts this clock whenever it waits for a request, so it is also the idle keep-alive limit |
//! | `--body-timeout` (`GITHUB_WEBHOOK_BODY_TIMEOUT`) | `10s` | time to send the whole body once it is read (a deadline, not a per-byte idle timer, so trickling does not extend it); also the longest wait for a body slot |
//! | `--max-connections` (`GITHUB_WEBHOOK_MAX_CONNECTIONS`) | `256` | connections served at once; more wait in the kernel's listen backlog. Lowered at start, with a warning, to the open-file limit minus 64 (the database pool, the listener, the runtime) |
//! | `--max-bodies` (`GITHUB_WEBHOOK_MAX_BODIES`) | `16` | bodies being received at once, before their signature can be checked |
//!
//! A request with no well-formed `X-Hub-Signature-256`, or a `Content-Length` over 1 MiB, is
//! answered before its body is read. So memory spent on clients without the secret stays under
//! `--max-bodies` × 1 MiB of bodies plus `--max-connections` × 16 KiB of headers: about 20 MiB
//! with the defaults (a body's chunks are briefly held twice while they are joined). Shed
//! connections (header timeout, body timeout) and failed accepts are logged. GitHub sends each
//! delivery at once, well inside these limits. A determined attacker can still keep the slots
//! busy and delay deliveries; the limits make that cost them connections, not cost you memory.
//! Put the receiver behind a firewall that admits GitHub's hook addresses
//! (`https://api.github.com/meta`) if that matters.
//!
//! ## Run it
//!
//! ```text
//! export GITHUB_WEBHOOK_SECRET=$(openssl rand -hex 32)
//! cargo run --example github_webhook
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/app \
//!     cargo run --example github_webhook -- --listen 0.0.0.0:3000
//! ```
//!
//! It listens on `--listen` (default `127.0.0.1:3000`; port 0 picks a free port) and prints
//! `listening on http://ADDR`. The database is `--database-url`, else `DATABASE_URL`, else an
//! embedded SQLite file `./github_webhook.db`, migrated at start. The secret is required and
//! must be at least 16 characters (not counting surrounding whitespace): the server refuses to
//! start without one. Point a GitHub webhook (content type `application/json`, event "Pull
//! requests", the same secret) at `http://HOST:PORT/webhooks/github`.
//!
//! ## Poke it
//!
//! Sign a sample payload and deliver it; run the `curl` line twice (201, then 200):
//!
//! ```text
//! body='{"action":"opened","number":7,"pull_request":{"id":1001,"number":7,"title":"Fix","state":"open","updated_at":"2026-11-26T10:00:00Z","user":{"login":"mona"},"head":{"sha":"0123456789abcdef0123456789abcdef01234567"}},"repository":{"full_name":"octo-org/octo-repo"}}'
//! sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$GITHUB_WEBHOOK_SECRET" | sed 's/^.*= //')
//! curl -i http://127.0.0.1:3000/webhooks/github -H 'Content-Type: application/json' \
//!     -H 'X-GitHub-Event: pull_request' -H 'X-GitHub-Delivery: 72d3162e-cc78-11e3-81ab-4c9367dc0958' \
//!     -H "X-Hub-Signature-256: sha256=$sig" --data "$body"
//! ```
//!
//! Change one byte of `$body` without re-signing: 401. Replace `opened` by `closed`,
//! `"open"` by `"closed"` and the time by a later one, sign and send it: 200 `updated`; send
//! the `opened` one again: 200 `duplicate`, still closed. Set `RUST_LOG=debug` to see each
//! delivery and the crate's span.

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
use entity::{NewPullRequest, PullRequest, pull_requests};
use hmac::{Hmac, KeyInit, Mac};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sea_orm::ActiveValue::Set;
use sea_orm::prelude::{ChronoDate, DateTimeWithTimeZone};
use sea_orm::{DatabaseConnection, DbBackend};
use sea_orm_idempotent::{Change, IdempotentCreate, Outcome, UpsertOutcome, Wait};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::timeout;

/// The largest body accepted. GitHub caps payloads at 25 MB, but `pull_request` payloads are
/// tens of kilobytes; a small cap keeps an unauthenticated sender from making us buffer much.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The largest request head (request line and headers) accepted; larger ones get 431. GitHub's
/// headers take about 1 KiB.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// File descriptors kept free for everything but client connections: the database pool (a
/// SQLite connection holds three: the database, its WAL and its shared memory), the listener,
/// the runtime, stdio.
#[cfg(unix)]
const RESERVED_FDS: u64 = 64;

/// How long a delivery waits for the pull request's lock on PostgreSQL or MariaDB before
/// answering 503.
/// (On SQLite the wait is bounded by the connection's `busy_timeout` instead: SQLite has no
/// per-call lock timeout, and `create_once` refuses `Wait::Timeout` there.)
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The longest `repository.full_name` and `pull_request.user.login` stored, in characters:
/// the sample schema's `VARCHAR(255)` on MySQL/MariaDB (PostgreSQL's and SQLite's are
/// unbounded). GitHub's are far shorter (a login is at most 39 characters).
const MAX_NAME_CHARS: usize = 255;

/// The longest `pull_request.title` stored, in UTF-8 bytes: the sample schema's `TEXT` on
/// MySQL/MariaDB. GitHub's titles are at most 256 characters.
const MAX_TITLE_BYTES: usize = 65_535;

/// The environment variable holding the webhook's secret.
const SECRET_VAR: &str = "GITHUB_WEBHOOK_SECRET";

/// The shortest secret accepted, not counting surrounding whitespace.
const MIN_SECRET_LEN: usize = 16;

/// Receives GitHub `pull_request` webhooks and stores each pull request exactly once, kept at
/// its newest state.
#[derive(Debug, Parser)]
#[command(name = "github_webhook")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Database URL (default: DATABASE_URL, else an embedded SQLite file).
    #[arg(long)]
    database_url: Option<String>,
    /// Time a client has to send a request's headers; also how long an idle connection stays
    /// open. E.g. 5s, 500ms.
    #[arg(
        long,
        env = "GITHUB_WEBHOOK_HEADER_TIMEOUT",
        default_value = "5s",
        value_parser = parse_duration
    )]
    header_timeout: Duration,
    /// Time a client has to send a request's whole body; also the longest wait for a body slot.
    #[arg(
        long,
        env = "GITHUB_WEBHOOK_BODY_TIMEOUT",
        default_value = "10s",
        value_parser = parse_duration
    )]
    body_timeout: Duration,
    /// Connections served at once (lowered to fit the open-file limit); more wait in the
    /// listen backlog.
    #[arg(
        long,
        env = "GITHUB_WEBHOOK_MAX_CONNECTIONS",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_connections: u32,
    /// Bodies received at once, before their signature can be checked (each up to 1 MiB).
    #[arg(
        long,
        env = "GITHUB_WEBHOOK_MAX_BODIES",
        default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_bodies: u32,
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
    let secret = std::env::var(SECRET_VAR).unwrap_or_default();
    if secret.trim().chars().count() < MIN_SECRET_LEN {
        return Err(format!(
            "set {SECRET_VAR} to the webhook's secret, at least {MIN_SECRET_LEN} characters \
             (e.g. `openssl rand -hex 32`); the server never runs unsigned or with a guessable \
             secret"
        )
        .into());
    }
    let max_connections = connection_cap(args.max_connections as usize)?;
    let target = common::target(args.database_url, "github_webhook.db")?;
    eprintln!("{}", target.description);
    let db = common::connect(&target.url, 16).await?;
    let listener = TcpListener::bind(args.listen).await?;
    // One line on stdout, so a script (or a test) started with port 0 learns the address.
    println!("listening on http://{}", listener.local_addr()?);
    let receiver = Receiver {
        db,
        secret: secret.into_bytes(),
        body_slots: Semaphore::new(args.max_bodies as usize),
        body_timeout: args.body_timeout,
    };
    let app = Router::new()
        .route("/webhooks/github", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(receiver));
    serve_connections(listener, app, max_connections, args.header_timeout).await
}

/// `axum::serve`, plus the limits it lacks: hyper's header-read timeout (which needs a timer,
/// and `axum::serve` sets none, so it never fires there), a cap on the request head's size, and
/// a cap on connections. Never returns.
async fn serve_connections(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    header_timeout: Duration,
) -> ! {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(MAX_HEADER_BYTES);
    let connection_slots = Arc::new(Semaphore::new(max_connections));
    loop {
        // A slot first, then accept: past the cap, new connections wait in the kernel's listen
        // backlog, costing neither a file descriptor nor memory here.
        let slot = match Arc::clone(&connection_slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                tracing::warn!(max_connections, "all connection slots taken; new ones wait");
                let slots = Arc::clone(&connection_slots);
                slots
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed")
            }
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // E.g. out of file descriptors: say so, and pause rather than spin (as
                // `axum::serve` does, silently).
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            match connection.await {
                Err(err) if err.is_timeout() => {
                    let why = "no request head in time";
                    tracing::info!(%peer, ?header_timeout, "shed a connection: {why}");
                }
                Err(err) => tracing::debug!(%peer, error = %err, "connection failed"),
                Ok(()) => {}
            }
            drop(slot);
        });
    }
}

/// `wanted`, or fewer if the open-file limit would run out first (each connection is a file
/// descriptor): with the soft limit at 256, 245 idle sockets once left no descriptor for
/// answering anyone.
fn connection_cap(wanted: usize) -> Result<usize, String> {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit};
        let (soft, _hard) = getrlimit(Resource::RLIMIT_NOFILE)
            .map_err(|err| format!("cannot read the open-file limit: {err}"))?;
        let room = usize::try_from(soft.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
        if room == 0 {
            return Err(format!(
                "the open-file limit ({soft}) leaves no room for connections; raise `ulimit -n`"
            ));
        }
        if room < wanted {
            tracing::warn!(
                open_file_limit = soft,
                max_connections = room,
                "serving fewer connections than asked, to stay under the open-file limit"
            );
            return Ok(room);
        }
    }
    Ok(wanted)
}

/// `5s`, `500ms`: a duration for the command line.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| "expected e.g. 5s or 500ms")?;
    let duration = match unit {
        "s" => Duration::from_secs(number),
        "ms" => Duration::from_millis(number),
        _ => return Err("expected e.g. 5s or 500ms".into()),
    };
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(duration)
}

/// What every request handler shares.
struct Receiver {
    db: DatabaseConnection,
    secret: Vec<u8>,
    /// One permit per body being received before its signature is checked.
    body_slots: Semaphore,
    body_timeout: Duration,
}

/// `POST /webhooks/github`: the body is authenticated by the time this runs ([`SignedBody`]).
async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    SignedBody(body): SignedBody,
) -> Result<Response, Rejection> {
    let event = header_str(&headers, "x-github-event")
        .ok_or(Rejection::BadRequest("missing X-GitHub-Event".into()))?;
    let delivery = header_str(&headers, "x-github-delivery")
        .filter(|d| d.len() <= 64 && d.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(Rejection::BadRequest(
            "missing or invalid X-GitHub-Delivery".into(),
        ))?;
    if event != "pull_request" {
        return Ok(answer(
            StatusCode::ACCEPTED,
            json!({ "ignored": format!("event {event}") }),
        ));
    }
    let payload: PullRequestEvent = serde_json::from_slice(&body)
        .map_err(|err| Rejection::BadRequest(format!("malformed pull_request payload: {err}")))?;
    let action = payload.action.clone();
    if !matches!(
        action.as_str(),
        "opened" | "edited" | "synchronize" | "closed" | "reopened"
    ) {
        let ignored = format!("action {action}");
        return Ok(answer(StatusCode::ACCEPTED, json!({ "ignored": ignored })));
    }
    let (pr_id, new_pr) = payload
        .into_new_pull_request(delivery)
        .map_err(Rejection::BadRequest)?;
    let wait = match receiver.db.get_database_backend() {
        DbBackend::Sqlite => Wait::Forever, // bounded by the connection's busy_timeout
        _ => Wait::Timeout(LOCK_WAIT),      // PostgreSQL, MariaDB
    };
    if action == "opened" {
        store_opened(&receiver.db, pr_id, new_pr, wait, delivery).await
    } else {
        apply_event(&receiver.db, pr_id, new_pr, wait, delivery, &action).await
    }
}

/// `opened`: creates the row once. A redelivery, or an `opened` that arrives after a later
/// event already created the row, is a duplicate: `opened` is never newer than the row.
async fn store_opened(
    db: &DatabaseConnection,
    pr_id: i64,
    new_pr: NewPullRequest,
    wait: Wait,
    delivery: &str,
) -> Result<Response, Rejection> {
    match PullRequest::once(pr_id, new_pr).wait(wait).exec(db).await {
        Ok(Outcome::Created(pr)) => {
            tracing::info!(pr_id, delivery, "stored");
            let body = json!({ "status": "created", "pr_id": pr.pr_id, "id": pr.id });
            Ok(answer(StatusCode::CREATED, body))
        }
        Ok(Outcome::Existing(pr)) => {
            tracing::info!(pr_id, delivery, first = %pr.first_delivery_id, "duplicate absorbed");
            let body = json!({
                "status": "duplicate",
                "pr_id": pr.pr_id,
                "id": pr.id,
                "first_delivery_id": pr.first_delivery_id,
            });
            Ok(answer(StatusCode::OK, body))
        }
        Err(err) => Err(storage_failed(pr_id, delivery, &err)),
    }
}

/// `edited`, `synchronize`, `closed`, `reopened`: the payload's pull request replaces the row's
/// if it is newer ([`apply_if_newer`]), decided and written under the pull request's lock. An
/// unknown pull request is created from the payload (201), as `opened` would.
async fn apply_event(
    db: &DatabaseConnection,
    pr_id: i64,
    new_pr: NewPullRequest,
    wait: Wait,
    delivery: &str,
    action: &str,
) -> Result<Response, Rejection> {
    let outcome = PullRequest::once(pr_id, new_pr)
        .wait(wait)
        .update(apply_if_newer)
        .exec(db)
        .await
        .map_err(|err| storage_failed(pr_id, delivery, &err))?;
    let status = match outcome {
        UpsertOutcome::Created(_) => StatusCode::CREATED,
        UpsertOutcome::Updated(_) | UpsertOutcome::Unchanged(_) => StatusCode::OK,
    };
    let pr = outcome.model();
    let updated_at = pr.updated_at.map(|at| at.to_rfc3339());
    tracing::info!(
        pr_id,
        delivery,
        action,
        outcome = outcome.as_str(),
        ?updated_at,
        "applied"
    );
    let body = json!({
        "status": outcome.as_str(),
        "pr_id": pr.pr_id,
        "id": pr.id,
        "state": pr.state,
        "updated_at": updated_at,
    });
    Ok(answer(status, body))
}

/// The change an event makes to the stored row: the event's pull request if it is newer than
/// the row, else none.
///
/// Newer means a later `updated_at` (a row without one, stored before the column existed, is
/// older than any event). GitHub's `updated_at` has one-second resolution, so two different
/// events can carry the same time, and nothing in the payload says which came last. Then the
/// larger of the two, compared field by field (`state`, `head.sha`, `title`,
/// `repository.full_name`), wins: the same one whatever order they arrive in, on every
/// instance, so redeliveries cannot flip the row back and forth. (Which one is arbitrary; any
/// later change to the pull request settles it.) Keeping the first to arrive (`>`) or the last
/// (`>=`) would leave two receivers, or a redelivery, disagreeing. An identical payload is no
/// change, so a redelivery answers `unchanged`.
fn apply_if_newer(
    row: &pull_requests::Model,
    event: NewPullRequest,
) -> Change<pull_requests::ActiveModel> {
    let stored = (
        row.updated_at,
        row.state.as_str(),
        row.head_sha.as_str(),
        row.title.as_str(),
        row.repository.as_str(),
    );
    let incoming = (
        event.updated_at,
        event.state.as_str(),
        event.head_sha.as_str(),
        event.title.as_str(),
        event.repository.as_str(),
    );
    if incoming <= stored {
        return Change::Keep; // a late, older delivery, or a redelivery
    }
    // What an event can change; `number`, `author` and `first_delivery_id` stay as created.
    Change::Update(pull_requests::ActiveModel {
        repository: Set(event.repository),
        title: Set(event.title),
        state: Set(event.state),
        head_sha: Set(event.head_sha),
        updated_at: Set(event.updated_at),
        ..Default::default()
    })
}

/// A failed call, logged in full, answered without details: 503 when a retry may succeed
/// (e.g. a lock timeout), else 500.
fn storage_failed(pr_id: i64, delivery: &str, err: &sea_orm_idempotent::Error) -> Rejection {
    tracing::error!(pr_id, delivery, error = %err, "could not store the pull request");
    if err.is_retryable() {
        Rejection::Busy
    } else {
        Rejection::Internal
    }
}

/// An answer: a status and a small JSON body.
fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    let content_type = [(header::CONTENT_TYPE, "application/json")];
    (status, content_type, body.to_string()).into_response()
}

/// Why a delivery is not stored: one variant per answer, each `{"error": "..."}`.
#[derive(Debug)]
enum Rejection {
    /// 400: a header GitHub always sends is missing, or the payload is malformed or unstorable.
    BadRequest(String),
    /// 401: a missing, malformed or wrong `X-Hub-Signature-256`.
    Unauthorized,
    /// 408: the body did not arrive within `--body-timeout`.
    BodyTimeout,
    /// 413: a body over [`MAX_BODY_BYTES`].
    TooLarge,
    /// 503 with `Retry-After`: no body slot freed up in time, or a retryable database error.
    Busy,
    /// 500: the database failed in a way a retry will not fix.
    Internal,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, reason) = match self {
            Rejection::BadRequest(reason) => (StatusCode::BAD_REQUEST, reason),
            Rejection::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "missing or invalid X-Hub-Signature-256".into(),
            ),
            Rejection::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body too slow".into()),
            Rejection::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body too large".into()),
            Rejection::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy, retry later".into()),
            Rejection::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not store the event".into(),
            ),
        };
        let mut response = answer(status, json!({ "error": reason }));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let retry_after = header::HeaderValue::from_static("5");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
        }
        response
    }
}

/// The body of a delivery whose `X-Hub-Signature-256` checks out: extracting it authenticates.
///
/// Cheap refusals come before any body is read: a declared length over the cap (413), a
/// missing or malformed signature header (401). Then the body takes one of `--max-bodies`
/// slots (503 if none frees up within `--body-timeout`), must arrive whole within
/// `--body-timeout` (408; a deadline, where tower-http's `RequestBodyTimeoutLayer` would restart
/// its clock at every chunk a trickling client sends) and under the cap (413, axum's
/// `DefaultBodyLimit`), and its HMAC must match (401).
struct SignedBody(Bytes);

impl FromRequest<Arc<Receiver>> for SignedBody {
    type Rejection = Rejection;

    async fn from_request(request: Request, receiver: &Arc<Receiver>) -> Result<Self, Rejection> {
        let headers = request.headers();
        let declared = header_str(headers, header::CONTENT_LENGTH.as_str())
            .and_then(|length| length.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(Rejection::TooLarge);
        }
        let signature = header_str(headers, "x-hub-signature-256")
            .and_then(|value| value.strip_prefix("sha256="))
            .filter(|hex| hex.len() == 64)
            .and_then(decode_hex)
            .ok_or(Rejection::Unauthorized)?;

        let limit = receiver.body_timeout;
        let slot = match timeout(limit, receiver.body_slots.acquire()).await {
            Ok(slot) => slot.expect("the semaphore is never closed"),
            Err(_elapsed) => {
                tracing::warn!(?limit, "no body slot freed up in time; answering 503");
                return Err(Rejection::Busy);
            }
        };
        let body = match timeout(limit, Bytes::from_request(request, receiver)).await {
            Ok(Ok(body)) => body,
            Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(Rejection::TooLarge);
            }
            Ok(Err(_)) => return Err(Rejection::BadRequest("could not read the body".into())),
            Err(_elapsed) => {
                tracing::info!(?limit, "shed a connection: body not received in time");
                return Err(Rejection::BodyTimeout);
            }
        };
        drop(slot);

        // Constant-time (`Mac::verify_slice`): response timing tells a forger nothing about
        // how much of a guess was right.
        let mut mac = Hmac::<Sha256>::new_from_slice(&receiver.secret).expect("any key length");
        mac.update(&body);
        mac.verify_slice(&signature)
            .map_err(|_| Rejection::Unauthorized)?;
        Ok(SignedBody(body))
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .filter(|value| !value.is_empty())
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
    /// When the pull request last changed (RFC 3339, whole seconds): orders the events.
    updated_at: String,
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
    /// error: the schema's constraints are checked here first, the same on every backend:
    /// no NUL character, names of at most [`MAX_NAME_CHARS`] characters, a title of at most
    /// [`MAX_TITLE_BYTES`] bytes, an `updated_at` in the years 1000 to 9999, UTC, which
    /// MySQL's `DATETIME` holds).
    fn into_new_pull_request(self, delivery: &str) -> Result<(i64, NewPullRequest), String> {
        let pr = self.pull_request.ok_or("payload has no pull_request")?;
        let repository = self.repository.ok_or("payload has no repository")?;
        let number = i32::try_from(pr.number)
            .ok()
            .filter(|n| *n > 0)
            .ok_or("pull_request.number is not a positive 32-bit number")?;
        if pr.head.sha.len() != 40 || !pr.head.sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("pull_request.head.sha is not a 40-digit hex SHA".into());
        }
        if !matches!(pr.state.as_str(), "open" | "closed") {
            return Err("pull_request.state is neither open nor closed".into());
        }
        let updated_at = DateTimeWithTimeZone::parse_from_rfc3339(&pr.updated_at)
            .map_err(|_| "pull_request.updated_at is not an RFC 3339 time")?;
        let day = updated_at.naive_utc().date();
        if !(ChronoDate::from_ymd_opt(1000, 1, 1)..=ChronoDate::from_ymd_opt(9999, 12, 31))
            .contains(&Some(day))
        {
            return Err(
                "pull_request.updated_at is not between the years 1000 and 9999 (UTC)".into(),
            );
        }
        // PostgreSQL's text types cannot hold U+0000 (SQLite's can): refuse it everywhere, or
        // the same delivery is stored on one backend and fails with 500 forever on the other.
        // (`state`, `head.sha` and the delivery id are already limited to safe characters.)
        for (field, value) in [
            ("repository.full_name", &repository.full_name),
            ("pull_request.title", &pr.title),
            ("pull_request.user.login", &pr.user.login),
        ] {
            if value.contains('\0') {
                return Err(format!("{field} contains a NUL character"));
            }
        }
        // The narrowest backend's columns (MySQL/MariaDB's), checked on every backend: a
        // delivery is refused everywhere or stored everywhere, never stored on one backend
        // and a 500 on another.
        for (field, value) in [
            ("repository.full_name", &repository.full_name),
            ("pull_request.user.login", &pr.user.login),
        ] {
            if value.chars().count() > MAX_NAME_CHARS {
                return Err(format!("{field} is over {MAX_NAME_CHARS} characters"));
            }
        }
        if pr.title.len() > MAX_TITLE_BYTES {
            return Err(format!(
                "pull_request.title is over {MAX_TITLE_BYTES} bytes (UTF-8)"
            ));
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
                updated_at: Some(updated_at),
            },
        ))
    }
}
