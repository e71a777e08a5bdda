//! HAMMER2 on-media types and constants (`hammer2_disk.h`).
