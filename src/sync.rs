//! SKELETON: sync layer.
