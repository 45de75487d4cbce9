//! The PostgreSQL SQLSTATEs the crate reacts to ([`classify`](crate::classify) says what each
//! means to it).

/// `lock_not_available`: `lock_timeout` ran out.
pub(crate) const LOCK_NOT_AVAILABLE: &str = "55P03";
/// `deadlock_detected`.
pub(crate) const DEADLOCK_DETECTED: &str = "40P01";
/// `undefined_function`: a server too old for a statement (see
/// [`ServerRefusal::TooOld`](crate::ServerRefusal::TooOld)).
pub(crate) const UNDEFINED_FUNCTION: &str = "42883";
/// `invalid_column_reference`: among others, an `ON CONFLICT` target no unique index matches.
pub(crate) const INVALID_COLUMN_REFERENCE: &str = "42P10";
/// `serialization_failure`.
pub(crate) const SERIALIZATION_FAILURE: &str = "40001";
/// `in_failed_sql_transaction`: a statement in an aborted transaction.
pub(crate) const IN_FAILED_TRANSACTION: &str = "25P02";
/// `unique_violation`.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";
/// `idle_in_transaction_session_timeout` (FATAL): the server closed a session whose transaction
/// sat idle too long (a `make_data` that outlasted it): the transaction is rolled back and
/// nothing was written, as after `pg_terminate_backend`.
pub(crate) const IDLE_IN_TRANSACTION_SESSION_TIMEOUT: &str = "25P03";
/// `transaction_timeout` (PostgreSQL 17, FATAL): the server closed a session whose transaction
/// lasted too long; rolled back, as above.
pub(crate) const TRANSACTION_TIMEOUT: &str = "25P04";
/// `read_only_sql_transaction`: a write in a read-only transaction or on a hot standby.
pub(crate) const READ_ONLY_TRANSACTION: &str = "25006";
/// `query_canceled`: a `statement_timeout` (the caller's) or a cancel request
/// (`pg_cancel_backend`).
pub(crate) const QUERY_CANCELED: &str = "57014";
/// `duplicate_prepared_statement` and `invalid_sql_statement_name`: prepared statements lost
/// between a client and its server (a pooler in transaction mode).
pub(crate) const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
pub(crate) const INVALID_STATEMENT_NAME: &str = "26000";
/// `protocol_violation`, in class 08 but never cured by a retry (a pooler that sends one
/// statement's bind message to another).
pub(crate) const PROTOCOL_VIOLATION: &str = "08P01";
/// Class 08: connection exceptions.
pub(crate) const CONNECTION_EXCEPTION_CLASS: &str = "08";
/// Class 57P: operator intervention (`admin_shutdown`, `crash_shutdown`,
/// `cannot_connect_now`, `pg_terminate_backend`).
pub(crate) const OPERATOR_INTERVENTION_CLASS: &str = "57P";

/// Whether a retry can get past an error with this SQLSTATE.
pub(crate) fn is_transient(state: &str) -> bool {
    matches!(
        state,
        LOCK_NOT_AVAILABLE
            | DEADLOCK_DETECTED
            | SERIALIZATION_FAILURE
            | QUERY_CANCELED
            | READ_ONLY_TRANSACTION
            | IDLE_IN_TRANSACTION_SESSION_TIMEOUT
            | TRANSACTION_TIMEOUT
    ) || (state.starts_with(CONNECTION_EXCEPTION_CLASS) && state != PROTOCOL_VIOLATION)
        || state.starts_with(OPERATOR_INTERVENTION_CLASS)
}
