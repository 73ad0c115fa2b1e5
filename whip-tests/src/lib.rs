//! whip-tests
