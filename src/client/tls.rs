//! The rustls client configuration of the client commands (ring provider): trust anchors
//! from `--ca-file` or the system bundle, or, with `--insecure`, a verifier that checks
//! handshake signatures but accepts any certificate.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::ClientError;

/// System CA bundles, tried in order when no `--ca-file` is given (Debian/OpenWrt, Fedora,
/// Alpine/BSD).
pub const SYSTEM_CA_FILES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];
/// Largest CA file read, in bytes (the Debian bundle is about 220 KB).
pub const MAX_CA_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Builds the client configuration.
///
/// # Errors
///
/// An unreadable or certificate-free CA file ([`ClientError::NoInput`]), no system bundle,
/// or a rustls setup failure.
pub fn client_config(
    ca_file: Option<&Path>,
    insecure: bool,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Protocol(format!("TLS setup: {e}")))?;
    let config = if insecure {
        eprintln!(
            "kinglet: WARNING: --insecure: the server's TLS certificate is NOT verified; \
             anyone on the path can read and change this session"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let path = match ca_file {
            Some(p) => p.to_path_buf(),
            None => SYSTEM_CA_FILES
                .iter()
                .map(Path::new)
                .find(|p| p.exists())
                .ok_or_else(|| {
                    ClientError::NoInput(format!(
                        "a system CA bundle ({}): none found; give --ca-file FILE",
                        SYSTEM_CA_FILES.join(", ")
                    ))
                })?
                .to_path_buf(),
        };
        let pem = read_bounded(&path)?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| ClientError::NoInput(format!("{}: {e}", path.display())))?;
            // A bundle may hold certificates webpki cannot use; skip those, as browsers do.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(ClientError::NoInput(format!(
                "{}: no usable PEM certificate",
                path.display()
            )));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Reads at most [`MAX_CA_FILE_BYTES`] of `path`.
fn read_bounded(path: &Path) -> Result<Vec<u8>, ClientError> {
    let shown = path.display();
    let f = std::fs::File::open(path).map_err(|e| ClientError::NoInput(format!("{shown}: {e}")))?;
    let mut bytes = Vec::new();
    f.take(MAX_CA_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ClientError::NoInput(format!("{shown}: {e}")))?;
    if bytes.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(ClientError::NoInput(format!(
            "{shown}: larger than {MAX_CA_FILE_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

/// `--insecure`: any certificate is accepted; handshake signatures are still checked, so
/// the session is encrypted, just not authenticated.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
