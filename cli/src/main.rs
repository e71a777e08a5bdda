//! `hammer2-synchro`: the userland command line. SKELETON.
fn main() {}
