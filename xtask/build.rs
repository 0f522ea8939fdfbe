//! `cfg(fixtures)`: the command line's tests that read ../shared run only when it is there.

fn main() {
    sweelol_fixtures::probe();
}
