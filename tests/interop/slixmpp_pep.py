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
import logging
import os
import signal
import ssl
import sys
from typing import Any

import slixmpp
from slixmpp.exceptions import IqError


class StepFailure(Exception):
    """A step failed; the message is printed after `FAIL <step>:`."""


class Peer:
    """One slixmpp client with the PEP plugins, and the PEP events it received."""

    def __init__(self, jid: str, password: str, args: argparse.Namespace):
        xmpp = slixmpp.ClientXMPP(jid, password, sasl_mech="SCRAM-SHA-256")
        xmpp.enable_plaintext = False
        xmpp.enable_direct_tls = False
        xmpp.enable_starttls = True
        xmpp.ssl_context = ssl.create_default_context(cafile=args.cafile)
        for p in ("xep_0030", "xep_0004", "xep_0060", "xep_0115", "xep_0163", "xep_0118",
                  "xep_0084"):
            xmpp.register_plugin(p)
        self.xmpp = xmpp
        self.events: asyncio.Queue = asyncio.Queue()
        self.started: asyncio.Future = asyncio.get_event_loop().create_future()
        for name in ("user_tune_publish", "avatar_metadata_publish"):
            xmpp.add_event_handler(name, self._handler(name))
        xmpp.add_event_handler("session_start", self._on_start)
        xmpp.add_event_handler("failed_all_auth", lambda _e: self._fail("authentication failed"))

    def _handler(self, name: str):
        def on_event(msg: Any) -> None:
            self.events.put_nowait((name, msg))
        return on_event

    def _on_start(self, _event: Any) -> None:
        self.xmpp.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def _fail(self, why: str) -> None:
        if not self.started.done():
            self.started.set_exception(StepFailure(why))

    async def start(self, args: argparse.Namespace) -> None:
        self.xmpp.connect(host=args.host, port=args.port)
        await asyncio.wait_for(self.started, args.step_timeout)

    async def expect(self, name: str, timeout: float) -> Any:
        while True:
            got, msg = await asyncio.wait_for(self.events.get(), timeout)
            if got == name:
                return msg


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.passed = 0
        self.step = "start"

    def begin(self, step: str) -> None:
        self.step = step

    def ok(self, detail: str = "") -> None:
        self.passed += 1
        print("ok %s%s" % (self.step, (" (%s)" % detail) if detail else ""), flush=True)

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


async def amain(args: argparse.Namespace) -> int:
    run = Run(args)
    pub = Peer("%s@%s/pub" % (args.user1, args.domain), args.pass1, args)
    sub = Peer("%s@%s/sub" % (args.user2, args.domain), args.pass2, args)
    failure = None
    try:
        await asyncio.wait_for(run.steps(pub, sub), args.timeout - 4)
    except asyncio.TimeoutError:
        failure = "timeout"
    except StepFailure as exc:
        failure = str(exc)
    except IqError as exc:
        failure = "iq error %s: %s" % (exc.condition, exc.text)
    except Exception as exc:  # noqa: BLE001 - any crash is a failed step
        failure = "unexpected %s: %s" % (type(exc).__name__, exc)
    for p in (pub, sub):
        p.xmpp.disconnect()
    await asyncio.sleep(0.2)
    if failure is not None:
        print("FAIL %s: %s" % (run.step, failure), flush=True)
        print("slixmpp pep: %d passed, 1 failed" % run.passed, flush=True)
        return 1
    print("slixmpp pep: %d passed, 0 failed" % run.passed, flush=True)
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--user1", required=True)
    p.add_argument("--pass1", required=True)
    p.add_argument("--user2", required=True)
    p.add_argument("--pass2", required=True)
    p.add_argument("--cafile")
    p.add_argument("--timeout", type=float, default=40.0)
    p.add_argument("--step-timeout", type=float, default=10.0)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.cafile and not os.path.isfile(args.cafile):
        p.error("--cafile %s: no such file" % args.cafile)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL)

    def on_alarm(_signum: int, _frame: Any) -> None:
        print("FAIL watchdog: still running after the overall timeout", flush=True)
        os._exit(1)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.timeout) + 5)
    try:
        return asyncio.run(amain(args))
    finally:
        signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
