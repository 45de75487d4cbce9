//! The unit tests of [`turns`](super): taking turns, passing rows on, leaving nothing behind.
//! (The same under the model checker: `model_check.rs`.)

use super::*;

use tokio::sync::oneshot;

/// A place of its own per test: the places are shared by every test of this binary.
fn place(n: usize) -> Place {
    Place::Transaction {
        session: SessionId::for_tests(0x5eed),
        depth: n,
    }
}

fn is_known(place: Place) -> bool {
    PLACES.contains(place)
}

/// Lets every other task of a current-thread runtime run until it blocks.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn callers_take_turns_in_arrival_order() {
    let first = take(place(1), Wait::Forever).await.expect("a turn");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for n in 0..3 {
        let tx = tx.clone();
        waiters.push(tokio::spawn(async move {
            let turn = take(place(1), Wait::Forever).await;
            tx.send(n).unwrap();
            settle().await; // hold the turn while the others could run
            drop(turn);
        }));
        settle().await; // queue them in order
    }
    assert!(
        rx.try_recv().is_err(),
        "nobody passes while the turn is held"
    );
    drop(first);
    for waiter in waiters {
        waiter.await.unwrap();
    }
    let order: Vec<i32> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(order, vec![0, 1, 2]);
    assert!(!is_known(place(1)), "the last one out removes the place");
}

#[tokio::test(flavor = "current_thread")]
async fn a_row_is_passed_on_only_to_callers_of_its_key_that_arrived_before_it_was_counted() {
    // Natural keys 1 and 2 share the place, as two keys whose lock keys collide do.
    let first = take(place(9), Wait::Forever).await.expect("a turn");
    assert_eq!(
        first.passed_on::<i64, String>(&1),
        None,
        "nothing passed on yet"
    );
    let waiter = tokio::spawn(async {
        let turn = take(place(9), Wait::Forever).await.expect("a turn");
        (
            turn.passed_on::<i64, String>(&1),
            turn.passed_on::<i64, i64>(&1),
        )
    });
    let colliding = tokio::spawn(async {
        let turn = take(place(9), Wait::Forever).await.expect("a turn");
        turn.passed_on::<i64, String>(&2)
    });
    settle().await; // both have arrived
    let arrivals = first.arrivals();
    assert_eq!(arrivals, 3);
    let late = tokio::spawn(async {
        let turn = take(place(9), Wait::Forever).await.expect("a turn");
        turn.passed_on::<i64, String>(&1)
    });
    settle().await; // arrived after the count
    first.pass_on(&1_i64, &"row of 1".to_string(), arrivals);
    drop(first);
    let (as_string, as_other_type) = waiter.await.unwrap();
    assert_eq!(as_string.as_deref(), Some("row of 1"));
    assert_eq!(as_other_type, None, "another entity's row is not taken");
    assert_eq!(
        colliding.await.unwrap(),
        None,
        "the row of another natural key is not taken"
    );
    assert_eq!(
        late.await.unwrap(),
        None,
        "a caller counted after looks itself"
    );
    assert!(!is_known(place(9)), "the row goes with the place");
    let next = take(place(9), Wait::No).await.expect("a turn");
    assert_eq!(next.passed_on::<i64, String>(&1), None);
}

#[tokio::test(flavor = "current_thread")]
async fn other_places_do_not_wait() {
    let held = take(place(2), Wait::Forever).await;
    let other = take(place(3), Wait::No).await;
    assert!(other.is_some());
    let key = |pool| Place::Key {
        pool: PoolId::for_tests(pool),
        key: LockKey::BigInt(2),
    };
    let (one, two) = (take(key(1), Wait::No).await, take(key(2), Wait::No).await);
    assert!(
        one.is_some() && two.is_some(),
        "two pools never wait for each other"
    );
    drop((held, other, one, two));
    assert!(!is_known(place(2)) && !is_known(place(3)));
}

#[tokio::test(flavor = "current_thread")]
async fn try_once_never_waits() {
    let held = take(place(4), Wait::Forever).await;
    assert!(take(place(4), Wait::No).await.is_none());
    assert!(is_known(place(4)), "the holder still has it");
    drop(held);
    assert!(!is_known(place(4)));
    assert!(take(place(4), Wait::No).await.is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn a_bound_runs_out_without_a_turn() {
    let held = take(place(5), Wait::Forever).await;
    let late = take(place(5), Wait::Timeout(Duration::from_millis(20))).await;
    assert!(late.is_none());
    drop(held);
    assert!(!is_known(place(5)));
}

#[tokio::test(flavor = "current_thread")]
async fn a_waiter_dropped_mid_wait_leaves_nothing_behind() {
    let held = take(place(7), Wait::Forever).await;
    let (tx, rx) = oneshot::channel::<()>();
    let waiter = tokio::spawn(async move {
        let _turn = take(place(7), Wait::Forever).await;
        let _ = tx.send(());
    });
    settle().await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    assert!(rx.await.is_err(), "the aborted waiter never got a turn");
    drop(held);
    assert!(!is_known(place(7)));
    assert!(take(place(7), Wait::No).await.is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn a_waiter_dropped_after_its_turn_came_leaves_nothing_behind() {
    let held = take(place(8), Wait::Forever).await;
    let waiter = tokio::spawn(async move {
        let _turn = take(place(8), Wait::Forever).await;
        std::future::pending::<()>().await;
    });
    settle().await;
    // The turn passes to the waiter, which is dropped before it runs again: it is the
    // last one to leave, still inside its wait.
    drop(held);
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    assert!(!is_known(place(8)));
    assert!(take(place(8), Wait::No).await.is_some());
}
