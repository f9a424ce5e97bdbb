#!/usr/bin/env python3
"""XEP-0060 interoperability test for Kinglet, driven by slixmpp's xep_0060 plugin.

Two slixmpp clients log in (STARTTLS, verified certificate). The owner discovers the
service, creates a node with a configuration form, reads the configuration back, changes
it, publishes (with and without an item id), retracts, purges and deletes the node, while
the subscriber subscribes and receives every event through slixmpp's own event handlers
(`pubsub_publish`, `pubsub_retract`, `pubsub_purge`, `pubsub_delete`). Error cases are
checked too (conflict on a duplicate create, item-not-found on a missing node). Then
multi-subscribe (two SubIDs, one notification carrying both as SHIM headers,
`subid-required`) and the authorize access model (pending subscription, the approval form
answered by message, the subscriber's `pubsub_subscription` event). Last, XEP-0248: a
subscriber of a collection created by a `/` path gets a leaf's items with the leaf's node
and a SHIM `Collection` header.

Output: one `ok <step>` line per passed step and a final
`slixmpp pubsub: N passed, 0 failed` line (exit 0); on failure a `FAIL <step>: <reason>`
line, the summary with `1 failed`, and exit status 1. The whole run is bounded by
--timeout seconds (default 40).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from harness import EventPeer, StepFailure, Steps, main_two

PS = "http://jabber.org/protocol/pubsub"
SHIM = "http://jabber.org/protocol/shim"
DATA = "jabber:x:data"
PAYLOAD_NS = "urn:example:sensor"


async def expect_iq_error(request: Any, condition: str, app: str | None, succeeded: str) -> None:
    """Awaits `request`, which must fail with the stanza error `condition` and, if `app` is
    given, the pubsub#errors condition `app`; `succeeded` is the failure if it does not."""
    try:
        await request
        raise StepFailure(succeeded)
    except IqError as e:
        if app is None:
            if e.condition != condition:
                raise StepFailure("expected %s, got %s" % (condition, e.condition))
            return
        got = [c.tag for c in e.iq["error"].xml if c.tag.startswith("{%s#errors}" % PS)]
        if e.condition != condition or not got or not got[0].endswith(app):
            raise StepFailure("expected %s + %s, got %s %s" % (condition, app, e.condition, got))


class Peer(EventPeer):
    """One slixmpp client and the pub-sub events it received."""

    def __init__(self, jid: str, password: str, args: argparse.Namespace):
        super().__init__(jid, password, args, ("xep_0030", "xep_0004", "xep_0060"),
                         ("pubsub_publish", "pubsub_retract", "pubsub_purge", "pubsub_delete",
                          "pubsub_subscription"))
        # slixmpp's "message" event needs a <body/>: match data-form messages directly.
        self.xmpp.register_handler(Callback(
            "pubsub approval form",
            MatchXPath("{jabber:client}message/{%s}x" % DATA),
            self._on_message,
        ))

    def _on_message(self, msg: Any) -> None:
        # Approval forms (XEP-0060 §8.6) arrive as plain messages carrying a data form.
        if msg.xml.find("{%s}x" % DATA) is not None:
            self.events.put_nowait(("form", msg))

    @property
    def ps(self) -> Any:
        return self.xmpp.plugin["xep_0060"]


class Run(Steps):
    async def steps(self, owner: Peer, sub: Peer) -> None:
        a = self.args
        service = "pubsub." + a.domain
        t = a.step_timeout

        self.begin("login")
        await owner.start(a)
        await sub.start(a)
        self.ok()

        self.begin("disco")
        items = await owner.xmpp.plugin["xep_0030"].get_items(jid=a.domain, timeout=t)
        jids = [i[0] for i in items["disco_items"]["items"]]
        if service not in jids:
            raise StepFailure("%s not in the domain's disco#items: %s" % (service, jids))
        info = await owner.xmpp.plugin["xep_0030"].get_info(jid=service, timeout=t)
        ids = info["disco_info"]["identities"]
        if not any(c == "pubsub" and ty == "service" for (c, ty, _l, _n) in ids):
            raise StepFailure("no pubsub/service identity: %s" % (ids,))
        feats = info["disco_info"]["features"]
        for f in ("publish", "subscribe", "create-nodes", "config-node", "purge-nodes"):
            if PS + "#" + f not in feats:
                raise StepFailure("feature %s not advertised" % f)
        self.ok()

        self.begin("create-and-configure")
        form = owner.xmpp.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="pubsub#title", value="Interop sensors")
        form.add_field(var="pubsub#max_items", value="5")
        form.add_field(var="pubsub#notify_retract", value="1")
        await owner.ps.create_node(service, "interop", config=form, timeout=t)
        self.ok()

        self.begin("duplicate create is conflict")
        await expect_iq_error(owner.ps.create_node(service, "interop", timeout=t), "conflict", None,
                              "second create succeeded")
        self.ok()

        self.begin("get configuration")
        res = await owner.ps.get_node_config(service, "interop", timeout=t)
        cfg = res["pubsub_owner"]["configure"]["form"]
        values = cfg.get_values()
        if values.get("pubsub#title") != "Interop sensors" or str(values.get("pubsub#max_items")) != "5":
            raise StepFailure("configuration did not round-trip: %s" % values)
        self.ok()

        self.begin("set configuration")
        form = owner.xmpp.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden", value=PS + "#node_config")
        form.add_field(var="pubsub#title", value="Renamed")
        await owner.ps.set_node_config(service, "interop", form, timeout=t)
        res = await owner.ps.get_node_config(service, "interop", timeout=t)
        if res["pubsub_owner"]["configure"]["form"].get_values().get("pubsub#title") != "Renamed":
            raise StepFailure("title not changed")
        self.ok()

        self.begin("subscribe")
        res = await sub.ps.subscribe(service, "interop", timeout=t)
        state = res["pubsub"]["subscription"]["subscription"]
        if state != "subscribed":
            raise StepFailure("subscription state %r" % state)
        self.ok()

        self.begin("publish with id, subscriber notified")
        payload = ET.Element("{%s}reading" % PAYLOAD_NS)
        payload.text = "21.5"
        res = await owner.ps.publish(service, "interop", id="r1", payload=payload, timeout=t)
        msg = await sub.expect("pubsub_publish", t)
        item = msg["pubsub_event"]["items"]["item"]
        got = item["payload"]
        if item["id"] != "r1" or got is None or got.text != "21.5":
            raise StepFailure("bad event item: %s" % msg)
        self.ok()

        self.begin("publish without id")
        payload = ET.Element("{%s}reading" % PAYLOAD_NS)
        payload.text = "22.0"
        res = await owner.ps.publish(service, "interop", payload=payload, timeout=t)
        gen = res["pubsub"]["publish"]["item"]["id"]
        if not gen:
            raise StepFailure("no generated item id in the result")
        msg = await sub.expect("pubsub_publish", t)
        if msg["pubsub_event"]["items"]["item"]["id"] != gen:
            raise StepFailure("event id differs from the generated id")
        self.ok(gen)

        self.begin("publish-options precondition")
        opts = owner.xmpp.plugin["xep_0004"].make_form(ftype="submit")
        opts.add_field(var="FORM_TYPE", ftype="hidden", value=PS + "#publish-options")
        opts.add_field(var="pubsub#access_model", value="whitelist")
        payload = ET.Element("{%s}reading" % PAYLOAD_NS)
        payload.text = "0"
        await expect_iq_error(
            owner.ps.publish(service, "interop", id="never", payload=payload, options=opts, timeout=t),
            "conflict", "precondition-not-met", "publish with an unmet precondition succeeded")
        self.ok()

        self.begin("own subscriptions")
        res = await sub.ps.get_subscriptions(service, timeout=t)
        nodes = [s["node"] for s in res["pubsub"]["subscriptions"]]
        if nodes != ["interop"]:
            raise StepFailure("subscriptions %s" % nodes)
        self.ok()

        self.begin("get items")
        res = await sub.ps.get_items(service, "interop", timeout=t)
        got = [i["id"] for i in res["pubsub"]["items"]]
        if got != ["r1", gen]:
            raise StepFailure("items %s" % got)
        self.ok()

        self.begin("retract, subscriber notified")
        await owner.ps.retract(service, "interop", "r1", notify=True, timeout=t)
        msg = await sub.expect("pubsub_retract", t)
        if msg["pubsub_event"]["items"]["retract"]["id"] != "r1":
            raise StepFailure("bad retract event: %s" % msg)
        self.ok()

        self.begin("purge, subscriber notified")
        await owner.ps.purge(service, "interop", timeout=t)
        await sub.expect("pubsub_purge", t)
        res = await sub.ps.get_items(service, "interop", timeout=t)
        if len(res["pubsub"]["items"]) != 0:
            raise StepFailure("items left after purge")
        self.ok()

        self.begin("delete, subscriber notified")
        await owner.ps.delete_node(service, "interop", timeout=t)
        await sub.expect("pubsub_delete", t)
        self.ok()

        self.begin("deleted node is item-not-found")
        await expect_iq_error(sub.ps.get_items(service, "interop", timeout=t), "item-not-found", None,
                              "items of a deleted node returned")
        self.ok()

        self.begin("multi-subscribe: two SubIDs")
        await owner.ps.create_node(service, "multi", timeout=t)
        first = await sub.ps.subscribe(service, "multi", timeout=t)
        opts = sub.xmpp.plugin["xep_0004"].make_form(ftype="submit")
        opts.add_field(var="FORM_TYPE", ftype="hidden", value=PS + "#subscribe_options")
        opts.add_field(var="pubsub#include_body", value="1")
        second = await sub.ps.subscribe(service, "multi", options=opts, timeout=t)
        ids = [r["pubsub"]["subscription"]["subid"] for r in (first, second)]
        if not all(ids) or ids[0] == ids[1]:
            raise StepFailure("SubIDs %s" % ids)
        self.ok(", ".join(ids))

        self.begin("one notification with both SubIDs as SHIM headers")
        payload = ET.Element("{%s}reading" % PAYLOAD_NS)
        payload.text = "7"
        await owner.ps.publish(service, "multi", id="m1", payload=payload, timeout=t)
        msg = await sub.expect("pubsub_publish", t)
        headers = msg.xml.find("{%s}headers" % SHIM)
        got = sorted(h.text for h in headers) if headers is not None else []
        if got != sorted(ids):
            raise StepFailure("SHIM SubIDs %s, expected %s" % (got, ids))
        body = msg.xml.find("{jabber:client}body")
        if body is None or "m1" not in (body.text or ""):
            raise StepFailure("include_body: no body naming the item")
        try:
            await asyncio.wait_for(sub.expect("pubsub_publish", 0.5), 0.6)
            raise StepFailure("a second notification for the same JID")
        except asyncio.TimeoutError:
            pass
        self.ok()

        self.begin("unsubscribe needs the SubID")
        await expect_iq_error(sub.ps.unsubscribe(service, "multi", timeout=t), "bad-request", "subid-required",
                              "ambiguous unsubscribe succeeded")
        for i in ids:
            await sub.ps.unsubscribe(service, "multi", subid=i, timeout=t)
        await owner.ps.delete_node(service, "multi", timeout=t)
        self.ok()

        self.begin("authorize: pending, approval form to the owner")
        form = owner.xmpp.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="pubsub#access_model", value="authorize")
        await owner.ps.create_node(service, "gate", config=form, timeout=t)
        res = await sub.ps.subscribe(service, "gate", timeout=t)
        if res["pubsub"]["subscription"]["subscription"] != "pending":
            raise StepFailure("state %r" % res["pubsub"]["subscription"]["subscription"])
        msg = await owner.expect("form", t)
        x = msg.xml.find("{%s}x" % DATA)
        values = {}
        for f in x.findall("{%s}field" % DATA):
            v = f.find("{%s}value" % DATA)
            values[f.get("var")] = v.text if v is not None else ""
        if values.get("FORM_TYPE") != PS + "#subscribe_authorization" or values.get("pubsub#node") != "gate":
            raise StepFailure("approval form %s" % values)
        self.ok()

        self.begin("authorize: owner approves by message, subscriber told")
        answer = owner.xmpp.plugin["xep_0004"].make_form(ftype="submit")
        answer.add_field(var="FORM_TYPE", ftype="hidden", value=PS + "#subscribe_authorization")
        for var in ("pubsub#subid", "pubsub#node", "pubsub#subscriber_jid"):
            answer.add_field(var=var, value=values[var])
        answer.add_field(var="pubsub#allow", value="true")
        m = owner.xmpp.make_message(mto=service)
        m.append(answer)
        m.send()
        ev = await sub.expect("pubsub_subscription", t)
        state = ev["pubsub_event"]["subscription"]["subscription"]
        if state != "subscribed":
            raise StepFailure("subscription event state %r" % state)
        payload = ET.Element("{%s}reading" % PAYLOAD_NS)
        payload.text = "8"
        await owner.ps.publish(service, "gate", id="g1", payload=payload, timeout=t)
        await sub.expect("pubsub_publish", t)
        await owner.ps.delete_node(service, "gate", timeout=t)
        self.ok()

        self.begin("collections: a subscriber of the tree gets leaf events (XEP-0248)")
        # The first publish below `tree/` creates the collection `tree` (path collections).
        payload = ET.Element("{%s}reading" % PAYLOAD_NS)
        payload.text = "1"
        await owner.ps.publish(service, "tree/kitchen", id="k0", payload=payload, timeout=t)
        opts = sub.xmpp.plugin["xep_0004"].make_form(ftype="submit")
        opts.add_field(var="FORM_TYPE", ftype="hidden", value=PS + "#subscribe_options")
        opts.add_field(var="pubsub#subscription_type", value="items")
        opts.add_field(var="pubsub#subscription_depth", value="all")
        await sub.ps.subscribe(service, "tree", options=opts, timeout=t)
        payload = ET.Element("{%s}reading" % PAYLOAD_NS)
        payload.text = "2"
        await owner.ps.publish(service, "tree/garage", id="g2", payload=payload, timeout=t)
        msg = await sub.expect("pubsub_publish", t)
        items = msg["pubsub_event"]["items"]
        headers = msg.xml.find("{%s}headers" % SHIM)
        via = [h.text for h in headers if h.get("name") == "Collection"] if headers is not None else []
        if items["node"] != "tree/garage" or items["item"]["id"] != "g2" or via != ["tree"]:
            raise StepFailure("leaf event %s (Collection header %s)" % (msg, via))
        info = await sub.xmpp.plugin["xep_0030"].get_items(jid=service, node="tree", timeout=t)
        kids = sorted(i[1] for i in info["disco_items"]["items"])
        if kids != ["tree/garage", "tree/kitchen"]:
            raise StepFailure("disco#items of the collection: %s" % kids)
        self.ok()


def main(argv: list[str]) -> int:
    return main_two(argv, __doc__, "pubsub", Run, Peer, ("owner", "sub"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
