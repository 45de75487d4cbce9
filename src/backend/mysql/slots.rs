//! The slots: the fixed rows of the lock table MySQL and MariaDB lock keys in (from 0.3), its
//! DDL, the statement that fills it, and the pinned mapping of a key to its slot. Why slots,
//! and how a database switches to them from the per-key table of 0.1 and 0.2: the
//! [lock table's docs](super::lock_table#two-tables-slots-or-a-row-per-key).

// Compiled in every build: the DDL and the mapping are public (a migration crate may build
// the crate without the feature, and the call chain compares slots).

use sea_orm::sea_query::{ColumnDef, Table, TableCreateStatement};
use sea_orm::{DbBackend, Statement};

use crate::LockKey;

/// The name of the slot table ([`mysql_lock_slots`]).
pub const MYSQL_LOCK_SLOTS_TABLE: &str = "sea_orm_idempotent_lock_slots";

/// How many slots [`mysql_lock_slots`] has: keys lock one of this many rows. Pinned, as the
/// mapping ([`mysql_lock_slot`]) is: every process must map a key to the same row.
pub const MYSQL_LOCK_SLOTS: u32 = 65_536;

/// The table MySQL and MariaDB lock keys in: [`MYSQL_LOCK_SLOTS`] rows, whose row locks are
/// the keys' locks (a key locks the row of its slot, [`mysql_lock_slot`]). Create it in a migration, then fill
/// it with [`mysql_lock_slots_fill`]; both are idempotent (`IF NOT EXISTS`, `INSERT IGNORE`).
/// Without it (or [`mysql_lock_table`](crate::mysql_lock_table)) every call on MySQL fails with
/// [`Error::MissingLockTable`](crate::Error::MissingLockTable).
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS `sea_orm_idempotent_lock_slots` (
///   `slot` int NOT NULL PRIMARY KEY,          -- 0 to 65535
///   `generation` bigint NOT NULL DEFAULT 0    -- exclusive holders so far
/// ) ENGINE=InnoDB
/// ```
///
/// About 3 MiB, whatever the number of keys. In a sea-orm-migration migration, `up` runs
/// both when `manager.get_database_backend()` is MySQL (through `manager.get_connection()`);
/// on a bare connection:
///
/// ```no_run
/// use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
///
/// # async fn up(db: &DatabaseConnection) -> Result<(), sea_orm::DbErr> {
/// if db.get_database_backend() == DbBackend::MySql {
///     db.execute(&sea_orm_idempotent::mysql_lock_slots()).await?;
///     db.execute_raw(sea_orm_idempotent::mysql_lock_slots_fill()).await?;
/// }
/// # Ok(()) }
/// ```
///
/// (the workspace's sample migration `m20261207_000004_create_idempotent_lock_slots` does
/// exactly that.)
///
/// # Upgrading from the per-key table (0.1 and 0.2)
///
/// A database that has [`mysql_lock_table`](crate::mysql_lock_table)'s table keeps locking
/// its rows, with every version, until it is dropped (the database decides, never a setting,
/// so every process and version agrees); then every process switches to the slots. The
/// switch leaves no moment in which one transaction holds a key's row and another its slot:
/// `DROP TABLE` waits until every transaction that used the table has ended, and a statement
/// on it afterwards fails (error 1146), which makes a process ask the catalog again
/// (`docs/backends.md` in the repository, "MySQL and MariaDB"). So:
///
/// 1. deploy 0.3 with a migration that creates and fills the slots (nothing changes yet);
/// 2. once no process of 0.1 or 0.2 runs, a migration drops `sea_orm_idempotent_locks`. The
///    `DROP TABLE` waits for the transactions holding its rows, and new locks wait behind it
///    for that long: drop it at a quiet moment, with a short `lock_wait_timeout`, and try
///    again if it runs out.
///
/// An older version that still runs after the drop fails with its own missing-table error;
/// it never goes on without a lock.
pub fn mysql_lock_slots() -> TableCreateStatement {
    Table::create()
        .table(MYSQL_LOCK_SLOTS_TABLE)
        .if_not_exists()
        .col(ColumnDef::new("slot").integer().not_null().primary_key())
        .col(
            ColumnDef::new("generation")
                .big_integer()
                .not_null()
                .default(0),
        )
        .engine("InnoDB")
        .to_owned()
}

/// Makes every row of [`mysql_lock_slots`]'s table that is missing (all of them, the first
/// time): one `INSERT IGNORE ... SELECT` of the numbers 0 to 65535, no bound values. A
/// missing slot still works (its first lock makes it, as the per-key table's rows are
/// made), so filling is what keeps every lock a lock on a committed row.
pub fn mysql_lock_slots_fill() -> Statement {
    let digits = (0..16)
        .map(|digit| format!("SELECT {digit} AS d"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    Statement::from_string(
        DbBackend::MySql,
        format!(
            "INSERT IGNORE INTO `{MYSQL_LOCK_SLOTS_TABLE}` (`slot`) \
             SELECT a.d + 16 * b.d + 256 * c.d + 4096 * e.d \
             FROM ({digits}) a, ({digits}) b, ({digits}) c, ({digits}) e"
        ),
    )
}

/// The slot of `key` in [`mysql_lock_slots`]' table (MySQL and MariaDB): the row whose lock
/// is the key's lock. Two keys of one slot wait for each other. It is the top 16 bits of SplitMix64 of the key's 64 bits (`LockKey::BigInt`
/// as they are, `LockKey::Pair` as its halves high and low), the state advanced by the key's
/// `space` (1 for `BigInt`, 2 for `Pair`) golden gammas. Pinned: golden vectors, computed
/// outside Rust, are in the tests below; changing it would let two versions lock different
/// rows for one key.
pub fn mysql_lock_slot(key: LockKey) -> u32 {
    let (space, bits): (u64, u64) = match key {
        LockKey::BigInt(key) => (1, key as u64),
        LockKey::Pair(high, low) => (2, (u64::from(high as u32) << 32) | u64::from(low as u32)),
    };
    let mut z = bits.wrapping_add(space.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 48) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::backend::mysql::lock_table::{LockRow, LockTable};

    /// The slot mapping is pinned: these values were computed outside Rust, in Python:
    ///
    /// ```python
    /// M = (1 << 64) - 1
    /// def slot(space, bits):
    ///     z = (bits + space * 0x9E3779B97F4A7C15) & M
    ///     z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    ///     z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    ///     return (z ^ (z >> 31)) >> 48
    /// big = lambda k: slot(1, k & M)
    /// pair = lambda a, b: slot(2, ((a & 0xFFFFFFFF) << 32) | (b & 0xFFFFFFFF))
    /// ```
    ///
    /// A change here makes two versions lock different rows for one key: never change it.
    #[test]
    fn slots_match_the_golden_vectors() {
        let big = [
            (0, 57888),
            (1, 37130),
            (2, 38744),
            (-1, 58585),
            (42, 48599),
            (1 << 32, 50220),
            (i64::MIN, 18462),
            (i64::MAX, 10855),
        ];
        for (key, expected) in big {
            assert_eq!(
                mysql_lock_slot(LockKey::BigInt(key)),
                expected,
                "BigInt({key})"
            );
        }
        let pairs = [
            ((0, 0), 28280),
            ((1, 2), 44208),
            ((-1, -1), 59807),
            ((31337, -90210), 2108),
            ((i32::MAX, i32::MIN), 21196),
        ];
        for ((high, low), expected) in pairs {
            assert_eq!(
                mysql_lock_slot(LockKey::Pair(high, low)),
                expected,
                "Pair({high}, {low})"
            );
        }
        assert_eq!(
            LockTable::Slots.row(LockKey::BigInt(42)),
            LockRow::Slot(48599)
        );
    }

    #[test]
    fn the_slot_table_is_innodb_and_its_fill_makes_every_slot_once() {
        use sea_orm::sea_query::MysqlQueryBuilder;
        let sql = mysql_lock_slots().to_string(MysqlQueryBuilder);
        assert!(
            sql.contains("CREATE TABLE IF NOT EXISTS `sea_orm_idempotent_lock_slots`"),
            "{sql}"
        );
        assert!(sql.contains("`slot` int NOT NULL PRIMARY KEY"), "{sql}");
        assert!(sql.contains("ENGINE=InnoDB"), "{sql}");
        let fill = mysql_lock_slots_fill();
        assert!(fill.values.is_none());
        // 16^4 numbers: 0 to 65535, each once (the server test counts them too).
        assert_eq!(16_u32.pow(4), MYSQL_LOCK_SLOTS);
        assert!(
            fill.sql
                .starts_with("INSERT IGNORE INTO `sea_orm_idempotent_lock_slots` (`slot`)")
        );
    }
}
