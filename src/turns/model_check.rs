//! Turns under the shuttle model checker, in the interleavings of small scenarios.
//!
//! Run: `RUSTFLAGS="--cfg shuttle" cargo test --lib turns::model_check` (`.ci/run` does, in a
//! target directory of its own, since the flag rebuilds every crate).
//!
//! Why shuttle and not loom: turns are async code (a fair async mutex per place, futures dropped
//! while they wait), and shuttle runs futures, aborts tasks at any await and models tokio's fair
//! semaphore (`BatchSemaphore`), from which `sync.rs` builds the async mutex as tokio builds its
//! own. Loom has no `Weak`, which the map holds, and no async mutex; and `--cfg loom` would also
//! switch tokio to its own loom build.
//!
//! Shuttle switches tasks only at the scheduling points of its primitives (the map's lock, the
//! async mutex, `abort`, and the release of each `Arc` that `sync.rs` adds), in a sequentially
//! consistent memory: enough here, where all that is shared is behind the map's lock or the async
//! mutex, but for the reference counts. Scenarios of two tasks run in every interleaving
//! (`DfsScheduler` without a bound: 140,000 to 380,000 each); the two of three visits have too
//! many to run them all (a search did not end in minutes), and PCT picks 20,000 of them. Each execution gets fresh [`Places`]. All of it takes
//! about a minute and a half on two busy cores.
//!
//! What each scenario checks:
//!
//! - never two holders of one place (mutual exclusion), and a held place is in the map (else a
//!   newcomer would make a mutex of its own and go in too);
//! - every caller gets its turn: a lost wake-up leaves every task blocked, which shuttle reports
//!   as a deadlock;
//! - once everyone left, the map is empty (no dead place).
//!
//! Each check was seen to fail by breaking `super` on purpose (a comment on each scenario says
//! how); put a break back to see the schedule shuttle prints and can replay.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use shuttle::future::{JoinHandle, block_on, spawn};
use shuttle::scheduler::{DfsScheduler, PctScheduler};
use shuttle::{Config, Runner};

use super::{Place, Places};
use crate::source::{PoolId, SessionId};
use crate::{LockKey, Wait};

/// The place most scenarios share.
fn one_place() -> Place {
    Place::Transaction {
        session: SessionId::for_tests(1),
        depth: 0,
    }
}

/// Runs `scenario` in every interleaving of its tasks, each time on fresh places, and checks that
/// it left no place behind. Shuttle has no partial-order reduction, so the interleavings grow
/// fast with the tasks: every scenario run this way has two (the test's own and one spawned).
fn every_interleaving(scenario: impl Fn(&Arc<Places>) + Send + Sync + 'static) {
    let dfs = DfsScheduler::new(None, false);
    let runs = Runner::new(dfs, Config::default()).run(move || run(&scenario));
    // Shows with `--nocapture`; the counts in this file's comments come from it.
    eprintln!("{runs} interleavings, all of them");
}

/// Runs `scenario` in `runs` interleavings that shuttle's PCT scheduler picks (randomly, yet
/// with a guaranteed chance to find any bug that takes up to `depth` ordering constraints),
/// for scenarios with too many interleavings to run them all.
fn many_interleavings(
    runs: usize,
    depth: usize,
    scenario: impl Fn(&Arc<Places>) + Send + Sync + 'static,
) {
    let pct = PctScheduler::new(depth, runs);
    let runs = Runner::new(pct, Config::default()).run(move || run(&scenario));
    eprintln!("{runs} interleavings, picked by PCT (depth {depth})");
}

fn run(scenario: &impl Fn(&Arc<Places>)) {
    let places = Arc::new(Places::new());
    scenario(&places);
    let map = places.0.lock().unwrap();
    assert!(
        map.as_ref().is_none_or(|map| map.is_empty()),
        "everyone left, yet the map keeps {map:?}"
    );
}

/// Who is in a place now; one per place.
#[derive(Debug, Default)]
struct Holders(AtomicUsize);

/// Proof of holding a turn, for as long as the caller holds it.
struct Holding<'a>(&'a Holders);

impl<'a> Holding<'a> {
    fn start(places: &Places, place: Place, holders: &'a Holders) -> Holding<'a> {
        let before = holders.0.fetch_add(1, Ordering::SeqCst);
        assert_eq!(before, 0, "two callers hold {place:?} at once");
        assert!(
            places.contains(place),
            "{place:?} is held but not in the map, so a newcomer would not wait"
        );
        Holding(holders)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A caller: takes its turn at `place` as `wait` allows (and must get it), holds it, leaves.
/// Leaving is itself a scheduling point before the turn passes on, so other tasks run while the
/// caller holds its turn without a `yield_now` here (which would only multiply interleavings).
async fn visit(places: &Places, place: Place, wait: Wait, holders: &Holders) {
    let turn = places.take(place, wait).await;
    let turn = turn.unwrap_or_else(|| panic!("no turn at {place:?} with {wait:?}"));
    let holding = Holding::start(places, place, holders);
    drop(holding);
    drop(turn);
}

/// Spawns a caller that visits `place` `visits` times, one visit after the other.
fn caller(
    places: &Arc<Places>,
    holders: &Arc<Holders>,
    place: Place,
    wait: Wait,
    visits: usize,
) -> JoinHandle<()> {
    let (places, holders) = (Arc::clone(places), Arc::clone(holders));
    spawn(async move {
        for _ in 0..visits {
            visit(&places, place, wait, &holders).await;
        }
    })
}

/// Breaks seen: checking the count before releasing the reference in `Entry::drop` ("everyone
/// left, yet the map keeps" a dead place); removing the place unconditionally there ("held but
/// not in the map").
#[test]
fn two_callers_take_turns() {
    every_interleaving(|places| {
        let holders = Arc::default();
        let other = caller(places, &holders, one_place(), Wait::Forever, 1);
        block_on(async {
            visit(places, one_place(), Wait::Forever, &holders).await;
            other.await.expect("the other caller finishes");
        });
    });
}

/// Three tasks have too many interleavings to run them all: PCT picks them.
///
/// Breaks seen: as for two callers.
#[test]
fn three_callers_take_turns() {
    many_interleavings(20_000, 3, |places| {
        let holders = Arc::default();
        let others: Vec<_> = (0..2)
            .map(|_| caller(places, &holders, one_place(), Wait::Forever, 1))
            .collect();
        block_on(async {
            visit(places, one_place(), Wait::Forever, &holders).await;
            for other in others {
                other.await.expect("the other callers finish");
            }
        });
    });
}

/// When the test's own caller aborts the spawned one.
#[derive(Debug, Clone, Copy)]
enum Abort {
    /// Before taking its own turn: the other may not have arrived, may hold the turn, or may
    /// have left.
    BeforeItsTurn,
    /// While holding its turn: the other may not have arrived, may be waiting, or may be done.
    WhileHolding,
    /// Right after leaving: the turn may have passed to the other, which has not run since.
    RightAfterLeaving,
}

/// A caller aborted at any of its awaits, by a caller that holds the place, or just left it, or
/// has not come yet. Then a newcomer gets the place at once.
fn a_caller_aborted(abort: Abort) {
    every_interleaving(move |places| {
        let holders = Arc::default();
        let aborted = caller(places, &holders, one_place(), Wait::Forever, 1);
        block_on(async {
            if let Abort::BeforeItsTurn = abort {
                aborted.abort();
            }
            let turn = places.take(one_place(), Wait::Forever).await;
            let holding = Holding::start(places, one_place(), &holders);
            if let Abort::WhileHolding = abort {
                aborted.abort();
            }
            drop(holding);
            drop(turn);
            if let Abort::RightAfterLeaving = abort {
                aborted.abort();
            }
            let _ = aborted.await;
            // Before the newcomer, which would replace a dead place and so hide it.
            assert!(!places.contains(one_place()), "a dead place is left");
            let newcomer = places.take(one_place(), Wait::No).await;
            assert!(newcomer.is_some(), "an aborted caller left its turn taken");
        });
    });
}

/// Breaks seen: a clone of the mutex in `take` that outlives the entry when the future is dropped
/// (`let _clone; let entry = ...; _clone = entry.mutex();`): "a dead place is left"; removing
/// the place unconditionally in `Entry::drop`: "held but not in the map".
#[test]
fn a_caller_dropped_while_waiting() {
    a_caller_aborted(Abort::WhileHolding);
}

/// Breaks seen: as for a caller dropped while waiting.
#[test]
fn a_caller_dropped_right_after_its_turn_came() {
    a_caller_aborted(Abort::RightAfterLeaving);
}

/// Breaks seen: as for a caller dropped while waiting.
#[test]
fn a_caller_dropped_while_holding_its_turn() {
    a_caller_aborted(Abort::BeforeItsTurn);
}

/// One caller visits once while another visits twice: the second visit arrives right after a
/// removal (its own or the other's), or while the last one leaves. Three visits have too many
/// interleavings to run them all: PCT picks them.
///
/// Breaks seen: as for two callers.
#[test]
fn a_place_is_reused_right_after_removal() {
    many_interleavings(20_000, 3, |places| {
        let holders = Arc::default();
        let twice = caller(places, &holders, one_place(), Wait::Forever, 2);
        block_on(async {
            visit(places, one_place(), Wait::Forever, &holders).await;
            twice.await.expect("the other caller finishes");
        });
    });
}

/// Callers of one key in two pools never wait for each other: each gets its turn at once
/// (`Wait::No`). (Places are keys of one map: other kinds of place differ only in the key.)
///
/// Breaks seen: one map key for every place (`Entry::of` keying by a constant place): "held but
/// not in the map".
#[test]
fn different_places_do_not_wait() {
    let key = |pool| Place::Key {
        pool: PoolId::for_tests(pool),
        key: LockKey::BigInt(7),
    };
    every_interleaving(move |places| {
        let other = caller(places, &Arc::default(), key(2), Wait::No, 1);
        block_on(async {
            visit(places, key(1), Wait::No, &Holders::default()).await;
            other.await.expect("the other caller finishes");
        });
    });
}
