"""`make run`: the embedded stack and the four services, a demo checkout, then wait for Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from handshake_devstack.console import ConsoleProcess
from handshake_devstack.processes import free_port, port_open
from handshake_devstack.stack import EmbeddedStack, StackPorts
from handshake_devstack.storefront import Storefront
from handshake_devstack.system import SERVICES, System

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PORTS = {
    "postgres": 55433,
    "kafka": 59093,
    "stripe": 58420,
    "order": 8001,
    "payment": 8002,
    "inventory": 8003,
    "webhook-ingest": 8004,
    "console": 8005,
    "identity": 8006,
}


def port(name: str) -> int:
    wanted = int(os.environ.get(f"HANDSHAKE_RUN_PORT_{name.upper().replace('-', '_')}", DEFAULT_PORTS[name]))
    return wanted if not port_open(wanted) else free_port()


def say(line: str = "") -> None:
    print(line, flush=True)


def main() -> int:
    data = ROOT / ".data" / "run"
    stack = EmbeddedStack(data, StackPorts(port("postgres"), port("kafka"), port("stripe")))
    system = System(stack, ROOT, ports={s.name: port(s.name) for s in SERVICES}, recreate_databases=True)
    console = ConsoleProcess(system, port=port("console"), identity_port=port("identity"))
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        say("Starting PostgreSQL, the Kafka-compatible broker and the Stripe emulator ...")
        stack.start()
        say("Starting order, payment, inventory and webhook-ingest (migrations run on start) ...")
        system.start()
        say("Starting the operations console and the development sign-in ...")
        console.start()
        shop = Storefront(system)
        shop.seed()
        say()
        say("Handshake is running:")
        for spec in SERVICES:
            say(f"  {spec.name:<15} {system.url(spec.name)}   (/healthz /readyz /metrics, OpenAPI at /docs)")
        say(f"  {'webhook':<15} {system.webhook_url}   (registered with the Stripe emulator)")
        say(f"  {'postgres':<15} {stack.postgres.url()}   (databases: {', '.join(system.database_urls)})")
        say(f"  {'kafka':<15} {stack.broker.bootstrap_servers}")
        say(f"  {'stripe':<15} {stack.stripe.api_base}   (emulator)")
        say(f"  logs            {stack.logs}")
        say(f"  admin token     {shop.admin_token}")
        say(f"  {'console':<15} {console.url}   ({console.sign_in_hint})")
        say(f"  {'sign-in (dev)':<15} {console.identity.url}   (development OIDC issuer)")
        say()
        say("Demo checkout: 2 x HS-MUG + 1 x HS-TEE to DE with coupon WELCOME10, paid with card 4242 ...")
        started = time.monotonic()
        result = shop.full_checkout(
            [{"sku": "HS-MUG", "quantity": 2}, {"sku": "HS-TEE", "quantity": 1}], coupon="WELCOME10"
        )
        order = result["order"]
        snap = order["snapshot"]
        say(f"Order {order['order_id']} is {order['state']} after {time.monotonic() - started:.2f}s")
        say(
            f"  subtotal {snap['subtotal']}  discount {snap['discount']}  tax {snap['tax']}  "
            f"shipping {snap['shipping']}  total {snap['total']} {snap['currency']} (minor units)"
        )
        say(f"  payment intent {order['payment_intent_id']}")
        say("  timeline:")
        for step in order["timeline"]:
            say(f"    {step['at']}  {step['from'] or '-':>16} -> {step['to']:<20} {step['reason']} ({step['actor']})")
        say(
            f"  lookup: curl -H 'X-Order-Token: {result['placed']['lookup_token']}' "
            f"{system.url('order')}/v1/orders/{order['order_id']}"
        )
        say(
            f"  in the console: {console.url}/orders/{order['order_id']}  (or search {order.get('reference')}), "
            "signed in as sam"
        )
        say()
        say("Press Ctrl-C to stop everything.")
        while True:
            for name, process in system.processes.items():
                if not process.running:
                    say(f"{name} exited unexpectedly; see {process.log_path}")
                    return 1
            if not console.running:
                say(f"console exited unexpectedly; see {system.logs / 'console.log'}")
                return 1
            time.sleep(1)
    except KeyboardInterrupt:
        say("\nStopping ...")
        return 0
    finally:
        # a second Ctrl-C must not abandon the orderly stop half-way
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        console.stop()
        system.stop()
        stack.stop()
        say("Stopped: no Handshake process is left running.")


if __name__ == "__main__":
    sys.exit(main())
