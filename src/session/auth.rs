//! SASL negotiation of a c2s stream (RFC 6120 §6): the mechanisms offered, SCRAM-SHA-256
//! and SCRAM-SHA-1 (RFC 5802/7677), PLAIN (its PBKDF2 check runs in the shell, see
//! [`super::Action::VerifyPassword`]), ANONYMOUS, and the failures with their retry limit.

use super::{Action, AuthEvent, Session, Stage};
use crate::proto::{NS_SASL, StreamCondition};
use crate::router::Router;
use crate::sasl::{self, SaslFailure, ScramHash, ScramServer};
use crate::xml::{Element, Writer};

impl Session {
    /// The SASL mechanisms offered on this stream, strongest first.
    pub(super) fn mechanisms(&self, router: &Router) -> Vec<&'static str> {
        let mut m = vec!["SCRAM-SHA-256", "SCRAM-SHA-1"];
        if router.config().auth.allow_plain
            && (self.transport.tls_active || self.transport.loopback)
        {
            m.push("PLAIN");
        }
        if router.anonymous_allowed(self.transport.loopback) {
            m.push("ANONYMOUS");
        }
        m
    }

    pub(super) fn sasl_failure(
        &mut self,
        f: SaslFailure,
        text: Option<&str>,
        router: &mut Router,
        out: &mut Vec<u8>,
    ) -> Action {
        self.stage = Stage::ExpectAuth;
        let mut s = String::with_capacity(128);
        let mut w = Writer::new(&mut s);
        w.start("failure").ns(NS_SASL);
        w.start(f.condition()).end();
        if let Some(t) = text {
            w.start("text").attr("xml:lang", "en").text(t).end();
        }
        w.end();
        out.extend_from_slice(s.as_bytes());
        if f == SaslFailure::NotAuthorized {
            self.auth_event = Some(AuthEvent::Failed);
        }
        if f != SaslFailure::Aborted {
            self.auth_failures += 1;
        }
        // `limits.max_auth_failures`: RFC 6120 §6.4.5 asks for a configurable retry count
        // of at least 2.
        if self.auth_failures >= router.limits().max_auth_failures {
            // Per connection, so an attacker can repeat it: debug only; the shell logs
            // throttled addresses once per window.
            tracing::debug!(conn = self.conn, "too many failed authentication attempts");
            return self.stream_error(
                StreamCondition::PolicyViolation,
                Some("too many failed authentication attempts"),
                out,
                router,
            );
        }
        Action::Continue
    }

    pub(super) fn on_sasl(
        &mut self,
        el: Element,
        router: &mut Router,
        out: &mut Vec<u8>,
    ) -> Action {
        if self.starttls_required() {
            return self.sasl_failure(
                SaslFailure::EncryptionRequired,
                Some("STARTTLS first"),
                router,
                out,
            );
        }
        let payload = el.text();
        let data = if payload.trim() == "=" || payload.trim().is_empty() {
            Some(Vec::new())
        } else {
            sasl::base64_decode(&payload)
        };
        let Some(data) = data else {
            return self.sasl_failure(SaslFailure::IncorrectEncoding, None, router, out);
        };
        match (
            el.name.as_str(),
            std::mem::replace(&mut self.stage, Stage::ExpectAuth),
        ) {
            ("abort", _) => self.sasl_failure(SaslFailure::Aborted, None, router, out),
            ("auth", Stage::ExpectAuth) => {
                let mech = el.attr("mechanism").unwrap_or("");
                if !self.mechanisms(router).contains(&mech) {
                    let f = if mech == "PLAIN" && router.config().auth.allow_plain {
                        SaslFailure::EncryptionRequired
                    } else {
                        SaslFailure::InvalidMechanism
                    };
                    return self.sasl_failure(f, None, router, out);
                }
                match mech {
                    "SCRAM-SHA-256" | "SCRAM-SHA-1" => {
                        let hash = if mech == "SCRAM-SHA-1" {
                            ScramHash::Sha1
                        } else {
                            ScramHash::Sha256
                        };
                        if data.is_empty() {
                            // RFC 6120 §6.4.2: no initial response; send an empty challenge.
                            self.stage = Stage::ExpectScramFirst(hash);
                            out.extend_from_slice(
                                sasl_element("challenge", NS_SASL, Some("=")).as_bytes(),
                            );
                            return Action::Continue;
                        }
                        self.scram_first(hash, &data, router, out)
                    }
                    "PLAIN" => self.plain(&data, router, out),
                    _ => {
                        let user = match router.new_anonymous_user() {
                            Ok(user) => user,
                            Err(e) => {
                                tracing::error!(conn = self.conn, error = %e, "anonymous login failed");
                                return self.sasl_failure(
                                    SaslFailure::TemporaryAuthFailure,
                                    None,
                                    router,
                                    out,
                                );
                            }
                        };
                        tracing::info!(conn = self.conn, user, "anonymous login");
                        self.authenticated(user, true, None, out)
                    }
                }
            }
            ("response", Stage::ExpectScramFirst(hash)) => {
                self.scram_first(hash, &data, router, out)
            }
            ("response", Stage::ExpectScramFinal(server)) => match server.finish(&data) {
                Ok((user, server_final)) => {
                    tracing::info!(conn = self.conn, user, "SCRAM login");
                    self.authenticated(user, false, Some(&server_final), out)
                }
                Err(f) => {
                    tracing::info!(
                        conn = self.conn,
                        failure = f.condition(),
                        "SCRAM authentication failed"
                    );
                    self.sasl_failure(f, None, router, out)
                }
            },
            (_, _) => self.sasl_failure(
                SaslFailure::MalformedRequest,
                Some("unexpected SASL element"),
                router,
                out,
            ),
        }
    }

    pub(super) fn scram_first(
        &mut self,
        hash: ScramHash,
        data: &[u8],
        router: &mut Router,
        out: &mut Vec<u8>,
    ) -> Action {
        let nonce = router.random_nonce();
        let started = {
            let iterations = router.config().auth.scram_iterations;
            let domain = router.domain().to_owned();
            let (secret, store) = router.auth_lookup();
            ScramServer::start_with(
                hash,
                data,
                &nonce,
                secret,
                iterations,
                |user| match store.user_get(user) {
                    Ok(Some(blob)) => {
                        sasl::StoredCredentials::from_bytes(&blob).map(|c| c.get(hash).clone())
                    }
                    Ok(None) => None,
                    Err(e) => {
                        tracing::error!(error = %e, "credential lookup failed");
                        None
                    }
                },
                |authzid, user| sasl::authzid_matches(authzid, user, &domain),
            )
        };
        match started {
            Ok((server, server_first)) => {
                self.stage = Stage::ExpectScramFinal(Box::new(server));
                let data = sasl::base64_encode(&server_first);
                out.extend_from_slice(sasl_element("challenge", NS_SASL, Some(&data)).as_bytes());
                Action::Continue
            }
            Err(f) => self.sasl_failure(f, None, router, out),
        }
    }

    pub(super) fn plain(&mut self, data: &[u8], router: &mut Router, out: &mut Vec<u8>) -> Action {
        let (authzid, authcid, password) = match sasl::parse_plain(data) {
            Ok(t) => t,
            Err(f) => return self.sasl_failure(f, None, router, out),
        };
        let user = authcid;
        if authzid.is_some_and(|z| !sasl::authzid_matches(&z, &user, router.domain())) {
            return self.sasl_failure(SaslFailure::InvalidAuthzid, None, router, out);
        }
        let stored = match router.storage().user_get(&user) {
            // Unreadable credentials check like an unknown account: same cost, failure.
            Ok(Some(blob)) => sasl::StoredCredentials::from_bytes(&blob),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "credential lookup failed");
                return self.sasl_failure(SaslFailure::TemporaryAuthFailure, None, router, out);
            }
        };
        // The PBKDF2 run is blocking work: the shell runs it off the event loop. An unknown
        // account costs the same (fake credentials at the server's iteration count).
        let iterations = router.config().auth.scram_iterations;
        let (secret, _) = router.auth_lookup();
        self.password_check = Some(sasl::PasswordCheck::new(
            stored.as_ref(),
            &user,
            password,
            secret,
            iterations,
        ));
        self.stage = Stage::VerifyingPlain { user };
        Action::VerifyPassword
    }

    pub(super) fn authenticated(
        &mut self,
        user: String,
        anonymous: bool,
        additional: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Action {
        match additional {
            Some(d) => {
                let data = sasl::base64_encode(d);
                out.extend_from_slice(sasl_element("success", NS_SASL, Some(&data)).as_bytes());
            }
            None => out.extend_from_slice(sasl_element("success", NS_SASL, None).as_bytes()),
        }
        self.stage = Stage::ExpectBind { user, anonymous };
        self.auth_event = Some(AuthEvent::Succeeded { anonymous });
        self.restart_stream();
        self.framer.set_max_stanza_bytes(self.max_stanza_bytes);
        Action::Continue
    }
}

/// `<name xmlns='ns'>text</name>` (or `<name xmlns='ns'/>` without text): the one-element
/// STARTTLS and SASL replies.
pub(super) fn sasl_element(name: &str, ns: &str, text: Option<&str>) -> String {
    let mut s = String::with_capacity(64 + text.map_or(0, str::len));
    let mut w = Writer::new(&mut s);
    w.start(name).ns(ns);
    if let Some(t) = text {
        w.text(t);
    }
    w.end();
    s
}
