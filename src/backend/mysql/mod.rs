//! MySQL and MariaDB: a READ COMMITTED transaction and a row lock of the crate's lock table.

pub(crate) mod lock;
pub(crate) mod shielded;
