#!/usr/bin/env python3
"""Minimal XMPP client for the cross smoke test (standard library only).

    smoke_client.py PLAIN_PORT TLS_PORT CA_FILE first|again

Logs in as alice over direct TLS (XEP-0368, certificate checked against CA_FILE) and as bob
over plain TCP on loopback, both with SASL PLAIN, binds a resource for each, sends a message
each way and checks it arrives with the sender's full JID. With TLS_PORT 0 both sessions use
plain TCP. Then publish-subscribe (XEP-0060) at pubsub.localhost:
  first: alice creates node 'smoke', bob subscribes, alice publishes item 'i1' and bob must
         receive its notification (payload included);
  again: (after a restart) the node, item 'i1' and bob's subscription came back from the
         store: bob retrieves 'i1', alice publishes 'i2' and bob receives its notification.
Exits 0 on success, 1 with a message on the first failure.
"""

import base64
import re
import socket
import ssl
import sys
import time

TIMEOUT = 30.0  # qemu-user is slow at SCRAM/TLS start-up; be generous


class Session:
    def __init__(self, port, ca=None):
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        if ca:
            ctx = ssl.create_default_context(cafile=ca)
            raw = ctx.wrap_socket(raw, server_hostname="localhost")
        self.sock = raw
        self.buf = ""

    def send(self, text):
        self.sock.sendall(text.encode())

    def wait(self, pattern):
        """Read until `pattern` (a regex) matches the buffer; return the match, eat the buffer
        up to its end."""
        deadline = time.monotonic() + TIMEOUT
        rx = re.compile(pattern, re.S)
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            if time.monotonic() > deadline:
                raise SystemExit("timed out waiting for %r; got %r" % (pattern, self.buf[-500:]))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit("server closed while waiting for %r; got %r" % (pattern, self.buf[-500:]))
            self.buf += chunk.decode("utf-8", "replace")

    def open_stream(self):
        self.send("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
                  "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
        return self.wait(r"<stream:features.*?</stream:features>").group(0)

    def login(self, user, password, resource):
        feats = self.open_stream()
        if "PLAIN" not in feats:
            raise SystemExit("PLAIN not offered: %s" % feats)
        token = base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>" % token)
        m = self.wait(r"<(success|failure)\b")
        if m.group(1) != "success":
            raise SystemExit("login failed for %s: %r" % (user, self.buf[:300]))
        self.buf = ""
        self.open_stream()
        self.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  "<resource>%s</resource></bind></iq>" % resource)
        jid = self.wait(r"<jid>([^<]+)</jid>").group(1)
        self.wait(r"</iq>")
        return jid


PUBSUB = "pubsub.localhost"
NS = "http://jabber.org/protocol/pubsub"


def iq(session, iq_id, body):
    """Send an IQ set/get to the pubsub service; return the reply (fails on type='error')."""
    session.send("<iq to='%s' id='%s' %s</iq>" % (PUBSUB, iq_id, body))
    reply = session.wait(r"<iq\b[^>]*\bid=['\"]%s['\"][^>]*?(/>|>.*?</iq>)" % iq_id).group(0)
    if "type='error'" in reply or 'type="error"' in reply:
        raise SystemExit("pubsub %s failed: %s" % (iq_id, reply))
    return reply


def publish(alice, bob, item, text):
    iq(alice, "pub-" + item, "type='set'><pubsub xmlns='%s'><publish node='smoke'><item id='%s'>"
       "<entry xmlns='urn:example:smoke'>%s</entry></item></publish></pubsub>" % (NS, item, text))
    m = bob.wait(r"<message\b[^>]*>.*?</message>").group(0)
    if ("from='%s'" % PUBSUB not in m and 'from="%s"' % PUBSUB not in m) or "pubsub#event" not in m \
            or ("id='%s'" % item not in m and 'id="%s"' % item not in m) or text not in m:
        raise SystemExit("bob got a wrong notification for %s: %s" % (item, m))


def pubsub_first(alice, bob, b_jid):
    iq(alice, "create", "type='set'><pubsub xmlns='%s'><create node='smoke'/></pubsub>" % NS)
    iq(bob, "sub", "type='set'><pubsub xmlns='%s'><subscribe node='smoke' jid='%s'/></pubsub>"
       % (NS, b_jid))
    publish(alice, bob, "i1", "first item")


def pubsub_again(alice, bob):
    items = iq(bob, "items", "type='get'><pubsub xmlns='%s'><items node='smoke'/></pubsub>" % NS)
    if "first item" not in items:
        raise SystemExit("item i1 not back after the restart: %s" % items)
    publish(alice, bob, "i2", "second item")


def main():
    if len(sys.argv) != 5 or sys.argv[4] not in ("first", "again"):
        raise SystemExit(__doc__)
    port, tls_port, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    alice = Session(tls_port, ca) if tls_port else Session(port)
    a_jid = alice.login("alice", "alice-pw", "smoke")
    bob = Session(port)
    b_jid = bob.login("bob", "bob-pw", "smoke")
    alice.send("<message to='%s' id='m1' type='chat'><body>ping from alice</body></message>" % b_jid)
    m = bob.wait(r"<message\b[^>]*>.*?</message>").group(0)
    if "ping from alice" not in m or a_jid not in m:
        raise SystemExit("bob got a wrong message: %s" % m)
    bob.send("<message to='%s' id='m2' type='chat'><body>pong from bob</body></message>" % a_jid)
    m = alice.wait(r"<message\b[^>]*>.*?</message>").group(0)
    if "pong from bob" not in m or b_jid not in m:
        raise SystemExit("alice got a wrong message: %s" % m)
    if sys.argv[4] == "first":
        pubsub_first(alice, bob, b_jid)
    else:
        pubsub_again(alice, bob)
    for s in (alice, bob):
        s.send("</stream:stream>")
    print("smoke client: %s (%s) <-> %s messages and pubsub (%s) ok"
          % (a_jid, "direct TLS" if tls_port else "plain", b_jid, sys.argv[4]))


if __name__ == "__main__":
    main()
