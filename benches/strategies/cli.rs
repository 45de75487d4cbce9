//! The benchmark's command line.

use std::path::{Path, PathBuf};

use crate::scenario::{FULL, QUICK, Scenario, Size};

/// What to run, and where the chart goes.
pub(crate) struct Options {
    /// `--quick`: small runs, for CI.
    pub(crate) quick: bool,
    /// The size that follows from `quick`.
    pub(crate) size: Size,
    /// `--svg PATH`, else `benches/strategies.svg` (full) or `target/strategies-quick.svg`.
    pub(crate) svg: PathBuf,
    /// `--only new,dup4,...`, else every scenario.
    pub(crate) scenarios: Vec<Scenario>,
}

impl Options {
    /// Parses the process's arguments. `cargo bench` passes `--bench`; anything else unknown
    /// is a mistake worth reporting.
    pub(crate) fn from_args() -> Result<Options, String> {
        let mut quick = false;
        let mut svg: Option<PathBuf> = None;
        let mut only: Option<Vec<Scenario>> = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--svg" => svg = Some(args.next().ok_or("--svg needs a path")?.into()),
                "--only" => {
                    let names = args.next().ok_or("--only needs scenarios")?;
                    let picked = names
                        .split(',')
                        .map(|name| {
                            Scenario::ALL
                                .into_iter()
                                .find(|s| s.short() == name)
                                .ok_or_else(|| format!("unknown scenario {name:?}"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    only = Some(picked);
                }
                "--bench" => {}
                other => {
                    return Err(format!(
                        "unknown argument {other:?} (try --quick, --svg PATH, --only \
                         new,dup4,dup16,late,storm)"
                    ));
                }
            }
        }
        let svg = svg.unwrap_or_else(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            if quick {
                root.join("target").join("strategies-quick.svg")
            } else {
                root.join("benches").join("strategies.svg")
            }
        });
        Ok(Options {
            quick,
            size: if quick { QUICK } else { FULL },
            svg,
            scenarios: only.unwrap_or(Scenario::ALL.to_vec()),
        })
    }
}
