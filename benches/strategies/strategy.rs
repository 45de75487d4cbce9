//! Strategies 1 to 5, written with SeaORM as a SeaORM user would write them, and the one call
//! every measurement makes: [`deliver`].

use entity::{PullRequest, pull_requests};
use sea_orm::sqlx::PgPool;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, TransactionTrait, TryInsertResult,
};
use sea_orm_idempotent::{IdempotentCreate, Outcome};
use test_support::{naive_find_then_insert, new_pr};

use crate::by_hand;

/// Any error a delivery can return.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Strategy {
    Crate,
    Floor,
    OnConflict,
    Naive,
    LockTable,
    Sqlx,
}

impl Strategy {
    pub(crate) const ALL: [Strategy; 6] = [
        Strategy::Crate,
        Strategy::Sqlx,
        Strategy::Floor,
        Strategy::OnConflict,
        Strategy::Naive,
        Strategy::LockTable,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Strategy::Crate => "create_once (crate)",
            Strategy::Floor => "floor: INSERT RETURNING",
            Strategy::OnConflict => "ON CONFLICT DO NOTHING",
            Strategy::Naive => "naive find-then-insert",
            Strategy::LockTable => "LOCK TABLE",
            Strategy::Sqlx => "same statements on sqlx",
        }
    }
}

/// What a delivery got back.
pub(crate) enum Answer {
    Created,
    Existing,
}

impl<M> From<Outcome<M>> for Answer {
    fn from(outcome: Outcome<M>) -> Answer {
        match outcome {
            Outcome::Created(_) => Answer::Created,
            Outcome::Existing(_) => Answer::Existing,
        }
    }
}

/// The handles a strategy may use: one pool, seen through SeaORM or directly through sqlx.
#[derive(Clone)]
pub(crate) struct Db {
    pub(crate) orm: DatabaseConnection,
    pub(crate) sqlx: PgPool,
}

/// One delivery of pull request `key`, stored with `strategy`.
pub(crate) async fn deliver(
    db: &Db,
    strategy: Strategy,
    rows_exist: bool,
    key: i64,
) -> Result<Answer, BoxError> {
    match strategy {
        Strategy::Crate => Ok(PullRequest::create_once(&db.orm, key, new_pr(key))
            .await?
            .into()),
        Strategy::Floor if rows_exist => match find(&db.orm, key).await? {
            Some(_) => Ok(Answer::Existing),
            None => Err("the row is missing".into()),
        },
        Strategy::Floor => {
            PullRequest::new_active_model(&key, new_pr(key))
                .insert(&db.orm)
                .await?;
            Ok(Answer::Created)
        }
        Strategy::OnConflict => {
            let inserted = PullRequest::insert(PullRequest::new_active_model(&key, new_pr(key)))
                .on_conflict_do_nothing_on([pull_requests::Column::PrId])
                .exec_with_returning(&db.orm)
                .await;
            match inserted {
                Ok(TryInsertResult::Inserted(_)) => Ok(Answer::Created),
                // SeaORM reports "RETURNING gave no row" as RecordNotFound on PostgreSQL.
                Ok(_) | Err(DbErr::RecordNotFound(_) | DbErr::RecordNotInserted) => {
                    match find(&db.orm, key).await? {
                        Some(_) => Ok(Answer::Existing),
                        None => Err("conflicted, then found nothing".into()),
                    }
                }
                Err(e) => Err(e.into()),
            }
        }
        Strategy::Naive => {
            let created =
                naive_find_then_insert::<PullRequest, _>(&db.orm, key, new_pr(key)).await?;
            Ok(if created {
                Answer::Created
            } else {
                Answer::Existing
            })
        }
        Strategy::LockTable => {
            let txn = db.orm.begin().await?;
            txn.execute_unprepared("LOCK TABLE pull_requests IN SHARE ROW EXCLUSIVE MODE")
                .await?;
            let answer = if find(&txn, key).await?.is_some() {
                Answer::Existing
            } else {
                PullRequest::new_active_model(&key, new_pr(key))
                    .insert(&txn)
                    .await?;
                Answer::Created
            };
            txn.commit().await?;
            Ok(answer)
        }
        Strategy::Sqlx => Ok(by_hand::create_once(&db.sqlx, key, new_pr(key))
            .await?
            .into()),
    }
}

async fn find(db: &impl ConnectionTrait, key: i64) -> Result<Option<pull_requests::Model>, DbErr> {
    PullRequest::find()
        .filter(pull_requests::Column::PrId.eq(key))
        .one(db)
        .await
}
