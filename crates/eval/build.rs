//! Turns on `cfg(fixtures)` when the shared test fixtures are there (`sweelol_fixtures::probe`).

fn main() {
    sweelol_fixtures::probe();
}
