//! The `imgbuild` command: flags and `imgbuild.toml` turned into library calls. All the work
//! is in the library; this side parses, composes sources and sinks, and prints.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
