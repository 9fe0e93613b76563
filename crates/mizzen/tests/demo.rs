//! `mizzen demo` refuses what cannot work before it starts anything.

use clap::Parser;
use mizzen::cli::Cli;

#[test]
fn a_demo_without_sidecars_is_refused_with_what_to_pick() {
    let state = tempfile::tempdir().unwrap();
    let cli = Cli::try_parse_from([
        "mizzen",
        "demo",
        "--once",
        "--sidecar",
        "none",
        "--state-dir",
        state.path().to_str().unwrap(),
    ])
    .expect("the flags parse");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = mizzen::run(cli, &mut out, &mut err);
    let err = String::from_utf8_lossy(&err);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pick proxy or envoy"), "{err}");
    assert!(
        std::fs::read_dir(state.path()).unwrap().next().is_none(),
        "nothing was written"
    );
}
