//! For the integration tests that serve the test-only store (`fake-async:SIZE`,
//! `src/bdev/fake.rs`), compiled into xblade only with the cargo feature
//! `test-stores` (scripts/test.sh passes `--features xblade/test-stores`).
//! Use it with `mod test_stores;` and put `#[cfg(feature = "test-stores")]` on
//! the tests: without the feature the one test here fails, so a build without
//! it never passes with the store's tests silently missing.

/// The feature is off: fail, naming it.
#[cfg(not(feature = "test-stores"))]
#[test]
fn built_without_test_stores() {
    panic!("run with --features xblade/test-stores (scripts/test.sh does)");
}

/// Let `fake-async:` through (the daemon refuses it without
/// `XBLADE_TEST_STORES=1`) for the daemons this test starts.
#[cfg(feature = "test-stores")]
pub fn allow() {
    std::env::set_var(xblade::bdev::TEST_STORES_ENV, "1");
}
