//! One call of [`IdempotentCreate`](crate::IdempotentCreate), from the first look to COMMIT:
//! [`create`] takes the caller's turn, looks, begins the transaction (or a savepoint of the
//! caller's), takes the lock through the backend seam, runs `make_data` if the row is missing,
//! inserts unless present, and commits or rolls back. Read top to bottom, it is the whole
//! path of a call; the statements it sends are at the end.
//!
//! (Over 400 lines on purpose: the point of this file is one call's whole path in one read,
//! with the key it binds and the statements it sends.)

use std::convert::Infallible;
use std::future::Future;

use sea_orm::sea_query::{Expr, ExprTrait, InsertStatement, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbErr, FromQueryResult, Iterable, QueryFilter, QueryTrait, Value,
};
use tracing::{Instrument, field};

use crate::backend::{self, Backend};
use crate::call_chain::{Chain, Frame, Held, On};
use crate::natural_key::{Key, NaturalKey};
use crate::savepoint::Savepoint;
use crate::source::{Handle, PoolId, TxnId};
use crate::turns::{self, Place};
use crate::wait::Deadline;
use crate::{Error, IdempotentCreate, LockKey, Outcome, Wait};

/// The boxed error a `make_data` closure may fail with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The maker type of [`NewRow::Ready`], never called: the data is given up front.
pub(crate) type UnusedMaker<D> = fn() -> std::future::Ready<Result<D, Infallible>>;

/// The data of a new row: given up front, or made only once we know the row is missing.
pub(crate) enum NewRow<D, F> {
    Ready(D),
    Make(F),
}

pub(crate) async fn create<T, S, F, Fut, E>(
    db: Handle<'_>,
    key: T::Key,
    wait: Wait,
    new_row: NewRow<T::Data, F>,
) -> Result<Outcome<T::Model>, Error>
where
    T: IdempotentCreate,
    T::Key: NaturalKey<S>,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T::Data, E>> + Send,
    E: Into<BoxError>,
{
    let backend = Backend::of(match db {
        Handle::Connection(conn) => conn.get_database_backend(),
        Handle::Transaction(txn) => txn.get_database_backend(),
    })?;
    // Refused up front, so the answer does not depend on whether the row exists yet.
    backend.check_wait(wait)?;
    let natural = Key::new(&key);
    let lock_key = natural.lock_key(T::lock_namespace());
    let values = natural.values();
    let columns = T::key_columns();
    if columns.len() != values.len() {
        return Err(Error::KeyColumns {
            table: T::default().table_name(),
            columns: columns.len(),
            parts: values.len(),
        });
    }
    let shown = T::log_key().then(|| natural.to_string());
    let key = CallKey::<T> {
        key,
        columns,
        values,
        shown,
    };
    // `lock_wait_us`: everything between the call and holding the key, for calls that got
    // past the first look: taking turns, a connection, BEGIN (on SQLite, its write lock) and
    // the advisory lock.
    let span = tracing::info_span!(
        "create_once",
        entity = T::default().table_name(),
        natural_key = key.shown(),
        lock_key = %lock_key,
        lock_wait_us = field::Empty,
        outcome = field::Empty,
    );
    let call = Call {
        backend,
        lock_key,
        deadline: Deadline::starting_now(wait),
        chain: Chain::current(),
        span: span.clone(),
    };
    let result = match db {
        Handle::Connection(conn) => {
            call.on_connection::<T, F, Fut, E>(conn, &key, new_row)
                .await
        }
        Handle::Transaction(txn) => {
            call.in_callers_transaction::<T, F, Fut, E>(txn, &key, new_row)
                .await
        }
    }
    .map_err(|err| match backend {
        Backend::Sqlite => err.sqlite_busy_as_timeout(lock_key),
        Backend::Postgres | Backend::MySql => err,
    })
    .map_err(|err| err.about_row(T::default().table_name(), key.shown.as_deref()));
    span.record(
        "outcome",
        match &result {
            Ok(outcome) => outcome.as_str(),
            Err(_) => "error",
        },
    );
    result
}

/// The text logged in place of a key whose entity keeps keys out of logs
/// ([`IdempotentCreate::log_key`]).
const REDACTED: &str = "<redacted>";

/// A call's natural key: as given (for `new_active_model`), and the columns and values it
/// binds, one value per key column.
struct CallKey<T: IdempotentCreate> {
    key: T::Key,
    columns: Vec<T::Column>,
    values: Vec<Value>,
    /// The key for logs and errors, unless the entity keeps keys out of them.
    shown: Option<String>,
}

impl<T: IdempotentCreate> CallKey<T> {
    /// Every key column equal to its part of the key, each value bound.
    fn condition(&self) -> Condition {
        self.columns
            .iter()
            .zip(&self.values)
            .fold(Condition::all(), |all, (column, value)| {
                all.add(ColumnTrait::eq(column, value.clone()))
            })
    }

    fn shown(&self) -> &str {
        self.shown.as_deref().unwrap_or(REDACTED)
    }
}

/// One call of [`create`], and what every step of it needs.
struct Call {
    backend: Backend,
    lock_key: LockKey,
    /// The caller's wait, from the call's start.
    deadline: Deadline,
    /// The calls this one was made inside (see [`call_chain`](crate::call_chain)).
    chain: Chain,
    span: tracing::Span,
}

/// Where the work under the lock runs, and how it ends.
enum Scope<'a> {
    /// The crate's own transaction: COMMIT or ROLLBACK.
    Own(DatabaseTransaction),
    /// A savepoint of the crate's in a caller's transaction: RELEASE, or ROLLBACK TO.
    Savepoint(Savepoint<'a>),
}

impl Scope<'_> {
    fn txn(&self) -> &DatabaseTransaction {
        match self {
            Scope::Own(txn) => txn,
            Scope::Savepoint(savepoint) => savepoint.txn(),
        }
    }

    async fn commit(self) -> Result<(), Error> {
        match self {
            Scope::Own(txn) => Ok(txn.commit().await?),
            Scope::Savepoint(savepoint) => savepoint.release().await,
        }
    }

    async fn rollback(self) -> Result<(), Error> {
        match self {
            Scope::Own(txn) => Ok(txn.rollback().await?),
            Scope::Savepoint(savepoint) => savepoint.rollback().await,
        }
    }
}

impl Call {
    /// On a connection: take the key's turn among this pool's callers, look, and only if the
    /// row is missing begin the crate's own transaction, lock, insert unless present, commit.
    async fn on_connection<T, F, Fut, E>(
        &self,
        conn: &DatabaseConnection,
        key: &CallKey<T>,
        new_row: NewRow<T::Data, F>,
    ) -> Result<Outcome<T::Model>, Error>
    where
        T: IdempotentCreate,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T::Data, E>> + Send,
        E: Into<BoxError>,
    {
        let held = self.backend.held(self.lock_key, On::Connection);
        self.refuse_reentry(held, On::Connection)?;
        let work = async {
            // The waiting room (src/turns.rs): callers of one PostgreSQL pool on the same key
            // take turns before taking a connection, so a burst on one key holds at most one of
            // the pool's connections. The turn is held to the end of this block (after COMMIT
            // or ROLLBACK); the advisory lock still decides. A caller whose bound ran out here
            // goes on without a turn.
            let _turn = match PoolId::of(conn) {
                Some(pool) => {
                    let place = Place::Key {
                        pool,
                        key: self.lock_key,
                    };
                    turns::take(place, self.deadline.asked()).await
                }
                None => None,
            };
            // Most duplicates arrive after the first delivery committed: one statement, no
            // lock.
            if let Some(model) = find::<T, _>(conn, key).await? {
                return Ok(Outcome::Existing(model));
            }
            let txn = self.backend.begin(conn, self.lock_key).await?;
            let frame = Frame {
                held,
                on: On::Connection,
            };
            self.lock_create_and_end::<T, F, Fut, E>(Scope::Own(txn), key, new_row, frame)
                .await
        };
        work.instrument(self.span.clone()).await
    }

    /// In a caller's transaction: take this transaction's turn, then in a savepoint of the
    /// crate's own lock and insert unless present, then release the savepoint (the caller's
    /// commit decides) or roll back to it.
    async fn in_callers_transaction<T, F, Fut, E>(
        &self,
        txn: &DatabaseTransaction,
        key: &CallKey<T>,
        new_row: NewRow<T::Data, F>,
    ) -> Result<Outcome<T::Model>, Error>
    where
        T: IdempotentCreate,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T::Data, E>> + Send,
        E: Into<BoxError>,
    {
        let txn_id = TxnId::of(txn);
        let on = On::Transaction(txn_id);
        let held = self.backend.held(self.lock_key, on);
        self.refuse_reentry(held, on)?;
        let work = async {
            // Calls on one transaction take turns (src/turns.rs): interleaved savepoints would
            // undo each other's work.
            let place = Place::Transaction {
                txn: txn_id,
                depth: self.chain.depth_on(txn_id),
            };
            let Some(_turn) = turns::take(place, self.deadline.asked()).await else {
                return Err(self.ran_out());
            };
            // No look before the savepoint: the connection is held already (nothing to save),
            // a look would take a REPEATABLE READ snapshot and answer before the isolation
            // check, and a failed look would abort the caller's transaction.
            let savepoint = Savepoint::begin(txn).await?;
            let frame = Frame { held, on };
            self.lock_create_and_end::<T, F, Fut, E>(
                Scope::Savepoint(savepoint),
                key,
                new_row,
                frame,
            )
            .await
        };
        work.instrument(self.span.clone()).await
    }

    /// In `scope`: take the lock, create the row unless present, then end the scope: commit
    /// (or release the savepoint) after success, roll back at once after an error.
    async fn lock_create_and_end<T, F, Fut, E>(
        &self,
        scope: Scope<'_>,
        key: &CallKey<T>,
        new_row: NewRow<T::Data, F>,
        frame: Frame,
    ) -> Result<Outcome<T::Model>, Error>
    where
        T: IdempotentCreate,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T::Data, E>> + Send,
        E: Into<BoxError>,
    {
        let locked = async {
            self.backend
                .lock(scope.txn(), self.lock_key, self.deadline)
                .await?;
            self.record_wait();
            self.create_under_lock::<T, F, Fut, E>(scope.txn(), key, new_row, frame)
                .await
        }
        .await;
        match locked {
            Ok(outcome) => {
                scope.commit().await?;
                Ok(outcome)
            }
            Err(err) => {
                // Roll back now, so the lock is free when the caller sees the error: dropping
                // the crate's own transaction would only queue the ROLLBACK for the pool to send
                // when it next checks the connection. If the rollback fails, the connection
                // (and with its session, the lock) is gone.
                if let Err(rollback) = scope.rollback().await {
                    tracing::debug!(%rollback, "rollback after a failed create_once failed");
                }
                Err(err)
            }
        }
    }

    /// With the lock held: insert the row unless it exists now. `make_data` runs only when a
    /// fresh look finds no row, with this call's frame on the call chain.
    async fn create_under_lock<T, F, Fut, E>(
        &self,
        txn: &DatabaseTransaction,
        key: &CallKey<T>,
        new_row: NewRow<T::Data, F>,
        frame: Frame,
    ) -> Result<Outcome<T::Model>, Error>
    where
        T: IdempotentCreate,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T::Data, E>> + Send,
        E: Into<BoxError>,
    {
        match new_row {
            NewRow::Ready(data) => insert_unless_exists::<T, _>(txn, key, data).await,
            NewRow::Make(make_data) => match find::<T, _>(txn, key).await? {
                Some(model) => Ok(Outcome::Existing(model)),
                None => {
                    let data = self
                        .chain
                        .run_inside(frame, make_data())
                        .await
                        .map_err(|e| Error::MakeData(e.into()))?;
                    insert_unless_exists::<T, _>(txn, key, data).await
                }
            },
        }
    }

    /// Refuses a call whose lock an enclosing call holds elsewhere: it would wait for itself.
    fn refuse_reentry(&self, held: Option<Held>, on: On) -> Result<(), Error> {
        match held {
            Some(held) if self.chain.would_wait_for_itself(held, on) => {
                Err(Error::Reentrant { key: self.lock_key })
            }
            _ => Ok(()),
        }
    }

    /// The error of a bound that ran out before the database was asked.
    fn ran_out(&self) -> Error {
        match self.deadline.reported_bound() {
            Some(timeout) => Error::LockTimeout {
                key: self.lock_key,
                row: None,
                timeout: Some(timeout),
                source: None,
            },
            None => Error::LockBusy {
                key: self.lock_key,
                row: None,
            },
        }
    }

    fn record_wait(&self) {
        let waited = self.deadline.elapsed();
        self.span.record(
            "lock_wait_us",
            u64::try_from(waited.as_micros()).unwrap_or(u64::MAX),
        );
    }
}

async fn find<T, C>(db: &C, key: &CallKey<T>) -> Result<Option<T::Model>, DbErr>
where
    T: IdempotentCreate,
    C: ConnectionTrait,
{
    T::find().filter(key.condition()).one(db).await
}

/// Inserts the row with a guard (`INSERT ... SELECT ... WHERE NOT EXISTS`), then, only if the
/// guard found the row, reads it. Under the lock the guard never fires on PostgreSQL unless the
/// row appeared between our first look and the lock; on SQLite inside a caller's transaction
/// it is what makes look-and-insert one atomic statement under the write lock.
async fn insert_unless_exists<T, C>(
    txn: &C,
    key: &CallKey<T>,
    data: T::Data,
) -> Result<Outcome<T::Model>, Error>
where
    T: IdempotentCreate,
    C: ConnectionTrait,
{
    let insert = insert_unless_exists_statement::<T>(key, T::new_active_model(&key.key, data))?;
    let reread = T::find().filter(key.condition()).into_query(); // MySQL: no RETURNING
    if let Some(row) = backend::insert_returning(txn, &insert, reread).await? {
        return Ok(Outcome::Created(T::Model::from_query_result(&row, "")?));
    }
    match find::<T, _>(txn, key).await? {
        Some(model) => Ok(Outcome::Existing(model)),
        None => Err(Error::Database(DbErr::RecordNotFound(format!(
            "{}: the insert found a row for key {} that is no longer there",
            T::default().table_name(),
            key.shown()
        )))),
    }
}

/// `INSERT INTO t (cols) SELECT vals WHERE NOT EXISTS (SELECT 1 FROM t WHERE k1 = $1 AND
/// k2 = $2 ...) RETURNING cols`, every value bound, with SeaORM's own per-column casts (enums).
///
/// Fails (instead of panicking) when the key's value does not fit the key column's type.
fn insert_unless_exists_statement<T: IdempotentCreate>(
    key: &CallKey<T>,
    mut row: T::ActiveModel,
) -> Result<InsertStatement, DbErr> {
    for (column, value) in key.columns.iter().zip(&key.values) {
        row.try_set(*column, value.clone())?;
    }
    let (columns, values): (Vec<_>, Vec<_>) = T::Column::iter()
        .filter_map(|column| match row.get(column) {
            ActiveValue::Set(value) | ActiveValue::Unchanged(value) => {
                Some((column, column.save_as(Expr::val(value))))
            }
            ActiveValue::NotSet => None,
        })
        .unzip();
    let existing = Query::select()
        .expr(Expr::cust("1"))
        .from(T::default().table_ref())
        .cond_where(key.condition())
        .to_owned();
    let source = Query::select()
        .exprs(values)
        .and_where(Expr::exists(existing).not())
        .to_owned();
    let mut insert = Query::insert();
    insert
        .into_table(T::default().table_ref())
        .columns(columns)
        .select_from(source)
        .expect("columns and values are built pairwise, so their counts match")
        .returning(
            Query::returning()
                .exprs(T::Column::iter().map(|column| column.select_as(Expr::col(column)))),
        );
    Ok(insert.to_owned())
}
