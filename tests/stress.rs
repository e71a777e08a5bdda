//! Stress in userland at larger sizes than the self-test: the portable case of
//! `hammer2_synchro::testkit::selftest::stress` (the one the kernel runs from debugfs `selftest`), here
//! with more writers, operations and requests, for two cluster shapes and several seeds.
//!
//! Concurrent frontend writers on the masters, every node's sync thread running, and random
//! freeze / unfreeze / remaster / stop+start / signal requests, for a fixed count of operations;
//! then every thread is unfrozen, the cluster must converge, and every write that reached a
//! quorum of masters must be on every node, with nothing uncommitted left. Its negative controls
//! (a lost committed write, an unacknowledged request) are the core's unit tests
//! `selftest::stress::tests::negative_control_*`.

use std::time::Duration;

use hammer2_synchro::role::Role;
use hammer2_synchro::testkit::selftest::stress::{run, Params, MIXED_ROLES};

/// One master: a frontend change is on the quorum as soon as that node applied it.
const ONE_MASTER: &[Role] = &[
    Role::Master,
    Role::Slave,
    Role::Slave,
    Role::SoftSlave,
    Role::SoftMaster,
];

/// Three masters: a change reaches them one node after the other.
const THREE_MASTERS: &[Role] = &[
    Role::Master,
    Role::Master,
    Role::Master,
    Role::Slave,
    Role::Slave,
    Role::SoftSlave,
];

fn rounds() -> u64 {
    std::env::var("H2S_STRESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

fn stress(roles: &'static [Role], seed: u64) {
    for r in 0..rounds() {
        let p = Params {
            roles,
            seed: seed + r,
            writers: 3,
            ops_per_writer: 200,
            requesters: 2,
            requests: 150,
            timeout: Duration::from_secs(60),
            ..Params::SELFTEST
        };
        let mut out = String::new();
        let host = hammer2_synchro::userland::host();
        run(host, &p, &mut out).unwrap_or_else(|e| panic!("stress round {r}: {e}\n{out}"));
    }
}

#[test]
fn stress_one_master() {
    stress(ONE_MASTER, 0xC0FFEE);
}

#[test]
fn stress_three_masters() {
    stress(THREE_MASTERS, 0xBEEF);
}

#[test]
fn stress_mixed_roles_of_the_selftest() {
    stress(MIXED_ROLES, 0x5EED);
}
