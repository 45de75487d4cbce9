//! A history: what each client does, generated from a seed. Clients run at once; each runs
//! its operations one after another. An operation is a context (a pool, a caller's
//! transaction, a nested transaction, ...) with one or more calls in it, or a fault (a writer
//! that bypasses the lock, a killed connection, a deadlock between two transactions).

use crate::Backend;
use crate::rng::Rng;

/// Which table a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One-column key with a unique index (`chk_unique`).
    Unique,
    /// One-column key, no unique index (`chk_loose`): a broken lock shows as a second row.
    Loose,
    /// `(k, tag)`, `tag` nullable or holding separators, no unique index (`chk_pairs`).
    Pairs,
}

/// A natural key of one table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The table.
    pub table: Table,
    /// The `k` column.
    pub k: i64,
    /// The `tag` column (`Pairs` only).
    pub tag: Option<&'static str>,
}

/// One-column keys: a small space, so that calls contend, with a pair of keys whose lock keys
/// collide (in the `pull_requests` namespace).
pub const ONE_COLUMN_KEYS: [i64; 4] = [1, 2, 219_756_200_243, 235_370_421_790];
/// Tags of composite keys: missing (NULL), with separators, empty.
pub const TAGS: [Option<&str>; 4] = [None, Some("a,b"), Some("a"), Some("")];

/// How long a call waits for its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitSpec {
    /// `Wait::Forever` (the default).
    Forever,
    /// `Wait::No`.
    No,
    /// `Wait::Timeout` of this many milliseconds.
    TimeoutMs(u64),
}

/// A call inside `make_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inner {
    /// The same key on the pool: it would wait for its caller (refused).
    SameKey,
    /// Another key on the pool.
    OtherKey,
    /// The same key on another database (a tenant's).
    OtherDatabase,
}

/// The public form of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `create_once(db, key, data)`.
    Create,
    /// `create_once_with(db, key, make_data)`, optionally with a call inside `make_data`.
    CreateWith(Option<Inner>),
    /// `once(key, data).wait(w).exec(db)`.
    Once(WaitSpec),
    /// `once_with(key, make_data).wait(w).exec(db)`.
    OnceWith(WaitSpec),
    /// `once(key, data).wait(w).update(newer wins).exec(db)`.
    Update(WaitSpec),
    /// `once(key, data).update(|_, _| Change::refuse(..)).exec(db)`.
    UpdateRefuse,
    /// An item of a batch: `many(items).chunk_size(n).wait(w).exec(db)` ([`Op::Batch`]).
    Batch(WaitSpec),
    /// An item of a batch with the update function (newer wins): `many(items).update(..)`.
    BatchUpdate(WaitSpec),
}

impl Form {
    /// The wait the call asks for.
    pub fn wait(self) -> WaitSpec {
        match self {
            Form::Once(w)
            | Form::OnceWith(w)
            | Form::Update(w)
            | Form::Batch(w)
            | Form::BatchUpdate(w) => w,
            _ => WaitSpec::Forever,
        }
    }
}

/// One call: its key, form, data (a version) and whether it is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSpec {
    /// The key.
    pub key: Key,
    /// The form.
    pub form: Form,
    /// The row's version, the data.
    pub v: i64,
    /// Dropped after this many microseconds, if it has not returned by then.
    pub drop_after_us: Option<u64>,
}

/// What a caller does to its transaction before its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Nothing.
    Plain,
    /// `SET LOCAL statement_timeout` (PostgreSQL) of this many milliseconds.
    StatementTimeoutMs(u64),
    /// `SET LOCAL lock_timeout` (PostgreSQL) of this many milliseconds.
    LockTimeoutMs(u64),
    /// A read-only transaction.
    ReadOnly,
}

/// One operation of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// One call on the pool.
    Pool(CallSpec),
    /// A caller's READ COMMITTED transaction with calls in it, one after another or all at
    /// once (`join!`), then COMMIT or ROLLBACK.
    Txn {
        /// What the caller does first.
        setup: Setup,
        /// The calls.
        calls: Vec<CallSpec>,
        /// All at once on the one transaction.
        joined: bool,
        /// COMMIT (else ROLLBACK); any failed or dropped call makes it ROLLBACK.
        commit: bool,
    },
    /// A transaction and one nested in it (`txn.begin()`), a call on each, at once or one
    /// after another; the nested one committed or rolled back, then the outer one.
    Nested {
        /// The call on the outer transaction.
        outer: CallSpec,
        /// The call on the nested transaction.
        nested: CallSpec,
        /// At once.
        joined: bool,
        /// The nested transaction is committed (else rolled back).
        nested_commit: bool,
        /// The outer transaction is committed (else rolled back).
        commit: bool,
    },
    /// A writer that does not take the lock: a plain INSERT of the key (a one-column key of
    /// the table with a unique index) in its own transaction.
    Bypass {
        /// The key.
        k: i64,
        /// The version it writes.
        v: i64,
    },
    /// A taker of the key's lock that is not a call of the crate (the Python recipe): in a
    /// READ COMMITTED transaction it takes the lock of a key of `chk_unique`
    /// (`acquire_advisory_lock`, the key as the crate derives it, in the entity's namespace),
    /// looks, and on a miss
    /// pauses, then inserts with a plain INSERT. Its insert meets a unique violation only if
    /// a writer of the key did not take the lock: a `Bypass`, or a broken path of the crate.
    LockTaker {
        /// The key.
        k: i64,
        /// The version it writes.
        v: i64,
    },
    /// Two callers' transactions each take two keys, in opposite orders.
    Deadlock {
        /// The first key.
        first: Key,
        /// The second key.
        second: Key,
        /// The versions its calls write start here (four in all).
        v: i64,
    },
    /// A batch on the pool: its items (keys of one table, duplicates likely, every item of the
    /// same form: [`Form::Batch`] or [`Form::BatchUpdate`]), in chunks of `chunk`, the whole
    /// batch dropped after the first item's `drop_after_us`.
    Batch {
        /// The items.
        items: Vec<CallSpec>,
        /// Items per chunk.
        chunk: usize,
    },
    /// Another session of the database is killed (PostgreSQL `pg_terminate_backend`, MariaDB
    /// `KILL CONNECTION`).
    Kill,
}

/// A history: the clients' operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The seed it was generated from.
    pub seed: u64,
    /// Each client's operations, run in order; the clients run at once.
    pub clients: Vec<Vec<Op>>,
}

impl History {
    /// The number of operations.
    pub fn len(&self) -> usize {
        self.clients.iter().map(Vec::len).sum()
    }

    /// Whether it has no operation.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The history without operation `index` (counted across clients).
    pub fn without(&self, mut index: usize) -> History {
        let mut clients = self.clients.clone();
        for ops in &mut clients {
            if index < ops.len() {
                ops.remove(index);
                break;
            }
            index -= ops.len();
        }
        clients.retain(|ops| !ops.is_empty());
        History {
            seed: self.seed,
            clients,
        }
    }

    /// Whether any operation is of a kind (`Bypass`, `Kill`, ...).
    pub fn has(&self, kind: impl Fn(&Op) -> bool) -> bool {
        self.clients.iter().flatten().any(kind)
    }
}

/// Generates histories for one backend.
#[derive(Debug)]
pub struct Generator {
    rng: Rng,
    backend: Backend,
    next_v: i64,
    cross_waits: bool,
}

impl Generator {
    /// A generator of histories from `seed` for `backend`.
    pub fn new(seed: u64, backend: Backend) -> Generator {
        Generator {
            rng: Rng::new(seed),
            backend,
            next_v: 1,
            cross_waits: true,
        }
    }

    /// Without operations whose transaction waits in the application while it holds locks:
    /// [`Op::Deadlock`] (each transaction waits for the other's first call) and calls inside
    /// `make_data` (the enclosing call waits for them). A seed then gives other histories.
    pub fn without_cross_waits(mut self) -> Generator {
        self.cross_waits = false;
        self
    }

    /// The next history: 2 to 4 clients of 1 to 5 operations each.
    pub fn history(&mut self) -> History {
        let seed = self.rng.next_u64();
        let mut rng = Rng::new(seed);
        let clients = (0..2 + rng.below(3))
            .map(|_| (0..1 + rng.below(5)).map(|_| self.op(&mut rng)).collect())
            .collect();
        History { seed, clients }
    }

    fn key(&mut self, rng: &mut Rng) -> Key {
        let table = rng.pick(&[Table::Unique, Table::Loose, Table::Pairs]);
        self.key_of(rng, table)
    }

    fn key_of(&mut self, rng: &mut Rng, table: Table) -> Key {
        match table {
            Table::Pairs => Key {
                table,
                k: rng.pick(&[1, 2]),
                tag: rng.pick(&TAGS),
            },
            _ => Key {
                table,
                k: rng.pick(&ONE_COLUMN_KEYS),
                tag: None,
            },
        }
    }

    fn wait(&mut self, rng: &mut Rng) -> WaitSpec {
        match rng.below(10) {
            0..=5 => WaitSpec::Forever,
            6 | 7 => WaitSpec::No,
            _ => WaitSpec::TimeoutMs(rng.pick(&[1, 50, 300])),
        }
    }

    fn call(&mut self, rng: &mut Rng, in_txn: bool) -> CallSpec {
        let key = self.key(rng);
        let form = match rng.below(12) {
            0..=2 => Form::Create,
            3 => Form::CreateWith(None),
            // Calls inside make_data: on the pool only (a caller's transaction is one
            // connection: the crate nests them, a case of its own).
            4 if !in_txn && self.cross_waits => Form::CreateWith(Some(rng.pick(&[
                Inner::SameKey,
                Inner::OtherKey,
                Inner::OtherDatabase,
            ]))),
            4 | 5 => Form::Once(self.wait(rng)),
            6 => Form::OnceWith(self.wait(rng)),
            7..=9 => Form::Update(self.wait(rng)),
            10 => Form::UpdateRefuse,
            _ => Form::Create,
        };
        self.next_v += 1;
        let drop_after_us = rng.chance(12).then(|| rng.below(4_000));
        CallSpec {
            key,
            form,
            v: self.next_v,
            // On MariaDB only the crate's own transaction is shielded from a dropped call:
            // sqlx-mysql cannot abandon a statement, so a call dropped on a caller's
            // transaction leaves its connection mid-answer (docs/backends.md says to spawn calls
            // that may be abandoned there). Not a case the crate promises.
            drop_after_us: drop_after_us.filter(|_| !(in_txn && self.backend == Backend::MariaDb)),
        }
    }

    fn batch(&mut self, rng: &mut Rng) -> Op {
        let table = rng.pick(&[Table::Unique, Table::Loose, Table::Pairs]);
        let wait = match self.backend {
            // SQLite refuses bounded waits up front (its wait is the busy_timeout).
            Backend::Sqlite => WaitSpec::Forever,
            _ => self.wait(rng),
        };
        let form = if rng.chance(30) {
            Form::BatchUpdate(wait)
        } else {
            Form::Batch(wait)
        };
        let drop_after_us = rng.chance(12).then(|| rng.below(8_000));
        let items = (0..2 + rng.below(5))
            .map(|_| {
                self.next_v += 1;
                CallSpec {
                    key: self.key_of(rng, table),
                    form,
                    v: self.next_v,
                    drop_after_us,
                }
            })
            .collect();
        Op::Batch {
            items,
            chunk: 1 + rng.below(4) as usize,
        }
    }

    fn op(&mut self, rng: &mut Rng) -> Op {
        let servers = self.backend != Backend::Sqlite;
        match rng.below(100) {
            0..=29 => Op::Pool(self.call(rng, false)),
            30..=39 => self.batch(rng),
            40..=69 => {
                let setup = match rng.below(10) {
                    0 if self.backend == Backend::Postgres => {
                        Setup::StatementTimeoutMs(rng.pick(&[20, 200]))
                    }
                    1 if self.backend == Backend::Postgres => {
                        Setup::LockTimeoutMs(rng.pick(&[20, 200]))
                    }
                    2 => Setup::ReadOnly,
                    _ => Setup::Plain,
                };
                let calls = (0..1 + rng.below(3))
                    .map(|_| self.call(rng, true))
                    .collect();
                Op::Txn {
                    setup,
                    calls,
                    joined: rng.chance(40),
                    commit: rng.chance(75),
                }
            }
            70..=79 => Op::Nested {
                outer: self.call(rng, true),
                nested: self.call(rng, true),
                joined: rng.chance(50),
                nested_commit: rng.chance(80),
                commit: rng.chance(75),
            },
            80..=84 if servers => {
                self.next_v += 1;
                Op::Bypass {
                    k: rng.pick(&ONE_COLUMN_KEYS),
                    v: self.next_v,
                }
            }
            85..=89 if servers => {
                self.next_v += 1;
                Op::LockTaker {
                    k: rng.pick(&ONE_COLUMN_KEYS),
                    v: self.next_v,
                }
            }
            90..=94 if servers && self.cross_waits => {
                let table = rng.pick(&[Table::Unique, Table::Loose]);
                let first = self.key_of(rng, table);
                let mut second = self.key_of(rng, table);
                while second == first {
                    second = self.key_of(rng, table);
                }
                self.next_v += 4;
                Op::Deadlock {
                    first,
                    second,
                    v: self.next_v - 3,
                }
            }
            95..=99 if servers => Op::Kill,
            _ => Op::Pool(self.call(rng, false)),
        }
    }
}
