#!/usr/bin/env python3
"""Core c2s interoperability test for Kinglet, driven by a real third-party client (slixmpp).

Two slixmpp clients log in to the server under test and exercise the c2s basics:
TLS (STARTTLS, or direct TLS with --direct-tls) with real certificate verification,
SASL with exactly one mechanism, resource binding, message routing to a bare JID,
XEP-0199 pings, roster set/get/push, the presence subscription handshake in both
directions, and the RFC 6121 §8.5.1 error for an iq to a non-existent account.

Output: one `ok <step>` line per passed step and a final
`slixmpp interop: N passed, 0 failed` line (exit 0); on the first failure a
`FAIL <step>: <reason>` line, the summary line with `1 failed`, the last wire
traffic of both clients on stderr, and exit status 1. The whole run, including
the final disconnect, is bounded by --timeout seconds (default 40).

The script is self-contained (only slixmpp and the standard library) and was
validated against Prosody 0.12 with tests/interop/run_against_prosody.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import sys
import time
import uuid
from typing import Any, Callable

import slixmpp
from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET

from harness import StepFailure, Steps, argument_parser, check_args, make_ssl_context, run_main, wait

ROSTER_NS = "jabber:iq:roster"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
#: Most seconds reserved at the end of the overall budget for the clean disconnect.
DISCONNECT_BUDGET = 4.0
#: How many wire chunks per client are kept for the failure dump.
TRACE_CHUNKS = 60
#: Longest wire chunk kept (characters).
TRACE_CHUNK_CHARS = 3000


# --------------------------------------------------------------------------------------
# One client
# --------------------------------------------------------------------------------------


class Peer:
    """One slixmpp client plus the queues of what it received."""

    def __init__(self, label: str, jid: str, password: str, args: argparse.Namespace):
        self.label = label
        self.args = args
        self.requested = JID(jid)
        xmpp = slixmpp.ClientXMPP(jid, password, sasl_mech=args.mech)
        # Exactly one way in: no plaintext, and only the TLS flavour asked for.  With an
        # explicit address slixmpp otherwise tries direct TLS first, then STARTTLS, then
        # plaintext, all on the same port.
        xmpp.enable_plaintext = False
        xmpp.enable_direct_tls = args.direct_tls
        xmpp.enable_starttls = not args.direct_tls
        xmpp.ssl_context = make_ssl_context(args.cafile)
        # Subscription handling is done by hand below, never automatically.
        xmpp.auto_authorize = None
        xmpp.auto_subscribe = False
        xmpp.register_plugin("xep_0199")  # answers pings, and sends ours
        self.xmpp = xmpp

        self.messages: asyncio.Queue = asyncio.Queue()
        self.presences: asyncio.Queue = asyncio.Queue()
        self.roster_pushes: asyncio.Queue = asyncio.Queue()
        self.problems: list[str] = []
        self.trace: collections.deque = collections.deque(maxlen=TRACE_CHUNKS)
        self.session_started: asyncio.Future | None = None
        self.disconnected = asyncio.Event()
        self.mech_used: str | None = None
        self.tls_version: str | None = None

        xmpp.add_event_handler("message", self._on_message)
        xmpp.add_event_handler("message_error", self._on_message)
        xmpp.add_event_handler("presence", self._on_presence)
        xmpp.add_event_handler("roster_update", self._on_roster_update)
        xmpp.add_event_handler("session_start", self._on_session_start)
        xmpp.add_event_handler("auth_success", self._on_auth_success)
        xmpp.add_event_handler("failed_auth", self._on_failed_auth)
        xmpp.add_event_handler("failed_all_auth", self._on_failed_all_auth)
        xmpp.add_event_handler("connection_failed", lambda e: self._problem("connection failed: %s" % (e,)))
        xmpp.add_event_handler("stream_error", lambda e: self._problem("stream error from server: %s %s" % (e["condition"], e["text"])))
        xmpp.add_event_handler("ssl_invalid_chain", self._on_bad_cert)
        xmpp.add_event_handler("disconnected", self._on_disconnected)
        self._install_trace()

    # -- wire trace ------------------------------------------------------------------

    def _install_trace(self) -> None:
        """Wrap the protocol's raw send and receive paths to keep a bounded wire log."""
        xmpp = self.xmpp
        orig_send = xmpp.send_raw
        orig_recv = xmpp.data_received

        def send_raw(data: str | bytes) -> None:
            self._record("SEND", data)
            orig_send(data)

        def data_received(data: bytes | str) -> None:
            self._record("RECV", data)
            orig_recv(data)

        xmpp.send_raw = send_raw  # type: ignore[method-assign]
        xmpp.data_received = data_received  # type: ignore[method-assign]

    def _record(self, direction: str, data: str | bytes) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        text = re.sub(r"(<auth\b[^>]*>)[^<]*(</auth>)", r"\1[redacted]\2", text)
        if len(text) > TRACE_CHUNK_CHARS:
            text = text[:TRACE_CHUNK_CHARS] + "...[truncated]"
        line = "%s %s %7.3f %s" % (self.label, direction, time.monotonic() % 10000, text)
        self.trace.append(line)
        if self.args.verbose:
            print(line, file=sys.stderr, flush=True)

    # -- event handlers --------------------------------------------------------------

    def _problem(self, text: str) -> None:
        self.problems.append(text)
        fut = self.session_started
        if fut is not None and not fut.done():
            fut.set_exception(StepFailure("; ".join(self.problems)))

    def _on_bad_cert(self, exc: Any) -> None:
        # Handling this event stops slixmpp from silently disconnecting, so close here.
        self._problem("TLS certificate verification failed after STARTTLS: %s" % (exc,))
        self.xmpp.abort()

    def _on_session_start(self, _event: Any) -> None:
        fut = self.session_started
        if fut is not None and not fut.done():
            fut.set_result(True)

    def _on_auth_success(self, _event: Any) -> None:
        mech = self.xmpp.plugin["feature_mechanisms"].mech
        self.mech_used = getattr(mech, "name", None)

    def _on_failed_auth(self, stanza: Any) -> None:
        self.problems.append("SASL <failure/> from server: %s" % (stanza["condition"],))

    def _on_failed_all_auth(self, _event: Any) -> None:
        offered = sorted(self.xmpp.plugin["feature_mechanisms"].mech_list)
        self._problem("SASL with %s not possible (server offered %s)" % (self.args.mech, ", ".join(offered) or "nothing"))

    def _on_disconnected(self, _event: Any) -> None:
        self.disconnected.set()
        # The reason (bad certificate, SASL failure...) may be reported just after the
        # connection is lost, so give it a moment before failing the login.
        asyncio.get_running_loop().call_later(0.2, self._fail_login_after_disconnect)

    def _fail_login_after_disconnect(self) -> None:
        fut = self.session_started
        if fut is not None and not fut.done():
            why = "; ".join(self.problems) or "server closed the connection"
            fut.set_exception(StepFailure("disconnected before the session started: " + why))

    def _on_message(self, msg: Any) -> None:
        self.messages.put_nowait(msg)

    def _on_presence(self, pres: Any) -> None:
        self.presences.put_nowait(pres)

    def _on_roster_update(self, iq: Any) -> None:
        # Fired for roster pushes (iq type=set) and for roster get results.
        if iq["type"] == "set":
            self.roster_pushes.put_nowait(iq)

    # -- actions ---------------------------------------------------------------------

    async def login(self, host: str, port: int, timeout: float) -> None:
        """Connect, negotiate TLS, authenticate, bind; return when the session started."""
        loop = asyncio.get_running_loop()
        self.session_started = loop.create_future()
        self.xmpp.connect(host, port)
        await wait(self.session_started, timeout, "session start (TLS, SASL %s, bind)" % self.args.mech)
        ssl_object = self.xmpp.transport.get_extra_info("ssl_object") if self.xmpp.transport else None
        if ssl_object is None:
            raise StepFailure("session started without TLS")
        self.tls_version = ssl_object.version()
        if self.mech_used != self.args.mech:
            raise StepFailure("authenticated with %r, expected %r" % (self.mech_used, self.args.mech))
        bound = self.xmpp.boundjid
        if bound.bare != self.requested.bare:
            raise StepFailure("bound JID %s does not belong to %s" % (bound, self.requested.bare))
        if not bound.resource:
            raise StepFailure("bound JID %s has no resource" % bound)

    @property
    def jid(self) -> JID:
        """The full JID the server bound."""
        return self.xmpp.boundjid

    async def roster(self, timeout: float) -> dict[str, dict[str, Any]]:
        """Fetch the whole roster the way slixmpp does it (with ver='' if versioning is on)."""
        # An empty version means "no cached copy": the server must send the full roster.
        self.xmpp.client_roster.version = ""
        try:
            result = await self.xmpp.get_roster(timeout=timeout)
        except IqError as exc:
            raise StepFailure("roster get returned error %s" % describe_error(exc.iq))
        except IqTimeout:
            raise StepFailure("no reply to roster get within %.0f s" % timeout)
        query = result.xml.find("{%s}query" % ROSTER_NS)
        if query is None:
            raise StepFailure("roster result has no <query xmlns='%s'/>: %s" % (ROSTER_NS, short(result)))
        return roster_items(query)

    async def set_roster_item(self, jid: JID, name: str | None, groups: list[str] | None, remove: bool, timeout: float) -> None:
        iq = self.xmpp.Iq()
        iq["type"] = "set"
        query = ET.SubElement(iq.xml, "{%s}query" % ROSTER_NS)
        item = ET.SubElement(query, "{%s}item" % ROSTER_NS, {"jid": jid.bare})
        if remove:
            item.set("subscription", "remove")
        if name is not None:
            item.set("name", name)
        for group in groups or []:
            ET.SubElement(item, "{%s}group" % ROSTER_NS).text = group
        try:
            await iq.send(timeout=timeout)
        except IqError as exc:
            raise StepFailure("roster set returned error %s" % describe_error(exc.iq))
        except IqTimeout:
            raise StepFailure("no reply to roster set within %.0f s" % timeout)

    async def ping(self, target: JID, timeout: float) -> float:
        started = time.monotonic()
        iq = self.xmpp.Iq()
        iq["type"] = "get"
        iq["to"] = target
        iq.enable("ping")
        try:
            await iq.send(timeout=timeout)
        except IqError as exc:
            raise StepFailure("ping to %s returned error %s" % (target, describe_error(exc.iq)))
        except IqTimeout:
            raise StepFailure("no reply to ping to %s within %.0f s" % (target, timeout))
        return time.monotonic() - started

    async def disconnect(self, timeout: float) -> bool:
        """Close the stream; True if the server closed its side before the timeout."""
        if self.xmpp.transport is None:
            self.xmpp.cancel_connection_attempt()
            return True
        started = time.monotonic()
        try:
            await asyncio.wait_for(self.xmpp.disconnect(wait=max(timeout - 0.5, 0.1)), timeout)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - cleanup must not raise
            self.xmpp.abort()
            return False
        # slixmpp aborts by itself after `wait`; a clean close finishes well before.
        return self.disconnected.is_set() and time.monotonic() - started < max(timeout - 0.5, 0.1)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


async def expect(queue: asyncio.Queue, pred: Callable[[Any], bool], timeout: float, what: str) -> Any:
    """Take stanzas from `queue` until one satisfies `pred`; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            extra = (" (received instead: %s)" % " | ".join(seen[-3:])) if seen else ""
            raise StepFailure("timed out after %.0f s waiting for %s%s" % (timeout, what, extra))
        try:
            item = await asyncio.wait_for(queue.get(), left)
        except asyncio.TimeoutError:
            continue
        if pred(item):
            return item
        seen.append(short(item))


def short(stanza: Any, limit: int = 300) -> str:
    try:
        text = str(stanza)
    except Exception:  # noqa: BLE001 - only used for messages
        text = repr(stanza)
    return text if len(text) <= limit else text[:limit] + "..."


def describe_error(iq: Any) -> str:
    err = iq.xml.find("{jabber:client}error")
    if err is None:
        return "(type=error without <error/>): " + short(iq)
    conditions = [child.tag.split("}", 1)[-1] for child in err if child.tag.startswith("{%s}" % STANZAS_NS) and not child.tag.endswith("}text")]
    return "%s (error type=%s) from %s" % (",".join(conditions) or "?", err.get("type"), iq["from"])


def roster_items(query: Any) -> dict[str, dict[str, Any]]:
    """Parse <query xmlns='jabber:iq:roster'/> into {bare jid: attributes} from the raw XML."""
    items: dict[str, dict[str, Any]] = {}
    for item in query.findall("{%s}item" % ROSTER_NS):
        items[item.get("jid", "")] = {
            "name": item.get("name"),
            "subscription": item.get("subscription", "none"),
            "ask": item.get("ask"),
            "groups": [g.text or "" for g in item.findall("{%s}group" % ROSTER_NS)],
        }
    return items


def presence_type(pres: Any) -> str:
    return pres.xml.get("type", "available")


def is_available_from(jid: JID) -> Callable[[Any], bool]:
    return lambda p: presence_type(p) == "available" and str(p["from"]) == jid.full


def is_presence(ptype: str, from_bare: str) -> Callable[[Any], bool]:
    return lambda p: presence_type(p) == ptype and p["from"].bare == from_bare and not p["from"].resource


def push_for(bare: str, subscription: str) -> Callable[[Any], bool]:
    def pred(iq: Any) -> bool:
        query = iq.xml.find("{%s}query" % ROSTER_NS)
        if query is None:
            return False
        item = roster_items(query).get(bare)
        return item is not None and item["subscription"] == subscription
    return pred


# --------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------


class Run(Steps):
    def __init__(self, args: argparse.Namespace):
        super().__init__(args, "setup")
        self.step_timeout = args.step_timeout
        tag = uuid.uuid4().hex[:8]
        self.c1 = Peer("c1", "%s@%s/slix1-%s" % (args.user1, args.domain, tag), args.pass1, args)
        self.c2 = Peer("c2", "%s@%s/slix2-%s" % (args.user2, args.domain, tag), args.pass2, args)

    async def steps(self) -> None:
        a = self.args
        c1, c2, t = self.c1, self.c2, self.step_timeout
        mode = "direct TLS" if a.direct_tls else "STARTTLS"

        for step, peer in (("login-client1", c1), ("login-client2", c2)):
            self.begin(step)
            await peer.login(a.host, a.port, t)
            self.ok(step=step, detail="%s, %s %s, SASL %s" % (peer.jid, mode, peer.tls_version, peer.mech_used))

        # Start from a known roster state: earlier runs may have left the accounts
        # subscribed to each other.  Only touches the server's roster-remove path when
        # there is something to remove.
        self.begin("roster-initial")
        for me, other in ((c1, c2), (c2, c1)):
            items = await me.roster(t)
            if other.jid.bare in items:
                await me.set_roster_item(other.jid, None, None, True, t)
        for me, other in ((c1, c2), (c2, c1)):
            items = await me.roster(t)
            if other.jid.bare in items:
                raise StepFailure("%s still on %s's roster after removal: %s" % (other.jid.bare, me.jid.bare, items[other.jid.bare]))
        # Drain what the clean-up produced (pushes, unsubscribed/unavailable presences).
        await asyncio.sleep(0.2)
        for peer in (c1, c2):
            drain(peer.roster_pushes)
            drain(peer.presences)
        self.ok(step="roster-initial", detail="roster get for both accounts")

        # Initial presence: needed for delivery to the bare JID below.  An iq round trip
        # after it on the same stream guarantees the server has processed the presence.
        self.begin("initial-presence")
        for peer in (c1, c2):
            peer.xmpp.send_presence()
            await peer.ping(JID(a.domain), t)
        self.ok(step="initial-presence")

        self.begin("message")
        body = "kinglet interop %s" % uuid.uuid4()
        c1.xmpp.send_message(mto=c2.jid.bare, mbody=body, mtype="chat")
        msg = await expect(
            c2.messages,
            lambda m: m["body"] == body or m["type"] == "error",
            t,
            "the chat message at client2",
        )
        if msg["type"] == "error":
            raise StepFailure("client2 got an error message: %s" % short(msg))
        if str(msg["from"]) != c1.jid.full:
            raise StepFailure("message from=%r, expected client1's full JID %r" % (str(msg["from"]), c1.jid.full))
        if msg["type"] != "chat":
            raise StepFailure("message type=%r, expected 'chat'" % msg["type"])
        for m in drain(c1.messages):
            if m["type"] == "error":
                raise StepFailure("client1 got a message error: %s" % short(m))
        self.ok(step="message", detail="chat to bare JID delivered to %s with from=%s" % (c2.jid, msg["from"]))

        self.begin("ping-server")
        rtt = await c1.ping(JID(a.domain), t)
        self.ok(step="ping-server", detail="%.1f ms" % (rtt * 1000))

        self.begin("ping-client")
        rtt = await c1.ping(c2.jid, t)
        self.ok(step="ping-client", detail="to %s, %.1f ms" % (c2.jid, rtt * 1000))

        name, group = "Bob Interop", "Kinglet Interop"
        self.begin("roster-set")
        await c1.set_roster_item(c2.jid, name, [group], False, t)
        self.ok(step="roster-set", detail="%s name=%r group=%r" % (c2.jid.bare, name, group))

        self.begin("roster-push")
        await expect(c1.roster_pushes, push_for(c2.jid.bare, "none"), t, "the roster push for the new item")
        self.ok(step="roster-push")

        await self.check_roster("roster-get", c1, c2, name, group, "none")

        self.begin("subscribe-to")
        await self.subscribe(c1, c2)
        self.ok(step="subscribe-to", detail="client1 subscribed to client2, roster push subscription=to, got %s's presence" % c2.jid)

        self.begin("subscribe-both")
        await self.subscribe(c2, c1)
        await expect(c1.roster_pushes, push_for(c2.jid.bare, "both"), t, "client1's roster push with subscription='both'")
        self.ok(step="subscribe-both", detail="client2 subscribed back, client1's roster push subscription=both")

        await self.check_roster("roster-final", c1, c2, name, group, "both")

        self.begin("iq-nonexistent")
        nobody = JID("nobody@%s" % a.domain)
        iq = c1.xmpp.Iq()
        iq["type"] = "get"
        iq["to"] = nobody
        ET.SubElement(iq.xml, "{jabber:iq:version}query")
        try:
            reply = await iq.send(timeout=t)
            raise StepFailure("expected an error, got a result: %s" % short(reply))
        except IqTimeout:
            raise StepFailure("no reply within %.0f s" % t)
        except IqError as exc:
            err = exc.iq
            cond = err["error"]["condition"]
            if cond != "service-unavailable":
                raise StepFailure("expected service-unavailable, got %s" % describe_error(err))
            if err["error"]["type"] != "cancel":
                raise StepFailure("service-unavailable with error type=%r, expected 'cancel'" % err["error"]["type"])
            if str(err["from"]) != nobody.bare:
                raise StepFailure("error from=%r, expected %r" % (str(err["from"]), nobody.bare))
        self.ok(step="iq-nonexistent", detail="service-unavailable (cancel) from %s" % nobody)

    async def check_roster(self, step: str, c1: Peer, c2: Peer, name: str, group: str, subscription: str) -> None:
        """Step `step`: `c1`'s roster holds `c2` with `name`, `group` and `subscription`."""
        self.begin(step)
        items = await c1.roster(self.step_timeout)
        item = items.get(c2.jid.bare)
        if item is None:
            raise StepFailure("%s missing from roster: %s" % (c2.jid.bare, items))
        check_item(item, name, group, subscription)
        self.ok(step=step, detail="%s: %s" % (c2.jid.bare, fmt_item(item)))

    async def subscribe(self, sub: Peer, contact: Peer) -> None:
        """`sub` subscribes to `contact`'s presence, `contact` approves."""
        t = self.step_timeout
        sub.xmpp.send_presence(pto=contact.jid.bare, ptype="subscribe")
        await expect(contact.presences, is_presence("subscribe", sub.jid.bare), t,
                     "presence type=subscribe from %s at %s" % (sub.jid.bare, contact.jid))
        contact.xmpp.send_presence(pto=sub.jid.bare, ptype="subscribed")
        await expect(sub.presences, is_presence("subscribed", contact.jid.bare), t,
                     "presence type=subscribed from %s at %s" % (contact.jid.bare, sub.jid))
        if sub is self.c1:
            await expect(sub.roster_pushes, push_for(contact.jid.bare, "to"), t,
                         "client1's roster push with subscription='to'")
        await expect(sub.presences, is_available_from(contact.jid), t,
                     "available presence from %s at %s" % (contact.jid, sub.jid))

    async def finish(self, budget: float) -> bool:
        """Disconnect both clients concurrently; True if the server closed both streams."""
        results = await asyncio.gather(self.c1.disconnect(budget), self.c2.disconnect(budget), return_exceptions=True)
        return all(r is True for r in results)

    def dump_trace(self) -> None:
        if self.args.verbose:
            return
        print("---- last wire traffic (c1 = client1, c2 = client2; --verbose shows all) ----", file=sys.stderr)
        lines = sorted(list(self.c1.trace) + list(self.c2.trace), key=lambda l: float(l.split()[2]))
        for line in lines:
            print(line, file=sys.stderr)
        for peer in (self.c1, self.c2):
            if peer.problems:
                print("%s problems: %s" % (peer.label, "; ".join(peer.problems)), file=sys.stderr)
        sys.stderr.flush()


def drain(queue: asyncio.Queue) -> list[Any]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def check_item(item: dict[str, Any], name: str, group: str, subscription: str) -> None:
    if item["name"] != name:
        raise StepFailure("item name=%r, expected %r (%s)" % (item["name"], name, fmt_item(item)))
    if item["groups"] != [group]:
        raise StepFailure("item groups=%r, expected [%r] (%s)" % (item["groups"], group, fmt_item(item)))
    if item["subscription"] != subscription:
        raise StepFailure("item subscription=%r, expected %r (%s)" % (item["subscription"], subscription, fmt_item(item)))
    if item["ask"] is not None:
        raise StepFailure("item has ask=%r, expected none (%s)" % (item["ask"], fmt_item(item)))


def fmt_item(item: dict[str, Any]) -> str:
    return "name=%r subscription=%s ask=%s groups=%r" % (item["name"], item["subscription"], item["ask"], item["groups"])


async def amain(args: argparse.Namespace) -> int:
    run = Run(args)
    failure: str | None = None
    # Steps plus the final disconnect stay within --timeout.
    disconnect_budget = min(DISCONNECT_BUDGET, args.timeout / 4)
    budget = args.timeout - disconnect_budget
    try:
        await asyncio.wait_for(run.steps(), budget)
    except asyncio.TimeoutError:
        failure = "overall timeout of %.0f s reached" % args.timeout
    except StepFailure as exc:
        failure = str(exc)
    except Exception as exc:  # noqa: BLE001 - any crash is a failed step, reported as such
        failure = "unexpected %s: %s" % (type(exc).__name__, exc)

    if failure is None:
        run.begin("disconnect")
        if await run.finish(disconnect_budget):
            run.ok(step="disconnect", detail="server closed both streams")
        else:
            failure = "server did not close the stream within %.1f s after </stream:stream>" % disconnect_budget
    else:
        await run.finish(disconnect_budget)

    if failure is not None:
        print("FAIL %s: %s" % (run.step, failure), flush=True)
        run.dump_trace()
        print("slixmpp interop: %d passed, 1 failed" % run.passed, flush=True)
        return 1
    print("slixmpp interop: %d passed, 0 failed" % run.passed, flush=True)
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argument_parser(__doc__.split("\n\n")[0])
    p.add_argument("--mech", default="SCRAM-SHA-256", help="the only SASL mechanism allowed (default SCRAM-SHA-256)")
    p.add_argument("--direct-tls", action="store_true", help="TLS from the first byte (XEP-0368) instead of STARTTLS")
    return check_args(p, p.parse_args(argv))


def main(argv: list[str]) -> int:
    return run_main(parse_args(argv), amain)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
