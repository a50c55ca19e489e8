//! Contract test suites (in progress).
