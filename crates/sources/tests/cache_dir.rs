//! `cache_dir()`, `hf_hub_cache()` and `hf_offline()` read the environment, so they get a test
//! binary of their own, and one test function (changing the environment while other test
//! threads run is not sound).

use std::path::PathBuf;

#[test]
fn cache_dirs_and_offline_flag_follow_the_environment() {
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

    // The hub cache: HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub, else
    // ~/.cache/huggingface/hub, as huggingface_hub resolves it.
    for k in ["HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"] {
        std::env::remove_var(k);
    }
    assert_eq!(
        sweelol_sources::hf_hub_cache(),
        PathBuf::from("/home/someone/.cache/huggingface/hub")
    );
    std::env::set_var("XDG_CACHE_HOME", "/xdg");
    assert_eq!(
        sweelol_sources::hf_hub_cache(),
        PathBuf::from("/xdg/huggingface/hub")
    );
    std::env::set_var("HF_HOME", "/hf-home");
    assert_eq!(
        sweelol_sources::hf_hub_cache(),
        PathBuf::from("/hf-home/hub")
    );
    std::env::set_var("HF_HUB_CACHE", "/hub-cache");
    assert_eq!(sweelol_sources::hf_hub_cache(), PathBuf::from("/hub-cache"));
    std::env::set_var("HF_HUB_CACHE", "");
    assert_eq!(
        sweelol_sources::hf_hub_cache(),
        PathBuf::from("/hf-home/hub")
    );

    std::env::remove_var("HF_HUB_OFFLINE");
    assert!(!sweelol_sources::hf_offline());
    for on in ["1", "true", "YES", "On"] {
        std::env::set_var("HF_HUB_OFFLINE", on);
        assert!(sweelol_sources::hf_offline(), "{on}");
    }
    for off in ["0", "false", "no", ""] {
        std::env::set_var("HF_HUB_OFFLINE", off);
        assert!(!sweelol_sources::hf_offline(), "{off}");
    }
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let opts = sweelol_sources::Options::from_env();
    assert!(opts.hf_offline);
    assert_eq!(opts.hf_hub_cache, PathBuf::from("/hf-home/hub"));
}
