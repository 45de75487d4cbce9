//! The promise, as invariants over a history's events and the tables' final state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::Backend;
use crate::history::{Form, History, Inner, Op, Setup, Table, WaitSpec};
use crate::runner::{Answer, Commit, Event, Place};

/// A row of the final state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 0: the main database, 1: the other one.
    pub database: usize,
    /// Its table.
    pub table: Table,
    /// Its id.
    pub id: i64,
    /// Its `k`.
    pub k: i64,
    /// Its `tag` (`Pairs` only).
    pub tag: Option<String>,
    /// Its version.
    pub v: i64,
}

/// What a history's faults allow.
struct Faults {
    bypass: bool,
    kill: bool,
    /// Callers' transactions that take several keys: they can deadlock, and PostgreSQL may
    /// choose any waiter in the cycle's queues as the victim, a call on the pool included.
    deadlocks: bool,
}

/// Every invariant the history breaks, in words.
pub fn check(
    backend: Backend,
    history: &History,
    events: &[Event],
    rows: &[Row],
    leftovers: &[String],
) -> Vec<String> {
    let faults = Faults {
        bypass: history.has(|op| matches!(op, Op::Bypass { .. })),
        kill: history.has(|op| matches!(op, Op::Kill)),
        deadlocks: history.has(|op| match op {
            Op::Deadlock { .. } | Op::Nested { .. } => true,
            Op::Txn { calls, .. } => calls.len() > 1,
            _ => false,
        }),
    };
    let mut found = Vec::new();

    // At most one row per key.
    let mut per_key: BTreeMap<(usize, Table, i64, Option<String>), Vec<i64>> = BTreeMap::new();
    for row in rows {
        per_key
            .entry((row.database, row.table, row.k, row.tag.clone()))
            .or_default()
            .push(row.id);
    }
    for (key, ids) in &per_key {
        if ids.len() > 1 {
            found.push(format!("{} rows for key {key:?}: ids {ids:?}", ids.len()));
        }
    }

    // Created at most once per key among committed contexts; what committed is there, what
    // rolled back is not.
    let ids: BTreeSet<(usize, Table, i64)> =
        rows.iter().map(|r| (r.database, r.table, r.id)).collect();
    let versions: BTreeMap<(usize, Table, i64), i64> = rows
        .iter()
        .map(|r| ((r.database, r.table, r.id), r.v))
        .collect();
    let mut created: BTreeMap<(usize, Table, i64, Option<&str>), usize> = BTreeMap::new();
    for event in events {
        let key = &event.call.key;
        match (&event.answer, event.commit) {
            (Answer::Created { id, .. }, Commit::Yes) => {
                *created
                    .entry((event.database, key.table, key.k, key.tag))
                    .or_default() += 1;
                if !ids.contains(&(event.database, key.table, *id)) {
                    found.push(format!("committed Created row {id} is gone: {event:?}"));
                }
            }
            (Answer::Updated { id, .. }, Commit::Yes)
                if !ids.contains(&(event.database, key.table, *id)) =>
            {
                found.push(format!("committed Updated row {id} is gone: {event:?}"));
            }
            // Ids of rolled-back inserts may be used again (SQLite rolls its sequence back
            // too), so what must not persist is the write itself: the row at that id with the
            // version the call wrote (every call writes a version of its own).
            (Answer::Created { id, v } | Answer::Updated { id, v }, Commit::No)
                if versions.get(&(event.database, key.table, *id)) == Some(v) =>
            {
                found.push(format!(
                    "row {id} as written in a context that rolled back persists: {event:?}"
                ));
            }
            _ => {}
        }
    }
    // Every row a call answered with is a row of the call's key. Only where the row is known
    // to be the one answered with: a committed context's, or one a call on the pool found (an
    // id of a rolled-back insert may be used again by another key's row).
    let keys: BTreeMap<(usize, Table, i64), (i64, Option<&str>)> = rows
        .iter()
        .map(|r| ((r.database, r.table, r.id), (r.k, r.tag.as_deref())))
        .collect();
    for event in events {
        let id = match (&event.answer, event.commit, event.place) {
            (Answer::Created { id, .. } | Answer::Updated { id, .. }, Commit::Yes, _)
            | (Answer::Existing { id } | Answer::Unchanged { id }, _, Place::Pool | Place::Batch) => {
                *id
            }
            _ => continue,
        };
        let key = &event.call.key;
        if let Some(&(k, tag)) = keys.get(&(event.database, key.table, id))
            && (k, tag) != (key.k, key.tag)
        {
            found.push(format!(
                "answered with row {id} of key ({k}, {tag:?}), not the call's: {event:?}"
            ));
        }
    }
    for (key, count) in created {
        if count > 1 {
            found.push(format!(
                "Created {count} times in committed contexts: key {key:?}"
            ));
        }
    }

    // Errors are typed and consistent with the faults; retryable errors pass when retried.
    let failed_ops: BTreeSet<(usize, usize)> = events
        .iter()
        .filter(|e| matches!(e.answer, Answer::Failed { .. } | Answer::Dropped))
        .map(|e| (e.client, e.op))
        .collect();
    for event in events {
        if let Answer::Failed {
            variant, retryable, ..
        } = &event.answer
        {
            if event.place == Place::Retry {
                found.push(format!(
                    "a retryable error failed again when retried: {event:?}"
                ));
            } else if !allowed(backend, &faults, event, variant, *retryable, &failed_ops) {
                found.push(format!("unexpected error {variant}: {event:?}"));
            }
        }
        if let Some(bound) = bound(backend, event)
            && !faults.kill
            && event.elapsed > bound
        {
            found.push(format!(
                "the call outlived its bound ({bound:?}): took {:?}: {event:?}",
                event.elapsed
            ));
        }
    }

    for leftover in leftovers {
        found.push(format!("left behind after the history: {leftover}"));
    }
    found
}

/// Whether error `variant` is one the call may get, given where it ran and the faults.
fn allowed(
    backend: Backend,
    faults: &Faults,
    event: &Event,
    variant: &str,
    retryable: bool,
    failed_ops: &BTreeSet<(usize, usize)>,
) -> bool {
    let wait = event.call.form.wait();
    let setup = match event.place {
        Place::Txn(setup) => Some(setup),
        _ => None,
    };
    let in_txn = matches!(
        event.place,
        Place::Txn(_) | Place::Outer | Place::Nested | Place::Deadlock
    );
    // Another call of the same transaction failed or was dropped: it may be aborted.
    let sibling_failed = in_txn && failed_ops.contains(&(event.client, event.op));
    let timeouts = matches!(
        setup,
        Some(Setup::StatementTimeoutMs(_) | Setup::LockTimeoutMs(_))
    );
    match variant {
        "LockBusy" => wait == WaitSpec::No,
        "LockTimeout" => {
            matches!(wait, WaitSpec::TimeoutMs(_)) || timeouts || backend == Backend::Sqlite
        }
        // Callers' transactions that take several keys can take them in opposite orders.
        // (A lock-taker that is not the crate is a caller's transaction of its own.)
        "Deadlock" => in_txn || faults.deadlocks || event.place == Place::LockTaker,
        "TransactionAborted" => event.after_failure || sibling_failed || timeouts || faults.kill,
        "ReadOnly" => setup == Some(Setup::ReadOnly),
        "Reentrant" => match event.place {
            Place::Inner(Inner::SameKey) => true,
            Place::Inner(Inner::OtherKey) => backend == Backend::Sqlite,
            _ => false,
        },
        "MakeData" => matches!(event.call.form, Form::CreateWith(Some(_))),
        "UpdateRefused" => event.call.form == Form::UpdateRefuse,
        "WrittenWithoutLock" => faults.bypass && event.call.key.table == Table::Unique,
        "UnsupportedBackend" => backend == Backend::Sqlite && wait != WaitSpec::Forever,
        "Database" => (retryable || event.place == Place::LockTaker) && (faults.kill || timeouts),
        // A lock-taker that is not the crate: a unique violation only behind a writer that
        // took no lock.
        "UniqueViolation" => event.place == Place::LockTaker && faults.bypass,
        _ => false,
    }
}

/// How long a call on the pool may take: its bound and some slack (MariaDB rounds a bound up
/// to whole seconds).
fn bound(backend: Backend, event: &Event) -> Option<Duration> {
    if event.place != Place::Pool {
        return None;
    }
    let ms = match event.call.form.wait() {
        WaitSpec::Forever => return None,
        WaitSpec::No => 0,
        WaitSpec::TimeoutMs(ms) => ms,
    };
    let slack = Duration::from_millis(1_500);
    Some(match backend {
        Backend::MariaDb => Duration::from_secs(ms.div_ceil(1_000)) + slack,
        Backend::Postgres | Backend::Sqlite => Duration::from_millis(ms) + slack,
    })
}
