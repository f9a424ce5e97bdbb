//! Unit tests of `crate::limits`: defaults, range checks and the memory table.

use super::*;

fn key_of(l: &Limits) -> String {
    match l.validate() {
        Ok(()) => String::new(),
        Err((k, _)) => k,
    }
}

/// Changes one setting of a [`Limits`].
type Setter = fn(&mut Limits);

/// For each (key, setter): the default limits with that one setting changed are refused,
/// naming `key`.
fn each_names_its_key(cases: &[(&str, Setter)]) {
    for (key, set) in cases {
        let mut l = Limits::default();
        set(&mut l);
        assert_eq!(key_of(&l), *key);
    }
}

/// A range-check case: the key `limits.<field>` and a setter that puts `value` in it.
macro_rules! bad {
    ($field:ident = $value:expr) => {
        (
            concat!("limits.", stringify!($field)),
            (|l: &mut Limits| l.$field = $value) as Setter,
        )
    };
}

/// Every `[limits]` key has a row in docs/configuration.md, and the default that row
/// states is the one the code uses (the serialised `Limits::default()`).
#[test]
fn defaults_match_the_configuration_reference() {
    let doc = include_str!("../../docs/configuration.md");
    let mut documented = std::collections::BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, key, _, default, ..] = cells[..] {
            if let Some(key) = key
                .strip_prefix("`limits.")
                .and_then(|k| k.strip_suffix('`'))
            {
                documented.insert(key.to_owned(), default.trim_matches('`').to_owned());
            }
        }
    }
    let code: toml::Table = toml::from_str(&toml::to_string(&Limits::default()).unwrap()).unwrap();
    for (key, value) in &code {
        let doc = documented
            .remove(key)
            .unwrap_or_else(|| panic!("limits.{key} has no row in docs/configuration.md"));
        assert_eq!(doc, value.to_string(), "default of limits.{key}");
    }
    assert!(
        documented.is_empty(),
        "docs/configuration.md documents keys the code does not have: {documented:?}"
    );
}

#[test]
fn defaults_match_design() {
    let l = Limits::default();
    assert_eq!(l.max_stanza_bytes, 65536);
    assert_eq!(l.outbox_max_bytes, 262_144);
    assert_eq!(l.pubsub_backlog_bytes, 8 * 1024 * 1024);
    assert_eq!(l.validate(), Ok(()));
    let small = Limits {
        pubsub_backlog_bytes: 65535,
        ..Limits::default()
    };
    assert_eq!(key_of(&small), "limits.pubsub_backlog_bytes");
    assert_eq!(l.auth_queue, 4);
    assert_eq!(l.preauth_stanza_bytes(), 8192);
    assert_eq!(l.preauth_max_connections(), 1024 - 102);
}

#[test]
fn preauth_bounds_stay_usable_with_any_max_connections() {
    for (max, pct, expected) in [(1, 90, 1), (10, 10, 9), (64, 10, 58), (100, 0, 100)] {
        let l = Limits {
            max_connections: max,
            authenticated_reserve_percent: pct,
            ..Limits::default()
        };
        assert_eq!(l.validate(), Ok(()));
        assert_eq!(l.preauth_max_connections(), expected, "{max} at {pct}%");
    }
    let l = Limits {
        max_connections: usize::MAX,
        ..Limits::default()
    };
    assert!(l.preauth_max_connections() < usize::MAX, "no overflow");
    // A small max_stanza_bytes caps the pre-auth one instead of failing validation.
    let l = Limits {
        max_stanza_bytes: 4096,
        outbox_max_bytes: 262_144,
        ..Limits::default()
    };
    assert_eq!(l.validate(), Ok(()));
    assert_eq!(l.preauth_stanza_bytes(), 4096);
    let l = Limits {
        auth_throttle_base_ms: 5000,
        auth_throttle_max_ms: 4000,
        ..Limits::default()
    };
    assert_eq!(key_of(&l), "limits.auth_throttle_max_ms");
    let l = Limits {
        authenticated_reserve_percent: 91,
        ..Limits::default()
    };
    assert_eq!(key_of(&l), "limits.authenticated_reserve_percent");
}

#[test]
fn memory_math_matches_module_doc() {
    let l = Limits::default();
    // 64 KiB + 256 KiB + 8 KiB + 44 KiB = 372 KiB.
    assert_eq!(l.per_connection_worst_case_bytes(), 372 * 1024);
    assert_eq!(l.total_worst_case_bytes(), 372 * 1024 * 1024);
    let small = Limits {
        max_connections: 64,
        ..Limits::default()
    };
    assert!(small.total_worst_case_bytes() < 24 * 1024 * 1024);
}

#[test]
fn memory_budget_rows_sum_to_the_total_and_follow_their_keys() {
    let l = Limits::default();
    let cache = 4 * 1024 * 1024;
    let rows = l.memory_budget(cache);
    let sum: u64 = rows.iter().map(|r| r.bytes).sum();
    assert_eq!(memory_budget_total(&rows), sum);
    // The connection rows are the per-connection worst case (plus the caps entry).
    let per_conn: u64 = rows
        .iter()
        .filter(|r| r.what.contains("1024 connections"))
        .map(|r| r.bytes)
        .sum();
    assert_eq!(
        per_conn,
        l.total_worst_case_bytes() as u64 + 1024 * CAPS_JID_BYTES
    );
    // Every row names a real key, and doubling that key changes its row and the total.
    let table: toml::Table = toml::from_str(&toml::to_string(&l).unwrap()).unwrap();
    for (i, r) in rows.iter().enumerate() {
        let changed = if let Some(field) = r.key.strip_prefix("limits.") {
            let mut t = table.clone();
            let v = t[field].as_integer().unwrap_or_else(|| panic!("{field}"));
            t.insert(field.to_owned(), toml::Value::Integer(v * 2));
            let l2: Limits = toml::from_str(&toml::to_string(&t).unwrap()).unwrap();
            l2.memory_budget(cache)
        } else {
            assert_eq!(r.key, "store.cache_bytes");
            l.memory_budget(cache * 2)
        };
        assert_eq!(changed.len(), rows.len());
        assert!(changed[i].bytes > r.bytes, "{}: {}", r.key, r.what);
        assert_eq!(changed[i].key, r.key);
        assert!(memory_budget_total(&changed) > sum, "{}", r.key);
    }
    // No wrap-around with the largest accepted values, even on 32-bit targets.
    let huge = Limits {
        max_connections: 1 << 20,
        outbox_max_bytes: 1 << 30,
        ..Limits::default()
    };
    assert!(memory_budget_total(&huge.memory_budget(1 << 30)) > 1 << 50);
}

#[test]
fn new_bounds_are_range_checked() {
    let cases: [(&str, Setter); 19] = [
        bad!(pubsub_max_parents = 65),
        bad!(pubsub_max_whitelist = 0),
        bad!(pubsub_deferred_requests = 0),
        bad!(pubsub_deferred_bytes = 1000),
        bad!(commit_batch_ops = 63),
        bad!(commit_batch_bytes = 1 << 31),
        bad!(roster_deferred_requests = 0),
        bad!(roster_deferred_bytes = 0),
        bad!(directed_presence_max = 1025),
        bad!(pep_cache_payload_bytes = MAX_STANZA_BYTES + 1),
        bad!(collection_max_items = 0),
        bad!(subscriptions_per_jid = 0),
        bad!(caps_cache_entries = 0),
        bad!(caps_max_pending = 0),
        bad!(caps_max_interests = 1025),
        bad!(caps_max_attr_bytes = 28),
        bad!(max_auth_failures = 1),
        bad!(read_chunk_bytes = 100),
        bad!(max_header_bytes = 1 << 20),
    ];
    each_names_its_key(&cases);
}

#[test]
fn offline_bounds_are_range_checked() {
    let cases: [(&str, Setter); 5] = [
        bad!(offline_max_per_account = 65537),
        bad!(offline_max_bytes = 65535),
        bad!(offline_max_bytes = (1 << 40) + 1),
        bad!(offline_max_bytes_per_account = 4095),
        // One account may not have more than all of them together.
        bad!(offline_max_bytes_per_account = 4 * 1024 * 1024 + 1),
    ];
    each_names_its_key(&cases);
    // 0 turns offline storage off; one account may have the whole store.
    let l = Limits {
        offline_max_per_account: 0,
        offline_max_bytes: 65536,
        offline_max_bytes_per_account: 65536,
        ..Limits::default()
    };
    assert_eq!(l.validate(), Ok(()));
}

#[test]
fn stanza_bytes_range() {
    for (v, ok) in [
        (4095, false),
        (4096, true),
        (16 * 1024 * 1024, true),
        (16 * 1024 * 1024 + 1, false),
        (0, false),
    ] {
        let l = Limits {
            max_stanza_bytes: v,
            outbox_max_bytes: v.saturating_mul(2).max(262_144),
            ..Limits::default()
        };
        let expected = if ok { "" } else { "limits.max_stanza_bytes" };
        assert_eq!(key_of(&l), expected, "max_stanza_bytes = {v}");
    }
}

#[test]
fn zero_rejected_where_meaningless() {
    // Each key set to 0 in a `[limits]` table, as an operator would write it.
    let keys = [
        "max_xml_depth",
        "max_connections",
        "outbox_max_stanzas",
        "negotiation_timeout_secs",
        "idle_timeout_secs",
        "write_timeout_secs",
        "max_resources_per_account",
        "max_roster_items",
        "pubsub_max_nodes",
        "pubsub_max_item_bytes",
        "pubsub_max_page_items",
    ];
    for key in keys {
        let l: Limits = toml::from_str(&format!("{key} = 0")).expect("a valid table");
        assert_eq!(key_of(&l), format!("limits.{key}"), "{key} = 0");
    }
}

#[test]
fn xml_shape_bounds() {
    let mut l = Limits {
        max_xml_attrs: 257,
        ..Limits::default()
    };
    assert_eq!(key_of(&l), "limits.max_xml_attrs");
    l.max_xml_attrs = 7;
    assert_eq!(key_of(&l), "limits.max_xml_attrs");
    l.max_xml_attrs = 8;
    l.max_xml_depth = 129;
    assert_eq!(key_of(&l), "limits.max_xml_depth");
    l.max_xml_depth = 128;
    assert_eq!(l.validate(), Ok(()));
}

#[test]
fn outbox_must_hold_two_max_stanzas() {
    let mut l = Limits {
        outbox_max_bytes: 131_071,
        ..Limits::default()
    };
    let err = l.validate().expect_err("outbox too small");
    assert_eq!(err.0, "limits.outbox_max_bytes");
    assert!(err.1.contains("131072"), "{}", err.1);
    l.outbox_max_bytes = 131_072;
    assert_eq!(l.validate(), Ok(()));
    l.outbox_max_bytes = (1 << 30) + 1;
    assert_eq!(key_of(&l), "limits.outbox_max_bytes");
}

#[test]
fn ping_must_come_before_timeout() {
    let mut l = Limits {
        idle_ping_secs: 360,
        idle_timeout_secs: 360,
        ..Limits::default()
    };
    assert_eq!(key_of(&l), "limits.idle_ping_secs");
    l.idle_ping_secs = 359;
    assert_eq!(l.validate(), Ok(()));
    l.idle_ping_secs = 0;
    l.idle_timeout_secs = 1;
    assert_eq!(l.validate(), Ok(()), "ping disabled allows any timeout");
}

#[test]
fn huge_timeouts_rejected() {
    let l = Limits {
        write_timeout_secs: u64::MAX,
        ..Limits::default()
    };
    assert_eq!(key_of(&l), "limits.write_timeout_secs");
    let l = Limits {
        idle_ping_secs: MAX_TIMEOUT_SECS + 1,
        idle_timeout_secs: MAX_TIMEOUT_SECS,
        ..Limits::default()
    };
    assert_eq!(key_of(&l), "limits.idle_ping_secs");
}
