//! How a natural key becomes the number PostgreSQL locks on.
//!
//! The derivations here are part of the public contract: two processes (or two versions of a
//! service, or a Rust and a Python service) exclude each other only if they derive the same
//! number for the same thing. Do not change them: changing them changes every key, and old and
//! new code running side by side during a deploy would stop excluding each other.

use std::fmt;
use std::sync::{Mutex, PoisonError};

/// The key handed to PostgreSQL's advisory-lock functions.
///
/// PostgreSQL has two key spaces that never collide with each other: one 64-bit integer
/// ([`LockKey::BigInt`]) or a pair of 32-bit integers ([`LockKey::Pair`]).
///
/// # Collisions
///
/// Keys derived from names are hashes (crc32), so two different names can map to the same
/// key. A collision never loses or duplicates data: the two callers merely wait for each
/// other as if they shared a key (and in the crate's waiting room, which is per lock key, a
/// row found for one is never handed to a caller of the other: `tests/colliding_keys.rs`).
/// With the pair form the namespace (table) and the natural key are hashed separately, so keys
/// of different tables never collide with each other's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockKey {
    /// `pg_advisory_xact_lock(int4, int4)`: a namespace and a key within it.
    Pair(i32, i32),
    /// `pg_advisory_xact_lock(int8)`: one 64-bit key.
    BigInt(i64),
}

impl LockKey {
    /// The key of a name, as the common Django recipe computes it:
    /// `cursor.execute("SELECT pg_advisory_xact_lock(%s)", [zlib.crc32(name.encode())])`.
    ///
    /// A Rust service using this key and a Python service using that recipe exclude each other
    /// on the same name. The value is the unsigned IEEE crc32 of the UTF-8 bytes, as Python's
    /// `zlib.crc32` returns it, widened to `i64`.
    ///
    /// ```
    /// use sea_orm_idempotent::LockKey;
    /// // Python: zlib.crc32(b"PR-123") == 3670997212
    /// assert_eq!(LockKey::crc32("PR-123"), LockKey::BigInt(3_670_997_212));
    /// ```
    pub fn crc32(name: &str) -> LockKey {
        LockKey::BigInt(i64::from(crc32fast::hash(name.as_bytes())))
    }

    /// The key of one natural key of one entity: `Pair(crc32(namespace), crc32(key.to_string()))`,
    /// each crc32 bit-cast to `i32`.
    ///
    /// This is the key [`IdempotentCreate::create_once`](crate::IdempotentCreate::create_once)
    /// locks; the namespace is [`IdempotentCreate::lock_namespace`](crate::IdempotentCreate::lock_namespace)
    /// (the table name unless overridden).
    ///
    /// ```
    /// use sea_orm_idempotent::LockKey;
    /// // Python: zlib.crc32(b"pull_requests") == 724609916, zlib.crc32(b"123") == 2286445522
    /// assert_eq!(
    ///     LockKey::for_entity("pull_requests", &123_i64),
    ///     LockKey::Pair(724_609_916, 2_286_445_522_u32 as i32),
    /// );
    /// ```
    pub fn for_entity(namespace: &str, key: &impl fmt::Display) -> LockKey {
        LockKey::Pair(
            crc32_as_i32(namespace.as_bytes()),
            crc32_as_i32(key.to_string().as_bytes()),
        )
    }

    /// The key of one composite natural key (a key of several columns) of one entity:
    /// `Pair(crc32(namespace), crc32(encoding))`, each crc32 bit-cast to `i32`, where the
    /// encoding is every part's `Display` text, in order, each preceded by its length in UTF-8
    /// bytes (decimal) and a colon: `(42, "a,b")` is `2:423:a,b`.
    ///
    /// The length prefixes make the encoding unambiguous: `("a,b", "c")` (`3:a,b1:c`) and
    /// `("a", "b,c")` (`1:a3:b,c`) are different texts, where a comma-join would make them one.
    /// The namespace half is [`for_entity`](Self::for_entity)'s, so equal keys of two tables
    /// never share a lock. This is the key
    /// [`IdempotentCreate::create_once`](crate::IdempotentCreate::create_once) locks for a
    /// tuple key. Do not change it: old and new code would stop excluding each other.
    ///
    /// ```
    /// use sea_orm_idempotent::LockKey;
    /// // Python:
    /// // enc = lambda *p: "".join(f"{len(str(s).encode())}:{s}" for s in p)
    /// // zlib.crc32(b"repo_prs") == 1359186893
    /// // zlib.crc32(enc(1296269, "octo/repo", 7).encode()) == 1474663891
    /// // zlib.crc32(enc("a,b", "c").encode()) == 3766366629
    /// assert_eq!(
    ///     LockKey::for_composite("repo_prs", &[&1_296_269_i64, &"octo/repo", &7_i32]),
    ///     LockKey::Pair(1_359_186_893, 1_474_663_891),
    /// );
    /// assert_eq!(
    ///     LockKey::for_composite("t", &[&"a,b", &"c"]),
    ///     LockKey::Pair(2_238_339_752_u32 as i32, 3_766_366_629_u32 as i32),
    /// );
    /// ```
    pub fn for_composite(namespace: &str, parts: &[&dyn fmt::Display]) -> LockKey {
        // Do not change this: it changes every composite key (see the module docs).
        let mut encoded = String::new();
        for part in parts {
            let text = part.to_string();
            encoded.push_str(&text.len().to_string());
            encoded.push(':');
            encoded.push_str(&text);
        }
        LockKey::Pair(
            crc32_as_i32(namespace.as_bytes()),
            crc32_as_i32(encoded.as_bytes()),
        )
    }
}

/// `"schema.table"`, the default lock namespace of an entity with a schema, made once per
/// table and kept for the life of the process (a namespace is `&'static str`; there are as
/// many as the program has entities).
pub(crate) fn schema_qualified(schema: &str, table: &'static str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let name = format!("{schema}.{table}");
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    match names.iter().find(|known| **known == name) {
        Some(known) => known,
        None => {
            let leaked: &'static str = Box::leak(name.into_boxed_str());
            names.push(leaked);
            leaked
        }
    }
}

/// The crc32 reinterpreted as a signed 32-bit integer (a bit-cast, as PostgreSQL's `int4`
/// holds it), so every value of the hash is a distinct key.
fn crc32_as_i32(bytes: &[u8]) -> i32 {
    crc32fast::hash(bytes) as i32
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockKey::Pair(namespace, key) => write!(f, "({namespace}, {key})"),
            LockKey::BigInt(key) => write!(f, "{key}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Golden vectors computed with Python's zlib.crc32. If one of these fails, the derivation
    // changed and every deployed key with it: revert the change.
    #[test]
    fn crc32_matches_python_zlib() {
        assert_eq!(LockKey::crc32("PR-123"), LockKey::BigInt(3_670_997_212));
        assert_eq!(LockKey::crc32("hello"), LockKey::BigInt(907_060_870));
        assert_eq!(LockKey::crc32(""), LockKey::BigInt(0));
    }

    #[test]
    fn entity_keys_are_bit_cast_pairs() {
        assert_eq!(
            LockKey::for_entity("pull_requests", &123_i64),
            LockKey::Pair(724_609_916, (2_286_445_522_u32) as i32)
        );
        // A crc32 above i32::MAX becomes a negative int4, not a clamped or wrapped-differently one.
        assert_eq!(
            LockKey::for_entity("pull_requests", &123_i64),
            LockKey::Pair(724_609_916, -2_008_521_774)
        );
    }

    // Golden vectors of the composite derivation, computed with Python:
    // python3 -c 'import zlib; enc=lambda *p: "".join(f"{len(str(s).encode())}:{s}" for s in p); print([zlib.crc32(x.encode()) for x in ["repo_prs", "t", enc(42, 17), enc(1296269, "octo/repo", 7), enc("a,b", "c"), enc("a", "b,c"), enc("é", "1:a")]])'
    // == [1359186893, 2238339752, 3891080697, 1474663891, 3766366629, 1009792248, 1921494268]
    #[test]
    fn composite_keys_match_python_zlib() {
        let crc = |u: u32| u as i32;
        assert_eq!(
            LockKey::for_composite("repo_prs", &[&42_i64, &17_i32]),
            LockKey::Pair(1_359_186_893, crc(3_891_080_697))
        );
        assert_eq!(
            LockKey::for_composite("repo_prs", &[&1_296_269_i64, &"octo/repo", &7_i32]),
            LockKey::Pair(1_359_186_893, 1_474_663_891)
        );
        assert_eq!(
            LockKey::for_composite("t", &[&"a,b", &"c"]),
            LockKey::Pair(crc(2_238_339_752), crc(3_766_366_629))
        );
        assert_eq!(
            LockKey::for_composite("t", &[&"a", &"b,c"]),
            LockKey::Pair(crc(2_238_339_752), 1_009_792_248)
        );
        // Lengths count UTF-8 bytes, not characters: "é" is 2.
        assert_eq!(
            LockKey::for_composite("t", &[&"é", &"1:a"]),
            LockKey::Pair(crc(2_238_339_752), 1_921_494_268)
        );
    }

    #[test]
    fn namespaces_separate_equal_natural_keys() {
        assert_ne!(
            LockKey::for_entity("pull_requests", &1_i64),
            LockKey::for_entity("issues", &1_i64)
        );
    }

    #[test]
    fn display_is_what_postgres_would_be_given() {
        assert_eq!(LockKey::Pair(1, -2).to_string(), "(1, -2)");
        assert_eq!(LockKey::BigInt(42).to_string(), "42");
    }
}
