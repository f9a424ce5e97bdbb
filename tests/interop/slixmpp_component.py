#!/usr/bin/env python3
"""Kinglet as a XEP-0114 component of another server (Prosody or ejabberd): two slixmpp
users of that server (plain TCP on loopback, PLAIN) create a node at the component's JID,
subscribe, publish, receive the notification and read the item back. Then presence: bob
subscribes to the component's presence and approves its request back, so that the server
forwards bob's presence to the component; on a node with `pubsub#presence_based_delivery`,
bob (available to the component) gets the notification and carol (who never shared
presence with it) does not: carol gets a later notification of an ordinary node instead,
which the component sent after the first one, so the first would have arrived before it.

Output: one `ok <step>` line per passed step, then `slixmpp component: N passed, M failed`;
exit 0 only if every step passed. Bounded by --timeout seconds (default 30).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

import slixmpp
from slixmpp.xmlstream import ET

PAYLOAD_NS = "urn:example:sensor"


def client(jid: str, password: str) -> slixmpp.ClientXMPP:
    c = slixmpp.ClientXMPP(jid, password)
    c.register_plugin("xep_0004")
    c.register_plugin("xep_0030")
    c.register_plugin("xep_0060")
    c.enable_starttls = False
    c.enable_direct_tls = False
    c.enable_plaintext = True
    c.plugin["feature_mechanisms"].unencrypted_plain = True
    return c


async def run(args: argparse.Namespace) -> int:
    passed = 0
    step = "connect"
    alice = client(f"alice@{args.domain}/a", "pass-alice")
    bob = client(f"bob@{args.domain}/b", "pass-bob")
    carol = client(f"carol@{args.domain}/c", "pass-carol")
    events: asyncio.Queue = asyncio.Queue()
    bob.add_event_handler("pubsub_publish", lambda msg: events.put_nowait(msg))
    carol_events: asyncio.Queue = asyncio.Queue()
    carol.add_event_handler("pubsub_publish", lambda msg: carol_events.put_nowait(msg))
    clients = (alice, bob, carol)
    try:
        for c in clients:
            started = asyncio.get_running_loop().create_future()
            c.add_event_handler("session_start", lambda _e, f=started: f.done() or f.set_result(True))
            c.connect("127.0.0.1", args.port)
            await asyncio.wait_for(started, 10)
            c.send_presence()
        print("ok connect: alice, bob and carol logged in", flush=True)
        passed += 1
        svc = args.service
        node = "component-" + uuid.uuid4().hex[:8]

        step = "disco"
        info = await alice.plugin["xep_0030"].get_info(jid=svc, timeout=10)
        ids = [(i[0], i[1]) for i in info["disco_info"]["identities"]]
        if ("pubsub", "service") not in ids:
            raise RuntimeError(f"no pubsub/service identity: {ids}")
        print(f"ok disco: {svc} is a pubsub service", flush=True)
        passed += 1

        step = "create"
        await alice.plugin["xep_0060"].create_node(svc, node, timeout=10)
        print(f"ok create: alice created {node} at {svc}", flush=True)
        passed += 1

        step = "subscribe"
        res = await bob.plugin["xep_0060"].subscribe(svc, node, timeout=10)
        sub = res["pubsub"]["subscription"]["subscription"]
        if sub != "subscribed":
            raise RuntimeError(f"subscription state {sub!r}")
        print("ok subscribe: bob subscribed", flush=True)
        passed += 1

        step = "publish"
        payload = ET.Element(f"{{{PAYLOAD_NS}}}reading")
        payload.text = "21.5"
        await alice.plugin["xep_0060"].publish(svc, node, id="item-1", payload=payload, timeout=10)
        print("ok publish: alice published item-1", flush=True)
        passed += 1

        step = "notification"
        msg = await asyncio.wait_for(events.get(), 10)
        item = msg["pubsub_event"]["items"]["item"]
        if msg["from"].bare != svc or item["id"] != "item-1":
            raise RuntimeError(f"unexpected event from {msg['from']}: {item}")
        if "21.5" not in str(msg):
            raise RuntimeError("payload missing from the notification")
        print("ok notification: bob received item-1 from the component", flush=True)
        passed += 1

        step = "items"
        got = await bob.plugin["xep_0060"].get_items(svc, node, timeout=10)
        ids = [i["id"] for i in got["pubsub"]["items"]]
        if ids != ["item-1"]:
            raise RuntimeError(f"items {ids}")
        print("ok items: bob read item-1 back", flush=True)
        passed += 1

        step = "presence subscription"
        bob.send_presence(pto=svc, ptype="subscribe")
        deadline = asyncio.get_running_loop().time() + 10
        # The server's roster (not slixmpp's cache): 'both' once the component approved
        # bob's request and bob's client (auto_authorize) approved the component's.
        state = None
        while state != "both":
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError("bob's roster item for the component: %r" % state)
            await asyncio.sleep(0.1)
            roster = await bob.get_roster(timeout=10)
            items = roster["roster"]["items"]
            state = items[svc]["subscription"] if svc in items else None
        # bob's next broadcast presence goes to the component (a contact now); the disco
        # request after it is a barrier: the same session, the same route, in order.
        bob.send_presence()
        await bob.plugin["xep_0030"].get_info(jid=svc, timeout=10)
        print("ok presence subscription: bob and the component share presence", flush=True)
        passed += 1

        step = "presence-based delivery"
        pnode = node + "-presence"
        form = alice.plugin["xep_0004"].make_form("submit")
        form.add_field(var="FORM_TYPE", ftype="hidden",
                       value="http://jabber.org/protocol/pubsub#node_config")
        form.add_field(var="pubsub#presence_based_delivery", value="1")
        await alice.plugin["xep_0060"].create_node(svc, pnode, config=form, timeout=10)
        marker = node + "-marker"
        await alice.plugin["xep_0060"].create_node(svc, marker, timeout=10)
        await bob.plugin["xep_0060"].subscribe(svc, pnode, timeout=10)
        await carol.plugin["xep_0060"].subscribe(svc, pnode, timeout=10)
        await carol.plugin["xep_0060"].subscribe(svc, marker, timeout=10)
        p2 = ET.Element(f"{{{PAYLOAD_NS}}}reading")
        p2.text = "7"
        await alice.plugin["xep_0060"].publish(svc, pnode, id="p-1", payload=p2, timeout=10)
        await alice.plugin["xep_0060"].publish(svc, marker, id="m-1", payload=p2, timeout=10)
        msg = await asyncio.wait_for(events.get(), 10)
        if msg["pubsub_event"]["items"]["node"] != pnode:
            raise RuntimeError(f"bob got {msg['pubsub_event']['items']['node']}, not {pnode}")
        got = await asyncio.wait_for(carol_events.get(), 10)
        if got["pubsub_event"]["items"]["node"] != marker:
            raise RuntimeError(
                "carol (not available to the component) got a notification of %s first"
                % got["pubsub_event"]["items"]["node"])
        print("ok presence-based delivery: bob notified, carol not", flush=True)
        passed += 1
        failed = 0
    except Exception as e:  # noqa: BLE001 - every failure is reported as the step's
        print(f"FAIL {step}: {type(e).__name__}: {e}", flush=True)
        failed = 1
    finally:
        for c in clients:
            c.disconnect()
    print(f"slixmpp component: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True, help="the server's c2s port")
    p.add_argument("--domain", default="localhost")
    p.add_argument("--service", required=True, help="the component's JID")
    p.add_argument("--timeout", type=float, default=30)
    args = p.parse_args()

    async def bounded() -> int:
        return await asyncio.wait_for(run(args), args.timeout)

    try:
        return asyncio.run(bounded())
    except asyncio.TimeoutError:
        print(f"FAIL timeout: the run took more than {args.timeout} s", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
