//! XEP-0060 requests and replies on the client side, sans IO: request bodies, payload
//! preparation (XML, XEP-0335 JSON containers), items from events and from items results,
//! data forms, and the `sub`/`items` output formats.

use crate::proto::{NS_DISCO_INFO, NS_DISCO_ITEMS};
use crate::pubsub::{NS_DELAY, NS_PUBSUB, NS_PUBSUB_EVENT, NS_PUBSUB_OWNER};
use crate::xml::{Element, NS_CLIENT, Raw, Writer, build};

use super::{ClientError, json};

/// XEP-0335 JSON container namespace.
pub const NS_JSON: &str = "urn:xmpp:json:0";
/// XEP-0004 data forms namespace.
pub const NS_DATA: &str = "jabber:x:data";
/// `FORM_TYPE` of node configuration forms.
pub const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// Largest payload accepted on the command line or stdin, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Most `key=value` configuration options in one command.
pub const MAX_CONFIG_OPTIONS: usize = 64;

/// Output format of `sub` and `items`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The payload element on one line.
    Xml,
    /// One JSON object per item.
    Json,
    /// The whole stanza (event message or item element) on one line.
    Raw,
}

impl Format {
    /// Parses `--format`.
    ///
    /// # Errors
    ///
    /// A usage error naming the accepted values.
    pub fn parse(s: Option<&str>) -> Result<Format, ClientError> {
        match s.unwrap_or("xml") {
            "xml" => Ok(Format::Xml),
            "json" => Ok(Format::Json),
            "raw" => Ok(Format::Raw),
            other => Err(ClientError::Usage(format!(
                "--format {other}: expected xml, json or raw"
            ))),
        }
    }
}

/// One item, from an event or an items result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The node.
    pub node: String,
    /// The item id (empty if the server sent none).
    pub id: String,
    /// The `publisher` attribute, if any.
    pub publisher: Option<String>,
    /// The XEP-0203 delay stamp of the carrying message, if any.
    pub published: Option<String>,
    /// The payload element, if any.
    pub payload: Option<Element>,
    /// The `<item/>` element as received (for `--format raw` of items results).
    pub element: Element,
}

/// Parses a payload given as XML text: exactly one element, which must be namespaced
/// (XEP-0060 §7.1.1: a payload is a namespaced element); an element without `xmlns` is
/// refused rather than silently put into some namespace.
///
/// # Errors
///
/// [`ClientError::Data`] with the parser's message.
pub fn payload_from_xml(text: &str) -> Result<Element, ClientError> {
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(ClientError::Data(format!(
            "payload larger than {MAX_PAYLOAD_BYTES} bytes"
        )));
    }
    // Parse inside a wrapper that undeclares the default namespace, so an element without
    // xmlns gets no namespace (and is refused below) instead of jabber:client.
    let w = crate::xml::parse_unqualified(text)
        .map_err(|e| ClientError::Data(format!("payload is not well-formed XML: {e}")))?;
    if !w.text().trim().is_empty() {
        return Err(ClientError::Data(
            "payload must be one XML element (text outside it found; use --json for JSON)"
                .to_owned(),
        ));
    }
    let mut elements = w.elements();
    let (Some(payload), None) = (elements.next(), elements.next()) else {
        return Err(ClientError::Data(
            "payload must be exactly one XML element".to_owned(),
        ));
    };
    if payload.ns.is_empty() {
        return Err(ClientError::Data(format!(
            "payload <{}> has no namespace: add xmlns='urn:example:...' (or use --json)",
            payload.name
        )));
    }
    Ok(payload.clone())
}

/// Wraps JSON text in an XEP-0335 `<json xmlns='urn:xmpp:json:0'/>` container, minified.
///
/// # Errors
///
/// [`ClientError::Data`] if the text is not one JSON value.
pub fn payload_from_json(text: &str) -> Result<Element, ClientError> {
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(ClientError::Data(format!(
            "payload larger than {MAX_PAYLOAD_BYTES} bytes"
        )));
    }
    let min = json::minify(text).map_err(ClientError::Data)?;
    Ok(Element::new("json", NS_JSON).with_text(min))
}

/// Splits `key=value` options; a key without `#` gets the `pubsub#` prefix.
///
/// # Errors
///
/// A usage error for an option without `=`, an empty key, or too many options.
pub fn parse_config(options: &[String]) -> Result<Vec<(String, String)>, ClientError> {
    if options.len() > MAX_CONFIG_OPTIONS {
        return Err(ClientError::Usage(format!(
            "at most {MAX_CONFIG_OPTIONS} configuration options"
        )));
    }
    options
        .iter()
        .map(|o| {
            let (k, v) = o
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| ClientError::Usage(format!("'{o}': expected key=value")))?;
            let key = if k.contains('#') || k == "FORM_TYPE" {
                k.to_owned()
            } else {
                format!("pubsub#{k}")
            };
            Ok((key, v.to_owned()))
        })
        .collect()
}

/// A submitted node configuration form (XEP-0004) with `pairs`.
pub fn config_form(pairs: &[(String, String)]) -> String {
    build(|w| {
        w.start("x").ns(NS_DATA).attr("type", "submit");
        w.start("field")
            .attr("var", "FORM_TYPE")
            .attr("type", "hidden");
        w.text_elem("value", NODE_CONFIG).end();
        for (k, v) in pairs {
            w.start("field").attr("var", k).text_elem("value", v).end();
        }
        w.end();
    })
}

/// `<pubsub><publish node><item id?>payload</item></publish></pubsub>` (§7.1.1).
pub fn publish_body(node: &str, id: Option<&str>, payload: &Element) -> String {
    build(|w| {
        w.start("pubsub").ns(NS_PUBSUB);
        w.start("publish").attr("node", node);
        w.start("item")
            .attr_opt("id", id)
            .element(payload, NS_PUBSUB);
        w.end_all();
    })
}

/// `<pubsub><create node/><configure>form?</configure></pubsub>` (§8.1.1, §8.1.3).
pub fn create_body(node: &str, config: &[(String, String)]) -> String {
    build(|w| {
        w.start("pubsub").ns(NS_PUBSUB);
        w.start("create").attr("node", node).end();
        if !config.is_empty() {
            w.start("configure").raw(Raw(&config_form(config))).end();
        }
        w.text("").end();
    })
}

/// An owner request `<pubsub xmlns='…#owner'><{verb} node/></pubsub>` with optional inner
/// XML (`delete` §8.4, `configure` §8.2): a form written by [`config_form`].
pub fn owner_body(verb: &str, node: &str, inner: Option<&str>) -> String {
    build(|w| {
        w.start("pubsub").ns(NS_PUBSUB_OWNER);
        w.start(verb).attr("node", node);
        if let Some(x) = inner {
            w.raw(Raw(x));
        }
        w.end_all();
    })
}

/// `<pubsub><subscribe|unsubscribe node jid/></pubsub>` (§6.1, §6.2).
pub fn subscription_body(verb: &str, node: &str, jid: &str) -> String {
    build(|w| {
        w.start("pubsub").ns(NS_PUBSUB);
        w.start(verb).attr("node", node).attr("jid", jid).end_all();
    })
}

/// `<pubsub><items node max_items?/></pubsub>` (§6.5.2, §6.5.7).
pub fn items_body(node: &str, max: Option<u32>) -> String {
    let mut s = String::with_capacity(128);
    let mut w = Writer::new(&mut s);
    w.start("pubsub").ns(NS_PUBSUB);
    w.start("items").attr("node", node);
    if let Some(m) = max {
        w.attr_fmt("max_items", m);
    }
    w.end_all();
    s
}

/// A disco#info query, on a node or on the service itself (XEP-0030 §3, XEP-0060 §5.4).
pub fn disco_info_body(node: Option<&str>) -> String {
    build(|w| {
        w.start("query")
            .ns(NS_DISCO_INFO)
            .attr_opt("node", node)
            .end();
    })
}

/// A disco#items query of the service (XEP-0060 §5.2).
pub fn disco_items_body() -> String {
    build(|w| {
        w.start("query").ns(NS_DISCO_ITEMS).end();
    })
}

/// The node names in a disco#items result, in document order.
pub fn nodes_from_disco(reply: &Element) -> Vec<(String, Option<String>)> {
    reply
        .child("query", NS_DISCO_ITEMS)
        .map(|q| {
            q.elements()
                .filter(|e| e.is("item", NS_DISCO_ITEMS))
                .filter_map(|e| {
                    e.attr("node")
                        .map(|n| (n.to_owned(), e.attr("name").map(str::to_owned)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Turns `<item/>` children of `items` into [`Item`]s.
fn collect_items(items: &Element, ns: &str, node: &str, published: Option<&str>) -> Vec<Item> {
    items
        .elements()
        .filter(|e| e.is("item", ns))
        .map(|e| Item {
            node: node.to_owned(),
            id: e.attr("id").unwrap_or_default().to_owned(),
            publisher: e.attr("publisher").map(str::to_owned),
            published: published.map(str::to_owned),
            payload: e.elements().next().cloned(),
            element: e.clone(),
        })
        .collect()
}

/// Whether `msg` comes from the pubsub service (or has no `from`, i.e. from the server).
fn from_service(msg: &Element, service: &str) -> bool {
    msg.attr("from")
        .is_none_or(|f| f.eq_ignore_ascii_case(service))
}

/// The published items of an event `<message/>` for `node` from `service` (§7.1.2.1);
/// retractions, purges and other nodes' events give nothing.
pub fn items_from_event(msg: &Element, service: &str, node: &str) -> Vec<Item> {
    if !msg.is("message", NS_CLIENT) || msg.attr("type") == Some("error") {
        return Vec::new();
    }
    if msg
        .attr("from")
        .is_some_and(|f| !f.eq_ignore_ascii_case(service))
    {
        return Vec::new();
    }
    let Some(items) = msg
        .child("event", NS_PUBSUB_EVENT)
        .and_then(|e| e.child("items", NS_PUBSUB_EVENT))
        .filter(|i| i.attr("node") == Some(node))
    else {
        return Vec::new();
    };
    let stamp = msg.child("delay", NS_DELAY).and_then(|d| d.attr("stamp"));
    collect_items(items, NS_PUBSUB_EVENT, node, stamp)
}

/// Whether an event `<message/>` says that `node` was deleted (§8.4.2).
pub fn is_delete_event(msg: &Element, service: &str, node: &str) -> bool {
    msg.is("message", NS_CLIENT)
        && from_service(msg, service)
        && msg
            .child("event", NS_PUBSUB_EVENT)
            .and_then(|e| e.child("delete", NS_PUBSUB_EVENT))
            .is_some_and(|d| d.attr("node") == Some(node))
}

/// The items of an items result (§6.5.2), in the order the server sent them.
pub fn items_from_result(reply: &Element, node: &str) -> Vec<Item> {
    reply
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("items", NS_PUBSUB))
        .map(|i| collect_items(i, NS_PUBSUB, node, None))
        .unwrap_or_default()
}

/// The fields of the configuration form in a `configure` result (§8.2.1) as
/// `(var, value)` pairs, one per value, `FORM_TYPE` and fixed fields left out.
pub fn config_fields(reply: &Element) -> Vec<(String, String)> {
    let Some(form) = reply
        .child("pubsub", NS_PUBSUB_OWNER)
        .and_then(|p| p.child("configure", NS_PUBSUB_OWNER))
        .and_then(|c| c.child("x", NS_DATA))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for f in form.elements().filter(|f| f.is("field", NS_DATA)) {
        let Some(var) = f.attr("var") else { continue };
        if var == "FORM_TYPE" || f.attr("type") == Some("fixed") {
            continue;
        }
        let values: Vec<String> = f
            .elements()
            .filter(|v| v.is("value", NS_DATA))
            .map(Element::text)
            .collect();
        if values.is_empty() {
            out.push((var.to_owned(), String::new()));
        }
        for v in values {
            out.push((var.to_owned(), v));
        }
    }
    out
}

/// Serialises `e` on one line: line feeds become `&#10;` (the same text to an XML parser).
pub fn one_line_xml(e: &Element) -> String {
    let mut s = String::new();
    e.write_to(&mut s, "");
    if s.contains('\n') {
        s = s.replace('\n', "&#10;");
    }
    s
}

/// The output line for one item (without the newline). `stanza` is the event message the
/// item came in (for `raw`); items results print the `<item/>` itself.
pub fn format_item(item: &Item, format: Format, stanza: Option<&Element>) -> String {
    match format {
        Format::Xml => item.payload.as_ref().map(one_line_xml).unwrap_or_default(),
        Format::Raw => match stanza {
            Some(s) => {
                let mut out = s.to_string_in_stream();
                if out.contains('\n') {
                    out = out.replace('\n', "&#10;");
                }
                out
            }
            None => one_line_xml(&item.element),
        },
        Format::Json => {
            let mut s = String::from("{\"node\":");
            json::push_str(&item.node, &mut s);
            s.push_str(",\"id\":");
            json::push_str(&item.id, &mut s);
            s.push_str(",\"publisher\":");
            match &item.publisher {
                Some(p) => json::push_str(p, &mut s),
                None => s.push_str("null"),
            }
            if let Some(p) = &item.published {
                s.push_str(",\"published\":");
                json::push_str(p, &mut s);
            }
            s.push_str(",\"payload\":");
            match &item.payload {
                None => s.push_str("null"),
                Some(p) if p.is("json", NS_JSON) => match json::minify(&p.text()) {
                    Ok(min) => s.push_str(&min),
                    Err(_) => json::push_str(&p.text(), &mut s),
                },
                Some(p) => json::push_str(&one_line_xml(p), &mut s),
            }
            s.push('}');
            s
        }
    }
}
