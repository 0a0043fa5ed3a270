//! `loadgen`: the flood-testing client (issue 4). Not built yet: it says so and exits 2
//! rather than pretending to measure anything.

fn main() {
    eprintln!("loadgen: not implemented yet (see issue 4); nothing was measured");
    std::process::exit(2);
}
