//! A test certificate authority and a `localhost` certificate it signed,
//! shared by the TLS tests of the main endpoint (`tests/tls.rs`), of the
//! Binance endpoint (`tests/binance_support`) and of the bench runner
//! (`tools/bench/tests/wss.rs`, which includes this file by path).

use std::sync::Arc;

use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// What a TLS test needs from its PKI.
pub struct TestCa {
    /// The server side, as `--tls-cert`/`--tls-key` would build it.
    pub server: Arc<ServerConfig>,
    /// The CA's certificate, for a client's root store.
    pub ca_der: CertificateDer<'static>,
    /// The CA's certificate as PEM, for clients given a CA file.
    pub ca_pem: String,
    /// The `localhost` certificate as PEM, for `--tls-cert` files.
    pub cert_pem: String,
    /// Its private key as PEM, for `--tls-key` files.
    pub key_pem: String,
}

/// A fresh CA and a `localhost` certificate signed by it.
pub fn test_ca() -> TestCa {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tickwire test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let server = tickwire::net::tls::server_config(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    TestCa {
        server,
        ca_der: ca.der().clone(),
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}
