//! SASL for the client stream (RFC 6120 §6): the best offered mechanism for the configured
//! [`Auth`] (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN over TLS only, ANONYMOUS), and the
//! server's success or failure.

use super::*;

impl Conn {
    /// SASL (RFC 6120 §6) with the best offered mechanism for `auth`.
    pub(super) fn authenticate(
        &mut self,
        features: &Element,
        auth: &Auth,
    ) -> Result<(), ClientError> {
        let offered: Vec<String> = features
            .child("mechanisms", NS_SASL)
            .map(|m| {
                m.elements()
                    .filter(|e| e.is("mechanism", NS_SASL))
                    .map(Element::text)
                    .collect()
            })
            .unwrap_or_default();
        let has = |m: &str| offered.iter().any(|o| o.trim() == m);
        match auth {
            Auth::Anonymous => {
                if !has("ANONYMOUS") {
                    return Err(ClientError::Auth(format!(
                        "the server does not offer anonymous login (offered: {}); give --jid",
                        offered.join(" ")
                    )));
                }
                self.send(&one_element(
                    "auth",
                    NS_SASL,
                    &[("mechanism", "ANONYMOUS")],
                    Some("="),
                ))?;
                self.sasl_outcome(None)
            }
            Auth::Password { user, password } => {
                let hash = if has("SCRAM-SHA-256") {
                    Some(ScramHash::Sha256)
                } else if has("SCRAM-SHA-1") {
                    Some(ScramHash::Sha1)
                } else {
                    None
                };
                if let Some(hash) = hash {
                    let mut scram = ScramClient::new(
                        hash,
                        user,
                        password,
                        &random_nonce(&crate::system::SystemEnv::new()),
                    );
                    self.send(&one_element(
                        "auth",
                        NS_SASL,
                        &[("mechanism", hash.mechanism())],
                        Some(&base64_encode(&scram.client_first())),
                    ))?;
                    let challenge = self.next_nonza()?;
                    if !challenge.is("challenge", NS_SASL) {
                        return self.sasl_failure(&challenge);
                    }
                    let server_first = base64_decode(&challenge.text()).ok_or_else(|| {
                        ClientError::Protocol("bad base64 in the SASL challenge".to_owned())
                    })?;
                    let client_final = scram.handle_server_first(&server_first).map_err(|e| {
                        ClientError::Protocol(format!("SCRAM server-first: {}", e.condition()))
                    })?;
                    self.send(&one_element(
                        "response",
                        NS_SASL,
                        &[],
                        Some(&base64_encode(&client_final)),
                    ))?;
                    self.sasl_outcome(Some(&scram))
                } else if has("PLAIN") {
                    if !self.tls {
                        return Err(ClientError::Auth(
                            "only PLAIN is offered and the stream is not encrypted: \
                             refusing to send the password in clear"
                                .to_owned(),
                        ));
                    }
                    let msg = format!("\0{user}\0{password}");
                    self.send(&one_element(
                        "auth",
                        NS_SASL,
                        &[("mechanism", "PLAIN")],
                        Some(&base64_encode(msg.as_bytes())),
                    ))?;
                    self.sasl_outcome(None)
                } else {
                    Err(ClientError::Auth(format!(
                        "no supported SASL mechanism offered ({})",
                        offered.join(" ")
                    )))
                }
            }
        }
    }

    /// Waits for `<success/>` (verifying SCRAM's server signature) or `<failure/>`.
    pub(super) fn sasl_outcome(&mut self, scram: Option<&ScramClient>) -> Result<(), ClientError> {
        let reply = self.next_nonza()?;
        if !reply.is("success", NS_SASL) {
            return self.sasl_failure(&reply);
        }
        if let Some(scram) = scram {
            let data = base64_decode(&reply.text())
                .ok_or_else(|| ClientError::Protocol("bad base64 in SASL success".to_owned()))?;
            scram.verify_server_final(&data).map_err(|_| {
                ClientError::Auth(
                    "the server's SCRAM signature is wrong (not the server \
                                   that holds this account?)"
                        .to_owned(),
                )
            })?;
        }
        Ok(())
    }

    /// Turns a SASL `<failure/>` (or anything unexpected) into an error.
    pub(super) fn sasl_failure<T>(&mut self, reply: &Element) -> Result<T, ClientError> {
        if reply.is("failure", NS_SASL) {
            let condition = reply
                .elements()
                .find(|e| e.name != "text")
                .map_or("failure", |e| e.name.as_str());
            let text = reply
                .child("text", NS_SASL)
                .map(|t| format!(": {}", t.text()))
                .unwrap_or_default();
            return Err(ClientError::Auth(format!("{condition}{text}")));
        }
        Err(ClientError::Protocol(format!(
            "unexpected <{}/> during SASL",
            reply.name
        )))
    }
}
