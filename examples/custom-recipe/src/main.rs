//! The `fp8` command line with this crate's recipes linked in.

// Without this line the linker drops the crate (nothing references it) and its
// `inventory::submit!` never runs.
use custom_recipe as _;

fn main() -> std::process::ExitCode {
    fp8_cli::main()
}
