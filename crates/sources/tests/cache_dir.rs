//! `cache_dir()` reads the environment, so it gets a test binary of its own (changing the
//! environment while other test threads run is not sound).

use std::path::PathBuf;

#[test]
fn cache_dir_honours_sweelol_cache_then_home() {
    std::env::set_var("SWEELOL_CACHE", "/tmp/sweelol-cache-test");
    assert_eq!(
        sweelol_sources::cache_dir(),
        PathBuf::from("/tmp/sweelol-cache-test")
    );
    std::env::set_var("SWEELOL_CACHE", "");
    std::env::set_var("HOME", "/home/someone");
    assert_eq!(
        sweelol_sources::cache_dir(),
        PathBuf::from("/home/someone/.cache/sweelol")
    );
}
