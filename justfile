# Everyday commands (https://github.com/casey/just). Each is a plain script too.

# Run the whole test suite as CI does.
test:
    scripts/test

# Format and lint.
lint:
    cargo fmt --all
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks recorded in BENCHMARKS.md: galley, pilot, citadel.
bench:
    scripts/bench

bench-pilot:
    scripts/bench-pilot

bench-citadel:
    scripts/bench-citadel

# Fuzz (needs nightly and cargo-fuzz); target load_validate or csr_parse.
fuzz seconds="600" target="load_validate":
    TARGET={{target}} scripts/fuzz {{seconds}}

# The demo (README's first command).
demo:
    scripts/demo

# Regenerate the files generated from Mizzen's types (deploy/crds); CI fails when
# the committed ones differ.
gen:
    cargo run --locked -q -p mizzen -- gen crds --out deploy/crds

# Mizzen on a kind cluster end to end (needs Docker, kind, kubectl); `--check`
# runs only the steps that need no cluster.
kind *args:
    e2e/kind/run {{args}}
