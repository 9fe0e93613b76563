//! Fuzzes citadel's CSR path: PEM framing, PKCS#10 parsing, signature check, key
//! and SAN extraction. Any input must give Ok or a CsrError, never a panic, and an
//! accepted CSR's SANs must each be well-formed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Raw text as the gRPC field carries it.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = citadel::csr::parse(text);
    }
    // And the bytes as DER inside a well-formed PEM frame, to reach the parser.
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", data.to_vec()));
    if let Ok(csr) = citadel::csr::parse(&pem) {
        assert!(!csr.key_algorithm.is_empty());
        for san in &csr.sans {
            let _ = san.to_string();
        }
    }
});
