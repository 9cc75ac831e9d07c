"""The ``agentosrpc.memory.search`` answer: which entries a searcher may see, and in what order.

Rules:

- Only ``committed`` entries are returned; ``proposed`` and ``rejected`` ones never are.
- Working memory is returned only for the request's ``goal_id`` (and tenant). Without a
  ``goal_id`` no working memory is returned; another goal's working memory never is.
- Episodic and semantic entries are those of the request's tenant and of tenant ``*``
  (curated files shared by every tenant).
- Relevance: the query's words are OR-ed (``websearch_to_tsquery('english', 'a or b or …')``),
  so an entry matching any word qualifies, and ranked with ``ts_rank_cd`` (cover density,
  normalised by document length); tags count as weight B, content as weight D.
- Semantic entries tagged ``always`` (e.g. the tone guidelines) are included in every search
  that asks for semantic memory, even when no word matches: they get a seat first, with
  ``score = max(relevance, 0.001)``, so a writer always sees them; the best matches fill the
  remaining seats. At most ``k`` entries are returned, highest score first.
"""

from __future__ import annotations

import asyncpg
from agentos_schemas.rpc import MemorySearch, MemorySearchResult

from agentos_memory import store
from agentos_memory.logic import pick


async def answer(pool: asyncpg.Pool, request: MemorySearch) -> MemorySearchResult:
    """Answer one search request (errors are turned into ``error`` replies by the bus)."""
    pinned, matched = await store.search(pool, request)
    return MemorySearchResult(entries=tuple(pick(pinned, matched, request.k)))
