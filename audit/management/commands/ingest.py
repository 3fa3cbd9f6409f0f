"""``manage.py ingest``: consume the workers' streams into PostgreSQL until stopped."""

from __future__ import annotations

import os
import signal
import socket
import threading

from django.core.management.base import BaseCommand

from audit.ingest import Ingestor


class Command(BaseCommand):
    help = "Consume approval requests and exchanges from Redis into PostgreSQL."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--consumer",
            default=f"{socket.gethostname()}-{os.getpid()}",
            help="Consumer name in the group (default: host-pid)",
        )
        parser.add_argument("--batch", type=int, default=500, help="Entries per read")
        parser.add_argument(
            "--block-ms",
            type=int,
            default=1000,
            help="How long one read waits for new entries (ms)",
        )
        parser.add_argument(
            "--claim-idle-ms",
            type=int,
            default=60_000,
            help="Claim entries another consumer left pending this long (ms)",
        )

    def handle(
        self, *args, consumer: str, batch: int, block_ms: int, claim_idle_ms: int, **options
    ) -> None:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        ingestor = Ingestor(
            consumer=consumer, batch=batch, block_ms=block_ms, claim_idle_ms=claim_idle_ms
        )
        self.stdout.write(f"gatehouse ingest {consumer} consuming")
        self.stdout.flush()
        ingestor.run(stop)
