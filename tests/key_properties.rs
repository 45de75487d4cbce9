//! Property tests of the lock-key derivations, against an independent CRC-32 written here from
//! its definition (IEEE 802.3, reflected polynomial 0xEDB88320), which is itself pinned to
//! values computed with Python's `zlib.crc32`.
//!
//! What they catch: any change to the derivations (another hash, another polynomial, hashing
//! `Debug` instead of `Display`, hashing namespace and key together, clamping or wrapping a
//! crc32 above `i32::MAX` differently from a bit-cast, widening `crc32` with sign extension)
//! makes the properties fail for most inputs, and the golden vectors fail outright. Such a
//! change would silently stop old and new deployments (or a Rust and a Python service) from
//! excluding each other.

use proptest::prelude::*;
use sea_orm_idempotent::LockKey;

/// CRC-32/ISO-HDLC (what zlib, PNG and Ethernet use), bit by bit: slow and obviously right.
fn reference_crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFF_u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `(input, zlib.crc32(input.encode()))`, computed with Python 3.
const PYTHON_ZLIB_CRC32: &[(&str, u32)] = &[
    ("", 0),
    ("PR-123", 3_670_997_212),
    ("hello", 907_060_870),
    ("pull_requests", 724_609_916),
    ("123", 2_286_445_522),
    ("issues", 3_665_657_731),
    ("-1", 808_273_962),
    ("9223372036854775807", 1_122_634_462),
    ("Grüße 🚀", 3_335_916_095),
    ("'; DROP TABLE pull_requests; --", 1_998_634_310),
];

#[test]
fn the_reference_and_the_crate_agree_with_python_on_the_golden_vectors() {
    for &(input, python) in PYTHON_ZLIB_CRC32 {
        assert_eq!(reference_crc32(input.as_bytes()), python, "{input:?}");
        assert_eq!(
            LockKey::crc32(input),
            LockKey::BigInt(i64::from(python)),
            "{input:?}"
        );
    }
    // The pinned entity key (also in src/key.rs): a crc32 above i32::MAX is a negative int4.
    assert_eq!(
        LockKey::for_entity("pull_requests", &123_i64),
        LockKey::Pair(724_609_916, -2_008_521_774)
    );
}

/// Strings that exercise what matters: empty, ASCII, multi-byte UTF-8, SQL metacharacters.
fn names() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z_]{1,24}",
        any::<String>(),
        "[';\"\\\\-]{0,8}(DROP TABLE x)?[';\"\\\\-]{0,8}",
    ]
}

proptest! {
    #[test]
    fn crc32_is_the_zlib_value_widened_without_sign(name in names()) {
        let expected = i64::from(reference_crc32(name.as_bytes()));
        prop_assert!(expected >= 0);
        prop_assert_eq!(LockKey::crc32(&name), LockKey::BigInt(expected));
    }

    #[test]
    fn entity_keys_are_the_bit_cast_crc32_pair(namespace in names(), key in names()) {
        prop_assert_eq!(
            LockKey::for_entity(&namespace, &key),
            LockKey::Pair(
                reference_crc32(namespace.as_bytes()) as i32,
                reference_crc32(key.as_bytes()) as i32,
            )
        );
    }

    #[test]
    fn derivations_are_deterministic(namespace in names(), key in names(), n in any::<i64>()) {
        prop_assert_eq!(LockKey::crc32(&key), LockKey::crc32(&key.clone()));
        prop_assert_eq!(
            LockKey::for_entity(&namespace, &key),
            LockKey::for_entity(&namespace.clone(), &key.clone())
        );
        prop_assert_eq!(
            LockKey::for_entity(&namespace, &n),
            LockKey::for_entity(&namespace, &n)
        );
    }

    /// Integer keys are hashed by their `Display` form, so an `i64` key and its decimal string
    /// lock the same key (and a Python service can compute it from the number's text).
    #[test]
    fn integer_keys_hash_their_decimal_text(namespace in names(), n in any::<i64>()) {
        prop_assert_eq!(
            LockKey::for_entity(&namespace, &n),
            LockKey::for_entity(&namespace, &n.to_string())
        );
    }

    /// The namespace and the key are hashed separately: the first number depends only on the
    /// namespace and the second only on the key, so equal natural keys of two tables get the
    /// same second number and different first numbers (unless the table names collide).
    #[test]
    fn namespaces_separate_equal_keys(a in names(), b in names(), key in names(), other in names()) {
        let (LockKey::Pair(a_ns, a_key), LockKey::Pair(b_ns, b_key)) =
            (LockKey::for_entity(&a, &key), LockKey::for_entity(&b, &key))
        else {
            panic!("entity keys are pairs");
        };
        prop_assert_eq!(a_key, b_key);
        prop_assert_eq!(a_ns == b_ns, reference_crc32(a.as_bytes()) == reference_crc32(b.as_bytes()));
        if a != b && reference_crc32(a.as_bytes()) != reference_crc32(b.as_bytes()) {
            prop_assert_ne!(LockKey::for_entity(&a, &key), LockKey::for_entity(&b, &key));
        }
        let LockKey::Pair(same_ns, _) = LockKey::for_entity(&a, &other) else {
            panic!("entity keys are pairs");
        };
        prop_assert_eq!(same_ns, a_ns);
    }

    /// A composite key is the bit-cast crc32 pair of the namespace and of every part's text
    /// preceded by its UTF-8 length and a colon (the encoding written again here, from its
    /// documentation); its namespace half is the one-column key's.
    #[test]
    fn composite_keys_hash_length_prefixed_parts(
        namespace in names(), a in names(), b in names(), n in any::<i64>()
    ) {
        let encoded = format!("{}:{a}{}:{b}{}:{n}", a.len(), b.len(), n.to_string().len());
        prop_assert_eq!(
            LockKey::for_composite(&namespace, &[&a, &b, &n]),
            LockKey::Pair(
                reference_crc32(namespace.as_bytes()) as i32,
                reference_crc32(encoded.as_bytes()) as i32,
            )
        );
        let (LockKey::Pair(one_ns, _), LockKey::Pair(composite_ns, _)) =
            (LockKey::for_entity(&namespace, &a), LockKey::for_composite(&namespace, &[&a, &b]))
        else {
            panic!("entity keys are pairs");
        };
        prop_assert_eq!(one_ns, composite_ns);
    }

    /// Moving text from one part to the next changes the encoded text (the length prefixes
    /// differ), so it is another key unless crc32 collides.
    #[test]
    fn composite_parts_do_not_run_together(a in names(), b in names(), moved in "[a-z,]{1,4}") {
        let encode = |x: &str, y: &str| format!("{}:{x}{}:{y}", x.len(), y.len());
        let left = encode(&format!("{a}{moved}"), &b);
        let right = encode(&a, &format!("{moved}{b}"));
        prop_assert_ne!(&left, &right);
        if reference_crc32(left.as_bytes()) != reference_crc32(right.as_bytes()) {
            prop_assert_ne!(
                LockKey::for_composite("t", &[&format!("{a}{moved}"), &b]),
                LockKey::for_composite("t", &[&a, &format!("{moved}{b}")])
            );
        }
    }
}
