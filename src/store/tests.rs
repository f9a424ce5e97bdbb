//! Tests of the store against real database files in unique temporary directories.

use std::path::Path;
use std::sync::atomic::Ordering;

use redb::TableDefinition;

use super::schema::{ACCOUNTS, META, META_SCHEMA_VERSION, ROSTER_VERSIONS, ROSTERS};
use super::*;

const CACHE: usize = 1024 * 1024;

use crate::test_support::TempDir;

fn item(jid: &str, sub: Subscription) -> RosterItem {
    RosterItem {
        jid: jid.to_owned(),
        name: None,
        subscription: sub,
        ask_out: false,
        pending_in: false,
        in_roster: true,
        groups: Vec::new(),
    }
}

/// A store in a new `TempDir` named `name` with the accounts "ann" and "anna" (a prefix
/// of each other).
fn ann_and_anna(name: &str) -> (TempDir, Store) {
    let tmp = TempDir::new(name);
    let store = Store::open(&tmp.data(), CACHE).unwrap();
    store.user_add("ann", b"a").unwrap();
    store.user_add("anna", b"b").unwrap();
    (tmp, store)
}

/// Puts `item(jid, sub)` into `user`'s roster.
fn put(store: &Store, user: &str, jid: &str, sub: Subscription) {
    store.roster_put(user, &item(jid, sub)).unwrap();
}

fn full_item(jid: &str) -> RosterItem {
    RosterItem {
        jid: jid.to_owned(),
        name: Some("Bob the sensor ☃".to_owned()),
        subscription: Subscription::Both,
        ask_out: true,
        pending_in: true,
        in_roster: true,
        groups: vec!["Kitchen".to_owned(), "".to_owned(), "Ünïcode".to_owned()],
    }
}

/// Writes raw bytes into a table, bypassing the codec, as damage on disk would.
fn write_raw(store: &Store, table: TableDefinition<&[u8], &[u8]>, key: &[u8], value: &[u8]) {
    let txn = store.db().unwrap().begin_write().unwrap();
    txn.open_table(table).unwrap().insert(key, value).unwrap();
    txn.commit().unwrap();
}

fn is_corrupt_with(err: StoreError, needles: &[&str]) {
    match &err {
        StoreError::Corrupt(msg) => {
            for needle in needles {
                assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
            }
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(err.exit_code(), 65);
}

#[test]
fn open_creates_private_dir_and_file() {
    let tmp = TempDir::new("store-create");
    let store = Store::open(&tmp.data(), CACHE).unwrap();
    assert_eq!(store.path(), tmp.data().join(DB_FILE_NAME));
    assert!(store.path().is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let dir_mode = std::fs::metadata(tmp.data()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let file_mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            file_mode & 0o077,
            0,
            "file mode {file_mode:o} is group/other-accessible"
        );
    }
    assert!(store.user_list().unwrap().is_empty());
    assert_eq!(store.roster_version("ann").unwrap(), 0);
}

#[test]
fn small_and_zero_cache_sizes_work() {
    for cache in [0, 64 * 1024, CACHE] {
        let tmp = TempDir::new("store-cache");
        let store = Store::open(&tmp.data(), cache).unwrap();
        for i in 0..50 {
            store.user_add(&format!("user{i:02}"), &[7; 300]).unwrap();
        }
        assert_eq!(store.user_list().unwrap().len(), 50);
        assert_eq!(store.user_get("user42").unwrap(), Some(vec![7; 300]));
    }
}

#[test]
fn reopen_keeps_users_and_rosters_exactly() {
    let tmp = TempDir::new("store-reopen");
    let ann_roster = vec![
        full_item("bob@example.org"),
        item("carol@example.org", Subscription::To),
    ];
    let version;
    {
        let store = Store::open(&tmp.data(), CACHE).unwrap();
        store.user_add("ann", b"scram-ann").unwrap();
        store.user_add("zed", b"").unwrap();
        for it in &ann_roster {
            store.roster_put("ann", it).unwrap();
        }
        version = store.roster_version("ann").unwrap();
        assert!(version > 0);
    }
    let store = Store::open(&tmp.data(), CACHE).unwrap();
    assert_eq!(store.user_list().unwrap(), ["ann", "zed"]);
    assert_eq!(
        store.user_get("ann").unwrap().as_deref(),
        Some(&b"scram-ann"[..])
    );
    assert_eq!(store.user_get("zed").unwrap(), Some(Vec::new()));
    assert_eq!(store.roster_get("ann").unwrap(), ann_roster);
    assert_eq!(store.roster_version("ann").unwrap(), version);
    // The sequence survives too: the next change gets a larger version.
    store.roster_remove("ann", "carol@example.org").unwrap();
    assert!(store.roster_version("ann").unwrap() > version);
}

#[test]
fn user_add_get_exists_set_list() {
    let tmp = TempDir::new("store-users");
    let store = Store::open(&tmp.data(), CACHE).unwrap();
    assert_eq!(store.user_get("ann").unwrap(), None);
    assert!(!store.user_exists("ann").unwrap());
    store.user_add("ann", b"one").unwrap();
    assert!(store.user_exists("ann").unwrap());
    let err = store.user_add("ann", b"two").unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
    assert_eq!(err.exit_code(), 1);
    assert_eq!(store.user_get("ann").unwrap().as_deref(), Some(&b"one"[..]));

    store.user_set_credentials("ann", b"three").unwrap();
    assert_eq!(
        store.user_get("ann").unwrap().as_deref(),
        Some(&b"three"[..])
    );
    let err = store.user_set_credentials("bob", b"x").unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert!(!store.user_exists("bob").unwrap());

    store.user_add("émile", b"e").unwrap();
    store.user_add("anna", b"a").unwrap();
    store.user_add("Zed", b"z").unwrap();
    assert_eq!(store.user_list().unwrap(), ["Zed", "ann", "anna", "émile"]);
}

#[test]
fn invalid_arguments_are_rejected_not_stored() {
    let tmp = TempDir::new("store-invalid");
    let store = Store::open(&tmp.data(), CACHE).unwrap();
    let long_name = "a".repeat(MAX_USERNAME_BYTES + 1);
    for (user, creds) in [
        ("", &b"x"[..]),
        ("a\0b", &b"x"[..]),
        (long_name.as_str(), &b"x"[..]),
        ("ok", &[0u8; MAX_CREDENTIALS_BYTES + 1][..]),
    ] {
        let err = store.user_add(user, creds).unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        assert_eq!(err.exit_code(), 65);
    }
    store
        .user_add(&"a".repeat(MAX_USERNAME_BYTES), &[1; MAX_CREDENTIALS_BYTES])
        .unwrap();
    assert_eq!(store.user_list().unwrap().len(), 1);

    let mut bad = vec![
        item("", Subscription::None),
        item("a\0b@x", Subscription::None),
    ];
    bad.push(item(&"j".repeat(MAX_JID_BYTES + 1), Subscription::None));
    let mut it = item("x@y", Subscription::None);
    it.name = Some("n".repeat(MAX_ROSTER_NAME_BYTES + 1));
    bad.push(it);
    let mut it = item("x@y", Subscription::None);
    it.groups = vec!["g".to_owned(); MAX_ROSTER_GROUPS + 1];
    bad.push(it);
    let mut it = item("x@y", Subscription::None);
    it.groups = vec!["g".repeat(MAX_GROUP_BYTES + 1)];
    bad.push(it);
    for it in &bad {
        let err = store.roster_put("ann", it).unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    }
    assert!(matches!(
        store.roster_put("", &item("x@y", Subscription::None)),
        Err(StoreError::Invalid(_))
    ));
    assert!(store.roster_get("ann").unwrap().is_empty());
    assert_eq!(store.roster_version("ann").unwrap(), 0);

    // The largest accepted item round-trips.
    let big = RosterItem {
        jid: "j".repeat(MAX_JID_BYTES),
        name: Some("n".repeat(MAX_ROSTER_NAME_BYTES)),
        subscription: Subscription::From,
        ask_out: false,
        pending_in: true,
        in_roster: true,
        groups: vec!["g".repeat(MAX_GROUP_BYTES); MAX_ROSTER_GROUPS],
    };
    store.roster_put("ann", &big).unwrap();
    assert_eq!(store.roster_get("ann").unwrap(), [big]);
}

#[test]
fn user_del_missing_is_not_found() {
    let tmp = TempDir::new("store-delmissing");
    let store = Store::open(&tmp.data(), CACHE).unwrap();
    let err = store.user_del("ghost").unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert_eq!(err.exit_code(), 1);
}

#[test]
fn user_del_removes_only_that_users_roster() {
    let (_tmp, store) = ann_and_anna("store-delroster");
    put(&store, "ann", "x@example.org", Subscription::Both);
    put(&store, "ann", "y@example.org", Subscription::To);
    put(&store, "anna", "x@example.org", Subscription::From);
    let old_version = store.roster_version("ann").unwrap();

    store.user_del("ann").unwrap();
    assert!(!store.user_exists("ann").unwrap());
    assert!(store.roster_get("ann").unwrap().is_empty());
    assert_eq!(store.roster_version("ann").unwrap(), 0);
    assert_eq!(
        store.roster_get("anna").unwrap(),
        [item("x@example.org", Subscription::From)]
    );
    assert_eq!(store.user_list().unwrap(), ["anna"]);

    // Re-created, the user never gets back a version an old client may have cached.
    store.user_add("ann", b"a").unwrap();
    put(&store, "ann", "z@example.org", Subscription::None);
    assert!(store.roster_version("ann").unwrap() > old_version);
}

#[test]
fn roster_put_replace_remove_order_and_isolation() {
    let tmp = TempDir::new("store-roster");
    let store = Store::open(&tmp.data(), CACHE).unwrap();
    // Inserted out of order, with prefix-like owners and JIDs.
    for jid in ["zoe@x", "anna@x", "ann@x", "bob@x"] {
        put(&store, "ann", jid, Subscription::None);
    }
    put(&store, "anna", "ann@x", Subscription::Both);
    put(&store, "an", "q@x", Subscription::To);

    let jids = |user: &str| -> Vec<String> {
        store
            .roster_get(user)
            .unwrap()
            .into_iter()
            .map(|i| i.jid)
            .collect()
    };
    assert_eq!(jids("ann"), ["ann@x", "anna@x", "bob@x", "zoe@x"]);
    assert_eq!(jids("anna"), ["ann@x"]);
    assert_eq!(jids("an"), ["q@x"]);
    assert!(jids("a").is_empty());
    assert!(jids("annab").is_empty());

    // Replace keeps one row per JID.
    store.roster_put("ann", &full_item("bob@x")).unwrap();
    let roster = store.roster_get("ann").unwrap();
    assert_eq!(roster.len(), 4);
    assert_eq!(roster[2], full_item("bob@x"));
    assert_eq!(
        store.roster_get("anna").unwrap(),
        [item("ann@x", Subscription::Both)]
    );

    assert!(store.roster_remove("ann", "anna@x").unwrap());
    assert!(!store.roster_remove("ann", "anna@x").unwrap());
    assert!(!store.roster_remove("ann", "nobody@x").unwrap());
    assert!(!store.roster_remove("anna", "bob@x").unwrap());
    assert_eq!(jids("ann"), ["ann@x", "bob@x", "zoe@x"]);
    assert_eq!(jids("anna"), ["ann@x"]);
}

#[test]
fn roster_version_bumps_on_every_change_only() {
    let tmp = TempDir::new("store-version");
    let store = Store::open(&tmp.data(), CACHE).unwrap();
    assert_eq!(store.roster_version("ann").unwrap(), 0);
    let mut last = 0;
    let mut expect_bump = |store: &Store, bumped: bool| {
        let now = store.roster_version("ann").unwrap();
        if bumped {
            assert!(now > last, "version {now} not above {last}");
        } else {
            assert_eq!(now, last);
        }
        last = now;
    };
    for (user, sub, bump) in [
        ("ann", Subscription::None, true),
        ("ann", Subscription::To, true),
        ("ann", Subscription::To, false),
        // Another user's change leaves ann's version alone.
        ("anna", Subscription::To, false),
    ] {
        store.roster_put(user, &item("b@x", sub)).unwrap();
        expect_bump(&store, bump);
    }
    assert!(store.roster_version("anna").unwrap() > 0);
    assert!(!store.roster_remove("ann", "c@x").unwrap());
    expect_bump(&store, false);
    assert!(store.roster_remove("ann", "b@x").unwrap());
    expect_bump(&store, true);
}

/// Fill `user`'s roster with `n` rows `c00000@x`… through one transaction (fsync per item
/// would make the tests slow).
fn fill_roster(store: &Store, user: &str, n: usize) {
    let txn = store.db().unwrap().begin_write().unwrap();
    let mut table = txn.open_table(ROSTERS).unwrap();
    let value = codec::encode_roster_item(&item("x", Subscription::None)).unwrap();
    for i in 0..n {
        let key = codec::roster_key(user, &format!("c{i:06}@x"));
        table.insert(key.as_slice(), value.as_slice()).unwrap();
    }
    drop(table);
    txn.commit().unwrap();
}

#[test]
fn roster_size_is_bounded() {
    let tmp = TempDir::new("store-bounded");
    let store = Store::open(&tmp.data(), CACHE).unwrap();
    store.set_max_roster_items(40);
    assert_eq!(store.max_roster_items(), 40);
    fill_roster(&store, "ann", 40);
    assert_eq!(store.roster_get("ann").unwrap().len(), 40);
    let err = store
        .roster_put("ann", &item("new@x", Subscription::None))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LimitReached { max: 40, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("roster items"));
    // Replacing an existing item is still allowed, and other users are unaffected.
    store.roster_put("ann", &full_item("c000001@x")).unwrap();
    put(&store, "anna", "new@x", Subscription::None);
    // A lower limit keeps the rows readable; a higher one lets the roster grow.
    store.set_max_roster_items(10);
    assert_eq!(store.roster_get("ann").unwrap().len(), 40);
    assert!(
        store
            .roster_put("ann", &item("new@x", Subscription::None))
            .is_err()
    );
    store.set_max_roster_items(41);
    put(&store, "ann", "new@x", Subscription::None);
    // The setting is clamped to 1..=MAX_ROSTER_ITEMS.
    store.set_max_roster_items(0);
    assert_eq!(store.max_roster_items(), 1);
    store.set_max_roster_items(usize::MAX);
    assert_eq!(store.max_roster_items(), MAX_ROSTER_ITEMS);
}

/// Issue 10: the store capped a roster at 512 rows whatever `limits.max_roster_items`
/// said (the configuration accepts up to 100000).
#[test]
fn roster_limit_follows_the_configured_max_roster_items() {
    let tmp = TempDir::new("store-configured");
    let store = Store::open(&tmp.data(), CACHE).unwrap();
    store.set_max_roster_items(1000);
    fill_roster(&store, "ann", 600);
    store
        .roster_put("ann", &item("new@x", Subscription::None))
        .expect("601st item within a limit of 1000");
    assert_eq!(store.roster_get("ann").unwrap().len(), 601);
}

/// More rows than the ceiling (only possible by damage) are reported, not returned.
#[test]
fn roster_over_the_ceiling_reads_as_corrupt() {
    let tmp = TempDir::new("store-ceiling");
    let store = Store::open(&tmp.data(), CACHE).unwrap();
    fill_roster(&store, "ann", MAX_ROSTER_ITEMS + 1);
    is_corrupt_with(
        store.roster_get("ann").unwrap_err(),
        &["rosters", "MAX_ROSTER_ITEMS"],
    );
}

#[test]
fn corrupt_values_are_errors_not_panics() {
    let tmp = TempDir::new("store-corrupt");
    let store = Store::open(&tmp.data(), CACHE).unwrap();
    store.user_add("ann", b"secret").unwrap();

    write_raw(&store, ACCOUNTS, b"ann", &[1, 0, 0, 0, 9, 1, 2]);
    is_corrupt_with(
        store.user_get("ann").unwrap_err(),
        &["accounts", "\"ann\"", "truncated"],
    );
    // Existence does not decode the value.
    assert!(store.user_exists("ann").unwrap());

    write_raw(&store, ACCOUNTS, b"bad\xff", b"");
    is_corrupt_with(store.user_list().unwrap_err(), &["accounts", "not UTF-8"]);

    write_raw(&store, ROSTERS, b"ann\0bob@x", &[1, 9, 0, 0, 0]);
    is_corrupt_with(
        store.roster_get("ann").unwrap_err(),
        &["rosters", "ann\\0bob@x", "subscription"],
    );
    write_raw(&store, ROSTERS, b"ann\0bob@x", &[1, 0, 0x80, 0, 0]);
    is_corrupt_with(store.roster_get("ann").unwrap_err(), &["flags"]);
    write_raw(&store, ROSTERS, b"ann\0\xc3", &[1, 0, 0, 0, 0]);
    write_raw(&store, ROSTERS, b"ann\0bob@x", &[1, 0, 0, 0, 0]);
    is_corrupt_with(store.roster_get("ann").unwrap_err(), &["JID is not UTF-8"]);

    write_raw(&store, ROSTER_VERSIONS, b"ann", &[1, 0, 0]);
    is_corrupt_with(
        store.roster_version("ann").unwrap_err(),
        &["roster_versions"],
    );
    // A change needs the sequence, not the user's old version, so it repairs the row.
    assert!(store.roster_remove("ann", "bob@x").unwrap());
    assert!(store.roster_version("ann").unwrap() > 0);
    write_raw(&store, META, schema::META_ROSTER_SEQ, b"garbage!!");
    is_corrupt_with(
        store
            .roster_put("zed", &item("a@x", Subscription::None))
            .unwrap_err(),
        &["meta", "roster_seq"],
    );
}

#[test]
fn decoders_survive_arbitrary_bytes() {
    // Every truncation and every single-byte change of valid records, plus pseudo-random
    // inputs: decoding may fail but must not panic, and must reject trailing bytes.
    let account = codec::encode_account(b"credentials").unwrap();
    let roster = codec::encode_roster_item(&full_item("bob@x")).unwrap();
    let version = codec::encode_roster_version(42);
    assert_eq!(codec::decode_account(&account).unwrap(), b"credentials");
    assert_eq!(
        codec::decode_roster_item("bob@x", &roster).unwrap(),
        full_item("bob@x")
    );
    assert_eq!(codec::decode_roster_version(&version).unwrap(), 42);
    type Decodes = fn(&[u8]) -> bool;
    let cases: [(&[u8], Decodes); 3] = [
        (&account, |b| codec::decode_account(b).is_ok()),
        (&roster, |b| codec::decode_roster_item("j", b).is_ok()),
        (&version, |b| codec::decode_roster_version(b).is_ok()),
    ];
    for (valid, decodes) in cases {
        assert!(decodes(valid));
        for cut in 0..valid.len() {
            assert!(!decodes(&valid[..cut]), "prefix of {cut} bytes decoded");
        }
        let mut long = valid.to_vec();
        long.push(0);
        assert!(!decodes(&long), "trailing byte accepted");
        for at in 0..valid.len() {
            for byte in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut bytes = valid.to_vec();
                bytes[at] = byte;
                let _ = decodes(&bytes);
            }
        }
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..5000 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let len = (seed >> 58) as usize;
        let bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
        let _ = codec::decode_account(&bytes);
        let _ = codec::decode_roster_item("j", &bytes);
        let _ = codec::decode_roster_version(&bytes);
        let _ = codec::decode_meta_u32(&bytes);
        let _ = codec::split_roster_key(&bytes);
    }
}

#[test]
fn roster_keys_split_and_bound_users() {
    let key = codec::roster_key("ann", "bob@x");
    assert_eq!(key, b"ann\0bob@x");
    assert_eq!(codec::split_roster_key(&key).unwrap(), ("ann", "bob@x"));
    assert!(codec::split_roster_key(b"no-separator").is_err());
    assert_eq!(codec::split_roster_key(b"ann\0").unwrap(), ("ann", ""));
    let (start, end) = codec::roster_range("ann");
    for (k, inside) in [
        (&b"ann\0"[..], true),
        (b"ann\0\xff\xff", true),
        (b"anna\0x", false),
        (b"an\0x", false),
        (b"ann", false),
    ] {
        assert_eq!(start.as_slice() <= k && k < end.as_slice(), inside, "{k:?}");
    }
    let long = vec![b'k'; 1000];
    let ctx = codec::key_context(&long);
    assert!(ctx.len() < 120 && ctx.ends_with("..."), "{ctx}");
}

#[test]
fn newer_schema_is_refused() {
    let tmp = TempDir::new("store-newer");
    {
        let store = Store::open(&tmp.data(), CACHE).unwrap();
        store.user_add("ann", b"a").unwrap();
        write_raw(
            &store,
            META,
            META_SCHEMA_VERSION,
            &(SCHEMA_VERSION + 1).to_be_bytes(),
        );
    }
    let err = Store::open(&tmp.data(), CACHE).unwrap_err();
    match err {
        StoreError::SchemaTooNew { found, supported } => {
            assert_eq!(found, SCHEMA_VERSION + 1);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        ref other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert_eq!(err.exit_code(), 65);
    assert!(err.to_string().contains("newer kinglet"), "{err}");
}

#[test]
fn damaged_schema_version_is_corrupt() {
    let tmp = TempDir::new("store-badmeta");
    {
        let store = Store::open(&tmp.data(), CACHE).unwrap();
        write_raw(&store, META, META_SCHEMA_VERSION, b"\x00\x01");
    }
    is_corrupt_with(
        Store::open(&tmp.data(), CACHE).unwrap_err(),
        &["meta", "schema_version"],
    );
}

#[test]
fn file_without_meta_is_migrated() {
    let tmp = TempDir::new("store-migrate");
    std::fs::create_dir_all(tmp.data()).unwrap();
    let path = tmp.data().join(DB_FILE_NAME);
    // A bare redb file (schema "0"): no meta table at all, and one with an old version row.
    for old in [None, Some(0u32)] {
        let _ = std::fs::remove_file(&path);
        {
            let db = redb::Database::builder()
                .set_cache_size(CACHE)
                .create(&path)
                .unwrap();
            if let Some(v) = old {
                let txn = db.begin_write().unwrap();
                txn.open_table(META)
                    .unwrap()
                    .insert(META_SCHEMA_VERSION, &v.to_be_bytes()[..])
                    .unwrap();
                txn.commit().unwrap();
            }
        }
        {
            let store = Store::open(&tmp.data(), CACHE).unwrap();
            let txn = store.db().unwrap().begin_read().unwrap();
            let meta = txn.open_table(META).unwrap();
            let v = meta.get(META_SCHEMA_VERSION).unwrap().unwrap();
            assert_eq!(v.value(), SCHEMA_VERSION.to_be_bytes());
            drop(meta);
            drop(txn);
            store.user_add("ann", b"a").unwrap();
            put(&store, "ann", "b@x", Subscription::To);
        }
        let store = Store::open(&tmp.data(), CACHE).unwrap();
        assert_eq!(store.user_list().unwrap(), ["ann"]);
    }
}

#[test]
fn foreign_files_are_corrupt_not_panics() {
    let tmp = TempDir::new("store-foreign");
    std::fs::create_dir_all(tmp.data()).unwrap();
    let path = tmp.data().join(DB_FILE_NAME);
    let mut junk = b"this is not a database, it is a shopping list\n".repeat(200);
    junk.truncate(8192);
    for contents in [&junk[..], &[0xff; 4096][..], &[0; 100][..], b"redb"] {
        std::fs::write(&path, contents).unwrap();
        is_corrupt_with(
            Store::open(&tmp.data(), CACHE).unwrap_err(),
            &["not a redb database", DB_FILE_NAME],
        );
        // The refusal leaves the file as it was.
        assert_eq!(std::fs::read(&path).unwrap(), contents);
    }

    // A real redb file whose `accounts` table has other types than ours.
    std::fs::remove_file(&path).unwrap();
    {
        let db = redb::Database::builder()
            .set_cache_size(CACHE)
            .create(&path)
            .unwrap();
        let txn = db.begin_write().unwrap();
        let other: TableDefinition<u64, u64> = TableDefinition::new("accounts");
        txn.open_table(other).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    is_corrupt_with(Store::open(&tmp.data(), CACHE).unwrap_err(), &["accounts"]);
}

#[test]
fn second_open_is_locked() {
    let tmp = TempDir::new("store-locked");
    let first = Store::open(&tmp.data(), CACHE).unwrap();
    first.user_add("ann", b"a").unwrap();
    // redb locks with flock on a fresh file description, so even a second open from this
    // process is refused, exactly as one from another process would be.
    let err = Store::open(&tmp.data(), CACHE).unwrap_err();
    match &err {
        StoreError::Locked(path) => assert_eq!(path, first.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(err.exit_code(), 75);
    let msg = err.to_string();
    assert!(msg.contains("locked"), "{msg}");
    assert!(msg.contains(&first.path().display().to_string()), "{msg}");
    assert!(msg.contains("systemctl stop kinglet"), "{msg}");
    // The refused open did not disturb the holder, and the lock ends with it.
    assert!(first.user_exists("ann").unwrap());
    drop(first);
    let again = Store::open(&tmp.data(), CACHE).unwrap();
    assert!(again.user_exists("ann").unwrap());
}

#[test]
fn data_dir_that_is_a_file_is_io_error() {
    let tmp = TempDir::new("store-notdir");
    std::fs::create_dir_all(&tmp.0).unwrap();
    let data = tmp.data();
    std::fs::write(&data, b"x").unwrap();
    let err = Store::open(&data, CACHE).unwrap_err();
    match &err {
        StoreError::Io(e) => assert!(e.to_string().contains(&*data.to_string_lossy()), "{e}"),
        other => panic!("expected Io, got {other:?}"),
    }
    assert_eq!(err.exit_code(), 74);
}

#[test]
fn redb_errors_map_to_store_errors() {
    let full = StoreError::from(redb::StorageError::Io(std::io::Error::from(
        std::io::ErrorKind::StorageFull,
    )));
    assert!(matches!(full, StoreError::Full), "{full:?}");
    assert_eq!(full.exit_code(), 74);
    assert!(full.to_string().contains("full"));
    let io = StoreError::from(redb::CommitError::Storage(redb::StorageError::Io(
        std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    )));
    assert!(matches!(io, StoreError::Io(_)), "{io:?}");
    assert!(std::error::Error::source(&io).is_some());
    let previous = StoreError::from(redb::StorageError::PreviousIo);
    assert!(matches!(previous, StoreError::Io(_)), "{previous:?}");
    let corrupted = StoreError::from(redb::StorageError::Corrupted("bad page".to_owned()));
    is_corrupt_with(corrupted, &["bad page"]);
    let locked = redb_error::from_open_error(
        redb::DatabaseError::DatabaseAlreadyOpen,
        Path::new("/x/kinglet.redb").to_path_buf(),
    );
    assert!(matches!(locked, StoreError::Locked(_)));
    let db = StoreError::Db("oops".to_owned());
    assert_eq!(db.exit_code(), 70);
    assert!(db.to_string().contains("bug"));
}

#[test]
fn subscription_helpers() {
    use Subscription::*;
    let all = [None, To, From, Both];
    let names: Vec<_> = all.iter().map(|s| s.as_str()).collect();
    assert_eq!(names, ["none", "to", "from", "both"]);
    assert_eq!(all.map(|s| s.has_to()), [false, true, false, true]);
    assert_eq!(all.map(|s| s.has_from()), [false, false, true, true]);
    for s in all {
        assert_eq!(Subscription::parse(s.as_str()), Some(s));
    }
    assert_eq!(Subscription::parse("remove"), Option::None);
    assert_eq!(Subscription::parse("Both"), Option::None);
}

/// Issue 10, item 8: redb 2.6 asserts (a panic, an abort in release builds) when the file
/// is shorter than its header says, e.g. a truncated copy. The store checks the length
/// first: every truncation is `Corrupt` (exit code 65) with a message that says what to
/// do, and the file is left as it was.
#[test]
fn truncated_database_is_reported_not_panicked() {
    let tmp = TempDir::new("store-truncated");
    let path = {
        let store = Store::open(&tmp.data(), CACHE).unwrap();
        store.user_add("ann", b"a").unwrap();
        store.path().to_path_buf()
    };
    let bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    assert!(len > 3 * 4096, "{len}");
    for cut in [5, 9, 64, 319, 320, 4096, len / 2, len - 4096, len - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = Store::open(&tmp.data(), CACHE).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.exit_code(), 65, "cut {cut}: {text}");
        assert!(text.contains(DB_FILE_NAME), "cut {cut}: {text}");
        assert!(
            text.contains("restore the file from a backup"),
            "cut {cut}: {text}"
        );
        if cut >= 9 {
            assert!(text.contains("truncated"), "cut {cut}: {text}");
        }
        assert_eq!(
            std::fs::read(&path).unwrap().len(),
            cut,
            "the file was changed"
        );
    }
    // An empty file is a new database (what a first start leaves before redb writes).
    std::fs::write(&path, b"").unwrap();
    assert_eq!(
        Store::open(&tmp.data(), CACHE)
            .unwrap()
            .user_list()
            .unwrap()
            .len(),
        0
    );
    // The whole file opens as it was.
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(
        Store::open(&tmp.data(), CACHE)
            .unwrap()
            .user_list()
            .unwrap(),
        ["ann"]
    );
}

/// A store in a new `TempDir` named `name` over a [`FaultyBackend`], with the account
/// "ann" written before `fail` is set; asserts that a write after that reports `Full`.
fn full_after_ann(
    name: &str,
) -> (
    TempDir,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    Store,
) {
    let dir = TempDir::new(name);
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store = Store::open_with_faults(&dir.data(), fail.clone()).unwrap();
    store.user_add("ann", b"c").unwrap();
    fail.store(true, Ordering::SeqCst);
    assert!(matches!(store.user_add("bob", b"c"), Err(StoreError::Full)));
    (dir, fail, store)
}

/// Issue 10, item 4: after a failed write redb refuses all I/O (reads too) until the file
/// is reopened; `Store::reopen` does it, failing while the disk still refuses writes, and
/// afterwards reads and writes work and every row written before is there.
#[test]
fn failed_commit_then_recovery_reopens_the_store() {
    let (dir, fail, store) = full_after_ann("store-reopen");
    assert!(
        store.user_add("cy", b"c").is_err(),
        "redb refuses I/O after a failure"
    );
    store.set_faulted();
    // The disk is still full: redb's repair on open must write, so reopening fails, and
    // the closed store answers Full.
    assert!(matches!(store.reopen(), Err(StoreError::Full)));
    assert!(store.faulted());
    assert!(matches!(store.user_list(), Err(StoreError::Full)));
    fail.store(false, Ordering::SeqCst);
    store.reopen().unwrap();
    assert!(!store.faulted());
    assert_eq!(store.user_list().unwrap(), ["ann"]);
    store.user_add("dee", b"c").unwrap();
    drop(store);
    let store = Store::open(&dir.data(), CACHE).unwrap();
    assert_eq!(store.user_list().unwrap(), ["ann", "dee"]);
}

#[test]
fn user_del_removes_the_users_pep_nodes_only() {
    use crate::store::{ItemRecord, NodeRecord, PubsubOp};
    let (_tmp, store) = ann_and_anna("store-delpep");
    let node = |n: &str| {
        PubsubOp::PutNode(
            n.to_owned(),
            NodeRecord {
                created_ms: 1,
                creator: "x".into(),
                config: Vec::new(),
            },
        )
    };
    let item = |n: &str| {
        PubsubOp::PutItem(
            n.to_owned(),
            1,
            ItemRecord {
                id: "i".into(),
                publisher: "x".into(),
                published_ms: 1,
                payload: String::new(),
            },
        )
    };
    let ann = "\u{1}ann@localhost\u{1}urn:tune";
    let anna = "\u{1}anna@localhost\u{1}urn:tune";
    store
        .pubsub_apply(&[
            node(ann),
            item(ann),
            node(anna),
            item(anna),
            node("ann"),
            item("ann"),
        ])
        .unwrap();
    store.user_del("ann").unwrap();
    let snap = store.pubsub_load().unwrap();
    let names: Vec<&str> = snap.nodes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [anna, "ann"], "only ann's PEP rows go");
    assert_eq!(snap.items.len(), 2);
}

/// XEP-0160 records: the layout of docs/storage.md, read back in order per user, with
/// `ann`'s rows apart from `anna`'s, deleted up to a sequence, counted by
/// `offline_usage`, and removed with the account.
#[test]
fn offline_messages_round_trip_in_order_per_user() {
    let (tmp, store) = ann_and_anna("store-offline");
    let s1 = store.offline_stage("ann", 7, "<message id='1'/>").unwrap();
    let s2 = store.offline_stage("anna", 8, "<message id='2'/>").unwrap();
    let s3 = store
        .offline_stage("ann", 9, "<message id='3'>☃</message>")
        .unwrap();
    assert!(s1 < s2 && s2 < s3, "one store-wide increasing sequence");
    let ann = store.offline_get("ann").unwrap();
    let texts: Vec<(u64, u64, &str)> = ann
        .iter()
        .map(|m| (m.seq, m.stamp_ms, m.stanza.as_str()))
        .collect();
    assert_eq!(
        texts,
        [
            (s1, 7, "<message id='1'/>"),
            (s3, 9, "<message id='3'>☃</message>")
        ]
    );
    // The value's bytes are exactly the documented layout.
    let txn = store.db().unwrap().begin_read().unwrap();
    let table = txn.open_table(schema::OFFLINE).unwrap();
    let key = codec::offline_key("ann", s1);
    assert_eq!(key, [&b"ann\0"[..], &s1.to_be_bytes()].concat());
    let value = table.get(key.as_slice()).unwrap().unwrap().value().to_vec();
    let mut want = vec![1u8];
    want.extend_from_slice(&7u64.to_be_bytes());
    want.extend_from_slice(&17u32.to_be_bytes());
    want.extend_from_slice(b"<message id='1'/>");
    assert_eq!(value, want);
    drop((table, txn));
    let usage = store.offline_usage().unwrap();
    let ann_bytes = "<message id='1'/>".len() + "<message id='3'>☃</message>".len();
    assert_eq!(
        usage,
        [
            (
                "ann".to_owned(),
                OfflineUsage {
                    count: 2,
                    bytes: ann_bytes
                }
            ),
            (
                "anna".to_owned(),
                OfflineUsage {
                    count: 1,
                    bytes: 17
                }
            ),
        ]
    );
    // Delivered up to s1: s3 stays; anna's row is not touched.
    store.offline_stage_delete("ann", s1).unwrap();
    assert_eq!(store.offline_get("ann").unwrap().len(), 1);
    assert_eq!(store.offline_get("anna").unwrap().len(), 1);
    // The sequence survives a restart: never handed out twice.
    drop(store);
    let store = Store::open(&tmp.data(), CACHE).unwrap();
    let s4 = store.offline_stage("ann", 10, "<message id='4'/>").unwrap();
    assert!(s4 > s3);
    store.user_del("ann").unwrap();
    assert!(
        store.offline_get("ann").unwrap().is_empty(),
        "deleted with the account"
    );
    assert_eq!(store.offline_get("anna").unwrap().len(), 1);
    // Bounds checked on write.
    assert!(matches!(
        store.offline_stage("ann", 1, ""),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.offline_stage("", 1, "<m/>"),
        Err(StoreError::Invalid(_))
    ));
}

/// Damaged offline rows are reported as `Corrupt` naming the table and what is wrong,
/// never a panic; the decoder refuses every truncation, trailing bytes, an unknown format,
/// a zero or out-of-range length and invalid UTF-8.
#[test]
fn damaged_offline_records_are_corrupt_not_panics() {
    let tmp = TempDir::new("store-offline-corrupt");
    let store = Store::open(&tmp.data(), CACHE).unwrap();
    let valid = codec::encode_offline(42, "<message/>").unwrap();
    assert_eq!(
        codec::decode_offline(&valid).unwrap(),
        (42, "<message/>".to_owned())
    );
    for cut in 0..valid.len() {
        assert!(
            codec::decode_offline(&valid[..cut]).is_err(),
            "prefix of {cut} bytes"
        );
    }
    let mut long = valid.clone();
    long.push(b' ');
    let mut format = valid.clone();
    format[0] = 2;
    let mut zero = valid[..9].to_vec();
    zero.extend_from_slice(&0u32.to_be_bytes());
    let mut huge = valid[..9].to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut not_utf8 = valid[..13].to_vec();
    not_utf8.extend_from_slice(b"<m>\xff</m>");
    not_utf8[9..13].copy_from_slice(&8u32.to_be_bytes());
    for (bad, why) in [
        (&long, "trailing bytes"),
        (&format, "unknown record format"),
        (&zero, "length out of range"),
        (&huge, "length out of range"),
        (&not_utf8, "not UTF-8"),
    ] {
        let err = codec::decode_offline(bad).unwrap_err();
        assert!(err.0.contains(why), "{why}: {err:?}");
        assert!(codec::offline_stanza_len(bad).is_err(), "{why}");
        write_raw(&store, schema::OFFLINE, &codec::offline_key("ann", 1), bad);
        is_corrupt_with(store.offline_get("ann").unwrap_err(), &["offline", why]);
        is_corrupt_with(store.offline_usage().unwrap_err(), &["offline", why]);
    }
    // A key without its 8-byte sequence, or not UTF-8.
    store.offline_stage_delete("ann", u64::MAX).unwrap();
    write_raw(&store, schema::OFFLINE, b"ann\0\x01", &valid);
    is_corrupt_with(
        store.offline_get("ann").unwrap_err(),
        &["offline", "sequence"],
    );
    store.offline_stage_delete("ann", u64::MAX).unwrap();
    let txn = store.db().unwrap().begin_write().unwrap();
    txn.open_table(schema::OFFLINE)
        .unwrap()
        .retain(|_, _| false)
        .unwrap();
    txn.commit().unwrap();
    write_raw(
        &store,
        schema::OFFLINE,
        &[&b"\xff\0"[..], &[0; 8]].concat(),
        &valid,
    );
    is_corrupt_with(
        store.offline_usage().unwrap_err(),
        &["offline", "not UTF-8"],
    );
    // Arbitrary bytes: errors, never panics.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..5000 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let len = (seed >> 58) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
        if let Some(b) = bytes.first_mut() {
            *b = 1;
        }
        let _ = codec::decode_offline(&bytes);
        let _ = codec::offline_stanza_len(&bytes);
        let _ = codec::split_offline_key(&bytes);
    }
}

/// A schema-2 file (no `offline` table) is migrated to 3 on open: the table is created
/// empty, and everything else stays.
#[test]
fn schema_2_file_migrates_to_3_with_an_empty_offline_table() {
    let tmp = TempDir::new("store-migrate-3");
    {
        let store = Store::open(&tmp.data(), CACHE).unwrap();
        store.user_add("ann", b"a").unwrap();
        put(&store, "ann", "bob@x", Subscription::To);
    }
    {
        let db = redb::Database::open(tmp.data().join(DB_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(schema::OFFLINE).unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_SCHEMA_VERSION, &2u32.to_be_bytes()[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&tmp.data(), CACHE).unwrap();
    assert!(store.offline_usage().unwrap().is_empty());
    assert_eq!(store.roster_get("ann").unwrap().len(), 1);
    store.offline_stage("ann", 1, "<message/>").unwrap();
    assert_eq!(store.offline_get("ann").unwrap().len(), 1);
    let txn = store.db().unwrap().begin_read().unwrap();
    let v = txn
        .open_table(META)
        .unwrap()
        .get(META_SCHEMA_VERSION)
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    assert_eq!(v, 3u32.to_be_bytes());
}

/// A redb backend over a real file whose writes, length changes and syncs fail with
/// ENOSPC while `fail` is set (see `Store::open_with_faults`).
#[derive(Debug)]
pub(crate) struct FaultyBackend {
    pub(crate) inner: redb::backends::FileBackend,
    pub(crate) fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FaultyBackend {
    fn check(&self) -> Result<(), std::io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            // ENOSPC: `ErrorKind::StorageFull`, which the store reports as `Full`.
            return Err(std::io::Error::from_raw_os_error(28));
        }
        Ok(())
    }
}

impl redb::StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        self.inner.read(offset, len)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.sync_data(eventual)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

/// The fault-injecting backend: a write while it fails reports `Full`, nothing of it is
/// on disk after reopening, and the rows written before are intact.
#[test]
fn failing_backend_reports_full_and_keeps_earlier_rows() {
    let (dir, _fail, store) = full_after_ann("store-faulty");
    drop(store);
    let store = Store::open(&dir.data(), CACHE).unwrap();
    assert_eq!(store.user_list().unwrap(), ["ann"]);
}
