//! Running a property over many generated cases, deterministically, and turning the shrunk
//! failure into a `.scn` scenario.

use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

use super::gen::{raw_case, resolve, Case};
use super::model::quorum;
use super::scn;

/// `name` from the environment as a number, or `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Run `prop` over `cases` cases of at most `max_ops` changes (`H2S_ORACLE_CASES` multiplies
/// the count: it is the total budget the suite spreads; `H2S_ORACLE_SEED` picks the seed).
/// On failure, panic with the minimal case as a scenario.
pub fn run(name: &str, cases: u32, max_ops: usize, prop: impl Fn(&Case) -> Result<(), String>) {
    let scale = env_num("H2S_ORACLE_SCALE", 1).max(1) as u32;
    let seed = env_num("H2S_ORACLE_SEED", 0x4832_5359_4e43);
    let config = Config {
        cases: cases * scale,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&raw_case(max_ops), |raw| {
        prop(&resolve(&raw)).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, raw)) => {
            let case = resolve(&raw);
            let (mut w, paths) = case.replay();
            w.sync_all(quorum, 16);
            let note = format!("oracle property `{name}` failed (seed {seed}):\n{why}");
            panic!(
                "{note}\nminimal case as a scenario (expectations are the model's):\n{}",
                scn::render(&case, &w, &paths, &note)
            );
        }
        Err(e) => panic!("{name}: {e}"),
    }
}
