//! SKELETON: store layer.
