-- Prosody 0.12 for benches/compare.sh (@DIR@ and @PORT@ are substituted by the script).
-- Lifts: mod_limits is not loaded (no c2s/s2s rate limits), no stanza size cap below 1 MiB,
-- pubsub keeps up to 1000 items per node; accounts are internal_plain files written by the
-- script (SCRAM-SHA-1 is derived from them at login). XEP-0198 (mod_smacks, in core since
-- 0.12) is loaded with its defaults: hibernation 600 s, 500 stanzas queued per session.
run_as_root = true
admins = { @ADMINS@ }
pidfile = "@DIR@/prosody.pid"
data_path = "@DIR@/data"
log = { warn = "@DIR@/prosody.log" }
interfaces = { "127.0.0.1" }
c2s_ports = { @PORT@ }
c2s_direct_tls_ports = { }
s2s_ports = { }
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping", "presence", "message", "iq", "smacks" }
modules_disabled = { "s2s", "offline", "c2s_timeout" }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
c2s_stanza_size_limit = 1048576
c2s_close_timeout = 5
certificates = "@DIR@/certs"
VirtualHost "localhost"
  ssl = { certificate = "@DIR@/cert.pem"; key = "@DIR@/key.pem"; }
Component "pubsub.localhost" "pubsub"
  pubsub_max_items = 1000
  autocreate_on_publish = true
