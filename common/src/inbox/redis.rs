//! Redis adapter (production).
