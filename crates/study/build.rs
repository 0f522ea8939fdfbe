//! Records the commit this crate was built from, for `--version` and every output's
//! identity (a binary copied to another machine still knows where it came from).

use std::process::Command;

fn main() {
    // `cfg(fixtures)`: the unit tests that read ../shared run only when it is there.
    sweelol_fixtures::probe();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SWEELOL_COMMIT={commit}");
    // Rebuild when HEAD moves (a commit, a checkout).
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/refs/heads");
        println!("cargo:rerun-if-changed={git_dir}/packed-refs");
    }
}
