//! What a call did: [`Outcome`] for a create-only call (created, or found already there), and
//! [`UpsertOutcome`] for a call with an update function (created, updated, or unchanged).

/// The result of a successful [`create_once`](crate::IdempotentCreate::create_once): the row,
/// and whether this call created it.
///
/// For any number of concurrent calls with the same key, exactly one returns
/// [`Outcome::Created`]; every other returns [`Outcome::Existing`] with the same row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<M> {
    /// This call inserted the row.
    Created(M),
    /// The row was already there (a duplicate delivery); nothing was written.
    Existing(M),
}

impl<M> Outcome<M> {
    /// The row, whichever way it came.
    pub fn into_model(self) -> M {
        match self {
            Outcome::Created(model) | Outcome::Existing(model) => model,
        }
    }

    /// A reference to the row, whichever way it came.
    pub fn model(&self) -> &M {
        match self {
            Outcome::Created(model) | Outcome::Existing(model) => model,
        }
    }

    /// Whether this call inserted the row.
    pub fn is_created(&self) -> bool {
        matches!(self, Outcome::Created(_))
    }

    /// `"created"` or `"existing"`, as recorded in the tracing span.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Created(_) => "created",
            Outcome::Existing(_) => "existing",
        }
    }
}

/// The result of a successful call with an update function ([`Once::update`](crate::Once::update)):
/// the row as it is now, and what this call did to it.
///
/// For any number of concurrent calls with the same key, exactly one returns
/// [`UpsertOutcome::Created`]; every other ran its update function on the row as the calls
/// before it left it, one at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpsertOutcome<M> {
    /// This call inserted the row.
    Created(M),
    /// The row was there and this call changed it; the model is the row after the update.
    Updated(M),
    /// The row was there and the update function returned [`Change::Keep`](crate::Change::Keep)
    /// (or a change that sets no column); nothing was written.
    Unchanged(M),
}

impl<M> UpsertOutcome<M> {
    /// The row, whichever way it came.
    pub fn into_model(self) -> M {
        match self {
            UpsertOutcome::Created(model)
            | UpsertOutcome::Updated(model)
            | UpsertOutcome::Unchanged(model) => model,
        }
    }

    /// A reference to the row, whichever way it came.
    pub fn model(&self) -> &M {
        match self {
            UpsertOutcome::Created(model)
            | UpsertOutcome::Updated(model)
            | UpsertOutcome::Unchanged(model) => model,
        }
    }

    /// Whether this call wrote the row: created it or updated it.
    pub fn is_written(&self) -> bool {
        !matches!(self, UpsertOutcome::Unchanged(_))
    }

    /// `"created"`, `"updated"` or `"unchanged"`, as recorded in the tracing span.
    pub fn as_str(&self) -> &'static str {
        match self {
            UpsertOutcome::Created(_) => "created",
            UpsertOutcome::Updated(_) => "updated",
            UpsertOutcome::Unchanged(_) => "unchanged",
        }
    }
}

/// What one call did, before it is told in the caller's terms: [`Done::Existing`] is a row found
/// by a create-only call, [`Done::Unchanged`] one an update function kept.
#[derive(Debug)]
pub(crate) enum Done<M> {
    Created(M),
    Existing(M),
    Updated(M),
    Unchanged(M),
}

impl<M> Done<M> {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Done::Created(_) => "created",
            Done::Existing(_) => "existing",
            Done::Updated(_) => "updated",
            Done::Unchanged(_) => "unchanged",
        }
    }

    /// The row, as stored when the call ended.
    pub(crate) fn model(&self) -> &M {
        match self {
            Done::Created(model)
            | Done::Existing(model)
            | Done::Updated(model)
            | Done::Unchanged(model) => model,
        }
    }

    /// A create-only call's answer. (Such a call never updates: it has no update function.)
    pub(crate) fn into_outcome(self) -> Outcome<M> {
        match self {
            Done::Created(model) => Outcome::Created(model),
            Done::Existing(model) | Done::Updated(model) | Done::Unchanged(model) => {
                Outcome::Existing(model)
            }
        }
    }

    /// An updating call's answer. (Such a call never stops at a row it found: it runs its
    /// update function on it.)
    pub(crate) fn into_upsert(self) -> UpsertOutcome<M> {
        match self {
            Done::Created(model) => UpsertOutcome::Created(model),
            Done::Updated(model) => UpsertOutcome::Updated(model),
            Done::Existing(model) | Done::Unchanged(model) => UpsertOutcome::Unchanged(model),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_agree() {
        let created = Outcome::Created(7);
        assert!(created.is_created());
        assert_eq!(*created.model(), 7);
        assert_eq!(created.into_model(), 7);

        let existing = Outcome::Existing("row");
        assert!(!existing.is_created());
        assert_eq!(*existing.model(), "row");
        assert_eq!(existing.as_str(), "existing");

        let updated = UpsertOutcome::Updated(3);
        assert!(updated.is_written());
        assert_eq!(updated.as_str(), "updated");
        assert_eq!(*updated.model(), 3);
        let unchanged = UpsertOutcome::Unchanged(4);
        assert!(!unchanged.is_written());
        assert_eq!(unchanged.into_model(), 4);
    }

    #[test]
    fn each_call_kind_tells_what_it_did() {
        assert_eq!(Done::Created(1).into_outcome(), Outcome::Created(1));
        assert_eq!(Done::Existing(1).into_outcome(), Outcome::Existing(1));
        assert_eq!(Done::Created(1).into_upsert(), UpsertOutcome::Created(1));
        assert_eq!(Done::Updated(1).into_upsert(), UpsertOutcome::Updated(1));
        assert_eq!(
            Done::Unchanged(1).into_upsert(),
            UpsertOutcome::Unchanged(1)
        );
        assert_eq!(Done::Unchanged(1).as_str(), "unchanged");
    }
}
