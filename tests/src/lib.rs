//! End-to-end test support for Census.
