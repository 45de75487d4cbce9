//! What `create_once` did: created the row, or found it already there.

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
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Outcome::Created(_) => "created",
            Outcome::Existing(_) => "existing",
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
    }
}
