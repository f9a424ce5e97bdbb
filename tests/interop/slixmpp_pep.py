#!/usr/bin/env python3
"""XEP-0163 (PEP) interoperability test for Kinglet, driven by slixmpp's own plugins.

Two slixmpp clients log in with the xep_0115 (caps), xep_0163 (PEP), xep_0118 (user tune)
and xep_0084 (user avatar) plugins; the plugins advertise `+notify` interest through
their entity capabilities, which the server resolves with a disco#info query of its own.
The receiver gets a presence subscription to the publisher; the publisher then publishes a
tune and an avatar (data and metadata) with the plugins' own calls, and the receiver must
get the tune and the avatar metadata through slixmpp's events (`user_tune_publish`,
`avatar_metadata_publish`), sent from the publisher's bare JID, and read the avatar data
back with `retrieve_avatar`. The publisher's account must show the `pubsub/pep` identity.

Output: one `ok <step>` line per passed step and a final
`slixmpp pep: N passed, 0 failed` line (exit 0); on failure a `FAIL <step>: <reason>`
line, the summary with `1 failed`, and exit status 1. Bounded by --timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys


from harness import EventPeer, StepFailure, Steps, main_two


class Peer(EventPeer):
    """One slixmpp client with the PEP plugins, and the PEP events it received."""

    def __init__(self, jid: str, password: str, args: argparse.Namespace):
        super().__init__(jid, password, args,
                         ("xep_0030", "xep_0004", "xep_0060", "xep_0115", "xep_0163",
                          "xep_0118", "xep_0084"),
                         ("user_tune_publish", "avatar_metadata_publish"))


class Run(Steps):
    async def steps(self, pub: Peer, sub: Peer) -> None:
        a = self.args
        t = a.step_timeout
        owner = "%s@%s" % (a.user1, a.domain)

        self.begin("login")
        await pub.start(a)
        await sub.start(a)
        self.ok()

        self.begin("account is a PEP service")
        info = await sub.xmpp.plugin["xep_0030"].get_info(jid=owner, timeout=t)
        ids = info["disco_info"]["identities"]
        if not any(c == "pubsub" and ty == "pep" for (c, ty, _l, _n) in ids):
            raise StepFailure("no pubsub/pep identity: %s" % (ids,))
        self.ok()

        self.begin("presence subscription")
        contact = "%s@%s" % (a.user2, a.domain)
        pub.xmpp.add_event_handler(
            "presence_subscribe",
            lambda p: pub.xmpp.send_presence(pto=contact, ptype="subscribed"))
        sub.xmpp.add_event_handler(
            "presence_subscribed", lambda p: sub.events.put_nowait(("subscribed", p)))
        sub.xmpp.send_presence_subscription(pto=owner)
        await sub.expect("subscribed", t)
        self.ok()

        self.begin("caps with +notify")
        # The plugins updated the caps after the first presence: announce them now.
        await asyncio.sleep(0.5)
        sub.xmpp.send_presence()
        pub.xmpp.send_presence()
        await asyncio.sleep(1.0)
        self.ok()

        self.begin("tune published, contact notified")
        await pub.xmpp.plugin["xep_0118"].publish_tune(
            artist="Kinglet", title="Interop", length=180, timeout=t)
        msg = await sub.expect("user_tune_publish", t)
        tune = msg["pubsub_event"]["items"]["item"]["tune"]
        if tune["title"] != "Interop" or tune["artist"] != "Kinglet":
            raise StepFailure("bad tune: %s" % msg)
        if str(msg["from"]) != owner:
            raise StepFailure("event from %s, not the bare JID %s" % (msg["from"], owner))
        self.ok()

        self.begin("avatar published, metadata notified, data retrievable")
        data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
        avatar = pub.xmpp.plugin["xep_0084"]
        aid = avatar.generate_id(data)
        await avatar.publish_avatar(data, timeout=t)
        await avatar.publish_avatar_metadata(
            items=[{"id": aid, "type": "image/png", "bytes": len(data)}], timeout=t)
        msg = await sub.expect("avatar_metadata_publish", t)
        info = msg["pubsub_event"]["items"]["item"]["avatar_metadata"]["info"]
        if info["id"] != aid:
            raise StepFailure("metadata names %r, expected %r" % (info["id"], aid))
        res = await sub.xmpp.plugin["xep_0084"].retrieve_avatar(owner, aid, timeout=t)
        got = res["pubsub"]["items"]["item"]["avatar_data"]["value"]
        if got != data:
            raise StepFailure("avatar data differs (%d bytes back)" % len(got or b""))
        self.ok()


def main(argv: list[str]) -> int:
    return main_two(argv, __doc__, "pep", Run, Peer, ("pub", "sub"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
