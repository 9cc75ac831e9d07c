"""Token counting for context budgets: litellm's counter for one model, resolved once per process.

``agentos_kernel.llm.count_tokens(model, text)`` calls ``litellm.token_counter``, which selects
the model's tokenizer again on every call (tokenizer choice, native-or-Python backend routing,
encoding lookup): about 15 µs per call, more than encoding a typical prompt part takes. What it
selects depends only on the model, so :func:`counter` asks litellm for that count function once
and reuses it — the very function ``token_counter`` ends up calling, so the counts are the same
(including litellm's sampling of very long texts). It checks that on a probe text when it is
built and falls back to ``count_tokens`` itself if litellm's internals ever move or disagree.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from agentos_kernel.llm import count_tokens

Counter = Callable[[str], int]

_PROBE = 'AgentOS counts tokens: ünïcode, 数据, emoji 🙂, {"json": [1, 2.5, null]}\n## Heading\n- item'
log = logging.getLogger("agentos.context_manager")


@functools.cache
def counter(model: str) -> Counter:
    """A function giving ``count_tokens(model, text)`` for any ``text``, without re-resolving the
    tokenizer on each call."""
    fallback: Counter = functools.partial(count_tokens, model)
    try:
        import litellm
        from litellm.litellm_core_utils.token_counter import _get_count_function

        resolved = _get_count_function(model)
        agrees = resolved(_PROBE) == count_tokens(model, _PROBE) and resolved("") == count_tokens(model, "")
    except (ImportError, AttributeError, TypeError, KeyError, ValueError) as exc:
        # litellm moved or changed its internals (gone, renamed, another signature or result): count
        # through the public API. Anything else also fails token_counter itself, so it is raised.
        log.info("token counting through litellm.token_counter (no cached counter: %r)", exc)
        return fallback
    if not agrees:
        log.warning("litellm's resolved counter disagrees with token_counter; using token_counter")
        return fallback

    def count(text: str) -> int:
        if not text or litellm.disable_token_counter:  # what token_counter answers for these
            return 0
        return int(resolved(text))

    return count


def memoized(count: Counter, known: dict[str, int] | None = None) -> Counter:
    """``count`` remembering its answers (starting from ``known``): for one assembly only, as
    its texts are the task's own."""
    seen: dict[str, int] = dict(known or {})

    def cached(text: str) -> int:
        tokens = seen.get(text)
        if tokens is None:
            tokens = seen[text] = count(text)
        return tokens

    return cached
