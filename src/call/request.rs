//! What a call asks for: the data of a new row (in hand, or made by `make_data` under the lock
//! only when the row is missing), and what to do with a row that exists.

use std::convert::Infallible;
use std::future::Future;

use sea_orm::EntityTrait;

use crate::{Change, IdempotentCreate};

/// The boxed error a `make_data` closure may fail with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `make_data`: makes the new row's data, at most once per call, under the lock.
pub(crate) trait MakeData<D>: FnOnce() -> <Self as MakeData<D>>::Fut + Send {
    type Fut: Future<Output = Result<D, Self::Error>> + Send;
    type Error: Into<BoxError>;
}

impl<D, F, Fut, E> MakeData<D> for F
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<D, E>> + Send,
    E: Into<BoxError>,
{
    type Fut = Fut;
    type Error = E;
}

/// The maker type of [`NewRow::Ready`], never called: the data is given up front.
pub(crate) type UnusedMaker<D> = fn() -> std::future::Ready<Result<D, Infallible>>;

/// The data of a new row: given up front, or made only once we know it is needed.
pub(crate) enum NewRow<D, F> {
    Ready(D),
    Make(F),
}

/// The update function's type of [`OnExisting::Keep`], never called.
pub(crate) type UnusedUpdate<T> = fn(
    &<T as EntityTrait>::Model,
    <T as IdempotentCreate>::Data,
) -> Change<<T as EntityTrait>::ActiveModel>;

/// What a call does with a row that exists: keep it (a create-only call), or run the caller's
/// update function on it, under the lock.
pub(crate) enum OnExisting<U> {
    Keep,
    Update(U),
}

/// What a call asks for: the data of a new row, and what to do with an existing one.
pub(crate) struct Request<D, F, U> {
    pub(crate) new_row: NewRow<D, F>,
    pub(crate) on_existing: OnExisting<U>,
}
