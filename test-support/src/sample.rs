//! The sample pull request every test and the benchmark store.

use entity::NewPullRequest;

/// A plausible new pull request for GitHub pull-request id `pr_id`: the same for the same id,
/// so any caller's data is as good as another's.
pub fn new_pr(pr_id: i64) -> NewPullRequest {
    NewPullRequest {
        repository: "octo-org/octo-repo".into(),
        number: i32::try_from(pr_id.rem_euclid(100_000) + 1).expect("at most 100000"),
        title: format!("Pull request {pr_id}"),
        author: "mona".into(),
        state: "open".into(),
        head_sha: format!("{pr_id:040x}"),
        delivery_id: format!("delivery-{pr_id}"),
        updated_at: None,
    }
}
