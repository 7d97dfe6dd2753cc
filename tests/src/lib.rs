//! Shared helpers of the syncflow test suite.
