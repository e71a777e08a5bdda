//! The userland host: std threads, futex-style word sleep. SKELETON.
