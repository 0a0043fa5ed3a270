//! `ami-sim`: the simulated Asterisk PBX (issue 3). Not built yet: it says so and exits 2
//! rather than pretending to be a PBX.

fn main() {
    eprintln!("ami-sim: not implemented yet (see issue 3)");
    std::process::exit(2);
}
