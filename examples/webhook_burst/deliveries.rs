//! The burst: every delivery, with reproducible synthetic payloads.

use entity::NewPullRequest;

use crate::cli::Args;

/// One webhook delivery: the pull request it announces and the payload it carries.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) pr_id: i64,
    pub(crate) data: NewPullRequest,
}

/// Every delivery of the burst. The copies of one pull request are adjacent, so workers that
/// take the next delivery from the queue get them at the same moment; the order of the pull
/// requests is shuffled by `--seed` (the same in every process with the same seed).
pub(crate) fn deliveries(args: &Args) -> Vec<Delivery> {
    let mut pr_ids: Vec<i64> = (0..i64::from(args.prs))
        .map(|i| args.first_pr_id() + i)
        .collect();
    let mut rng = Rng::new(args.seed, 0);
    for i in (1..pr_ids.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        pr_ids.swap(i, j);
    }
    pr_ids
        .into_iter()
        .flat_map(|pr_id| {
            let payload = payload(args.seed, pr_id);
            (0..args.duplicates).map(move |copy| Delivery {
                pr_id,
                data: NewPullRequest {
                    delivery_id: delivery_id(args.seed, pr_id, copy),
                    ..payload.clone()
                },
            })
        })
        .collect()
}

/// The synthetic `pull_request` payload of `pr_id`: the same for every delivery and process.
fn payload(seed: u64, pr_id: i64) -> NewPullRequest {
    const REPOSITORIES: [&str; 4] = [
        "octo-org/octo-repo",
        "octo-org/hello-world",
        "acme/api",
        "acme/web",
    ];
    const VERBS: [&str; 6] = ["Fix", "Add", "Remove", "Refactor", "Document", "Speed up"];
    const NOUNS: [&str; 6] = [
        "webhook retries",
        "login flow",
        "CI cache",
        "rate limiter",
        "README",
        "migrations",
    ];
    const AUTHORS: [&str; 5] = ["mona", "hubot", "octocat", "defunkt", "pjhyett"];
    let mut rng = Rng::new(seed, pr_id as u64);
    let mut pick = |n: usize| (rng.next() % n as u64) as usize;
    let repository = REPOSITORIES[pick(REPOSITORIES.len())].to_owned();
    let title = format!("{} {}", VERBS[pick(VERBS.len())], NOUNS[pick(NOUNS.len())]);
    let author = AUTHORS[pick(AUTHORS.len())].to_owned();
    let number = 1 + pick(5_000) as i32;
    let head_sha = format!(
        "{:016x}{:016x}{:08x}",
        rng.next(),
        rng.next(),
        rng.next() as u32
    );
    NewPullRequest {
        repository,
        number,
        title,
        author,
        state: "open".into(),
        head_sha,
        delivery_id: String::new(),
        updated_at: None,
    }
}

/// An `X-GitHub-Delivery`-like GUID for one delivery.
fn delivery_id(seed: u64, pr_id: i64, copy: u32) -> String {
    let mut rng = Rng::new(seed ^ u64::from(copy).rotate_left(32), pr_id as u64);
    let (a, b) = (rng.next(), rng.next());
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// SplitMix64: small, fast, and reproducible from the seed (no dependency needed).
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
