# Everyday commands (https://github.com/casey/just). Each is a plain script too.

# Run the whole test suite as CI does.
test:
    scripts/test

# Format and lint.
lint:
    cargo fmt --all
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks recorded in BENCHMARKS.md.
bench:
    scripts/bench

# Fuzz load+validate (needs nightly and cargo-fuzz); SECONDS defaults to 600.
fuzz seconds="600":
    scripts/fuzz {{seconds}}

# The demo (README's first command).
demo:
    scripts/demo
