//! The tests every host runs on itself, in the kernel as in userland: [`conformance`] checks a
//! host's primitives (word sleep, locks, threads, clock), [`selftest`] the thread protocol with
//! real threads and the randomized [`selftest::stress`] case. Hosts run them through
//! [`selftest::run_cases`] (the Linux module from debugfs `selftest`).

pub mod conformance;
pub mod selftest;
