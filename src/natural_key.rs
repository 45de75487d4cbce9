//! `NaturalKey`: what can be an entity's natural key, one column or several, and what the
//! crate reads from it (the values it binds, the lock key, the text it logs).
//!
//! # Why the shape is a type parameter
//!
//! A key is one value (`i64`, `String`, `Uuid`, a newtype that is `Into<Value> + Display`) or
//! a tuple of two to six such values, the way SeaORM takes composite primary keys
//! (`find_by_id((a, b))`). One trait cannot have both `impl<T: Into<Value> + Display> for T`
//! and `impl<A, B> for (A, B)`: Rust rejects the pair (E0119), because std may one day
//! implement `Display` for tuples. sea-query's `IntoValueTuple` is coherent for both (it owns
//! `Value`), but a one-column key's lock key is frozen on the key's `Display` text, which a
//! `Value` does not give for every type (a newtype displaying `PR-7`). So the shape is a type
//! parameter, [`SingleColumn`] or [`MultiColumn`]: `NaturalKey<SingleColumn>` and
//! `NaturalKey<MultiColumn>` are two traits that cannot overlap, and at each call Rust infers
//! the shape from the key's type (only one of them fits it). Users never write it.

use std::fmt;

use sea_orm::Value;

use crate::LockKey;

/// The shape of a one-column natural key (`type Key = i64`): see [`NaturalKey`].
#[derive(Debug)]
pub enum SingleColumn {}

/// The shape of a natural key spanning several columns (`type Key = (i64, String)`): see
/// [`NaturalKey`].
#[derive(Debug)]
pub enum MultiColumn {}

/// What can be the natural key of an [`IdempotentCreate`](crate::IdempotentCreate) entity.
///
/// - **One column**: any type that is `Into<sea_orm::Value> + Display + Clone + Debug + Send +
///   Sync`: `i64`, `String`, `Uuid`, your newtype. Its lock key is
///   [`LockKey::for_entity`]`(namespace, &key)`, on the key's `Display` text (frozen since the
///   first release).
/// - **Several columns**: a tuple of two to six such values, in the order of
///   [`IdempotentCreate::key_columns`](crate::IdempotentCreate::key_columns). Its lock key is
///   [`LockKey::for_composite`]`(namespace, parts)`, on an unambiguous encoding of every part.
///
/// `Shape` ([`SingleColumn`] or [`MultiColumn`]) is inferred from the key's type; see the
/// module source for why it exists. Sealed: the crate owns every derivation.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a natural key of `IdempotentCreate`",
    label = "not a natural key",
    note = "a one-column key is one value that is `Into<sea_orm::Value> + Display + Clone + Debug + Send + Sync` (i64, String, Uuid, a newtype implementing those)",
    note = "a composite key is a tuple of 2 to 6 such values, e.g. `type Key = (i64, String);`, with `fn key_columns()` naming its columns in the same order",
    note = "in code generic over the entity (`E: IdempotentCreate`), the key's shape is a type parameter of yours: add `S` and `where E::Key: NaturalKey<S>` (see `IdempotentCreate`'s docs, \"Generic code\")"
)]
pub trait NaturalKey<Shape>: Clone + fmt::Debug + Send + Sync {
    /// The key's values, one per key column, in order.
    #[doc(hidden)]
    fn values(&self, _: Sealed) -> Vec<Value>;

    /// The lock key of this key in `namespace`.
    #[doc(hidden)]
    fn lock_key(&self, namespace: &str, _: Sealed) -> LockKey;

    /// Writes the key for people (logs, errors): a one-column key's `Display` text, a
    /// composite key's parts as `(a, b)`.
    #[doc(hidden)]
    fn fmt_key(&self, f: &mut fmt::Formatter<'_>, _: Sealed) -> fmt::Result;
}

/// The argument that seals [`NaturalKey`]: outside the crate nobody can name it, so nobody
/// can implement or call the trait's methods.
#[derive(Debug, Clone, Copy)]
pub struct Sealed(());

impl<T> NaturalKey<SingleColumn> for T
where
    T: Into<Value> + Clone + fmt::Display + fmt::Debug + Send + Sync,
{
    fn values(&self, _: Sealed) -> Vec<Value> {
        vec![self.clone().into()]
    }

    fn lock_key(&self, namespace: &str, _: Sealed) -> LockKey {
        LockKey::for_entity(namespace, &lock_text(self))
    }

    fn fmt_key(&self, f: &mut fmt::Formatter<'_>, _: Sealed) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

macro_rules! composite_keys {
    ($(($($part:ident $index:tt),+))+) => {$(
        impl<$($part),+> NaturalKey<MultiColumn> for ($($part,)+)
        where
            $($part: Into<Value> + Clone + fmt::Display + fmt::Debug + Send + Sync,)+
        {
            fn values(&self, _: Sealed) -> Vec<Value> {
                vec![$(self.$index.clone().into()),+]
            }

            fn lock_key(&self, namespace: &str, _: Sealed) -> LockKey {
                LockKey::for_composite(namespace, &[$(&lock_text(&self.$index) as &dyn fmt::Display),+])
            }

            fn fmt_key(&self, f: &mut fmt::Formatter<'_>, _: Sealed) -> fmt::Result {
                let parts: &[&dyn fmt::Display] = &[$(&self.$index),+];
                f.write_str("(")?;
                for (n, part) in parts.iter().enumerate() {
                    if n > 0 {
                        f.write_str(", ")?;
                    }
                    part.fmt(f)?;
                }
                f.write_str(")")
            }
        }
    )+};
}

composite_keys! {
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
    (A 0, B 1, C 2, D 3, E 4)
    (A 0, B 1, C 2, D 3, E 4, F 5)
}

/// The text a key part locks on: its `Display` text, except for values the database treats as
/// equal to a value with another text, which must take the same lock: `-0.0` locks as `0`
/// (`-0` and `0` are one key in every database), and a timestamp with an offset locks as the
/// same instant at `+00:00` (`10:00 +02:00` and `08:00 +00:00` are one `timestamptz`). Every
/// other value's text, and so its lock key, is unchanged. A newtype whose `Display` text is
/// not its value's is left as it is.
fn lock_text<T: Into<Value> + Clone + fmt::Display>(part: &T) -> String {
    let text = part.to_string();
    match part.clone().into() {
        Value::Double(Some(x)) if x == 0.0 && text == "-0" => "0".to_owned(),
        Value::Float(Some(x)) if x == 0.0 && text == "-0" => "0".to_owned(),
        Value::ChronoDateTimeWithTimeZone(Some(at)) if text == at.to_string() => {
            at.to_utc().fixed_offset().to_string()
        }
        _ => text,
    }
}

/// The crate's side of a [`NaturalKey`], for one key of one shape.
pub(crate) struct Key<'a, K, S> {
    key: &'a K,
    shape: std::marker::PhantomData<fn() -> S>,
}

impl<'a, K: NaturalKey<S>, S> Key<'a, K, S> {
    pub(crate) fn new(key: &'a K) -> Self {
        Key {
            key,
            shape: std::marker::PhantomData,
        }
    }

    pub(crate) fn values(&self) -> Vec<Value> {
        self.key.values(Sealed(()))
    }

    pub(crate) fn lock_key(&self, namespace: &str) -> LockKey {
        self.key.lock_key(namespace, Sealed(()))
    }
}

impl<K: NaturalKey<S>, S> fmt::Display for Key<'_, K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key.fmt_key(f, Sealed(()))
    }
}

/// The lock key of `key` in `namespace`, whatever its shape.
pub(crate) fn lock_key<K: NaturalKey<S>, S>(namespace: &str, key: &K) -> LockKey {
    Key::new(key).lock_key(namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown<K: NaturalKey<S>, S>(key: &K) -> String {
        Key::new(key).to_string()
    }

    #[test]
    fn one_column_keys_keep_their_shipped_lock_key() {
        for (key, expected) in [
            (lock_key("pull_requests", &123_i64), -2_008_521_774),
            (lock_key("pull_requests", &"123".to_owned()), -2_008_521_774),
        ] {
            assert_eq!(key, LockKey::Pair(724_609_916, expected));
        }
        assert_eq!(Key::new(&7_i64).values(), vec![Value::from(7_i64)]);
    }

    /// Values the database treats as equal take one lock; every other value keeps the lock
    /// key of its `Display` text (the shipped derivation).
    #[test]
    fn keys_the_database_treats_as_equal_take_one_lock() {
        use sea_orm::prelude::ChronoDateTimeWithTimeZone as At;

        assert_eq!(lock_key("t", &-0.0_f64), lock_key("t", &0.0_f64));
        assert_eq!(lock_key("t", &-0.0_f32), lock_key("t", &0.0_f32));
        assert_eq!(
            lock_key("t", &(7_i64, -0.0_f64)),
            lock_key("t", &(7_i64, 0.0_f64))
        );
        assert_eq!(lock_key("t", &0.0_f64), LockKey::for_entity("t", &"0"));
        assert_eq!(lock_key("t", &1.5_f64), LockKey::for_entity("t", &"1.5"));

        let at = |text: &str| At::parse_from_rfc3339(text).unwrap();
        let local = at("2026-12-07T10:00:00+02:00");
        let utc = at("2026-12-07T08:00:00+00:00");
        assert_eq!(local, utc, "one instant");
        assert_eq!(lock_key("t", &local), lock_key("t", &utc));
        assert_eq!(lock_key("t", &(1_i64, local)), lock_key("t", &(1_i64, utc)));
        // A key given at +00:00 keeps the lock key it always had.
        assert_eq!(lock_key("t", &utc), LockKey::for_entity("t", &utc));
        assert_eq!(utc.to_string(), "2026-12-07 08:00:00 +00:00");
    }

    #[test]
    fn composite_keys_bind_every_part_and_lock_on_all_of_them() {
        let key = (1_i64, "octo/repo".to_owned(), 7_i32);
        assert_eq!(
            Key::new(&key).values(),
            vec![
                Value::from(1_i64),
                Value::from("octo/repo"),
                Value::from(7_i32)
            ]
        );
        assert_eq!(shown(&key), "(1, octo/repo, 7)");
        assert_eq!(
            lock_key("t", &key),
            LockKey::for_composite("t", &[&1_i64, &"octo/repo", &7_i32])
        );
        assert_ne!(
            lock_key("t", &(1_i64, 2_i64)),
            lock_key("t", &(2_i64, 1_i64))
        );
    }
}
