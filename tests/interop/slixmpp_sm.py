#!/usr/bin/env python3
"""XEP-0198 interoperability test for Kinglet, driven by slixmpp's xep_0198 plugin.

A subscriber (user1, slixmpp with xep_0198 and xep_0060) logs in over verified STARTTLS
through a relay on loopback (`cutlink.py`), gets stream management enabled with resumption
(the plugin's `sm_enabled` event, `enabled_in`, `sm_id`, `<enabled resume='true' max=…/>`)
and subscribes to a node that a publisher (user2, plain slixmpp, straight to the server)
creates. Then:

1. live: the publisher publishes --live items; the subscriber gets each. Acks both ways:
   the server's own `<r/>` requests (counted; answered by the plugin) and the plugin's
   `<r/>` answered with an `<a h/>` that covers every stanza it sent.
2. burst: --burst more items are published and the link is cut at once (`--cut reset`:
   both legs get a TCP RST; `--cut silent`: only the client's leg, the server keeps
   writing into the dead link), with no stream close: some of these notifications may be
   in flight. slixmpp sees the connection drop; the plugin keeps its `sm_id` and counts
   (no `session_end`), and the script reconnects at once, as a client would (the relay
   holds the new connection while the link is down).
3. cut: while the link is down the publisher publishes --during items.
4. The link comes back: slixmpp resumes (`<resume previd h/>`, the `session_resumed`
   event; no second bind, no second `session_start`), and --after items are published
   live.

The subscriber must have received every item of the four phases exactly once, in
publishing order: a ping round trip and an `<r/>`/`<a/>` exchange after the last one
make sure that nothing (a duplicate) is still on its way.

Output: one `ok <step>` line per passed step, the line `slixmpp sm: N passed, 0 failed`
(exit 0) or `FAIL <step>: <reason>` and `... 1 failed` (exit 1), then one line of JSON
with what was negotiated and counted (see `summary` in `Run`).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from typing import Any

import slixmpp
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from cutlink import Link
from harness import (EventPeer, SmRun, StepFailure, add_sm_arguments, argument_parser, check_args,
                     describe_failure, run_main, wait, wait_until)

SM = "urn:xmpp:sm:3"
PS_EVENT = "http://jabber.org/protocol/pubsub#event"
PAYLOAD_NS = "urn:example:sm"
# One node per run, so that the script can run again against the same server.
NODE = "sm-interop-%s" % secrets.token_hex(4)


class Subscriber(EventPeer):
    """user1: slixmpp with xep_0198. Records the item ids of every notification, the
    server's ack requests and acks, and the session events, each on its own."""

    def __init__(self, jid: str, password: str, args: argparse.Namespace):
        super().__init__(jid, password, args,
                         ("xep_0030", "xep_0004", "xep_0060", "xep_0199", "xep_0198"),
                         ("sm_enabled", "session_resumed", "sm_failed", "disconnected"))
        self.items: list[str] = []
        self.item_seen = asyncio.Event()
        self.binds = 0
        self.starts = 0
        self.server_requests = 0
        self.server_acks: list[int] = []
        self.ack_seen = asyncio.Event()
        self.xmpp.add_event_handler("pubsub_publish", self._on_publish)
        self.xmpp.add_event_handler("session_bind", self._on_bind)
        self.xmpp.add_event_handler("session_start", self._on_session_start)
        # The plugin has its own handlers for these; slixmpp runs every matching handler.
        self.xmpp.register_handler(Callback(
            "count server ack requests", MatchXPath("{%s}r" % SM), self._on_r, instream=True))
        self.xmpp.register_handler(Callback(
            "count server acks", MatchXPath("{%s}a" % SM), self._on_a, instream=True))

    def _on_publish(self, msg: Any) -> None:
        items = msg.xml.find("{%s}event/{%s}items" % (PS_EVENT, PS_EVENT))
        if items is None or items.get("node") != NODE:
            return
        for item in items.findall("{%s}item" % PS_EVENT):
            self.items.append(item.get("id"))
        self.item_seen.set()

    def _on_bind(self, _jid: Any) -> None:
        self.binds += 1

    def _on_session_start(self, _e: Any) -> None:
        self.starts += 1

    def _on_r(self, _r: Any) -> None:
        self.server_requests += 1

    def _on_a(self, a: Any) -> None:
        self.server_acks.append(int(a["h"]))
        self.ack_seen.set()

    async def first_of(self, names: tuple[str, ...], timeout: float) -> tuple[str, Any]:
        """The next queued session event named in `names`, with its name."""
        async def until() -> tuple[str, Any]:
            while True:
                got, msg = await self.events.get()
                if got in names:
                    return got, msg
        return await wait(until(), timeout, " or ".join(names))

    @property
    def sm(self) -> Any:
        return self.xmpp.plugin["xep_0198"]

    async def received(self, n: int, timeout: float, what: str) -> None:
        """Waits until at least `n` items arrived in all."""
        await wait_until(lambda: len(self.items) >= n, self.item_seen, timeout,
                         "%s (%d of %d items so far)" % (what, len(self.items), n))

    async def acked(self, timeout: float) -> int:
        """Sends the plugin's `<r/>` and returns the `h` of the `<a/>` that answers it."""
        before = len(self.server_acks)
        self.ack_seen.clear()
        self.sm.request_ack()
        await wait_until(lambda: len(self.server_acks) != before, self.ack_seen, timeout, "the server's <a/>")
        return self.server_acks[-1]


class Publisher(EventPeer):
    """user2: plain slixmpp with xep_0060, straight to the server."""

    def __init__(self, jid: str, password: str, args: argparse.Namespace):
        super().__init__(jid, password, args, ("xep_0030", "xep_0004", "xep_0060"), ())
        self.service = "pubsub." + args.domain

    async def publish(self, ids: list[str], timeout: float) -> None:
        ps = self.xmpp.plugin["xep_0060"]
        for i in ids:
            payload = ET.Element("{%s}reading" % PAYLOAD_NS)
            payload.text = i
            await ps.publish(self.service, NODE, id=i, payload=payload, timeout=timeout)


class Run(SmRun):
    def __init__(self, args: argparse.Namespace):
        super().__init__(args, "slixmpp", slixmpp.__version__)

    async def steps(self, sub: Subscriber, pub: Publisher, link: Link, sub_args: argparse.Namespace) -> None:
        a = self.args
        t = a.step_timeout
        s = self.summary
        service = "pubsub." + a.domain

        self.begin("login, stream management enabled with resumption")
        await pub.start(a)
        await sub.start(sub_args)
        event, enabled = await sub.first_of(("sm_enabled", "sm_failed"), t)
        if event != "sm_enabled":
            raise StepFailure("<enable/> answered with %s" % enabled)
        s["sm_enabled"] = bool(sub.sm.enabled_in)
        s["sm_id"] = bool(sub.sm.sm_id)
        s["resume"] = bool(enabled["resume"])
        s["max"] = int(enabled["max"]) if enabled["max"] else None
        if not (sub.sm.enabled_in and sub.sm.sm_id and enabled["resume"]):
            raise StepFailure("not resumable: %s" % enabled)
        sm_id = sub.sm.sm_id
        self.ok("id %s…, max %s s" % (sm_id[:6], s["max"]))

        self.begin("subscribe")
        # Room for every item, so that no retraction notification (max_items) interleaves.
        form = pub.xmpp.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="pubsub#max_items", value=str(a.live + a.burst + a.during + a.after))
        await pub.xmpp.plugin["xep_0060"].create_node(service, NODE, config=form, timeout=t)
        res = await sub.xmpp.plugin["xep_0060"].subscribe(service, NODE, timeout=t)
        if res["pubsub"]["subscription"]["subscription"] != "subscribed":
            raise StepFailure("subscription %s" % res)
        self.ok()

        live, burst, after, published = self.live, self.burst, self.after, self.published

        self.begin("live notifications, acks both ways")
        await pub.publish(live, t)
        published += live
        await sub.received(len(published), t, "the live items")
        h = await sub.acked(t)
        s["client_requests_acked"] = h
        if h != sub.sm.seq or sub.sm.last_ack != sub.sm.seq:
            raise StepFailure("<a h='%d'/> but the plugin sent %d stanzas (last_ack %d)"
                              % (h, sub.sm.seq, sub.sm.last_ack))
        s["server_ack_requests_live"] = sub.server_requests
        # An unsolicited <a/> (XEP-0198 §4 allows it): the server forgets what it keeps.
        sub.sm.send_ack()
        self.ok("%d items, server asked for %d acks, our <r/> answered h=%d"
                % (len(live), sub.server_requests, h))

        self.begin("burst, then the link is cut (%s) without a stream close" % a.cut)
        await pub.publish(burst, t)
        published += burst
        link.cut(a.cut)
        await sub.first_of(("disconnected",), t)
        s["handled_at_cut"] = sub.sm.handled
        s["received_at_cut"] = len(sub.items)
        if sub.sm.sm_id != sm_id:
            raise StepFailure("the plugin forgot its session (sm_id %r): it would bind anew" % sub.sm.sm_id)
        # Reconnect at once, as a client does; the relay holds it while the link is down.
        sub.xmpp.connect(host=sub_args.host, port=sub_args.port)
        self.ok("%d of %d items in before the cut, h=%d"
                % (len(sub.items), len(published), sub.sm.handled))

        await self.publish_during_cut(lambda ids: pub.publish(ids, t), sub.items)

        self.begin("link back: slixmpp resumes")
        link.restore()
        event, resumed = await sub.first_of(("session_resumed", "sm_failed"), t)
        if event != "session_resumed":
            raise StepFailure("<resume/> answered with %s" % resumed)
        s["resumed"] = True
        s["resumed_h"] = int(resumed["h"])
        s["binds"] = sub.binds
        s["session_starts"] = sub.starts
        if sub.binds != 1 or sub.starts != 1:
            raise StepFailure("%d binds, %d session_start events: not a resumption" % (sub.binds, sub.starts))
        self.ok("previd matched, server handled h=%s" % resumed["h"])

        self.begin("after the resumption, every item once and in order")
        await pub.publish(after, t)
        published += after
        await sub.received(len(published), t, "every item")
        # Barriers: a ping result and an <a/> come after anything the server sent before.
        await sub.xmpp.plugin["xep_0199"].send_ping(a.domain, timeout=t)
        h = await sub.acked(t)
        if h != sub.sm.seq:
            raise StepFailure("<a h='%d'/> after the resumption, the plugin sent %d" % (h, sub.sm.seq))
        got = sub.items
        self.check_received(got)
        self.ok("%d items" % len(got))
        # What came after the cut and before the first item published after it: the
        # resumption's redelivery and what was queued while detached.
        s["redelivered"] = got.index(after[0]) - s["received_at_cut"] if after else None
        s["server_ack_requests"] = sub.server_requests
        s["server_acks"] = len(sub.server_acks)
        s["accepted_connections"] = link.accepted


def main(argv: list[str]) -> int:
    p = argument_parser(__doc__.split("\n\n")[0])
    add_sm_arguments(p)
    args = check_args(p, p.parse_args(argv))

    async def amain(args: argparse.Namespace) -> int:
        run = Run(args)
        link = Link(args.host, args.port)
        sub_args = argparse.Namespace(**vars(args))
        sub_args.host, sub_args.port = "127.0.0.1", await link.start()
        sub = Subscriber("%s@%s/sm" % (args.user1, args.domain), args.pass1, args)
        pub = Publisher("%s@%s/pub" % (args.user2, args.domain), args.pass2, args)

        def stop() -> None:
            for peer in (sub, pub):
                peer.xmpp.disconnect()
        return await run.run(link, lambda: run.steps(sub, pub, link, sub_args), stop, describe_failure)

    return run_main(args, amain)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
