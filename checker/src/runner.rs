//! Runs a history against a backend and records what every call answered (a history, in
//! Jepsen's sense): the call, its context, its answer, how long it took, and whether the
//! context it ran in committed.
//!
//! (Over 450 lines: one history's whole execution, every operation's context and fault, in
//! one read; the generator and the invariants are modules of their own.)

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sea_orm::{
    AccessMode, ActiveValue::Set, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, IsolationLevel, Statement, TransactionTrait,
};
use sea_orm_idempotent::{Change, Error, IdempotentCreate, TransactionSource, Wait};

use crate::Backend;
use crate::entities::{Tag, loose_rows, pair_rows, unique_rows};
use crate::history::{CallSpec, Form, History, Inner, Key, Op, Setup, Table, WaitSpec};

/// The databases a history runs on: the main one, another one (a tenant's, for calls inside
/// `make_data`), and an admin pool for faults and checks.
#[derive(Debug, Clone)]
pub struct World {
    /// The backend.
    pub backend: Backend,
    /// The pool the calls run on.
    pub pool: DatabaseConnection,
    /// A pool on another database with the same tables.
    pub other: DatabaseConnection,
    /// A pool for faults (bypassing writers, kills) and the final reads.
    pub admin: DatabaseConnection,
}

/// What a call answered (ids and versions of the row it returned).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Answer {
    /// `Created`.
    Created { id: i64, v: i64 },
    /// `Existing`.
    Existing { id: i64 },
    /// `Updated`.
    Updated { id: i64, v: i64 },
    /// `Unchanged`.
    Unchanged { id: i64 },
    /// An error: its variant's name, whether it is retryable, and its text.
    Failed {
        variant: String,
        retryable: bool,
        text: String,
    },
    /// The call's future was dropped before it returned.
    Dropped,
}

impl Answer {
    fn of(result: Result<(&'static str, i64, i64), Error>) -> Answer {
        match result {
            Ok(("created", id, v)) => Answer::Created { id, v },
            Ok(("updated", id, v)) => Answer::Updated { id, v },
            Ok(("unchanged", id, _)) => Answer::Unchanged { id },
            Ok((_, id, _)) => Answer::Existing { id },
            Err(err) => {
                let debug = format!("{err:?}");
                let variant = debug
                    .split(|c: char| !c.is_alphanumeric())
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                Answer::Failed {
                    variant,
                    retryable: err.is_retryable(),
                    text: format!("{err} / {debug}"),
                }
            }
        }
    }

    /// The variant of an error, if it is one.
    pub fn error(&self) -> Option<&str> {
        match self {
            Answer::Failed { variant, .. } => Some(variant),
            _ => None,
        }
    }
}

/// Whether a call's work is in the final state: its context committed, did not, or may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Committed.
    Yes,
    /// Rolled back (or nothing was written).
    No,
    /// Unknown (a dropped call, a connection killed around COMMIT).
    Unknown,
}

/// Where a call ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// On the pool.
    Pool,
    /// Inside the `make_data` of a call on the pool.
    Inner(Inner),
    /// In a caller's transaction.
    Txn(Setup),
    /// On the outer transaction of a nested pair.
    Outer,
    /// On the nested transaction.
    Nested,
    /// In one of the two transactions of a deadlock.
    Deadlock,
    /// An item of a batch on the pool.
    Batch,
    /// A retry, after the history, of a call whose error was retryable.
    Retry,
    /// A taker of the key's lock that is not a call of the crate ([`Op::LockTaker`]).
    LockTaker,
}

/// One call of a history and what came of it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The client and its operation.
    pub client: usize,
    /// The operation's index in its client.
    pub op: usize,
    /// 0: the main database, 1: the other one.
    pub database: usize,
    /// Where it ran.
    pub place: Place,
    /// The call.
    pub call: CallSpec,
    /// Its answer.
    pub answer: Answer,
    /// How long it took.
    pub elapsed: Duration,
    /// Whether its context committed.
    pub commit: Commit,
    /// Whether an earlier call in the same transaction failed (the transaction may be aborted).
    pub after_failure: bool,
}

/// The events of a history, recorded from every client and from inside `make_data`.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Recorder {
    fn push(&self, event: Event) -> usize {
        let mut events = self.0.lock().unwrap();
        events.push(event);
        events.len() - 1
    }

    fn set_commit(&self, indices: &[usize], commit: Commit) {
        let mut events = self.0.lock().unwrap();
        for &i in indices {
            if events[i].commit == Commit::Yes {
                events[i].commit = commit;
            }
        }
    }

    /// The events recorded.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
}

fn wait(spec: WaitSpec) -> Wait {
    match spec {
        WaitSpec::Forever => Wait::Forever,
        WaitSpec::No => Wait::No,
        WaitSpec::TimeoutMs(ms) => Wait::Timeout(Duration::from_millis(ms)),
    }
}

/// `(outcome, id, v)` of each table's row.
macro_rules! on_table {
    ($key:expr, |$m:ident, $k:ident| $body:expr) => {
        match $key.table {
            Table::Unique => {
                use unique_rows as $m;
                let $k = $key.k;
                $body
            }
            Table::Loose => {
                use loose_rows as $m;
                let $k = $key.k;
                $body
            }
            Table::Pairs => {
                use pair_rows as $m;
                let $k = ($key.k, Tag($key.tag.map(str::to_owned)));
                $body
            }
        }
    };
}

/// The cause of a refusal by the update function of [`Form::UpdateRefuse`].
#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused by the checker")
    }
}

impl std::error::Error for Refused {}

/// The error `make_data` returns when its inner call failed.
#[derive(Debug)]
struct InnerFailed(String);

impl std::fmt::Display for InnerFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the call inside make_data failed: {}", self.0)
    }
}

impl std::error::Error for InnerFailed {}

/// A plain `create_once` (the inner calls and the retries).
async fn create(db: &impl TransactionSource, key: &Key, v: i64) -> Answer {
    let result = on_table!(key, |m, k| {
        m::Entity::create_once(db, k, v)
            .await
            .map(|o| (o.as_str(), o.model().id, o.model().v))
    });
    Answer::of(result)
}

/// Context of one call: where it runs, for the record.
#[derive(Debug, Clone, Copy)]
struct At {
    client: usize,
    op: usize,
    place: Place,
    after_failure: bool,
}

/// Runs `spec` on `db` (dropping it when its time runs out), records it, and returns its
/// index in the recorder and its answer.
async fn call(
    world: &World,
    recorder: &Recorder,
    db: &impl TransactionSource,
    spec: &CallSpec,
    at: At,
) -> (usize, Answer) {
    let started = Instant::now();
    let run = run_form(world, recorder, db, spec, at);
    let answer = match spec.drop_after_us {
        Some(us) => tokio::time::timeout(Duration::from_micros(us), run)
            .await
            .unwrap_or(Answer::Dropped),
        None => run.await,
    };
    let commit = match &answer {
        Answer::Created { .. } | Answer::Updated { .. } => Commit::Yes,
        Answer::Existing { .. } | Answer::Unchanged { .. } | Answer::Failed { .. } => Commit::No,
        Answer::Dropped => Commit::Unknown,
    };
    let index = recorder.push(Event {
        client: at.client,
        op: at.op,
        database: 0,
        place: at.place,
        call: spec.clone(),
        answer: answer.clone(),
        elapsed: started.elapsed(),
        commit,
        after_failure: at.after_failure,
    });
    (index, answer)
}

async fn run_form(
    world: &World,
    recorder: &Recorder,
    db: &impl TransactionSource,
    spec: &CallSpec,
    at: At,
) -> Answer {
    let v = spec.v;
    let key = &spec.key;
    let result = on_table!(key, |m, k| match spec.form {
        Form::Create =>
            m::Entity::create_once(db, k, v)
                .await
                .map(|o| (o.as_str(), o.model().id, o.model().v)),
        Form::CreateWith(inner) => m::Entity::create_once_with(db, k, || async move {
            match inner {
                None => Ok::<_, InnerFailed>(v),
                Some(inner) => {
                    inner_call(world, recorder, spec, inner, at).await?;
                    Ok(v)
                }
            }
        })
        .await
        .map(|o| (o.as_str(), o.model().id, o.model().v)),
        Form::Once(w) => m::Entity::once(k, v).wait(wait(w)).exec(db).await.map(|o| (
            o.as_str(),
            o.model().id,
            o.model().v
        )),
        Form::OnceWith(w) => m::Entity::once_with(k, || async move { Ok::<_, Infallible>(v) })
            .wait(wait(w))
            .exec(db)
            .await
            .map(|o| (o.as_str(), o.model().id, o.model().v)),
        Form::Update(w) => m::Entity::once(k, v)
            .wait(wait(w))
            .update(|existing: &m::Model, v: i64| {
                if v > existing.v {
                    Change::Update(m::ActiveModel {
                        v: Set(v),
                        ..Default::default()
                    })
                } else {
                    Change::Keep
                }
            })
            .exec(db)
            .await
            .map(|o| (o.as_str(), o.model().id, o.model().v)),
        Form::UpdateRefuse => m::Entity::once(k, v)
            .update(|_: &m::Model, _: i64| Change::refuse(Refused))
            .exec(db)
            .await
            .map(|o| (o.as_str(), o.model().id, o.model().v)),
        Form::Batch(_) | Form::BatchUpdate(_) => unreachable!("a batch's items run in run_batch"),
    });
    Answer::of(result)
}

/// Newer wins: the update function of [`Form::Update`] and [`Form::BatchUpdate`].
macro_rules! newer_wins {
    ($m:ident) => {
        |existing: &$m::Model, v: i64| {
            if v > existing.v {
                Change::Update($m::ActiveModel {
                    v: Set(v),
                    ..Default::default()
                })
            } else {
                Change::Keep
            }
        }
    };
}

/// Runs a batch on the pool (dropped after its first item's `drop_after_us`) and records one
/// event per item: its outcome; after a failed chunk, the items done before it as of unknown
/// outcome (stored, but the answer is lost with the error), the others with the chunk's error.
async fn run_batch(recorder: &Recorder, world: &World, items: &[CallSpec], chunk: usize, at: At) {
    let Some(first) = items.first() else {
        return;
    };
    let started = Instant::now();
    let (wait_spec, update) = match first.form {
        Form::BatchUpdate(w) => (w, true),
        other => (other.wait(), false),
    };
    let db = &world.pool;
    // One table per batch: its entity, and each item's key as that entity takes it.
    macro_rules! batch_on {
        ($m:ident, |$item:ident| $key:expr) => {{
            let pairs: Vec<_> = items.iter().map(|$item| ($key, $item.v)).collect();
            let many = $m::Entity::many(pairs)
                .chunk_size(chunk)
                .wait(wait(wait_spec));
            let result: Result<Vec<(&'static str, i64, i64)>, Error> = if update {
                many.update(newer_wins!($m)).exec(db).await.map(|outcomes| {
                    outcomes
                        .iter()
                        .map(|o| (o.as_str(), o.model().id, o.model().v))
                        .collect()
                })
            } else {
                many.exec(db).await.map(|outcomes| {
                    outcomes
                        .iter()
                        .map(|o| (o.as_str(), o.model().id, o.model().v))
                        .collect()
                })
            };
            result
        }};
    }
    let run = async {
        match first.key.table {
            Table::Unique => batch_on!(unique_rows, |item| item.key.k),
            Table::Loose => batch_on!(loose_rows, |item| item.key.k),
            Table::Pairs => batch_on!(pair_rows, |item| (
                item.key.k,
                Tag(item.key.tag.map(str::to_owned))
            )),
        }
    };
    let result = match first.drop_after_us {
        Some(us) => tokio::time::timeout(Duration::from_micros(us), run)
            .await
            .ok(),
        None => Some(run.await),
    };
    let answers: Vec<(Answer, Commit)> = match result {
        None => items
            .iter()
            .map(|_| (Answer::Dropped, Commit::Unknown))
            .collect(),
        Some(Ok(outcomes)) => outcomes
            .into_iter()
            .map(|outcome| {
                let answer = Answer::of(Ok(outcome));
                let commit = match answer {
                    Answer::Created { .. } | Answer::Updated { .. } => Commit::Yes,
                    _ => Commit::No,
                };
                (answer, commit)
            })
            .collect(),
        Some(Err(Error::Batch { done, source, .. })) => {
            let failed = Answer::of(Err(*source));
            (0..items.len())
                .map(|i| {
                    if i < done {
                        (Answer::Dropped, Commit::Unknown)
                    } else {
                        (failed.clone(), Commit::No)
                    }
                })
                .collect()
        }
        Some(Err(err)) => {
            let failed = Answer::of(Err(err));
            items.iter().map(|_| (failed.clone(), Commit::No)).collect()
        }
    };
    let elapsed = started.elapsed();
    for (item, (answer, commit)) in items.iter().zip(answers) {
        recorder.push(Event {
            client: at.client,
            op: at.op,
            database: 0,
            place: Place::Batch,
            call: item.clone(),
            answer,
            elapsed,
            commit,
            after_failure: false,
        });
    }
}

/// The call inside the `make_data` of `outer`: recorded as an event of its own.
async fn inner_call(
    world: &World,
    recorder: &Recorder,
    outer: &CallSpec,
    inner: Inner,
    at: At,
) -> Result<(), InnerFailed> {
    let mut key = outer.key.clone();
    let (db, database) = match inner {
        Inner::SameKey => (&world.pool, 0),
        Inner::OtherKey => {
            key.k += 1_000;
            (&world.pool, 0)
        }
        Inner::OtherDatabase => (&world.other, 1),
    };
    let started = Instant::now();
    let answer = create(db, &key, outer.v).await;
    let commit = match answer {
        Answer::Created { .. } => Commit::Yes,
        _ => Commit::No,
    };
    recorder.push(Event {
        client: at.client,
        op: at.op,
        database,
        place: Place::Inner(inner),
        call: CallSpec {
            key,
            form: Form::Create,
            v: outer.v,
            drop_after_us: None,
        },
        answer: answer.clone(),
        elapsed: started.elapsed(),
        commit,
        after_failure: false,
    });
    match answer {
        Answer::Failed { text, .. } => Err(InnerFailed(text)),
        _ => Ok(()),
    }
}

/// Begins a caller's transaction: READ COMMITTED on the servers, as the crate requires.
async fn begin(world: &World, read_only: bool) -> Result<DatabaseTransaction, sea_orm::DbErr> {
    let access = read_only.then_some(AccessMode::ReadOnly);
    match world.backend {
        Backend::Sqlite => world.pool.begin().await,
        Backend::Postgres | Backend::MariaDb => {
            world
                .pool
                .begin_with_config(Some(IsolationLevel::ReadCommitted), access)
                .await
        }
    }
}

/// Ends `txn`: COMMIT when asked and nothing failed, else ROLLBACK; the commit each of
/// `indices` gets.
async fn end(txn: DatabaseTransaction, commit: bool, killed: bool) -> Commit {
    if !commit {
        return match txn.rollback().await {
            Ok(()) => Commit::No,
            Err(_) => Commit::No,
        };
    }
    match txn.commit().await {
        Ok(()) => Commit::Yes,
        // A COMMIT whose connection was killed may have committed.
        Err(_) if killed => Commit::Unknown,
        Err(_) => Commit::No,
    }
}

fn failed(answer: &Answer) -> bool {
    matches!(answer, Answer::Failed { .. } | Answer::Dropped)
}

/// Runs one operation of client `client`.
async fn run_op(
    world: &World,
    recorder: &Recorder,
    killed: bool,
    client: usize,
    index: usize,
    op: &Op,
) {
    let at = |place| At {
        client,
        op: index,
        place,
        after_failure: false,
    };
    match op {
        Op::Pool(spec) => {
            let (i, answer) = call(world, recorder, &world.pool, spec, at(Place::Pool)).await;
            if killed && matches!(answer, Answer::Failed { .. }) {
                recorder.set_commit(&[i], Commit::Unknown);
            }
        }
        Op::Txn {
            setup,
            calls,
            joined,
            commit,
        } => {
            let Ok(txn) = begin(world, *setup == Setup::ReadOnly).await else {
                return;
            };
            let set = match setup {
                Setup::StatementTimeoutMs(ms) => format!("SET LOCAL statement_timeout = {ms}"),
                Setup::LockTimeoutMs(ms) => format!("SET LOCAL lock_timeout = {ms}"),
                Setup::Plain | Setup::ReadOnly => String::new(),
            };
            if !set.is_empty() && txn.execute_unprepared(&set).await.is_err() {
                return;
            }
            let mut indices = Vec::new();
            let mut any_failed = false;
            if *joined {
                let answers = join_all(
                    calls
                        .iter()
                        .map(|spec| call(world, recorder, &txn, spec, at(Place::Txn(*setup)))),
                )
                .await;
                for (i, answer) in answers {
                    any_failed |= failed(&answer);
                    indices.push(i);
                }
            } else {
                for spec in calls {
                    let mut place = at(Place::Txn(*setup));
                    place.after_failure = any_failed;
                    let (i, answer) = call(world, recorder, &txn, spec, place).await;
                    any_failed |= failed(&answer);
                    indices.push(i);
                }
            }
            let commit = end(txn, *commit && !any_failed, killed).await;
            recorder.set_commit(&indices, commit);
        }
        Op::Nested {
            outer,
            nested,
            joined,
            nested_commit,
            commit,
        } => {
            let Ok(txn) = begin(world, false).await else {
                return;
            };
            let Ok(inner) = txn.begin().await else {
                let _ = txn.rollback().await;
                return;
            };
            let ((o, outer_answer), (n, nested_answer)) = if *joined {
                tokio::join!(
                    call(world, recorder, &txn, outer, at(Place::Outer)),
                    call(world, recorder, &inner, nested, at(Place::Nested)),
                )
            } else {
                let first = call(world, recorder, &txn, outer, at(Place::Outer)).await;
                let mut place = at(Place::Nested);
                place.after_failure = failed(&first.1);
                let second = call(world, recorder, &inner, nested, place).await;
                (first, second)
            };
            let any_failed = failed(&outer_answer) || failed(&nested_answer);
            let nested_end = end(inner, *nested_commit && !any_failed, killed).await;
            let outer_end = end(txn, *commit && !any_failed, killed).await;
            // Both calls ran while the nested transaction was open: on its one connection,
            // the outer call's work is inside the nested savepoint too (SeaORM's nesting), so
            // both need both COMMITs.
            let both = match (nested_end, outer_end) {
                (Commit::Yes, Commit::Yes) => Commit::Yes,
                (Commit::No, _) | (_, Commit::No) => Commit::No,
                _ => Commit::Unknown,
            };
            recorder.set_commit(&[o, n], both);
        }
        Op::LockTaker { k, v } => {
            let started = Instant::now();
            let answer = lock_taker(world, *k, *v).await;
            recorder.push(Event {
                client,
                op: index,
                database: 0,
                place: Place::LockTaker,
                call: CallSpec {
                    key: Key {
                        table: Table::Unique,
                        k: *k,
                        tag: None,
                    },
                    form: Form::Create,
                    v: *v,
                    drop_after_us: None,
                },
                commit: match answer {
                    Answer::Created { .. } => Commit::Yes,
                    _ if killed => Commit::Unknown,
                    _ => Commit::No,
                },
                answer,
                elapsed: started.elapsed(),
                after_failure: false,
            });
        }
        Op::Bypass { k, v } => {
            let backend = world.admin.get_database_backend();
            let sql = match backend {
                DbBackend::Postgres => "INSERT INTO chk_unique (k, v) VALUES ($1, $2)",
                _ => "INSERT INTO chk_unique (k, v) VALUES (?, ?)",
            };
            if let Ok(txn) = world.admin.begin().await {
                let insert =
                    Statement::from_sql_and_values(backend, sql, [(*k).into(), (*v).into()]);
                // A duplicate is this writer's own problem, not the crate's.
                match txn.execute_raw(insert).await {
                    Ok(_) => {
                        let _ = txn.commit().await;
                    }
                    Err(_) => {
                        let _ = txn.rollback().await;
                    }
                }
            }
        }
        Op::Deadlock { first, second, v } => {
            // Bounded: the two transactions wait for each other in this process (the second
            // round starts when both first calls returned), so with a third client in the
            // cycle the database sees idle transactions, not a deadlock; the bound ends it.
            let spec = |key: &Key, v| CallSpec {
                key: key.clone(),
                form: Form::Once(WaitSpec::TimeoutMs(2_000)),
                v,
                drop_after_us: None,
            };
            let (Ok(a), Ok(b)) = (begin(world, false).await, begin(world, false).await) else {
                return;
            };
            let (first, second) = (spec(first, *v), spec(second, v + 1));
            let (a1, b1) = tokio::join!(
                call(world, recorder, &a, &first, at(Place::Deadlock)),
                call(world, recorder, &b, &second, at(Place::Deadlock)),
            );
            // Each transaction ends as soon as its second call returns: the deadlock's victim
            // keeps the lock it took first until it rolls back.
            // A caller that goes on after an error (a deadlock is retryable) makes one more
            // call in the transaction: it must be refused, typed, if the server ended the
            // transaction (MariaDB rolls a deadlock's victim back whole), and must write
            // nothing that outlives the rollback that follows.
            let second_round = |txn: DatabaseTransaction, key: CallSpec, first: (usize, Answer)| async move {
                let second = call(world, recorder, &txn, &key, at(Place::Deadlock)).await;
                let mut ok = !failed(&first.1) && !failed(&second.1);
                let mut made = vec![first.0, second.0];
                if !ok {
                    let after = CallSpec {
                        key: Key {
                            table: Table::Loose,
                            k: 5 + key.key.k % 2,
                            tag: None,
                        },
                        form: Form::Create,
                        v: key.v + 2,
                        drop_after_us: None,
                    };
                    let mut place = at(Place::Deadlock);
                    place.after_failure = true;
                    let third = call(world, recorder, &txn, &after, place).await;
                    ok = false;
                    made.push(third.0);
                }
                let ended = end(txn, ok, killed).await;
                recorder.set_commit(&made, ended);
            };
            tokio::join!(
                second_round(a, second.clone(), a1),
                second_round(b, first.clone(), b1),
            );
        }
        Op::Batch { items, chunk } => {
            run_batch(recorder, world, items, *chunk, at(Place::Batch)).await;
        }
        Op::Kill => kill_a_session(world, client as u64 * 31 + index as u64).await,
    }
}

/// Kills one other session of the main database, chosen by `pick`.
async fn kill_a_session(world: &World, pick: u64) {
    let backend = world.admin.get_database_backend();
    let (list, kill) = match backend {
        DbBackend::Postgres => (
            "SELECT pid::bigint AS id FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND backend_type = 'client backend' ORDER BY pid",
            "SELECT pg_terminate_backend($1::integer)",
        ),
        _ => (
            "SELECT CAST(ID AS SIGNED) AS id FROM information_schema.PROCESSLIST \
             WHERE DB = DATABASE() AND ID <> CONNECTION_ID() ORDER BY ID",
            "KILL CONNECTION ?",
        ),
    };
    let Ok(rows) = world
        .admin
        .query_all_raw(Statement::from_string(backend, list))
        .await
    else {
        return;
    };
    let ids: Vec<i64> = rows
        .iter()
        .filter_map(|row| row.try_get::<i64>("", "id").ok())
        .collect();
    if ids.is_empty() {
        return;
    }
    let id = ids[(pick % ids.len() as u64) as usize];
    let _ = world
        .admin
        .execute_raw(Statement::from_sql_and_values(backend, kill, [id.into()]))
        .await;
}

/// How long a history may run: every wait in it is bounded far below this (the longest is a
/// deadlock's detection, or SQLite's `busy_timeout`), so a history still running then hangs.
pub const HISTORY_LIMIT: Duration = Duration::from_secs(60);

/// Runs `history` on `world` (its tables empty) and returns the events, and whether it hung
/// (its clients were still running after [`HISTORY_LIMIT`]; they are aborted).
pub async fn run(world: &World, history: &History) -> (Vec<Event>, bool) {
    let recorder = Recorder::default();
    let killed = history.has(|op| matches!(op, Op::Kill));
    let clients: Vec<_> = history
        .clients
        .iter()
        .enumerate()
        .map(|(client, ops)| {
            let world = world.clone();
            let recorder = recorder.clone();
            let ops = ops.clone();
            tokio::spawn(async move {
                for (index, op) in ops.iter().enumerate() {
                    run_op(&world, &recorder, killed, client, index, op).await;
                }
            })
        })
        .collect();
    let aborts: Vec<_> = clients.iter().map(|c| c.abort_handle()).collect();
    match tokio::time::timeout(HISTORY_LIMIT, join_all(clients)).await {
        Ok(done) => {
            for client in done {
                if let Err(err) = client
                    && err.is_panic()
                {
                    std::panic::resume_unwind(err.into_panic());
                }
            }
            (recorder.events(), false)
        }
        Err(_) => {
            for abort in aborts {
                abort.abort();
            }
            (recorder.events(), true)
        }
    }
}

/// Retries, after the history, every call on the pool whose error was retryable (with no
/// bound and no drop), as a caller following `is_retryable` would; returns the retries.
pub async fn retry(world: &World, events: &[Event]) -> Vec<Event> {
    let mut retries = Vec::new();
    for event in events {
        let retryable = matches!(
            event.answer,
            Answer::Failed {
                retryable: true,
                ..
            }
        );
        if !retryable || !matches!(event.place, Place::Pool | Place::Inner(_) | Place::Batch) {
            continue;
        }
        let db = if event.database == 1 {
            &world.other
        } else {
            &world.pool
        };
        let started = Instant::now();
        let answer = create(db, &event.call.key, event.call.v).await;
        let commit = match answer {
            Answer::Created { .. } => Commit::Yes,
            _ => Commit::No,
        };
        retries.push(Event {
            place: Place::Retry,
            answer,
            elapsed: started.elapsed(),
            commit,
            ..event.clone()
        });
    }
    retries
}

/// [`Op::LockTaker`]: the key's lock in a READ COMMITTED transaction on the calls' pool, a
/// look, and on a miss a pause and a plain INSERT. `Created` when it inserted (and committed),
/// `Existing` when the look found the row; a failure as `Failed`, not retryable (a unique
/// violation is `UniqueViolation`, a deadlock `Deadlock`, the lock's errors the crate's).
async fn lock_taker(world: &World, k: i64, v: i64) -> Answer {
    let failed = |variant: &str, err: &dyn std::fmt::Display| Answer::Failed {
        variant: variant.to_owned(),
        retryable: false,
        text: err.to_string(),
    };
    let db_failed = |err: sea_orm::DbErr| {
        let text = err.to_string();
        let variant = match err.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => "UniqueViolation",
            // 1467: MariaDB's failed wait for the table's AUTO-INC lock, a deadlock it
            // detected when the wait began (as the crate types it, `entity_wait_error`).
            _ if ["1213", "1467", "40P01"]
                .iter()
                .any(|code| text.contains(code)) =>
            {
                "Deadlock"
            }
            _ => "Database",
        };
        failed(variant, &text)
    };
    let txn = match world
        .pool
        .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
        .await
    {
        Ok(txn) => txn,
        Err(err) => return db_failed(err),
    };
    // The key as the crate derives it for `chk_unique` (whose namespace is the sample's).
    let key = sea_orm_idempotent::LockKey::for_entity(unique_rows::Entity::lock_namespace(), &k);
    if let Err(err) = sea_orm_idempotent::acquire_advisory_lock(&txn, key, Wait::Forever).await {
        return Answer::of(Err(err));
    }
    let backend = txn.get_database_backend();
    let (look, insert, pause) = match backend {
        DbBackend::Postgres => (
            "SELECT id FROM chk_unique WHERE k = $1",
            "INSERT INTO chk_unique (k, v) VALUES ($1, $2) RETURNING id",
            "SELECT pg_sleep(0.02)",
        ),
        _ => (
            "SELECT id FROM chk_unique WHERE k = ?",
            "INSERT INTO chk_unique (k, v) VALUES (?, ?) RETURNING id",
            "SELECT SLEEP(0.02)",
        ),
    };
    let found = txn
        .query_one_raw(Statement::from_sql_and_values(backend, look, [k.into()]))
        .await;
    match found {
        Ok(Some(row)) => {
            let _ = txn.commit().await;
            return match row.try_get::<i64>("", "id") {
                Ok(id) => Answer::Existing { id },
                Err(err) => failed("Read", &err),
            };
        }
        Ok(None) => {}
        Err(err) => return db_failed(err),
    }
    let _ = txn.execute_unprepared(pause).await;
    let inserted = txn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            insert,
            [k.into(), v.into()],
        ))
        .await;
    let id = match inserted {
        Ok(Some(row)) => match row.try_get::<i64>("", "id") {
            Ok(id) => id,
            Err(err) => return failed("Read", &err),
        },
        Ok(None) => return failed("Insert", &"no row returned"),
        Err(err) => return db_failed(err),
    };
    match txn.commit().await {
        Ok(()) => Answer::Created { id, v },
        Err(err) => db_failed(err),
    }
}
