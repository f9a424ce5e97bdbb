"""What the interoperability scripts share: the step runner, the command line, a
verifying TLS context, the watchdog, an event-queue client for the plugin-driven slixmpp
tests, and the phases, checks and JSON summary of the XEP-0198 scripts.

Each script (`slixmpp_core.py`, `slixmpp_pubsub.py`, `slixmpp_pep.py`, `slixmpp_sm.py`,
`aioxmpp_sm.py`) is run as a program from this directory, so `import harness` finds this
file. Their common output contract: one `ok <step>` line per passed step, then
`<client> <name>: N passed, 0 failed` (exit 0); on failure `FAIL <step>: <reason>`, the
summary with `1 failed`, and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
from typing import Any, Awaitable, Callable, Iterable

import slixmpp
from slixmpp.exceptions import IqError

from cutlink import Link


class StepFailure(Exception):
    """A step failed; the message is the reason printed after `FAIL <step>:`."""


class Steps:
    """The current step's name and the count of passed steps."""

    def __init__(self, args: argparse.Namespace, first: str = "start"):
        self.args = args
        self.passed = 0
        self.step = first

    def begin(self, step: str) -> None:
        self.step = step

    def ok(self, detail: str = "", step: str | None = None) -> None:
        self.passed += 1
        name = step if step is not None else self.step
        print("ok %s%s" % (name, (" (%s)" % detail) if detail else ""), flush=True)


def make_ssl_context(cafile: str | None) -> ssl.SSLContext:
    """A verifying client context: CERT_REQUIRED and host name check, never insecure."""
    if cafile:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    else:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def wait(awaitable: Any, timeout: float, what: str) -> Any:
    """Await with a time limit; a timeout is a failed step naming `what`."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise StepFailure("timed out after %.0f s waiting for %s" % (timeout, what)) from None


async def wait_until(done: Callable[[], bool], changed: asyncio.Event, timeout: float, what: str) -> None:
    """Waits until `done()` holds, asking again each time `changed` is set; a timeout is a
    failed step naming `what`."""
    async def until() -> None:
        while not done():
            changed.clear()
            await changed.wait()
    await wait(until(), timeout, what)


def describe_failure(exc: BaseException, xmpp_error: tuple[type, str] = (IqError, "iq error")) -> str:
    """The reason printed for an exception that ended the steps. `xmpp_error` is the client
    library's exception for an XMPP error reply (with `condition` and `text`) and what to
    call it (slixmpp's `IqError` by default)."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, StepFailure):
        return str(exc)
    error_type, label = xmpp_error
    if isinstance(exc, error_type):
        return "%s %s: %s" % (label, exc.condition, exc.text)
    return "unexpected %s: %s" % (type(exc).__name__, exc)


def report(name: str, steps: Steps, failure: str | None, client: str = "slixmpp") -> int:
    """Prints the final lines; returns the exit status."""
    if failure is not None:
        print("FAIL %s: %s" % (steps.step, failure), flush=True)
        print("%s %s: %d passed, 1 failed" % (client, name, steps.passed), flush=True)
        return 1
    print("%s %s: %d passed, 0 failed" % (client, name, steps.passed), flush=True)
    return 0


async def run_then_stop(steps: Steps, body: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]],
                        describe: Callable[[BaseException], str] = describe_failure) -> str | None:
    """Runs `body` within the overall timeout (less 4 s for `stop`), then `stop`; returns
    why it failed (`describe`), or None if every step passed."""
    failure = None
    try:
        await asyncio.wait_for(body(), steps.args.timeout - 4)
    except Exception as exc:  # noqa: BLE001 - any crash is a failed step
        failure = describe(exc)
    await stop()
    return failure


def argument_parser(description: str) -> argparse.ArgumentParser:
    """The options every script takes: where the server is, two accounts, TLS trust, time."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1", help="address to connect to (default 127.0.0.1)")
    p.add_argument("--port", type=int, required=True, help="c2s port")
    p.add_argument("--domain", default="localhost", help="XMPP domain; also the name the certificate must carry")
    p.add_argument("--user1", required=True)
    p.add_argument("--pass1", required=True)
    p.add_argument("--user2", required=True)
    p.add_argument("--pass2", required=True)
    p.add_argument("--cafile", help="PEM file of trusted CA/self-signed certificates (default: system store)")
    p.add_argument("--timeout", type=float, default=40.0, help="overall time limit in seconds (default 40)")
    p.add_argument("--step-timeout", type=float, default=10.0, help="time limit per wait in seconds (default 10)")
    p.add_argument("-v", "--verbose", action="store_true", help="print all wire traffic to stderr")
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """The checks every script makes on its options."""
    if args.user1 == args.user2:
        p.error("--user1 and --user2 must be different accounts")
    if args.timeout < 2:
        p.error("--timeout must be at least 2 seconds")
    if args.cafile and not os.path.isfile(args.cafile):
        p.error("--cafile %s: no such file" % args.cafile)
    return args


def run_main(args: argparse.Namespace, amain: Callable[[argparse.Namespace], Awaitable[int]]) -> int:
    """Runs `amain(args)` with logging set from --verbose and a last-resort watchdog that
    exits 5 s after the overall timeout, in case the event loop itself gets stuck."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL,
                        format="%(levelname)-7s %(name)s: %(message)s")

    def on_alarm(_signum: int, _frame: Any) -> None:
        print("FAIL watchdog: process still running 5 s after the overall timeout", flush=True)
        os._exit(1)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.timeout) + 5)
    try:
        return asyncio.run(amain(args))
    finally:
        signal.alarm(0)


class EventPeer:
    """One slixmpp client (SCRAM-SHA-256 over verified STARTTLS) with `plugins`, which puts
    every event named in `events` on one queue as `(name, stanza)`."""

    def __init__(self, jid: str, password: str, args: argparse.Namespace,
                 plugins: Iterable[str], events: Iterable[str]):
        xmpp = slixmpp.ClientXMPP(jid, password, sasl_mech="SCRAM-SHA-256")
        xmpp.enable_plaintext = False
        xmpp.enable_direct_tls = False
        xmpp.enable_starttls = True
        xmpp.ssl_context = make_ssl_context(args.cafile)
        for plugin in plugins:
            xmpp.register_plugin(plugin)
        self.xmpp = xmpp
        self.events: asyncio.Queue = asyncio.Queue()
        self.started: asyncio.Future = asyncio.get_event_loop().create_future()
        for name in events:
            xmpp.add_event_handler(name, self.queue_as(name))
        xmpp.add_event_handler("session_start", self._on_start)
        xmpp.add_event_handler("failed_all_auth", lambda _e: self._fail("authentication failed"))

    def queue_as(self, name: str) -> Callable[[Any], None]:
        """A handler that queues its stanza under `name`."""
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
        """The next queued event called `name` (others are dropped)."""
        while True:
            got, msg = await asyncio.wait_for(self.events.get(), timeout)
            if got == name:
                return msg


async def run_two(name: str, steps: Steps, peers: tuple[EventPeer, EventPeer],
                  body: Callable[[], Awaitable[None]]) -> int:
    """Runs `body` within the overall timeout (less 4 s for the disconnect), disconnects
    both peers, and reports."""
    async def stop() -> None:
        for p in peers:
            p.xmpp.disconnect()
        await asyncio.sleep(0.2)
    return report(name, steps, await run_then_stop(steps, body, stop))


def main_two(argv: list[str], doc: str, name: str, run_cls: Callable[[argparse.Namespace], Steps],
             peer_cls: Callable[[str, str, argparse.Namespace], EventPeer], resources: tuple[str, str]) -> int:
    """The `main` of a script whose `run_cls(args).steps(a, b)` drives two peers: `a` is
    user1 on resource `resources[0]`, `b` user2 on `resources[1]`."""

    async def amain(args: argparse.Namespace) -> int:
        run = run_cls(args)
        a = peer_cls("%s@%s/%s" % (args.user1, args.domain, resources[0]), args.pass1, args)
        b = peer_cls("%s@%s/%s" % (args.user2, args.domain, resources[1]), args.pass2, args)
        return await run_two(name, run, (a, b), lambda: run.steps(a, b))

    p = argument_parser(doc.split("\n\n")[0])
    return run_main(check_args(p, p.parse_args(argv)), amain)


def add_sm_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the XEP-0198 scripts: how the link is cut, and the items of each phase."""
    p.add_argument("--cut", choices=("reset", "silent"), default="reset",
                   help="how the link is cut (see cutlink.py; default reset)")
    p.add_argument("--live", type=int, default=12, help="items before the cut (default 12)")
    p.add_argument("--burst", type=int, default=3, help="items published just before the cut (default 3)")
    p.add_argument("--during", type=int, default=10, help="items published during the cut (default 10)")
    p.add_argument("--after", type=int, default=3, help="items after the resumption (default 3)")


class SmRun(Steps):
    """What the XEP-0198 scripts (`slixmpp_sm.py`, `aioxmpp_sm.py`) share: the item ids of
    the four phases (live, a burst just before the cut, during the cut, after the
    resumption), the items published so far, the steps and checks that do not depend on
    the client library, and the JSON summary that tests/e2e/interop_sm.rs asserts on."""

    def __init__(self, args: argparse.Namespace, client: str, version: str):
        super().__init__(args)
        self.client = client
        self.live = ["live%02d" % i for i in range(args.live)]
        self.burst = ["burst%02d" % i for i in range(args.burst)]
        self.during = ["cut%02d" % i for i in range(args.during)]
        self.after = ["after%02d" % i for i in range(args.after)]
        self.published: list[str] = []
        self.summary: dict[str, Any] = {
            "client": client,
            "version": version,
            "cut": args.cut,
            "published": self.published,
        }

    async def publish_during_cut(self, publish: Callable[[list[str]], Awaitable[None]], received: list[str]) -> None:
        """The step in which the items of the cut are published; none of them may reach the
        subscriber (`received`: its items so far) while the link is down."""
        self.begin("publish during the cut")
        await publish(self.during)
        self.published += self.during
        self.summary["published_during_cut"] = len(self.during)
        if len(received) != self.summary["received_at_cut"]:
            raise StepFailure("items arrived while the link was down")
        self.ok("%d items" % len(self.during))

    def check_received(self, got: list[str]) -> None:
        """Records what the subscriber received against what was published; a failed step
        unless it is every item once and in order."""
        s = self.summary
        s["received"] = list(got)
        s["duplicates"] = len(got) - len(set(got))
        s["missing"] = len(set(self.published) - set(got))
        s["in_order"] = got == self.published
        if got != self.published:
            raise StepFailure("received %s, published %s" % (got, self.published))

    async def run(self, link: Link, body: Callable[[], Awaitable[None]], stop: Callable[[], None],
                  describe: Callable[[BaseException], str]) -> int:
        """Runs `body` (see `run_then_stop`), then `stop`s the clients and closes `link`;
        prints the report and the JSON summary and returns the exit status."""
        async def stop_all() -> None:
            stop()
            await asyncio.sleep(0.2)
            await link.close()
        failure = await run_then_stop(self, body, stop_all, describe)
        status = report("sm", self, failure, self.client)
        self.summary["ok"] = failure is None
        self.summary["failure"] = None if failure is None else "%s: %s" % (self.step, failure)
        print(json.dumps(self.summary), flush=True)
        return status
