//! Istio's plug-in CA layout (`cacerts`): citadel signs as an intermediate made with
//! the real `openssl`, chains verify to the plug-in root, and bad material stops the
//! start with a message naming the file.

mod support;

use std::path::Path;
use std::process::Command;

use support::{Running, config, openssl_csr, openssl_verify, token};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed (scripts/setup)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// root (self-signed) → intermediate (ca-cert.pem, SEC1 EC key as Istio's tools
/// write it), laid out as Istio's `cacerts` secret. Returns the directory.
fn make_cacerts(dir: &Path) -> std::path::PathBuf {
    let c = dir.join("cacerts");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("ext.cnf"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n",
    )
    .unwrap();
    openssl(
        &c,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "root-key.pem",
        ],
    );
    openssl(
        &c,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "root-key.pem",
            "-out",
            "root-cert.pem",
            "-days",
            "3650",
            "-subj",
            "/O=Plug Root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        &c,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca-key.pem",
        ],
    );
    openssl(
        &c,
        &[
            "req",
            "-new",
            "-key",
            "ca-key.pem",
            "-out",
            "ca.csr",
            "-subj",
            "/O=Plug Intermediate",
        ],
    );
    openssl(
        &c,
        &[
            "x509",
            "-req",
            "-in",
            "ca.csr",
            "-CA",
            "root-cert.pem",
            "-CAkey",
            "root-key.pem",
            "-CAcreateserial",
            "-out",
            "ca-cert.pem",
            "-days",
            "365",
            "-extfile",
            "ext.cnf",
        ],
    );
    let chain = std::fs::read_to_string(c.join("ca-cert.pem")).unwrap()
        + &std::fs::read_to_string(c.join("root-cert.pem")).unwrap();
    std::fs::write(c.join("cert-chain.pem"), chain).unwrap();
    c
}

#[tokio::test]
async fn plug_in_chain_verifies_to_the_plug_in_root() {
    let dir = tempfile::tempdir().unwrap();
    let cacerts = make_cacerts(dir.path());
    let mut cfg = config(dir.path());
    cfg.cacerts_dir = Some(cacerts.clone());
    let ca = Running::start(cfg).await;
    let plug_root = std::fs::read_to_string(cacerts.join("root-cert.pem")).unwrap();
    assert_eq!(
        ca.root_pem().trim(),
        plug_root.trim(),
        "<key-dir>/root-cert.pem is the plug-in root"
    );

    let tok = token(&ca.key_dir, "default", "reviews", "istio-ca");
    let (csr, _) = openssl_csr(
        dir.path(),
        "w",
        Some("URI:spiffe://cluster.local/ns/default/sa/reviews"),
        "ec",
    );
    let resp = ca.sign(Some(&tok), &csr, 0).await.expect("signed");
    assert_eq!(resp.cert_chain.len(), 3, "leaf, intermediate, root");
    let inter = std::fs::read_to_string(cacerts.join("ca-cert.pem")).unwrap();
    assert_eq!(resp.cert_chain[1].trim(), inter.trim());
    openssl_verify(dir.path(), &resp.cert_chain, &plug_root).expect("verifies to the plug-in root");
    // ... and not to some other root.
    let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
    assert!(openssl_verify(dir.path(), &resp.cert_chain, &other.cert.pem()).is_err());
    ca.stop().await;
}

#[tokio::test]
async fn bad_plug_in_material_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cacerts = make_cacerts(dir.path());
    let build = |cacerts: &Path| {
        let mut cfg = config(dir.path());
        cfg.cacerts_dir = Some(cacerts.to_path_buf());
        citadel::app::App::build(cfg)
    };

    // A key that is not the certificate's.
    let wrong = dir.path().join("wrong-key");
    std::fs::create_dir_all(&wrong).unwrap();
    for f in ["ca-cert.pem", "root-cert.pem", "cert-chain.pem"] {
        std::fs::copy(cacerts.join(f), wrong.join(f)).unwrap();
    }
    std::fs::copy(cacerts.join("root-key.pem"), wrong.join("ca-key.pem")).unwrap();
    let err = build(&wrong).await.err().expect("refused").to_string();
    assert!(
        err.contains("ca-key.pem") && err.contains("does not match"),
        "{err}"
    );

    // A chain that leads to another root.
    let foreign = dir.path().join("foreign-root");
    std::fs::create_dir_all(&foreign).unwrap();
    for f in ["ca-cert.pem", "ca-key.pem"] {
        std::fs::copy(cacerts.join(f), foreign.join(f)).unwrap();
    }
    let stranger = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
    std::fs::write(foreign.join("root-cert.pem"), stranger.cert.pem()).unwrap();
    let err = build(&foreign).await.err().expect("refused").to_string();
    assert!(
        err.contains("cert-chain.pem") && err.contains("does not lead to"),
        "{err}"
    );

    // A leaf (not a CA) as the signing certificate.
    let leafy = dir.path().join("leaf-as-ca");
    std::fs::create_dir_all(&leafy).unwrap();
    std::fs::write(leafy.join("ca-cert.pem"), stranger.cert.pem()).unwrap();
    std::fs::write(
        leafy.join("ca-key.pem"),
        stranger.signing_key.serialize_pem(),
    )
    .unwrap();
    std::fs::write(leafy.join("root-cert.pem"), stranger.cert.pem()).unwrap();
    let err = build(&leafy).await.err().expect("refused").to_string();
    assert!(err.contains("not a CA certificate"), "{err}");

    // A missing file.
    let err = build(&dir.path().join("nowhere"))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("ca-key.pem"), "{err}");
}

#[tokio::test]
async fn self_signed_root_with_a_mismatched_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Running::start(config(dir.path())).await;
    let key_dir = ca.key_dir.clone();
    ca.stop().await;
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(key_dir.join("root-key.pem"), other.serialize_pem()).unwrap();
    let err = citadel::app::App::build(config(dir.path()))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("root-key.pem") && err.contains("does not match"),
        "{err}"
    );

    std::fs::remove_file(key_dir.join("root-cert.pem")).unwrap();
    let err = citadel::app::App::build(config(dir.path()))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("root-cert.pem") && err.contains("missing"),
        "{err}"
    );
}
