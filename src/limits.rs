//! Every resource bound of the daemon, in one place (`[limits]` in the config file).
//!
//! This module owns the [`Limits`] struct: its defaults, the worst-case memory each bound
//! allows, and the range check ([`Limits::validate`]) that keeps every value usable. It does
//! not enforce anything itself: the framer, the session state machine, the connection task and
//! the core read their bound from here and apply the overflow policy named on each field.
//!
//! # Memory math
//!
//! Worst case for one client connection with the defaults (64-bit target):
//!
//! | what | bound | worst case |
//! |---|---|---|
//! | framer buffer (one incomplete top-level element) | `max_stanza_bytes` | 64 KiB |
//! | outbox (queued outgoing stanzas, byte-accounted) | `outbox_max_bytes` | 256 KiB |
//! | outbox bookkeeping (one entry per queued stanza, about 32 B) | `outbox_max_stanzas` | 8 KiB |
//! | TLS record buffers (rustls, estimate) | fixed | about 40 KiB |
//! | session state (JIDs, stream ids, counters; estimate) | fixed | about 4 KiB |
//! | **total per connection** | | **about 372 KiB** |
//!
//! With `max_connections = 1024` this is about 372 MiB in the worst case, where every client
//! at once holds an almost complete maximum-size stanza and has a full outbox. An idle
//! connection costs a few KiB. Notification payloads are serialised once and shared between
//! outboxes, but each outbox counts the full size of every stanza it holds, so the real memory
//! is at most the accounted bytes.
//!
//! Before authentication (anyone can open such connections) the framer buffer is bounded by
//! `preauth_max_stanza_bytes` (8 KiB) per connection and by `preauth_buffer_bytes` (1 MiB)
//! for all of them together; at most `preauth_per_address` (16) of them per source address
//! and `max_connections` minus `authenticated_reserve_percent` (10 %) in all. So the
//! unauthenticated worst case is about 1 MiB plus 44 KiB (TLS, session) per such
//! connection. Password checks (PBKDF2) run on the blocking pool, at most `auth_queue` (4)
//! at once; failed logins are remembered for at most `auth_throttle_entries` (1024)
//! addresses, about 128 B each.
//!
//! Global bounds, not multiplied by connections (the defaults in parentheses):
//!
//! | what | bound | worst case |
//! |---|---|---|
//! | pre-auth framer buffers, all together (also inside the per-connection framer row) | `preauth_buffer_bytes` | 1 MiB |
//! | the one read buffer | `read_chunk_bytes` | 16 KiB |
//! | one stanza being parsed | 2 × `max_stanza_bytes` | 128 KiB |
//! | held pub-sub output and outbox backlogs | 2 × `pubsub_backlog_bytes` | 16 MiB |
//! | deferred pub-sub requests | `pubsub_deferred_bytes` (and `pubsub_deferred_requests`) | 4 MiB |
//! | group-commit batches, one pending and one being written | 2 × `commit_batch_bytes` (and `commit_batch_ops`) | 16 MiB |
//! | deferred roster requests | `roster_deferred_bytes` (and `roster_deferred_requests`) | 1 MiB |
//! | failed-login throttle table | `auth_throttle_entries` × 128 B | 128 KiB |
//! | password checks under way | `auth_queue` × 1.1 KiB | 4.4 KiB |
//! | caps cache | `caps_cache_entries` × (100 B + `caps_max_interests` × 120 B) | 1.9 MiB |
//! | caps queries under way; tracked resources | `caps_max_pending` × 150 B; `max_connections` × 200 B | 9.4 KiB; 200 KiB |
//! | pub-sub nodes and their cached last items | `pubsub_max_nodes` × (1 KiB + `pubsub_max_item_bytes`) | 65 MiB |
//! | item indexes | `pubsub_max_nodes` × `pubsub_max_items_per_node` × 64 B | 62.5 MiB |
//! | subscriptions | `pubsub_max_nodes` × `pubsub_max_subscriptions_per_node` × 100 B | 100 MiB |
//! | collection graph | `pubsub_max_nodes` × `pubsub_max_parents` × 32 B | 256 KiB |
//! | association whitelists | `pubsub_max_nodes` × `pubsub_max_whitelist` × 64 B | 16 MiB |
//! | one reply page being built | `pubsub_max_page_items` × 100 B + `outbox_max_bytes` / 2 | 226 KiB |
//! | one collection items merge | `collection_max_items` × 48 B | 469 KiB |
//! | database page cache | `store.cache_bytes` | 4 MiB |
//! | offline messages being delivered (outbox backlogs) | `offline_max_bytes` | 4 MiB |
//!
//! [`Limits::memory_budget`] computes these rows and the per-connection ones times
//! `max_connections`; `kinglet check-config` prints them, and the XEP-0198 rows of `[c2s]`
//! (`Config::memory_budget`), with their total (about 705 MiB with the defaults) next to
//! the memory limit of the service. Not counted there: the
//! rosters of online accounts (below), the offline-message count of each account that has
//! stored messages (about 64 B plus the username each; the messages stay on disk) and the
//! code and fixed state of the process.
//! `directed_presence_max` (JIDs per session), `subscriptions_per_jid`,
//! `pep_cache_payload_bytes` (at most `pubsub_max_item_bytes`), `caps_max_attr_bytes`,
//! `max_header_bytes` and `max_auth_failures` bound shapes within the rows above.
//! Lengths fixed by a protocol or the on-disk format (JID parts, node and item ids, SCRAM
//! messages, roster names) stay constants where they are checked.
//!
//! Sizing for small devices: the per-connection worst case is roughly
//! `max_connections * (max_stanza_bytes + outbox_max_bytes + 52 KiB)`. On a router with 64 MiB
//! of RAM, `max_connections = 64` keeps the worst case near 23 MiB; on 128 MiB, 128 connections
//! stay near 47 MiB.
//!
//! Transient costs not multiplied by connections: one parsed stanza at a time on the single
//! protocol thread (about twice `max_stanza_bytes`), bounded in shape by `max_xml_depth` and
//! `max_xml_attrs`; one pub-sub reply page at a time (at most `pubsub_max_page_items`
//! entries, its text within half of `outbox_max_bytes`). Pub-sub output waiting for
//! the disk or for readers that have no room for it yet (outbox backlogs) is shared by
//! all connections: `pubsub_backlog_bytes` (8 MiB), up to about twice that in a burst.
//! Per account, the roster holds at most `max_roster_items` entries (about 200 B each
//! typically, up to about 6.4 KiB with maximum-length JIDs and many groups), in memory
//! while the account is online: 100 KiB to 3.2 MiB per full roster at the default 500,
//! 20 MiB to 640 MiB at the maximum 100000.

use serde::{Deserialize, Serialize};

/// Smallest accepted `max_stanza_bytes`: below this ordinary clients (disco results, vCards,
/// form submissions) stop working.
pub const MIN_STANZA_BYTES: usize = 4096;
/// Largest accepted `max_stanza_bytes` (16 MiB): anything larger is not a pubsub item.
pub const MAX_STANZA_BYTES: usize = 16 * 1024 * 1024;
/// Largest accepted `max_xml_depth`: the XML framer's compile-time depth cap (it bounds
/// the recursion of tree walks), so the configured value is never silently clamped.
pub const MAX_XML_DEPTH: usize = crate::xml::framer::MAX_DEPTH_CAP;
/// Largest accepted timeout or interval, in seconds (7 days). Keeps `Instant + Duration`
/// far away from overflow on every platform.
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// All resource bounds of the daemon (`[limits]` section of the configuration file).
///
/// Every field has a default (see [`Limits::default`]); a configuration file only lists the
/// ones it changes. Exceeding a bound always yields the protocol's error (stream error,
/// stanza error or a refused connection), never an unbounded allocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest top-level stream element (stanza or nonza) accepted from a client, in bytes.
    /// Default 65536. Advertised as XEP-0478 `max-bytes`. Overflow: stream error
    /// `policy-violation`. Memory: the framer may hold this many bytes per connection
    /// (64 KiB at the default), plus about twice this while one stanza is parsed.
    /// Accepted range 4096..=16777216.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting accepted inside one stanza. Default 32. Overflow: stream error
    /// `policy-violation`. Memory: one small stack entry per level while parsing (under 1 KiB
    /// at the default). Accepted range 8..=128 (128 is the framer's compile-time cap).
    pub max_xml_depth: usize,
    /// Most attributes accepted on one element. Default 32. Overflow: stream error
    /// `policy-violation`. Memory: transient, bounded by `max_stanza_bytes`.
    /// Accepted range 8..=256.
    pub max_xml_attrs: usize,
    /// Most simultaneous client connections. Default 1024. Overflow: a new connection is
    /// accepted and closed at once (it is counted when accepted, before its task runs, so a
    /// burst cannot overshoot; unauthenticated connections get at most this minus the
    /// `authenticated_reserve_percent` reserve). Memory: multiplies the per-connection worst case (about
    /// 372 KiB with the defaults, see the module documentation). Accepted range 1..=1048576.
    pub max_connections: usize,
    /// Most stanzas queued for one connection that the client has not read yet. Default 256.
    /// Overflow: the slow consumer is closed with stream error `policy-violation`.
    /// Memory: about 32 B of bookkeeping per entry (8 KiB at the default) in addition to the
    /// bytes counted by `outbox_max_bytes`. Accepted range 1..=1048576.
    pub outbox_max_stanzas: usize,
    /// Most bytes queued for one connection that the client has not read yet. Default 262144.
    /// Overflow: the slow consumer is closed with stream error `policy-violation`.
    /// Memory: up to this many bytes per connection (256 KiB at the default). Must be at
    /// least twice `max_stanza_bytes` so a notification carrying a maximum-size item fits.
    /// Accepted range 2 * max_stanza_bytes..=1073741824.
    pub outbox_max_bytes: usize,
    /// Seconds a new connection has to authenticate and bind a resource. Default 30.
    /// Overflow: stream error `connection-timeout`. No memory cost; it bounds how long an
    /// unauthenticated connection holds its buffers. Accepted range 1..=604800.
    pub negotiation_timeout_secs: u64,
    /// Seconds of silence from a client after which the server probes it (XEP-0199 ping or
    /// whitespace keepalive). Default 240; 0 disables the probe. No memory cost.
    /// Accepted range 0..=604800, and below `idle_timeout_secs` unless 0.
    pub idle_ping_secs: u64,
    /// Seconds of silence from a client after which the connection is closed. Default 360.
    /// Advertised as XEP-0478 `idle-seconds`. Overflow: stream error `connection-timeout`.
    /// No memory cost. Accepted range 1..=604800.
    pub idle_timeout_secs: u64,
    /// Seconds a write to a client may stay blocked before the connection is dropped.
    /// Default 30. No memory cost; it bounds how long a stuck peer pins its outbox.
    /// Accepted range 1..=604800.
    pub write_timeout_secs: u64,
    /// Most simultaneously bound resources (sessions) of one account. Default 16. Overflow:
    /// the bind is refused with stanza error `resource-constraint`. Memory: each session is a
    /// connection and counted there. Accepted range 1..=65536.
    pub max_resources_per_account: usize,
    /// Most roster items one account may store (RFC 6121); the store enforces it. Default
    /// 500. Overflow: a roster set that adds an item, and a subscription request that would
    /// add a row to a full roster, fail with `not-allowed` and a text naming the limit.
    /// Memory and disk: about 200 B per item typically, up to about 6.4 KiB with
    /// maximum-length JIDs, names and groups; the whole roster is held in memory while its
    /// user is online (and once while it is read at login), so a full roster costs about
    /// 100 KiB typical / 3.2 MiB worst case at the default, and 20 MiB typical / 640 MiB
    /// worst case at the maximum. Adding an item counts the rows on disk (a scan of the
    /// roster). Accepted range 1..=100000 (`store::MAX_ROSTER_ITEMS`).
    pub max_roster_items: usize,
    /// XEP-0114 component mode: most remote resources whose presence the service
    /// remembers (for presence-based delivery). Default 4096. Overflow: a new resource's
    /// presence is not recorded (logged), so presence-based delivery skips it. Memory:
    /// about 200 B per resource, 800 KiB at the default. Accepted range 1..=1000000.
    pub component_max_presences: usize,
    /// Most pub-sub nodes on the service. Default 1024. Overflow: create fails with
    /// `not-allowed` + `max-nodes-exceeded`. Memory: a node costs about 1 KiB plus its
    /// configuration strings, subscriptions and item index (below); 1 MiB at the default for
    /// empty nodes. Accepted range 1..=1000000.
    pub pubsub_max_nodes: usize,
    /// Largest `pubsub#max_items` a node may have (what `max` means). Default 1000.
    /// Overflow: a larger configured value is refused with `not-acceptable`. Memory: the item
    /// index keeps about 48 B plus the item id per stored item (about 64 KiB per full node at
    /// the default); payloads stay on disk. Accepted range 1..=1000000.
    pub pubsub_max_items_per_node: usize,
    /// Largest item payload accepted, in bytes (and the ceiling of `pubsub#max_payload_size`).
    /// Default 65536 (the stanza limit caps it anyway). Overflow: publish fails with
    /// `not-acceptable` + `payload-too-big`. Memory: one payload per node is cached (the
    /// last item), so at most `pubsub_max_nodes` times this. Accepted range 1..=16777216.
    pub pubsub_max_item_bytes: usize,
    /// Most subscriptions per node. Default 1024. Overflow: subscribe fails with
    /// `not-allowed` + `too-many-subscriptions`. Memory: about 100 B per subscription
    /// (100 KiB per full node at the default). Accepted range 1..=1048576.
    pub pubsub_max_subscriptions_per_node: usize,
    /// Most PEP (XEP-0163) nodes of one account. Default 64. Overflow: create and
    /// auto-create fail with `not-allowed` + `max-nodes-exceeded`. PEP nodes count against
    /// `pubsub_max_nodes` too. Memory: about 1 KiB per node plus its cached last item.
    /// Accepted range 1..=4096.
    pub pep_max_nodes_per_account: usize,
    /// What `max` means for `pubsub#max_items` of a PEP node, and its ceiling. Default
    /// 1000 (bookmarks keep one item per room). Memory: the item index, about 48 B plus
    /// the item id per item; payloads stay on disk. Accepted range
    /// 1..=`pubsub_max_items_per_node`.
    pub pep_max_items_per_node: usize,
    /// Most entries in one XEP-0059 page of the pub-sub service: items retrieval (leaf and
    /// collection) and disco#items (nodes, item ids). Default 1000 (a full node at the
    /// default `pubsub_max_items_per_node`). Overflow: a larger (or absent) RSM `<max/>` is
    /// clamped, which XEP-0059 allows; the reply's `<set/>` (`count`, `last`) lets the
    /// client page on. Memory: transient, one request at a time: about 100 B of
    /// bookkeeping per entry of the page (a loaded item's struct, or a listing row's
    /// reference; about 100 KiB at the default), plus the entries' reply text, which never
    /// exceeds half of `outbox_max_bytes` whatever this value. Accepted range 1..=1048576.
    pub pubsub_max_page_items: usize,
    /// Most bytes of pub-sub output (replies and notifications, text plus 64 B per entry)
    /// waiting, all sessions together: held until their group commit is on disk, or
    /// released but not yet taken by readers that have no room for them now (each outbox's
    /// backlog). Default 8388608 (8 MiB). Overflow: new pub-sub requests wait, unhandled,
    /// and the sessions that sent them are not read until the readers catch up (a reader
    /// that keeps reading is never closed for it; one whose writes stay blocked for
    /// `write_timeout_secs` is, and its backlog is dropped). Memory: up to about twice this
    /// (one commit can release a full bound while the backlogs are at it), plus the
    /// fan-out of one request. Accepted range 65536..=1073741824.
    pub pubsub_backlog_bytes: usize,
    /// Most SASL PLAIN password checks (one PBKDF2 run each, on the blocking thread pool, never
    /// on the event loop) running or waiting at once, all connections together. Default 4
    /// (about twice the cores of a small router). Overflow: the attempt fails at once with
    /// SASL `temporary-auth-failure` (the client may retry) and a rate-limited log line.
    /// Memory: one password (at most 1 KiB) and one credential record (about 100 B) per
    /// check, plus a blocking-pool thread each (a small resident stack). Accepted range
    /// 1..=1024.
    pub auth_queue: usize,
    /// Most source addresses (IPv4 address, or IPv6 /64) whose failed logins are remembered
    /// for throttling. Default 1024. Overflow: the address whose last failure is oldest is
    /// forgotten. Memory: about 128 B per entry (128 KiB at the default). Accepted range
    /// 1..=1048576.
    pub auth_throttle_entries: usize,
    /// Delay after the first failed login (wrong password or unknown account, PLAIN or
    /// SCRAM) from a source address, in milliseconds; each further failure doubles it, up to
    /// `auth_throttle_max_ms`, and the delays of one address add up (at most 60 s ahead).
    /// Until it has passed, no unauthenticated input from that address is read. The failure
    /// count halves for every 60 s without a failure; a successful (non-anonymous) login
    /// clears it. Default 250; 0 disables throttling. No memory cost beyond
    /// `auth_throttle_entries`. Accepted range 0..=60000.
    pub auth_throttle_base_ms: u64,
    /// Longest delay one failed login adds for its source address, in milliseconds.
    /// Default 4000. Accepted range `auth_throttle_base_ms`..=60000.
    pub auth_throttle_max_ms: u64,
    /// Most unauthenticated connections from one source address (IPv4 address, or IPv6
    /// /64) at once. Default 16. Overflow: the new connection is closed at once (one
    /// summary log line per minute). Memory: bounds what one host can pin before
    /// authenticating: `preauth_per_address * preauth_max_stanza_bytes` of buffers (128 KiB
    /// at the defaults). Accepted range 1..=1048576.
    pub preauth_per_address: usize,
    /// Largest top-level element accepted before authentication (SASL success), in bytes;
    /// the stream switches to `max_stanza_bytes` after it (and advertises each in XEP-0478
    /// `max-bytes`). Default 8192: the longest SASL PLAIN or SCRAM message fits. The
    /// effective value is at most `max_stanza_bytes`. Overflow: stream error
    /// `policy-violation`. Memory: the framer of an unauthenticated connection holds at
    /// most this plus one read (16 KiB). Accepted range 4096..=16777216.
    pub preauth_max_stanza_bytes: usize,
    /// Most bytes buffered by all unauthenticated connections together (their incomplete
    /// elements). Default 1048576 (1 MiB). Overflow: the connection whose input went over
    /// the budget is closed with stream error `resource-constraint` (one summary log line
    /// per minute). Memory: this, plus one read (16 KiB) in passing. Accepted range
    /// 65536..=1073741824.
    pub preauth_buffer_bytes: usize,
    /// Share of `max_connections`, in percent, that only authenticated sessions may use:
    /// unauthenticated connections count against `max_connections` minus this reserve (at
    /// least one slot stays open to them). Default 10. Overflow: a new connection is closed
    /// at once (one summary log line per minute). No memory cost. Accepted range 0..=90.
    pub authenticated_reserve_percent: usize,
    /// Most pub-sub requests kept unhandled while the pub-sub output is at
    /// `pubsub_backlog_bytes` (back-pressure, see `pubsub::commit`). Default 1024. Overflow:
    /// the request is refused with `resource-constraint` (type `wait`). Memory: counted in
    /// `pubsub_deferred_bytes`. Accepted range 1..=1048576.
    pub pubsub_deferred_requests: usize,
    /// Most bytes of deferred pub-sub requests (parsed stanzas plus 64 B each), all sessions
    /// together. Default 4194304 (4 MiB). Overflow: as `pubsub_deferred_requests`. Memory:
    /// up to this many bytes. Accepted range 65536..=1073741824.
    pub pubsub_deferred_bytes: usize,
    /// Most ops (pub-sub, roster and offline-message changes) in one pending group-commit
    /// batch. Default 16384. Overflow: the change is refused with `resource-constraint`
    /// (type `wait`), unless the batch is empty (one request's changes are always
    /// accepted). Memory: counted in `commit_batch_bytes`. Accepted range 64..=1048576.
    pub commit_batch_ops: usize,
    /// Most bytes (encoded records plus 64 B per op) in one pending group-commit batch.
    /// Default 8388608 (8 MiB). Overflow: as `commit_batch_ops`. Memory: one batch pending
    /// and one being written, so up to twice this (16 MiB at the default). Accepted range
    /// 65536..=1073741824.
    pub commit_batch_bytes: usize,
    /// Most roster requests kept unhandled while an earlier roster change waits for its
    /// commit, all sessions together. Default 256. Overflow: the request is refused with
    /// `resource-constraint` (type `wait`). Memory: counted in `roster_deferred_bytes`.
    /// Accepted range 1..=1048576.
    pub roster_deferred_requests: usize,
    /// Most bytes of deferred roster requests (parsed stanzas). Default 1048576 (1 MiB).
    /// Overflow: as `roster_deferred_requests`. Memory: up to this many bytes. Accepted range
    /// 65536..=1073741824.
    pub roster_deferred_bytes: usize,
    /// Most JIDs one resource may have sent directed presence to (RFC 6121 §4.6), which
    /// get its unavailable presence when it goes offline. Default 16. Overflow: the oldest
    /// target is forgotten. Memory: one JID (about 40 B, at most 3 KiB) per entry per
    /// session (under 1 KiB typically at the default), counted in the per-connection fixed
    /// estimate.
    /// Accepted range 1..=1024.
    pub directed_presence_max: usize,
    /// Largest payload of a PEP (XEP-0163) last item kept in memory, in bytes; larger ones
    /// (avatars) are read from the store when sent. Default 4096. Overflow: not cached (a
    /// disk read per delivery). Memory: at most `pubsub_max_nodes` times this for the cached
    /// PEP last items (4 MiB at the defaults). Accepted range 0..=16777216.
    pub pep_cache_payload_bytes: usize,
    /// Most items an items request on a XEP-0248 collection merges (newest first) before
    /// RSM paging. Default 10000. Overflow: older items are left out of the aggregate.
    /// Memory: transient, one request at a time, about 48 B per item (480 KiB at the
    /// default). Accepted range 1..=1000000.
    pub collection_max_items: usize,
    /// Most parents (collections) one pub-sub node may have (XEP-0248). Default 8.
    /// Overflow: an association beyond it fails with `not-acceptable`. Memory: about 32 B
    /// per edge of the collection graph, so at most `pubsub_max_nodes` times 8 edges
    /// (256 KiB at the defaults). Accepted range 1..=64.
    pub pubsub_max_parents: usize,
    /// Most JIDs in a collection's `pubsub#children_association_whitelist`. Default 256.
    /// Overflow: the configuration is refused with `not-acceptable` (a bad form). Memory:
    /// one bare JID (about 64 B with a typical JID, at most 2 KiB) per entry, per
    /// collection (16 KiB per full whitelist at the default). Accepted range
    /// 1..=65536.
    pub pubsub_max_whitelist: usize,
    /// Most subscriptions one JID may hold on one node (`multi-subscribe`). Default 8.
    /// Overflow: subscribe fails with `policy-violation` + `too-many-subscriptions`.
    /// Memory: counted in `pubsub_max_subscriptions_per_node`. Accepted range 1..=1024.
    pub subscriptions_per_jid: usize,
    /// Most cached XEP-0115 `(hash, ver)` entries; least recently used evicted. Default 256.
    /// Memory: about 100 B plus 16 B per interest and the interned node names per entry
    /// (about 1.2 KiB each in the worst case of `caps_max_interests` names; 300 KiB at the
    /// default). Accepted range 1..=1048576.
    pub caps_cache_entries: usize,
    /// Most XEP-0115 disco#info queries under way. Default 64. Overflow: no query is sent;
    /// the resource waits for its next presence. Memory: about 150 B each. Accepted range
    /// 1..=65536.
    pub caps_max_pending: usize,
    /// Most `+notify` interests kept per caps `ver`; a real client advertises 5 to 25.
    /// Default 64. Overflow: extra interests are dropped (sorted order kept). Memory: 16 B
    /// per interest plus its interned name, per cache entry and per tracked resource.
    /// Accepted range 1..=1024.
    pub caps_max_interests: usize,
    /// Longest caps `hash`, `node` or `ver` attribute accepted, in bytes (a SHA-1 `ver` is
    /// 28). Default 256. Overflow: the presence counts as carrying no caps. Memory: bounds
    /// the key of each cache entry. Accepted range 64..=4096.
    pub caps_max_attr_bytes: usize,
    /// Failed SASL attempts on one stream before it is closed with `policy-violation`
    /// (RFC 6120 §6.4.5 asks for at least 2). Default 3. No memory cost. Accepted range
    /// 2..=255.
    pub max_auth_failures: u32,
    /// Size of the one read buffer shared by all connections (a socket read never takes
    /// more at once), in bytes. Default 16384. Overflow: none, a longer input takes several
    /// reads. Memory: this many bytes once per process (a framer may hold one read beyond
    /// its limit in passing). Accepted range 1024..=1048576.
    pub read_chunk_bytes: usize,
    /// Largest stream header (and XML declaration) accepted, in bytes. Default 4096.
    /// Overflow: stream error `policy-violation`. Memory: bounds the framer buffer before
    /// the header is complete (below the stanza limits). Accepted range 512..=65536.
    pub max_header_bytes: usize,
    /// Most messages kept for one account while it has no available resource (XEP-0160
    /// offline storage: `chat` and `normal` messages to its bare JID, and notifications of
    /// pub-sub nodes with `pubsub#notification_type = normal`). Default 100; 0 turns offline
    /// storage off (such messages bounce with `service-unavailable`, as without it).
    /// Overflow: the message is bounced with `service-unavailable` ("the recipient's
    /// offline storage is full"; a notification is dropped), with a rate-limited log line.
    /// Memory: none per message (they stay on disk; see `offline_max_bytes`); the router
    /// keeps a count per account that has messages (about 64 B plus the username).
    /// Accepted range 0..=65536.
    pub offline_max_per_account: usize,
    /// Most bytes of stored stanzas one account may have waiting. Default 262144
    /// (256 KiB). Overflow: as `offline_max_per_account`. Memory: none (on disk); they are
    /// read and delivered at once at the account's next available presence, through the
    /// outbox's pub-sub backlog (never closing the session). Accepted range
    /// 4096..=`offline_max_bytes` (and at most 1073741824).
    pub offline_max_bytes_per_account: usize,
    /// Most bytes of stored stanzas, all accounts together. Default 4194304 (4 MiB).
    /// Overflow: as `offline_max_per_account`. Disk: the stanzas plus about 40 B of key and
    /// record each, and redb's copy-on-write slack. Memory: while stored messages are
    /// delivered they wait in the outboxes' backlogs until their readers take them, at
    /// worst all of them at once (every account coming online together): up to this many
    /// bytes (4 MiB at the default). Accepted range 65536..=1099511627776 (1 TiB).
    pub offline_max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 65536,
            max_xml_depth: 32,
            max_xml_attrs: 32,
            max_connections: 1024,
            outbox_max_stanzas: 256,
            outbox_max_bytes: 262_144,
            negotiation_timeout_secs: 30,
            idle_ping_secs: 240,
            idle_timeout_secs: 360,
            write_timeout_secs: 30,
            max_resources_per_account: 16,
            max_roster_items: 500,
            component_max_presences: 4096,
            pubsub_max_nodes: 1024,
            pubsub_max_items_per_node: 1000,
            pubsub_max_item_bytes: 65536,
            pubsub_max_subscriptions_per_node: 1024,
            pep_max_nodes_per_account: 64,
            pep_max_items_per_node: 1000,
            pubsub_max_page_items: 1000,
            pubsub_backlog_bytes: 8 * 1024 * 1024,
            auth_queue: 4,
            auth_throttle_entries: 1024,
            auth_throttle_base_ms: 250,
            auth_throttle_max_ms: 4000,
            preauth_per_address: 16,
            preauth_max_stanza_bytes: 8192,
            preauth_buffer_bytes: 1024 * 1024,
            authenticated_reserve_percent: 10,
            pubsub_deferred_requests: 1024,
            pubsub_deferred_bytes: 4 * 1024 * 1024,
            commit_batch_ops: 16_384,
            commit_batch_bytes: 8 * 1024 * 1024,
            roster_deferred_requests: 256,
            roster_deferred_bytes: 1024 * 1024,
            directed_presence_max: 16,
            pep_cache_payload_bytes: 4096,
            collection_max_items: 10_000,
            pubsub_max_parents: 8,
            pubsub_max_whitelist: 256,
            subscriptions_per_jid: 8,
            caps_cache_entries: 256,
            caps_max_pending: 64,
            caps_max_interests: 64,
            caps_max_attr_bytes: 256,
            max_auth_failures: 3,
            read_chunk_bytes: 16 * 1024,
            max_header_bytes: 4096,
            offline_max_per_account: 100,
            offline_max_bytes_per_account: 256 * 1024,
            offline_max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Checks that `value` lies in `lo..=hi`; the error names `limits.<key>`.
fn in_range<T>(key: &str, value: T, lo: T, hi: T) -> Result<(), (String, String)>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if value < lo || value > hi {
        return Err((
            format!("limits.{key}"),
            format!("{value} is out of range: must be between {lo} and {hi}"),
        ));
    }
    Ok(())
}

impl Limits {
    /// Checks every bound for a usable value.
    ///
    /// # Errors
    ///
    /// Returns the key path of the first offending field (for example
    /// `"limits.max_stanza_bytes"`) and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        const MAX_COUNT: usize = 1 << 20;
        in_range(
            "max_stanza_bytes",
            self.max_stanza_bytes,
            MIN_STANZA_BYTES,
            MAX_STANZA_BYTES,
        )?;
        in_range("max_xml_depth", self.max_xml_depth, 8, MAX_XML_DEPTH)?;
        in_range("max_xml_attrs", self.max_xml_attrs, 8, 256)?;
        in_range("max_connections", self.max_connections, 1, MAX_COUNT)?;
        in_range("outbox_max_stanzas", self.outbox_max_stanzas, 1, MAX_COUNT)?;
        // A notification carries a published item of up to max_stanza_bytes plus its
        // envelope; the outbox must hold it and more, or every large item closes its readers.
        let min_outbox = self.max_stanza_bytes.saturating_mul(2);
        if self.outbox_max_bytes < min_outbox {
            return Err((
                "limits.outbox_max_bytes".to_owned(),
                format!(
                    "{} is too small: must be at least twice limits.max_stanza_bytes ({min_outbox})",
                    self.outbox_max_bytes
                ),
            ));
        }
        in_range(
            "outbox_max_bytes",
            self.outbox_max_bytes,
            min_outbox,
            1 << 30,
        )?;
        in_range(
            "negotiation_timeout_secs",
            self.negotiation_timeout_secs,
            1,
            MAX_TIMEOUT_SECS,
        )?;
        in_range("idle_ping_secs", self.idle_ping_secs, 0, MAX_TIMEOUT_SECS)?;
        in_range(
            "idle_timeout_secs",
            self.idle_timeout_secs,
            1,
            MAX_TIMEOUT_SECS,
        )?;
        if self.idle_ping_secs != 0 && self.idle_ping_secs >= self.idle_timeout_secs {
            return Err((
                "limits.idle_ping_secs".to_owned(),
                format!(
                    "{} must be below limits.idle_timeout_secs ({}) so the client can answer \
                     the ping before it is disconnected; 0 disables the ping",
                    self.idle_ping_secs, self.idle_timeout_secs
                ),
            ));
        }
        in_range(
            "write_timeout_secs",
            self.write_timeout_secs,
            1,
            MAX_TIMEOUT_SECS,
        )?;
        in_range(
            "max_resources_per_account",
            self.max_resources_per_account,
            1,
            65536,
        )?;
        in_range(
            "max_roster_items",
            self.max_roster_items,
            1,
            crate::store::MAX_ROSTER_ITEMS,
        )?;
        in_range(
            "component_max_presences",
            self.component_max_presences,
            1,
            1_000_000,
        )?;
        in_range("pubsub_max_nodes", self.pubsub_max_nodes, 1, 1_000_000)?;
        in_range(
            "pubsub_max_items_per_node",
            self.pubsub_max_items_per_node,
            1,
            1_000_000,
        )?;
        in_range(
            "pubsub_max_item_bytes",
            self.pubsub_max_item_bytes,
            1,
            MAX_STANZA_BYTES,
        )?;
        in_range(
            "pubsub_max_subscriptions_per_node",
            self.pubsub_max_subscriptions_per_node,
            1,
            MAX_COUNT,
        )?;
        in_range(
            "pep_max_nodes_per_account",
            self.pep_max_nodes_per_account,
            1,
            4096,
        )?;
        in_range(
            "pep_max_items_per_node",
            self.pep_max_items_per_node,
            1,
            self.pubsub_max_items_per_node,
        )?;
        in_range(
            "pubsub_max_page_items",
            self.pubsub_max_page_items,
            1,
            MAX_COUNT,
        )?;
        in_range(
            "pubsub_backlog_bytes",
            self.pubsub_backlog_bytes,
            65536,
            1 << 30,
        )?;
        in_range("auth_queue", self.auth_queue, 1, 1024)?;
        in_range(
            "auth_throttle_entries",
            self.auth_throttle_entries,
            1,
            MAX_COUNT,
        )?;
        in_range(
            "auth_throttle_base_ms",
            self.auth_throttle_base_ms,
            0,
            60_000,
        )?;
        in_range(
            "auth_throttle_max_ms",
            self.auth_throttle_max_ms,
            self.auth_throttle_base_ms,
            60_000,
        )?;
        in_range(
            "preauth_per_address",
            self.preauth_per_address,
            1,
            MAX_COUNT,
        )?;
        in_range(
            "preauth_max_stanza_bytes",
            self.preauth_max_stanza_bytes,
            MIN_STANZA_BYTES,
            MAX_STANZA_BYTES,
        )?;
        in_range(
            "preauth_buffer_bytes",
            self.preauth_buffer_bytes,
            65536,
            1 << 30,
        )?;
        in_range(
            "authenticated_reserve_percent",
            self.authenticated_reserve_percent,
            0,
            90,
        )?;
        in_range(
            "pubsub_deferred_requests",
            self.pubsub_deferred_requests,
            1,
            MAX_COUNT,
        )?;
        in_range(
            "pubsub_deferred_bytes",
            self.pubsub_deferred_bytes,
            65536,
            1 << 30,
        )?;
        in_range("commit_batch_ops", self.commit_batch_ops, 64, MAX_COUNT)?;
        in_range(
            "commit_batch_bytes",
            self.commit_batch_bytes,
            65536,
            1 << 30,
        )?;
        in_range(
            "roster_deferred_requests",
            self.roster_deferred_requests,
            1,
            MAX_COUNT,
        )?;
        in_range(
            "roster_deferred_bytes",
            self.roster_deferred_bytes,
            65536,
            1 << 30,
        )?;
        in_range("directed_presence_max", self.directed_presence_max, 1, 1024)?;
        in_range(
            "pep_cache_payload_bytes",
            self.pep_cache_payload_bytes,
            0,
            MAX_STANZA_BYTES,
        )?;
        in_range(
            "collection_max_items",
            self.collection_max_items,
            1,
            1_000_000,
        )?;
        in_range("pubsub_max_parents", self.pubsub_max_parents, 1, 64)?;
        in_range("pubsub_max_whitelist", self.pubsub_max_whitelist, 1, 65536)?;
        in_range("subscriptions_per_jid", self.subscriptions_per_jid, 1, 1024)?;
        in_range("caps_cache_entries", self.caps_cache_entries, 1, MAX_COUNT)?;
        in_range("caps_max_pending", self.caps_max_pending, 1, 65536)?;
        in_range("caps_max_interests", self.caps_max_interests, 1, 1024)?;
        in_range("caps_max_attr_bytes", self.caps_max_attr_bytes, 64, 4096)?;
        in_range("max_auth_failures", self.max_auth_failures, 2, 255)?;
        in_range("read_chunk_bytes", self.read_chunk_bytes, 1024, 1 << 20)?;
        in_range("max_header_bytes", self.max_header_bytes, 512, 65536)?;
        in_range(
            "offline_max_per_account",
            self.offline_max_per_account,
            0,
            65536,
        )?;
        in_range("offline_max_bytes", self.offline_max_bytes, 65536, 1 << 40)?;
        in_range(
            "offline_max_bytes_per_account",
            self.offline_max_bytes_per_account as u64,
            4096,
            self.offline_max_bytes.min(1 << 30),
        )?;
        Ok(())
    }

    /// The bounds the XML framer enforces on client input.
    pub fn xml_limits(&self) -> crate::xml::XmlLimits {
        crate::xml::XmlLimits {
            max_stanza_bytes: self.max_stanza_bytes,
            max_depth: self.max_xml_depth,
            max_attrs: self.max_xml_attrs,
            max_header_bytes: self.max_header_bytes,
        }
    }

    /// The stanza size limit before authentication: `preauth_max_stanza_bytes`, at most
    /// `max_stanza_bytes`.
    pub fn preauth_stanza_bytes(&self) -> usize {
        self.preauth_max_stanza_bytes.min(self.max_stanza_bytes)
    }

    /// How many connections may be unauthenticated at once: `max_connections` minus the
    /// `authenticated_reserve_percent` reserve, and at least 1.
    pub fn preauth_max_connections(&self) -> usize {
        let reserve = self.max_connections / 100 * self.authenticated_reserve_percent
            + self.max_connections % 100 * self.authenticated_reserve_percent / 100;
        self.max_connections.saturating_sub(reserve).max(1)
    }

    /// Worst-case bytes one connection may pin (framer buffer, outbox, bookkeeping and the
    /// fixed TLS/session estimate of the module documentation).
    pub fn per_connection_worst_case_bytes(&self) -> usize {
        self.max_stanza_bytes
            .saturating_add(self.outbox_max_bytes)
            .saturating_add(
                self.outbox_max_stanzas
                    .saturating_mul(OUTBOX_ENTRY_BYTES as usize),
            )
            .saturating_add(CONNECTION_FIXED_BYTES as usize)
    }

    /// Worst-case bytes all connections together may pin:
    /// `max_connections * per_connection_worst_case_bytes()`.
    pub fn total_worst_case_bytes(&self) -> usize {
        self.max_connections
            .saturating_mul(self.per_connection_worst_case_bytes())
    }

    /// Every global memory bound with its worst case, for `kinglet check-config`: one row
    /// per bound (its configuration key, the bytes, and what they are), so that the total
    /// is [`memory_budget_total`] of the rows. `store_cache_bytes` is `store.cache_bytes`.
    ///
    /// The figures are the estimates of the module documentation ("Memory math"): they
    /// assume every bound full at once, which real traffic does not reach. Not counted:
    /// the rosters of online accounts (see `max_roster_items`), the per-account
    /// offline-message counts (see `offline_max_per_account`) and the code and fixed
    /// state of the process (a few MiB).
    pub fn memory_budget(&self, store_cache_bytes: usize) -> Vec<BudgetRow> {
        let conns = self.max_connections;
        let nodes = self.pubsub_max_nodes;
        let mut t = Rows(Vec::with_capacity(24));
        t.of(
            "limits.max_stanza_bytes",
            conns,
            " connections",
            self.max_stanza_bytes as u64,
            "framer buffers: one incomplete stanza per connection",
        );
        t.of(
            "limits.outbox_max_bytes",
            conns,
            " connections",
            self.outbox_max_bytes as u64,
            "outboxes",
        );
        t.of(
            "limits.outbox_max_stanzas",
            conns,
            " connections",
            self.outbox_max_stanzas as u64 * OUTBOX_ENTRY_BYTES,
            "outbox bookkeeping, 32 B a stanza",
        );
        t.of(
            "limits.max_connections",
            conns,
            " connections",
            CONNECTION_FIXED_BYTES + CAPS_JID_BYTES,
            "TLS buffers, session state, caps entry",
        );
        t.add(
            "limits.preauth_buffer_bytes",
            self.preauth_buffer_bytes,
            "pre-auth buffers, all unauthenticated connections (conservative: also inside \
             the framer row)",
        );
        t.add(
            "limits.read_chunk_bytes",
            self.read_chunk_bytes,
            "the one read buffer",
        );
        t.times(
            "limits.max_stanza_bytes",
            2,
            self.max_stanza_bytes as u64,
            "one stanza being parsed",
        );
        t.times(
            "limits.pubsub_backlog_bytes",
            2,
            self.pubsub_backlog_bytes as u64,
            "held pub-sub output and outbox backlogs, a commit's burst",
        );
        t.add(
            "limits.pubsub_deferred_bytes",
            self.pubsub_deferred_bytes,
            "deferred pub-sub requests",
        );
        t.times(
            "limits.commit_batch_bytes",
            2,
            self.commit_batch_bytes as u64,
            "group-commit batches (one pending, one being written)",
        );
        t.add(
            "limits.roster_deferred_bytes",
            self.roster_deferred_bytes,
            "deferred roster requests",
        );
        // A failed-login throttle entry.
        t.times(
            "limits.auth_throttle_entries",
            self.auth_throttle_entries,
            128,
            "login throttle table",
        );
        // A password check: the password (at most 1 KiB) and the credential record.
        t.times(
            "limits.auth_queue",
            self.auth_queue,
            1024 + 100,
            "password checks under way",
        );
        // A caps cache entry (100 B) and its interests, each with an unshared interned name
        // (120 B, the worst case).
        let caps_entry = 100 + self.caps_max_interests as u64 * 120;
        t.times(
            "limits.caps_cache_entries",
            self.caps_cache_entries,
            caps_entry,
            "caps cache",
        );
        // A caps disco#info query under way.
        t.times(
            "limits.caps_max_pending",
            self.caps_max_pending,
            150,
            "caps queries under way",
        );
        // A pub-sub node's state without its items and subscriptions (1 KiB) and its cached
        // last item.
        let node = 1024 + self.pubsub_max_item_bytes as u64;
        t.of(
            "limits.pubsub_max_nodes",
            nodes,
            " nodes",
            node,
            "pub-sub nodes and their last items",
        );
        // An item index entry (about 48 B plus a short item id).
        let items = self.pubsub_max_items_per_node as u64 * 64;
        t.of(
            "limits.pubsub_max_items_per_node",
            nodes,
            " nodes",
            items,
            "item indexes",
        );
        // A subscription (a typical JID).
        let subs = self.pubsub_max_subscriptions_per_node as u64 * 100;
        t.of(
            "limits.pubsub_max_subscriptions_per_node",
            nodes,
            " nodes",
            subs,
            "subscriptions",
        );
        // An edge of the collection graph (both directions).
        let edges = self.pubsub_max_parents as u64 * 32;
        t.of(
            "limits.pubsub_max_parents",
            nodes,
            " nodes",
            edges,
            "collection graph",
        );
        // A bare JID in an association whitelist (a typical JID).
        let whitelist = self.pubsub_max_whitelist as u64 * 64;
        t.of(
            "limits.pubsub_max_whitelist",
            nodes,
            " nodes",
            whitelist,
            "association whitelists",
        );
        // One entry of a pub-sub reply page being built (100 B), and half an outbox of text.
        let page = (self.pubsub_max_page_items as u64 * 100)
            .saturating_add(self.outbox_max_bytes as u64 / 2);
        t.add(
            "limits.pubsub_max_page_items",
            page as usize,
            "one pub-sub reply page being built",
        );
        // One entry of a collection items merge.
        t.times(
            "limits.collection_max_items",
            self.collection_max_items,
            48,
            "one collection items merge",
        );
        t.add(
            "store.cache_bytes",
            store_cache_bytes,
            "database page cache",
        );
        t.add(
            "limits.offline_max_bytes",
            usize::try_from(self.offline_max_bytes).unwrap_or(usize::MAX),
            "offline messages being delivered, in outbox backlogs",
        );
        t.0
    }
}

/// The rows of a memory table being built ([`Limits::memory_budget`], and the rows
/// `crate::config::Config::memory_budget` adds for bounds outside `[limits]`).
pub(crate) struct Rows(pub(crate) Vec<BudgetRow>);

impl Rows {
    /// A bound of `bytes`.
    fn add(&mut self, key: &'static str, bytes: usize, what: &str) {
        let (bytes, what) = (bytes as u64, what.to_owned());
        self.0.push(BudgetRow { key, bytes, what });
    }

    /// `count` things of `each` bytes (saturating).
    pub(crate) fn times(&mut self, key: &'static str, count: usize, each: u64, what: &str) {
        self.of(key, count, "", each, what);
    }

    /// `count` `things` (`connections`, `nodes`) of `each` bytes (saturating).
    pub(crate) fn of(
        &mut self,
        key: &'static str,
        count: usize,
        things: &str,
        each: u64,
        what: &str,
    ) {
        let bytes = (count as u64).saturating_mul(each);
        let what = format!("{what} ({count}{things} x {each} B)");
        self.0.push(BudgetRow { key, bytes, what });
    }
}

/// One row of [`Limits::memory_budget`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetRow {
    /// The configuration key that bounds it (`limits.outbox_max_bytes`, `store.cache_bytes`).
    pub key: &'static str,
    /// Worst-case bytes (saturating: never wraps, even on a 32-bit target).
    pub bytes: u64,
    /// What the bytes are, and how they are computed.
    pub what: String,
}

/// The sum of `rows` (saturating).
pub fn memory_budget_total(rows: &[BudgetRow]) -> u64 {
    rows.iter().fold(0u64, |t, r| t.saturating_add(r.bytes))
}

/// Per-connection bytes not bounded by a key: TLS record buffers (rustls, about 40 KiB)
/// and session state (JIDs, stream ids, counters, directed presences; about 4 KiB).
pub const CONNECTION_FIXED_BYTES: u64 = 44 * 1024;
/// Bookkeeping per queued outbox stanza.
const OUTBOX_ENTRY_BYTES: u64 = 32;
/// A tracked full JID in the caps table (one per connection).
const CAPS_JID_BYTES: u64 = 200;

#[cfg(test)]
mod tests;
