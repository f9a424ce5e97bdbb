//! Tests for the SASL module: RFC vectors, round trips, failure mapping, no-panic loops.

use super::*;
use crate::system::SystemEnv;

const SECRET: &[u8] = b"test server secret";

/// RFC 5802 §5 example (SCRAM-SHA-1).
mod rfc5802 {
    pub const CLIENT_NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";
    pub const SERVER_NONCE: &str = "3rfcNHYJY1ZVvWVs7j";
    pub const SALT_B64: &str = "QSXCR+Q6sek8bf92";
    pub const CLIENT_FIRST: &str = "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL";
    pub const SERVER_FIRST: &str =
        "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
    pub const CLIENT_FINAL: &str =
        "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";
    pub const SERVER_FINAL: &str = "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=";
}

/// RFC 7677 §3 example (SCRAM-SHA-256).
mod rfc7677 {
    pub const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    pub const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    pub const SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    pub const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    pub const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    pub const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    pub const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
}

struct Vector {
    hash: ScramHash,
    client_nonce: &'static str,
    server_nonce: &'static str,
    salt_b64: &'static str,
    client_first: &'static str,
    server_first: &'static str,
    client_final: &'static str,
    server_final: &'static str,
}

const VECTORS: [Vector; 2] = [
    Vector {
        hash: ScramHash::Sha1,
        client_nonce: rfc5802::CLIENT_NONCE,
        server_nonce: rfc5802::SERVER_NONCE,
        salt_b64: rfc5802::SALT_B64,
        client_first: rfc5802::CLIENT_FIRST,
        server_first: rfc5802::SERVER_FIRST,
        client_final: rfc5802::CLIENT_FINAL,
        server_final: rfc5802::SERVER_FINAL,
    },
    Vector {
        hash: ScramHash::Sha256,
        client_nonce: rfc7677::CLIENT_NONCE,
        server_nonce: rfc7677::SERVER_NONCE,
        salt_b64: rfc7677::SALT_B64,
        client_first: rfc7677::CLIENT_FIRST,
        server_first: rfc7677::SERVER_FIRST,
        client_final: rfc7677::CLIENT_FINAL,
        server_final: rfc7677::SERVER_FINAL,
    },
];

fn vector_creds(v: &Vector) -> ScramCredentials {
    let salt = base64_decode(v.salt_b64).expect("vector salt is base64");
    ScramCredentials::derive(v.hash, "pencil", &salt, 4096)
}

/// Starts a server for `v` with the account "user" known.
fn start_vector(v: &Vector, client_first: &[u8]) -> Result<(ScramServer, Vec<u8>), SaslFailure> {
    let creds = vector_creds(v);
    ScramServer::start(v.hash, client_first, v.server_nonce, SECRET, |u| {
        (u == "user").then_some(creds)
    })
}

#[test]
fn rfc_vectors_server_side_byte_exact() {
    for v in &VECTORS {
        let (server, server_first) = start_vector(v, v.client_first.as_bytes()).expect("start");
        assert_eq!(server_first, v.server_first.as_bytes(), "{:?}", v.hash);
        let (user, server_final) = server.finish(v.client_final.as_bytes()).expect("finish");
        assert_eq!(user, "user");
        assert_eq!(server_final, v.server_final.as_bytes(), "{:?}", v.hash);
    }
}

#[test]
fn rfc_vectors_client_side_byte_exact() {
    for v in &VECTORS {
        let mut client = ScramClient::new(v.hash, "user", "pencil", v.client_nonce);
        assert_eq!(client.client_first(), v.client_first.as_bytes());
        let client_final = client
            .handle_server_first(v.server_first.as_bytes())
            .expect("server first");
        assert_eq!(client_final, v.client_final.as_bytes(), "{:?}", v.hash);
        assert_eq!(
            client.verify_server_final(v.server_final.as_bytes()),
            Ok(())
        );
        // A different signature is rejected, as is a server error.
        let bad = v.server_final.replace("v=", "v=AAAA").into_bytes();
        assert!(client.verify_server_final(&bad).is_err());
        assert_eq!(
            client.verify_server_final(b"e=invalid-proof"),
            Err(SaslFailure::NotAuthorized)
        );
        // The state machine refuses a second server-first.
        assert_eq!(
            client.handle_server_first(v.server_first.as_bytes()),
            Err(SaslFailure::MalformedRequest)
        );
    }
}

fn round_trip(
    hash: ScramHash,
    user: &str,
    password: &str,
    attempt: &str,
) -> Result<String, SaslFailure> {
    let stored = StoredCredentials::derive(&SystemEnv::new(), password, DEFAULT_ITERATIONS);
    let mut client = ScramClient::new(hash, user, attempt, &random_nonce(&SystemEnv::new()));
    let (server, server_first) = ScramServer::start(
        hash,
        &client.client_first(),
        &random_nonce(&SystemEnv::new()),
        SECRET,
        |u| (u == "alice").then(|| stored.get(hash).clone()),
    )?;
    let client_final = client.handle_server_first(&server_first)?;
    let (name, server_final) = server.finish(&client_final)?;
    client.verify_server_final(&server_final)?;
    Ok(name)
}

#[test]
fn client_server_round_trip_both_hashes() {
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        assert_eq!(
            round_trip(hash, "alice", "s3cret", "s3cret"),
            Ok("alice".to_owned())
        );
        // Usernames are normalised like localparts before lookup.
        assert_eq!(
            round_trip(hash, "Alice", "s3cret", "s3cret"),
            Ok("alice".to_owned())
        );
        assert_eq!(
            round_trip(hash, "alice", "pässwörd", "pässwörd"),
            Ok("alice".to_owned())
        );
    }
}

#[test]
fn wrong_password_is_not_authorized() {
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        assert_eq!(
            round_trip(hash, "alice", "s3cret", "S3cret"),
            Err(SaslFailure::NotAuthorized)
        );
        assert_eq!(
            round_trip(hash, "alice", "s3cret", ""),
            Err(SaslFailure::NotAuthorized)
        );
    }
}

#[test]
fn unknown_user_is_indistinguishable_at_server_first() {
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        let stored = StoredCredentials::derive(&SystemEnv::new(), "pw", DEFAULT_ITERATIONS);
        let first = |user: &str, secret: &[u8]| {
            let client = ScramClient::new(hash, user, "pw", "cnonce");
            let (server, sf) =
                ScramServer::start(hash, &client.client_first(), "snonce", secret, |u| {
                    (u == "alice").then(|| stored.get(hash).clone())
                })
                .expect("start");
            (server, client, String::from_utf8(sf).expect("utf8"))
        };
        let (_, _, known) = first("alice", SECRET);
        let (server, mut client, unknown) = first("mallory", SECRET);
        let (_, _, unknown_again) = first("mallory", SECRET);
        let (_, _, unknown_other_secret) = first("mallory", b"other");
        let (_, _, other_unknown) = first("trudy", SECRET);
        // Same shape: same attributes, same salt length, same iteration count.
        let shape = |s: &str| {
            s.split(',')
                .map(|a| match a.split_at(2) {
                    ("s=", v) => format!("s={}", v.len()),
                    ("r=", v) => format!("r={}", v.len()),
                    (k, v) => format!("{k}{v}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&known), shape(&unknown));
        assert_eq!(unknown, unknown_again, "fake salt is stable");
        assert_ne!(
            unknown, unknown_other_secret,
            "fake salt depends on the secret"
        );
        assert_ne!(unknown, other_unknown, "fake salt depends on the username");
        // Fake salts differ per hash, as real ones do.
        let other_hash = match hash {
            ScramHash::Sha1 => ScramHash::Sha256,
            ScramHash::Sha256 => ScramHash::Sha1,
        };
        let c = ScramClient::new(other_hash, "mallory", "pw", "cnonce");
        let (_, sf) = ScramServer::start(other_hash, &c.client_first(), "snonce", SECRET, |_| None)
            .expect("start");
        assert_ne!(sf, unknown.as_bytes());
        // The exchange fails only at the final step.
        let client_final = client
            .handle_server_first(unknown.as_bytes())
            .expect("client final");
        assert_eq!(
            server.finish(&client_final).err(),
            Some(SaslFailure::NotAuthorized)
        );
    }
}

/// Runs start on `client_first` with the RFC 5802 account.
fn start_err(client_first: &str) -> Option<SaslFailure> {
    start_vector(&VECTORS[0], client_first.as_bytes()).err()
}

#[test]
fn malformed_client_first() {
    use SaslFailure::{InvalidAuthzid, MalformedRequest, NotAuthorized};
    let cases: &[(&str, SaslFailure)] = &[
        ("", MalformedRequest),
        ("n", MalformedRequest),
        ("n,", MalformedRequest),
        ("n,,", MalformedRequest),
        ("n,,r=abc", MalformedRequest),
        ("n,,n=user", MalformedRequest),
        ("n,,n=user,", MalformedRequest),
        ("n,,n=user,r=", MalformedRequest),
        ("n,,n=user,x=abc", MalformedRequest),
        ("n,,r=abc,n=user", MalformedRequest),
        ("x,,n=user,r=abc", MalformedRequest),
        ("p=tls-unique,,n=user,r=abc", MalformedRequest),
        ("p=tls-server-end-point,,n=user,r=abc", MalformedRequest),
        ("n,,m=ext,n=user,r=abc", MalformedRequest),
        ("n,,n=user,r=abc,1=bad-ext", MalformedRequest),
        ("n,,n=user,r=abc,ext", MalformedRequest),
        ("n,,n=,r=abc", MalformedRequest),
        ("n,,n=us=2Der,r=abc", MalformedRequest),
        ("n,,n=us=er,r=abc", MalformedRequest),
        ("n,,n=user=,r=abc", MalformedRequest),
        ("n,,n=user=2,r=abc", MalformedRequest),
        ("n,,n=us=2cer,r=abc", MalformedRequest),
        ("n,,n=us\u{1}er,r=abc", MalformedRequest),
        ("n,,n=user,r=a\u{7f}c", MalformedRequest),
        ("n,,n=user,r=\u{e9}", MalformedRequest),
        ("n,x,n=user,r=abc", MalformedRequest),
        ("n,a=,n=user,r=abc", MalformedRequest),
        ("n,a=bad=,n=user,r=abc", MalformedRequest),
        // Names that cannot be a localpart cannot be accounts.
        ("n,,n=a b,r=abc", NotAuthorized),
        ("n,,n=a@b,r=abc", NotAuthorized),
        // authzid must be the user's own bare JID.
        ("n,a=other@example.com,n=user,r=abc", InvalidAuthzid),
        ("n,a=user@example.com/res,n=user,r=abc", InvalidAuthzid),
        ("n,a=example.com,n=user,r=abc", InvalidAuthzid),
    ];
    for &(msg, want) in cases {
        assert_eq!(start_err(msg), Some(want), "{msg:?}");
    }
    // Not UTF-8.
    assert_eq!(
        start_vector(&VECTORS[0], b"n,,n=\xff,r=abc").err(),
        Some(MalformedRequest)
    );
    // Over the size bound.
    let huge = format!("n,,n=user,r={}", "a".repeat(MAX_SCRAM_MESSAGE));
    assert_eq!(start_err(&huge), Some(MalformedRequest));
    // Nonce over its bound.
    assert_eq!(
        start_err(&format!("n,,n=user,r={}", "a".repeat(257))),
        Some(MalformedRequest)
    );
}

#[test]
fn accepted_client_first_variants() {
    let v = &VECTORS[0];
    // 'y' flag (client supports binding but thinks we do not) is fine without -PLUS.
    let (server, sf) = start_vector(v, b"y,,n=user,r=abc").expect("y flag");
    assert!(sf.starts_with(b"r=abc3rfcNHYJY1ZVvWVs7j,"));
    assert_eq!(server.authzid(), None);
    // Optional extensions are ignored.
    assert!(start_vector(v, b"n,,n=user,r=abc,x=ext,y=other").is_ok());
    // authzid equal to the own bare JID (any case) is accepted and decoded.
    let (server, _) = start_vector(v, b"n,a=User@Example.com,n=user,r=abc").expect("authzid");
    assert_eq!(server.authzid(), Some("User@Example.com"));
    // Escapes in the username are decoded before lookup.
    let mut seen = String::new();
    let _ = ScramServer::start(ScramHash::Sha1, b"n,,n=a=3Db,r=abc", "s", SECRET, |u| {
        seen = u.to_owned();
        None
    });
    assert_eq!(seen, "a=b");
    let client = ScramClient::new(ScramHash::Sha1, "a,b=c", "pw", "n");
    assert_eq!(client.client_first(), b"n,,n=a=2Cb=3Dc,r=n");
}

#[test]
fn start_with_checks_authzid_domain() {
    let v = &VECTORS[0];
    let creds = vector_creds(v);
    let start = |msg: &[u8]| {
        let creds = creds.clone();
        ScramServer::start_with(
            v.hash,
            msg,
            v.server_nonce,
            SECRET,
            DEFAULT_ITERATIONS,
            |u| (u == "user").then_some(creds),
            |a, u| authzid_matches(a, u, "example.com"),
        )
        .err()
    };
    assert_eq!(start(b"n,a=user@example.com,n=user,r=abc"), None);
    assert_eq!(start(b"n,a=user@EXAMPLE.com.,n=user,r=abc"), None);
    assert_eq!(start(b"n,,n=user,r=abc"), None);
    assert_eq!(
        start(b"n,a=user@evil.com,n=user,r=abc"),
        Some(SaslFailure::InvalidAuthzid)
    );
    assert_eq!(
        start(b"n,a=admin@example.com,n=user,r=abc"),
        Some(SaslFailure::InvalidAuthzid)
    );
}

#[test]
fn fake_iterations_are_configurable() {
    let (_, sf) = ScramServer::start_with(
        ScramHash::Sha256,
        b"n,,n=nobody,r=abc",
        "s",
        SECRET,
        10_000,
        |_| None,
        |_, _| true,
    )
    .expect("start");
    assert!(sf.ends_with(b",i=10000"));
}

#[test]
fn server_side_configuration_errors() {
    let v = &VECTORS[0];
    let creds = vector_creds(v);
    // Bad server nonce from the caller.
    for nonce in ["", "a,b", "sp ace"] {
        let r = ScramServer::start(v.hash, v.client_first.as_bytes(), nonce, SECRET, |_| {
            Some(creds.clone())
        });
        assert_eq!(
            r.err(),
            Some(SaslFailure::TemporaryAuthFailure),
            "{nonce:?}"
        );
    }
    // Credentials of the wrong hash (key length) from the store.
    let sha256 = vector_creds(&VECTORS[1]);
    let r = ScramServer::start(
        ScramHash::Sha1,
        v.client_first.as_bytes(),
        "n",
        SECRET,
        |_| Some(sha256),
    );
    assert_eq!(r.err(), Some(SaslFailure::TemporaryAuthFailure));
}

fn finish_err(client_final: &str) -> Option<SaslFailure> {
    let v = &VECTORS[0];
    let (server, _) = start_vector(v, v.client_first.as_bytes()).expect("start");
    server.finish(client_final.as_bytes()).err()
}

#[test]
fn malformed_client_final() {
    use SaslFailure::{MalformedRequest, NotAuthorized};
    let nonce = "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
    let proof = "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";
    let cases: Vec<(String, SaslFailure)> = vec![
        (String::new(), MalformedRequest),
        ("c=biws".into(), MalformedRequest),
        (format!("c=biws,r={nonce}"), MalformedRequest),
        (format!("r={nonce},p={proof}"), MalformedRequest),
        (format!("c=biws,p={proof}"), MalformedRequest),
        (
            format!("c=biws,r={nonce},p={proof},x=after-proof"),
            MalformedRequest,
        ),
        (format!("c=bi!s,r={nonce},p={proof}"), MalformedRequest),
        (
            format!("c=biws,r={nonce},p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts"),
            MalformedRequest,
        ),
        (
            format!("c=biws,r={nonce},p=v0X8 v3Bz2T0CJGbJQyF0X+HI4Ts="),
            MalformedRequest,
        ),
        (format!("c=biws,r={nonce},p=AAAA"), MalformedRequest),
        // Channel binding data must be the gs2 header from client-first.
        (format!("c=eSws,r={nonce},p={proof}"), MalformedRequest),
        (
            format!("c=cD10bHMtdW5pcXVlLCw=,r={nonce},p={proof}"),
            MalformedRequest,
        ),
        // Nonce must be the combined one from server-first.
        (
            format!("c=biws,r=fyko+d2lbbFgONRv9qkxdawL,p={proof}"),
            MalformedRequest,
        ),
        (format!("c=biws,r={nonce}x,p={proof}"), MalformedRequest),
        // Well-formed but wrong proof.
        (
            format!("c=biws,r={nonce},p=AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            NotAuthorized,
        ),
        // Extension before the proof is accepted syntactically; it changes AuthMessage, so
        // the RFC proof no longer matches.
        (format!("c=biws,r={nonce},x=1,p={proof}"), NotAuthorized),
    ];
    for (msg, want) in cases {
        assert_eq!(finish_err(&msg), Some(want), "{msg:?}");
    }
    let v = &VECTORS[0];
    let (server, _) = start_vector(v, v.client_first.as_bytes()).expect("start");
    assert_eq!(
        server.finish(b"c=biws,r=\xff,p=x").err(),
        Some(MalformedRequest)
    );
}

#[test]
fn malformed_server_first_at_client() {
    use SaslFailure::{MalformedRequest, MechanismTooWeak};
    let cases: &[(&str, SaslFailure)] = &[
        ("", MalformedRequest),
        ("r=abcdef,s=QSXCR+Q6sek8bf92", MalformedRequest),
        ("r=abcdef,i=4096", MalformedRequest),
        ("m=x,r=abcdef,s=QSXCR+Q6sek8bf92,i=4096", MalformedRequest),
        // Nonce must extend ours (strictly).
        ("r=xyzdef,s=QSXCR+Q6sek8bf92,i=4096", MalformedRequest),
        ("r=abc,s=QSXCR+Q6sek8bf92,i=4096", MalformedRequest),
        ("r=ab,s=QSXCR+Q6sek8bf92,i=4096", MalformedRequest),
        ("r=abcdef,s=QSXCR+Q6sek8bf9,i=4096", MalformedRequest),
        ("r=abcdef,s=,i=4096", MalformedRequest),
        ("r=abcdef,s=QSXCR+Q6sek8bf92,i=", MalformedRequest),
        ("r=abcdef,s=QSXCR+Q6sek8bf92,i=-1", MalformedRequest),
        ("r=abcdef,s=QSXCR+Q6sek8bf92,i=+4096", MalformedRequest),
        (
            "r=abcdef,s=QSXCR+Q6sek8bf92,i=99999999999",
            MalformedRequest,
        ),
        ("r=abcdef,s=QSXCR+Q6sek8bf92,i=1000001", MalformedRequest),
        ("r=abcdef,s=QSXCR+Q6sek8bf92,i=4095", MechanismTooWeak),
        ("r=abcdef,s=QSXCR+Q6sek8bf92,i=1", MechanismTooWeak),
        ("r=abcdef,s=QSXCR+Q6sek8bf92,i=0", MechanismTooWeak),
    ];
    for &(msg, want) in cases {
        let mut client = ScramClient::new(ScramHash::Sha1, "user", "pencil", "abc");
        assert_eq!(
            client.handle_server_first(msg.as_bytes()),
            Err(want),
            "{msg:?}"
        );
    }
    let client = ScramClient::new(ScramHash::Sha1, "user", "pencil", "abc");
    assert_eq!(
        client.verify_server_final(b"v=AAAA"),
        Err(MalformedRequest),
        "before server-first"
    );
}

#[test]
fn credentials_bytes_round_trip() {
    let stored = StoredCredentials::derive(&SystemEnv::new(), "correct horse", DEFAULT_ITERATIONS);
    assert_eq!(stored.sha1.salt.len(), SALT_LEN);
    assert_eq!(stored.sha256.salt.len(), SALT_LEN);
    assert_ne!(stored.sha1.salt, stored.sha256.salt);
    assert_eq!(stored.sha1.stored_key.len(), 20);
    assert_eq!(stored.sha256.server_key.len(), 32);
    let bytes = stored.to_bytes();
    assert_eq!(bytes[0], 1, "version byte");
    assert_eq!(
        &bytes[1..5],
        &DEFAULT_ITERATIONS.to_be_bytes(),
        "big-endian iterations"
    );
    assert_eq!(StoredCredentials::from_bytes(&bytes), Some(stored.clone()));
    assert_eq!(stored.get(ScramHash::Sha1), &stored.sha1);
    assert_eq!(stored.get(ScramHash::Sha256), &stored.sha256);

    // Every truncation is rejected, as are trailing bytes.
    for n in 0..bytes.len() {
        assert_eq!(
            StoredCredentials::from_bytes(&bytes[..n]),
            None,
            "truncated to {n}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(StoredCredentials::from_bytes(&longer), None);
    // Unknown version.
    let mut v2 = bytes.clone();
    v2[0] = 2;
    assert_eq!(StoredCredentials::from_bytes(&v2), None);
    // Iterations out of range.
    let mut low = bytes.clone();
    low[1..5].copy_from_slice(&4095u32.to_be_bytes());
    assert_eq!(StoredCredentials::from_bytes(&low), None);
    let mut high = bytes.clone();
    high[1..5].copy_from_slice(&1_000_001u32.to_be_bytes());
    assert_eq!(StoredCredentials::from_bytes(&high), None);
    // Every single-byte corruption either is rejected or decodes without panicking.
    for i in 0..bytes.len() {
        for x in [0x00u8, 0xff, 0x7f, 0x15] {
            let mut c = bytes.clone();
            c[i] = x;
            if let Some(d) = StoredCredentials::from_bytes(&c) {
                assert_eq!(d.to_bytes(), c, "accepted bytes re-encode identically");
            }
        }
    }
    // Salt length byte pointing past the end.
    let mut bad_len = bytes.clone();
    bad_len[5] = 200;
    assert_eq!(StoredCredentials::from_bytes(&bad_len), None);
    // Invalid in-memory credentials encode to bytes that do not decode.
    let mut broken = stored.clone();
    broken.sha1.stored_key = vec![0; 300];
    assert_eq!(StoredCredentials::from_bytes(&broken.to_bytes()), None);
    broken = stored;
    broken.sha256.server_key.pop();
    assert_eq!(StoredCredentials::from_bytes(&broken.to_bytes()), None);
}

#[test]
fn derive_clamps_iterations() {
    let low = StoredCredentials::derive(&SystemEnv::new(), "pw", 1);
    assert_eq!(low.sha1.iterations, MIN_ITERATIONS);
    assert_eq!(low.sha256.iterations, MIN_ITERATIONS);
    let c = ScramCredentials::derive(ScramHash::Sha256, "pw", b"salt", u32::MAX);
    assert_eq!(c.iterations, MAX_ITERATIONS);
    // Two derivations of the same password use different salts.
    let again = StoredCredentials::derive(&SystemEnv::new(), "pw", 1);
    assert_ne!(low.sha256.salt, again.sha256.salt);
    assert_ne!(low.sha256.stored_key, again.sha256.stored_key);
}

#[test]
fn verify_plain_checks_password() {
    let stored = StoredCredentials::derive(&SystemEnv::new(), "hunter2", DEFAULT_ITERATIONS);
    assert!(stored.verify_plain("hunter2"));
    assert!(!stored.verify_plain("hunter3"));
    assert!(!stored.verify_plain(""));
    assert!(!stored.verify_plain("hunter2 "));
    // Matches the RFC 7677 credentials too.
    let rfc = StoredCredentials {
        sha1: vector_creds(&VECTORS[0]),
        sha256: vector_creds(&VECTORS[1]),
    };
    assert!(rfc.verify_plain("pencil"));
    // Unusable credentials never verify (and do not panic).
    let mut broken = rfc;
    broken.sha256.iterations = 0;
    assert!(!broken.verify_plain("pencil"));
}

#[test]
fn plain_parse_cases() {
    use SaslFailure::{MalformedRequest, NotAuthorized};
    assert_eq!(
        parse_plain(b"\0juliet\0pencil"),
        Ok((None, "juliet".to_owned(), "pencil".to_owned()))
    );
    assert_eq!(
        parse_plain(b"juliet@example.com\0Juliet\0pen cil\xc3\xa9"),
        Ok((
            Some("juliet@example.com".to_owned()),
            "juliet".to_owned(),
            "pen cil\u{e9}".to_owned()
        ))
    );
    let bad: &[(&[u8], SaslFailure)] = &[
        (b"", MalformedRequest),
        (b"juliet", MalformedRequest),
        (b"\0juliet", MalformedRequest),
        (b"\0juliet\0", MalformedRequest),
        (b"\0\0pencil", MalformedRequest),
        (b"\0juliet\0pencil\0", MalformedRequest),
        (b"\0juliet\0pen\0cil", MalformedRequest),
        (b"\0jul\xffiet\0pencil", MalformedRequest),
        (b"\0juliet\0pen\xffcil", MalformedRequest),
        (b"a\xff\0juliet\0pencil", MalformedRequest),
        (b"a\x01\0juliet\0pencil", MalformedRequest),
        (b"\0jul\x01iet\0pencil", MalformedRequest),
        (b"\0jul iet\0pencil", NotAuthorized),
        (b"\0juliet@example.com\0pencil", NotAuthorized),
    ];
    for &(msg, want) in bad {
        assert_eq!(parse_plain(msg), Err(want), "{msg:?}");
    }
    let mut huge = b"\0juliet\0".to_vec();
    huge.extend(std::iter::repeat_n(b'x', MAX_PLAIN_MESSAGE));
    assert_eq!(parse_plain(&huge), Err(MalformedRequest));
}

#[test]
fn authzid_matching() {
    assert!(authzid_matches(
        "juliet@example.com",
        "juliet",
        "example.com"
    ));
    assert!(authzid_matches(
        "Juliet@EXAMPLE.com",
        "juliet",
        "example.com."
    ));
    assert!(!authzid_matches(
        "juliet@example.com/res",
        "juliet",
        "example.com"
    ));
    assert!(!authzid_matches(
        "romeo@example.com",
        "juliet",
        "example.com"
    ));
    assert!(!authzid_matches(
        "juliet@other.com",
        "juliet",
        "example.com"
    ));
    assert!(!authzid_matches("example.com", "juliet", "example.com"));
    assert!(!authzid_matches("", "juliet", "example.com"));
}

#[test]
fn failure_conditions() {
    let all = [
        (SaslFailure::Aborted, "aborted"),
        (SaslFailure::AccountDisabled, "account-disabled"),
        (SaslFailure::CredentialsExpired, "credentials-expired"),
        (SaslFailure::EncryptionRequired, "encryption-required"),
        (SaslFailure::IncorrectEncoding, "incorrect-encoding"),
        (SaslFailure::InvalidAuthzid, "invalid-authzid"),
        (SaslFailure::InvalidMechanism, "invalid-mechanism"),
        (SaslFailure::MalformedRequest, "malformed-request"),
        (SaslFailure::MechanismTooWeak, "mechanism-too-weak"),
        (SaslFailure::NotAuthorized, "not-authorized"),
        (SaslFailure::TemporaryAuthFailure, "temporary-auth-failure"),
    ];
    for (f, name) in all {
        assert_eq!(f.condition(), name);
        assert!(f.to_string().ends_with(name));
    }
    assert_eq!(
        ScramHash::from_mechanism("SCRAM-SHA-1"),
        Some(ScramHash::Sha1)
    );
    assert_eq!(
        ScramHash::from_mechanism(ScramHash::Sha256.mechanism()),
        Some(ScramHash::Sha256)
    );
    assert_eq!(ScramHash::from_mechanism("SCRAM-SHA-256-PLUS"), None);
}

#[test]
fn base64_rfc4648_vectors() {
    let vectors: &[(&str, &str)] = &[
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for &(plain, enc) in vectors {
        assert_eq!(base64_encode(plain.as_bytes()), enc);
        assert_eq!(base64_decode(enc), Some(plain.as_bytes().to_vec()), "{enc}");
    }
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(base64_decode(&base64_encode(&all)), Some(all.clone()));
    assert_eq!(base64_encode(&[0xfb, 0xff]), "+/8=");
    assert_eq!(base64_decode("="), Some(Vec::new()));
    assert_eq!(base64_decode(" Zm9v\r\n YmFy\t"), Some(b"foobar".to_vec()));
}

#[test]
fn base64_rejects_bad_input() {
    let bad = [
        "Zg", "Zg=", "Zm9", "Z", "Zg===", "Z===", "====", "==", "Zg==Zg==", "Zm=v", "Zm9v=",
        "Zm9v====", "Zm9-", "Zm9_", "Zm9v\0", "Zh==", "Zm9=", "é===", "Zm9v.",
    ];
    for s in bad {
        assert_eq!(base64_decode(s), None, "{s:?}");
    }
    let too_long = "A".repeat(BASE64_MAX_INPUT + 4);
    assert_eq!(base64_decode(&too_long), None);
    let max = "A".repeat(BASE64_MAX_INPUT);
    assert_eq!(
        base64_decode(&max).map(|v| v.len()),
        Some(BASE64_MAX_INPUT / 4 * 3)
    );
}

/// Small deterministic generator for the no-panic loops.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as usize
    }

    /// A message built from SCRAM-ish fragments and random bytes.
    fn message(&mut self) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"n",
            b"y",
            b"p=",
            b",",
            b"=",
            b"a=",
            b"n=",
            b"r=",
            b"s=",
            b"i=",
            b"c=",
            b"p=",
            b"m=",
            b"v=",
            b"e=",
            b"=2C",
            b"=3D",
            b"=2",
            b"user",
            b"biws",
            b"4096",
            b"fyko",
            b"\0",
            b"\xff",
            b"\xc3\xa9",
            b"@",
            b"/",
            b"AAAA",
            b"==",
        ];
        let mut out = Vec::new();
        for _ in 0..self.next() % 16 {
            if self.next() % 4 == 0 {
                out.push(self.next() as u8);
            } else {
                out.extend_from_slice(PIECES[self.next() % PIECES.len()]);
            }
        }
        out
    }
}

#[test]
fn fuzz_scram_and_plain_never_panic() {
    let mut rng = Lcg(0x5eed);
    let creds = vector_creds(&VECTORS[0]);
    for i in 0..3000 {
        let mut client_first = rng.message();
        if i % 2 == 0 {
            // Half the time start from a valid prefix so that finish gets exercised.
            let mut valid = b"n,,n=user,r=abc".to_vec();
            if i % 4 == 0 {
                valid.extend_from_slice(&client_first);
            }
            client_first = valid;
        }
        let _ = parse_plain(&client_first);
        let _ = base64_decode(&String::from_utf8_lossy(&client_first));
        let started = ScramServer::start(ScramHash::Sha1, &client_first, "srv", SECRET, |u| {
            (u == "user").then(|| creds.clone())
        });
        if let Ok((server, _)) = started {
            let mut client_final = rng.message();
            if i % 3 == 0 {
                let mut valid = b"c=biws,r=abcsrv,".to_vec();
                valid.extend_from_slice(&client_final);
                client_final = valid;
            }
            // No random message can carry the right proof.
            assert!(server.finish(&client_final).is_err());
        }
        let mut client = ScramClient::new(ScramHash::Sha256, "user", "pw", "abc");
        let mut server_first = rng.message();
        if i % 5 == 0 {
            let mut valid = b"r=abcd,s=AAAA,i=".to_vec();
            valid.extend_from_slice(&server_first);
            server_first = valid;
        }
        if client.handle_server_first(&server_first).is_ok() {
            let _ = client.verify_server_final(&rng.message());
        }
    }
}

/// Issue 10 item 5: PLAIN for an unknown account costs one PBKDF2 run at the server's
/// iteration count, like a known one, and never succeeds.
#[test]
fn password_check_for_unknown_user_costs_the_same_and_fails() {
    let stored = StoredCredentials::derive(&SystemEnv::new(), "right", 4096);
    let ok = PasswordCheck::new(Some(&stored), "alice", "right".into(), SECRET, 4096);
    assert!(ok.known());
    assert_eq!(ok.iterations(), 4096);
    assert!(ok.run());
    let wrong = PasswordCheck::new(Some(&stored), "alice", "wrong".into(), SECRET, 4096);
    assert!(!wrong.run());
    let unknown = PasswordCheck::new(None, "nobody", "right".into(), SECRET, 8192);
    assert!(!unknown.known());
    assert_eq!(
        unknown.iterations(),
        8192,
        "server's iteration count, so equal cost"
    );
    assert!(
        !format!("{unknown:?}").contains("right"),
        "no password in Debug"
    );
    assert!(!unknown.run());
    let clamped = PasswordCheck::new(None, "nobody", "x".into(), SECRET, 1);
    assert_eq!(clamped.iterations(), MIN_ITERATIONS);
}
