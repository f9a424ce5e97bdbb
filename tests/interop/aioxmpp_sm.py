#!/usr/bin/env python3
"""XEP-0198 interoperability test for Kinglet with a second, independent client stack:
aioxmpp, whose `aioxmpp.Client` negotiates stream management by itself whenever the
server offers it, reconnects on its own when the connection fails, and resumes the
stream if it can.

A subscriber (user1) logs in over verified STARTTLS (aioxmpp's PKIX verifier with the
given CA file, SCRAM) through a relay on loopback (`cutlink.py`), sends its presence and
subscribes (bare JID, aioxmpp's default) to a node that a publisher (user2, aioxmpp,
straight to the server) creates. The script checks that aioxmpp enabled resumable stream
management (`stream.sm_enabled`, `sm_resumable`, `sm_id`, `sm_max`: the window the server
granted, at most --resumption-timeout if that was asked for). Then:

1. live: --live items are published and received; aioxmpp's own `<r/>` after each send
   is answered (its unacknowledged list empties), and the server's `<r/>` requests are
   counted (aioxmpp answers them).
2. burst: --burst items are published and the link is cut at once, without a stream
   close (`--cut reset|silent`, see cutlink.py). aioxmpp emits `on_stream_suspended` and
   reconnects by itself after its back-off; the relay holds that connection while the
   link is down.
3. cut: --during items are published while the link is down.
4. The link comes back: aioxmpp resumes (`on_stream_resumed`; `on_stream_destroyed`
   never fires and `on_stream_established` only once), and --after items follow live.

Every item must have arrived exactly once, in publishing order, after a ping round trip
and an acknowledgement exchange that nothing can overtake.

Output: one `ok <step>` line per passed step, the line `aioxmpp sm: N passed, 0 failed`
(exit 0) or `FAIL <step>: <reason>` and `... 1 failed` (exit 1), then one line of JSON.
Needs aioxmpp 0.13.3 with pyOpenSSL < 26 (its certificate check uses
`X509.get_extension`, which pyOpenSSL 26 removed) on Python <= 3.11 (it uses
`ssl.match_hostname`, which Python 3.12 removed); tests/interop/requirements.txt pins
both.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import ssl
import sys
from datetime import timedelta
from typing import Any, Callable

import aioxmpp
import aioxmpp.connector
import aioxmpp.forms
import aioxmpp.nonza
import aioxmpp.ping
import aioxmpp.pubsub
import aioxmpp.pubsub.xso
import aioxmpp.security_layer
import aioxmpp.xso

from cutlink import Link
from harness import (SmRun, StepFailure, add_sm_arguments, argument_parser, check_args, describe_failure,
                     run_main, wait, wait_until)

PAYLOAD_NS = "urn:example:sm"
NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
# One node per run, so that the script can run again against the same server.
NODE = "sm-interop-%s" % secrets.token_hex(4)


@aioxmpp.pubsub.xso.as_payload_class
class Reading(aioxmpp.xso.XSO):
    """The item payload: `<reading xmlns='urn:example:sm'>id</reading>`."""
    TAG = (PAYLOAD_NS, "reading")
    text = aioxmpp.xso.Text(default="")


def make_client(jid: str, password: str, args: argparse.Namespace, host: str, port: int) -> aioxmpp.Client:
    """An aioxmpp client for `jid` that connects to host:port with STARTTLS, verifying the
    server's certificate for the XMPP domain against --cafile (PKIX, never unverified)."""

    def ssl_context() -> Any:
        ctx = aioxmpp.security_layer.default_ssl_context()
        if args.cafile:
            ctx.load_verify_locations(args.cafile)
        return ctx

    security = aioxmpp.make_security_layer(password, ssl_context_factory=ssl_context)
    client = aioxmpp.Client(
        aioxmpp.JID.fromstr(jid), security,
        override_peer=[(host, port, aioxmpp.connector.STARTTLSConnector())],
        negotiation_timeout=timedelta(seconds=args.step_timeout),
        max_initial_attempts=1,
    )
    # Reconnect soon after a failure (aioxmpp's default back-off starts at 1 s).
    client.backoff_start = timedelta(seconds=0.2)
    # The `max` of <enable/> (None: none asked for).
    client.resumption_timeout = args.resumption_timeout
    return client


class Peer:
    """One aioxmpp client, its session events and the items it received."""

    def __init__(self, client: aioxmpp.Client):
        self.client = client
        self.events: asyncio.Queue = asyncio.Queue()
        self.counts = {"established": 0, "suspended": 0, "resumed": 0, "destroyed": 0}
        self.items: list[str] = []
        self.item_seen = asyncio.Event()
        self.server_requests = 0
        self.server_acks = 0
        self.ack_seen = asyncio.Event()
        self.failure: asyncio.Future = asyncio.get_event_loop().create_future()
        for name in self.counts:
            getattr(client, "on_stream_" + name).connect(self._count(name))
        client.on_failure.connect(self._on_failure)
        # Observe the stream-management elements the server sends: aioxmpp answers <r/>
        # and processes <a/> itself, and has no signal for either.
        stream = client.stream
        process = stream._process_incoming

        def observe(xmlstream: Any, entry: Any) -> Any:
            obj = entry[0]
            if isinstance(obj, aioxmpp.nonza.SMRequest):
                self.server_requests += 1
            elif isinstance(obj, aioxmpp.nonza.SMAcknowledgement):
                self.server_acks += 1
                self.ack_seen.set()
            return process(xmlstream, entry)
        stream._process_incoming = observe

    def _count(self, name: str) -> Callable[..., None]:
        def on_event(*_args: Any, **_kwargs: Any) -> None:
            self.counts[name] += 1
            self.events.put_nowait(name)
        return on_event  # returns None: aioxmpp disconnects a handler that returns true

    def _on_failure(self, exc: BaseException) -> None:
        if not self.failure.done():
            self.failure.set_result(exc)

    def on_item(self, _jid: Any, node: str, item: Any, **_kwargs: Any) -> None:
        if node == NODE:
            self.items.append(item.id_)
            self.item_seen.set()

    async def next_event(self, names: tuple[str, ...], timeout: float) -> str:
        """The next session event among `names` (others are dropped); the client's
        failure ends the wait."""
        async def until() -> str:
            while True:
                get = asyncio.ensure_future(self.events.get())
                done, _ = await asyncio.wait({get, self.failure}, return_when=asyncio.FIRST_COMPLETED)
                if self.failure in done:
                    get.cancel()
                    raise StepFailure("aioxmpp gave up: %r" % self.failure.result())
                name = get.result()
                if name in names:
                    return name
        return await wait(until(), timeout, " or ".join(names))

    async def start(self, timeout: float) -> None:
        self.client.start()
        if await self.next_event(("established",), timeout) != "established":
            raise StepFailure("no stream")

    async def received(self, n: int, timeout: float, what: str) -> None:
        await wait_until(lambda: len(self.items) >= n, self.item_seen, timeout,
                         "%s (%d of %d items so far)" % (what, len(self.items), n))

    async def all_acked(self, timeout: float) -> None:
        """Until aioxmpp's list of unacknowledged stanzas is empty (its `<r/>` after every
        send is answered)."""
        await wait_until(lambda: not self.client.stream.sm_unacked_list, self.ack_seen, timeout,
                         "the server's <a/> for every stanza sent")

    async def barrier(self, domain: str, timeout: float) -> None:
        """A ping round trip, then the server's `<a/>` for it: both come after anything the
        server sent before."""
        await wait(aioxmpp.ping.ping(self.client, aioxmpp.JID.fromstr(domain)), timeout, "a ping result")
        await self.all_acked(timeout)


class Run(SmRun):
    def __init__(self, args: argparse.Namespace):
        super().__init__(args, "aioxmpp", aioxmpp.__version__)
        self.summary["asked_max"] = args.resumption_timeout

    async def steps(self, sub: Peer, pub: Peer, link: Link) -> None:
        a = self.args
        t = a.step_timeout
        s = self.summary
        service = aioxmpp.JID.fromstr("pubsub." + a.domain)
        sub_ps = sub.client.summon(aioxmpp.PubSubClient)
        pub_ps = pub.client.summon(aioxmpp.PubSubClient)
        sub_ps.on_item_published.connect(sub.on_item)

        self.begin("login, stream management enabled with resumption")
        await pub.start(t)
        await sub.start(t)
        stream = sub.client.stream
        s["sm_enabled"] = stream.sm_enabled
        if not stream.sm_enabled:
            raise StepFailure("aioxmpp did not enable stream management")
        s["sm_id"] = bool(stream.sm_id)
        s["resume"] = bool(stream.sm_resumable)
        s["max"] = stream.sm_max
        if not (stream.sm_resumable and stream.sm_id):
            raise StepFailure("not resumable (id %r)" % stream.sm_id)
        if a.resumption_timeout and not (stream.sm_max and stream.sm_max <= a.resumption_timeout):
            raise StepFailure("asked for max=%d, granted %r" % (a.resumption_timeout, stream.sm_max))
        sm_id = stream.sm_id
        self.ok("id %s…, max %s s" % (sm_id[:6], stream.sm_max))

        self.begin("presence, subscribe")
        sub.client.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True))
        await pub_ps.create(service, NODE)
        # Room for every item, so that no retraction notification (max_items) interleaves.
        form = aioxmpp.forms.Data(type_=aioxmpp.forms.DataType.SUBMIT)
        form.fields.append(aioxmpp.forms.Field(var="FORM_TYPE", type_=aioxmpp.forms.FieldType.HIDDEN,
                                               values=[NODE_CONFIG]))
        total = a.live + a.burst + a.during + a.after
        form.fields.append(aioxmpp.forms.Field(var="pubsub#max_items", values=[str(total)]))
        await pub_ps.set_node_config(service, form, node=NODE)
        res = await sub_ps.subscribe(service, NODE)
        state = res.payload.subscription
        if state != "subscribed":
            raise StepFailure("subscription %r" % state)
        self.ok()

        async def publish(ids: list[str]) -> None:
            for i in ids:
                payload = Reading()
                payload.text = i
                await wait(pub_ps.publish(service, NODE, payload, id_=i), t,
                           "the result of publishing %s" % i)

        live, burst, after, published = self.live, self.burst, self.after, self.published

        self.begin("live notifications, acks both ways")
        await publish(live)
        published += live
        await sub.received(len(published), t, "the live items")
        await sub.barrier(a.domain, t)
        s["server_ack_requests_live"] = sub.server_requests
        self.ok("%d items, server asked for %d acks, %d acks from the server"
                % (len(live), sub.server_requests, sub.server_acks))

        self.begin("burst, then the link is cut (%s) without a stream close" % a.cut)
        await publish(burst)
        published += burst
        link.cut(a.cut)
        await sub.next_event(("suspended", "destroyed"), t)
        if sub.counts["destroyed"]:
            raise StepFailure("aioxmpp destroyed the stream: it will not resume")
        s["handled_at_cut"] = stream.sm_inbound_ctr
        s["received_at_cut"] = len(sub.items)
        self.ok("%d of %d items in before the cut, h=%d"
                % (len(sub.items), len(published), stream.sm_inbound_ctr))

        await self.publish_during_cut(publish, sub.items)

        self.begin("link back: aioxmpp resumes")
        link.restore()
        got = await sub.next_event(("resumed", "destroyed", "established"), t)
        s["resumed"] = got == "resumed"
        s["stream_events"] = dict(sub.counts)
        if got != "resumed":
            raise StepFailure("on_stream_%s instead of on_stream_resumed" % got)
        if stream.sm_id != sm_id:
            raise StepFailure("resumed with id %r, enabled %r" % (stream.sm_id, sm_id))
        self.ok("same id")

        self.begin("after the resumption, every item once and in order")
        await publish(after)
        published += after
        await sub.received(len(published), t, "every item")
        await sub.barrier(a.domain, t)
        got_items = list(sub.items)
        s["stream_events"] = dict(sub.counts)
        self.check_received(got_items)
        if sub.counts["established"] != 1 or sub.counts["destroyed"] != 0 or sub.counts["resumed"] != 1:
            raise StepFailure("stream events %s" % sub.counts)
        s["redelivered"] = got_items.index(after[0]) - s["received_at_cut"] if after else None
        s["server_ack_requests"] = sub.server_requests
        s["server_acks"] = sub.server_acks
        s["accepted_connections"] = link.accepted
        self.ok("%d items" % len(got_items))


async def amain(args: argparse.Namespace) -> int:
    run = Run(args)
    link = Link(args.host, args.port)
    link_port = await link.start()
    sub = Peer(make_client("%s@%s/sm" % (args.user1, args.domain), args.pass1, args, "127.0.0.1", link_port))
    pub = Peer(make_client("%s@%s/pub" % (args.user2, args.domain), args.pass2, args, args.host, args.port))

    def stop() -> None:
        for peer in (sub, pub):
            peer.client.stop()
    return await run.run(link, lambda: run.steps(sub, pub, link), stop,
                         lambda exc: describe_failure(exc, (aioxmpp.errors.XMPPError, "XMPP error")))


def main(argv: list[str]) -> int:
    p = argument_parser(__doc__.split("\n\n")[0])
    add_sm_arguments(p)
    p.add_argument("--resumption-timeout", type=int, default=None,
                   help="the subscriber's resumption window to ask for (the max of <enable/>; default none)")
    args = check_args(p, p.parse_args(argv))
    if not hasattr(ssl, "match_hostname"):
        print("FAIL start: aioxmpp %s checks host names with ssl.match_hostname, which Python %d.%d "
              "no longer has (Python <= 3.11 needed)" % (aioxmpp.__version__, *sys.version_info[:2]), flush=True)
        return 1
    return run_main(args, amain)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
