//! S3 adapter (production).
