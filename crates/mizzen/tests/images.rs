//! The image build files and the kind suite's script, checked without a
//! cluster or a Docker engine: hadolint on the Dockerfile, a target for every
//! image the chart and the bookinfo manifest name, shellcheck on e2e/kind/run,
//! and the script's own `--check` (every step that needs no cluster).

mod support;

use support::{repo as root, tool};

#[test]
fn the_dockerfile_passes_hadolint() {
    let (ok, out, err) = tool("hadolint", &["deploy/docker/Dockerfile"]);
    assert!(ok, "{out}{err}");
    // hadolint does find problems: a copy with an unpinned `latest` base fails.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("Dockerfile");
    std::fs::write(&bad, "FROM debian:latest\nRUN cd /tmp && echo hi\n").unwrap();
    let (ok, _, _) = tool("hadolint", &[bad.to_str().unwrap()]);
    assert!(!ok);
}

#[test]
fn every_image_named_by_the_chart_and_bookinfo_has_a_target() {
    let dockerfile = std::fs::read_to_string(root().join("deploy/docker/Dockerfile")).unwrap();
    let plan = mizzen::manifest::plan(&mizzen::manifest::InstallOptions {
        sets: vec!["profile=demo".into()],
        ..Default::default()
    })
    .unwrap();
    let mut images: Vec<String> = Vec::new();
    let rendered =
        mizzen::manifest::to_yaml_stream(&mizzen::manifest::render(&plan).unwrap()).unwrap();
    let bookinfo =
        std::fs::read_to_string(root().join("samples/kubernetes/bookinfo.yaml")).unwrap();
    for line in rendered.lines().chain(bookinfo.lines()) {
        if let Some(image) = line.trim().strip_prefix("image: ") {
            images.push(image.trim_matches('"').to_string());
        }
    }
    images.sort();
    images.dedup();
    assert!(images.len() >= 5, "{images:?}");
    let version = env!("CARGO_PKG_VERSION");
    for image in &images {
        let rest = image
            .strip_prefix("docker.io/mizzen/")
            .unwrap_or_else(|| panic!("{image}: not one of Mizzen's images"));
        let (component, tag) = rest.split_once(':').unwrap();
        assert_eq!(
            tag, version,
            "{image}: the chart's tag is the workspace version"
        );
        assert!(
            dockerfile.contains(&format!(" AS {component}\n")),
            "deploy/docker/Dockerfile has no target {component}"
        );
        assert!(
            dockerfile.contains(&format!("-p {component}")),
            "deploy/docker/Dockerfile does not build {component}"
        );
        assert!(
            dockerfile.contains(&format!("/out/{component} /usr/local/bin/{component}")),
            "the {component} image has no /usr/local/bin/{component}"
        );
    }
}

#[test]
fn the_kind_script_passes_shellcheck_and_its_offline_checks() {
    let (ok, out, err) = tool("shellcheck", &["e2e/kind/run"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = tool("bash", &["e2e/kind/run", "--check"]);
    let said = format!("{out}{err}");
    assert!(ok, "e2e/kind/run --check:\n{said}");
    assert!(said.contains("checks passed"), "{said}");
}
