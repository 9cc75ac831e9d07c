"""``python -m agentos_gateway``: the gateway service in the foreground (what its worker processes run)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from agentos_kernel.settings import KernelSettings

from agentos_gateway.service import main

if __name__ == "__main__":
    logging.basicConfig(
        level=os.environ.get("AGENTOS_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    asyncio.run(main(KernelSettings()))
