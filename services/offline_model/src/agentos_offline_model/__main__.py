"""``python -m agentos_offline_model --port 0 --scenario FILE``: serve and print the base URL."""

from agentos_offline_model.server import main

raise SystemExit(main())
