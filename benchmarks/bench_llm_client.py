"""Client CPU per model call: litellm through the OpenAI SDK or through its own HTTP handler,
against a bare httpx POST, all to the offline model in another process.

    python benchmarks/bench_llm_client.py [--smoke] [--out FILE.json] [--rounds R]

Method (/work/shared/BENCHMARKING.md): the offline model runs in its own process (its CPU is not
counted). Each measurement is a fresh process of this script, with its own
``EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER`` and none of litellm's caches warm from another: warm-up
calls, then N sequential calls, timed with ``time.process_time()`` (every thread of the process,
so litellm's logging and executor threads count). Every round runs the anchor first, then the
other variants in a shuffled order, for each payload:

- ``httpx``: a bare ``httpx.AsyncClient`` POST and ``.json()`` (the anchor; no cost, no mapping);
- ``litellm_sdk``: ``litellm.acompletion`` as ``agentos_kernel.llm`` calls it, with the switch False
  (the OpenAI SDK path);
- ``litellm_handler``: the same with the switch True (litellm's own HTTP handler);
- ``agentos_llm``: ``agentos_kernel.llm.LLM.complete`` as shipped (redaction, kill-switch check,
  litellm with the switch True, the call record).

Payloads: ``plain`` (a system and a user message) and ``turn`` (6 messages, 5 tools, ``max_tokens``:
a specialist's turn). Reported: the median CPU ms per call of each variant and payload over the
rounds, its ratio to the anchor of the same payload, and whether the litellm variants returned the
same content, token counts and cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench_gateway import machine, report

VARIANTS = ("httpx", "litellm_sdk", "litellm_handler", "agentos_llm")
SWITCH = "EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER"
MODEL, IN_PRICE, OUT_PRICE = "offline-fast", 0.15e-6, 0.60e-6
FULL = {"rounds": 3, "n": 500, "warmup": 50}
SMOKE = {"rounds": 1, "n": 20, "warmup": 5}
SMOKE_PAYLOADS = ("turn",)  # every variant once, on the payload with tools: what --smoke proves
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{i}",
            "description": f"Tool number {i}.",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["q"],
            },
        },
    }
    for i in range(5)
]
PAYLOADS: dict[str, tuple[list[dict[str, str]], dict[str, Any]]] = {
    "plain": ([{"role": "system", "content": "agent: step"}, {"role": "user", "content": "hello there"}], {}),
    "turn": (
        [
            {"role": "system", "content": "agent: research\nYou are a careful research specialist. " * 4},
            {"role": "user", "content": "Find the quarterly revenue of ACME and summarise the trend."},
            {"role": "assistant", "content": "I will look it up."},
            {"role": "user", "content": "Please also include the margin."},
            {"role": "assistant", "content": "Noted; searching now."},
            {"role": "user", "content": "hello there"},
        ],
        {"max_tokens": 512, "tools": TOOLS},
    ),
}


async def one(variant: str, payload: str, url: str, n: int, warmup: int) -> dict[str, Any]:
    """One measurement in this process (its environment already set by the parent)."""
    messages, extra = PAYLOADS[payload]
    if variant == "httpx":
        import httpx

        client = httpx.AsyncClient(timeout=20)

        async def call() -> tuple[Any, ...]:
            body = {"model": MODEL, "messages": messages, **extra}
            r = await client.post(f"{url}/chat/completions", json=body, headers={"Authorization": "Bearer offline"})
            d = r.json()
            return d["choices"][0]["message"]["content"], d["usage"]["prompt_tokens"], None
    elif variant == "agentos_llm":
        from agentos_kernel.llm import LLM, ModelRegistry, ModelSpec

        spec = ModelSpec(
            alias="fast",
            model=f"openai/{MODEL}",
            api_base=url,
            input_cost_per_token=IN_PRICE,
            output_cost_per_token=OUT_PRICE,
        )
        llm = LLM(ModelRegistry(models=(spec,)))

        async def call() -> tuple[Any, ...]:
            response, calls = await llm.complete(["fast"], messages, **extra)
            return response.choices[0].message.content, calls[0].input_tokens, calls[0].cost_usd
    else:
        import agentos_kernel.llm  # noqa: F401 - the kernel's litellm settings, as a service has them
        import litellm

        litellm.suppress_debug_info = True
        litellm.register_model(
            {
                f"openai/{MODEL}": {
                    "litellm_provider": "openai",
                    "input_cost_per_token": IN_PRICE,
                    "output_cost_per_token": OUT_PRICE,
                }
            }
        )

        async def call() -> tuple[Any, ...]:
            r = await litellm.acompletion(
                model=f"openai/{MODEL}",
                messages=messages,
                api_base=url,
                api_key="offline",
                timeout=20,
                num_retries=0,
                **extra,
            )
            return r.choices[0].message.content, r.usage.prompt_tokens, r._hidden_params.get("response_cost")

    first = None
    for _ in range(warmup):
        first = first or await call()
    await asyncio.sleep(0.3)  # the warm-up's background logging settles
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        await call()
    c1, w1 = time.process_time(), time.perf_counter()
    return {
        "variant": variant,
        "payload": payload,
        "switch": os.environ.get(SWITCH),
        "n": n,
        "cpu_ms": 1000 * (c1 - c0) / n,
        "wall_ms": 1000 * (w1 - w0) / n,
        "first": first,
    }


def measure(variant: str, payload: str, url: str, sizes: dict[str, int]) -> dict[str, Any]:
    env = dict(os.environ)
    env[SWITCH] = "False" if variant == "litellm_sdk" else "True"
    argv = [sys.executable, __file__, "--one", variant, payload, url, str(sizes["n"]), str(sizes["warmup"])]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=600)
    line = next((ln for ln in reversed(out.stdout.splitlines()) if ln.startswith("{")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"{variant}/{payload} failed: {out.stderr[-2000:]}")
    return dict(json.loads(line))


def run(sizes: dict[str, int], mode: str) -> dict[str, Any]:
    model = subprocess.Popen(
        [sys.executable, "-m", "agentos_offline_model", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        url = (model.stdout.readline() if model.stdout else "").strip()
        if not url.startswith("http"):
            raise RuntimeError("the offline model did not start")
        samples: list[dict[str, Any]] = []
        for r in range(sizes["rounds"]):
            for payload in measured(mode):
                rest = list(VARIANTS[1:])
                random.Random(r).shuffle(rest)
                for variant in ("httpx", *rest):
                    samples.append(measure(variant, payload, url, sizes) | {"round": r})
                    print(
                        f"round {r + 1}/{sizes['rounds']} {payload:5s} {variant:16s} "
                        f"{samples[-1]['cpu_ms']:.2f} ms CPU/call",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        model.terminate()
        model.wait(timeout=10)
    return summarize(samples, sizes, mode)


def measured(mode: str) -> tuple[str, ...]:
    """The payloads a run measures (a smoke run only the turn)."""
    return SMOKE_PAYLOADS if mode == "smoke" else tuple(PAYLOADS)


def summarize(samples: list[dict[str, Any]], sizes: dict[str, int], mode: str) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {}
    for payload in measured(mode):
        mine = [s for s in samples if s["payload"] == payload]
        anchor = statistics.median(s["cpu_ms"] for s in mine if s["variant"] == "httpx")
        rows = {}
        for variant in VARIANTS:
            xs = [s["cpu_ms"] for s in mine if s["variant"] == variant]
            median = statistics.median(xs)
            rows[variant] = {
                "cpu_ms_per_call": round(median, 3),
                "min": round(min(xs), 3),
                "max": round(max(xs), 3),
                "ratio_to_anchor": round(median / anchor, 2),
            }
        answers = {json.dumps(s["first"]) for s in mine if s["variant"] != "httpx"}
        table[payload] = {"variants": rows, "litellm_answers_identical": len(answers) == 1}
    pkgs = ("litellm", "openai", "httpx", "aiohttp")
    return {
        "date": time.strftime("%Y-%m-%d"),
        "mode": mode,
        "sizes": sizes,
        "machine": machine(),
        "versions": {"python": sys.version.split()[0], **{p: metadata.version(p) for p in pkgs}},
        "payloads": table,
        "samples": samples,
    }


def text(result: dict[str, Any]) -> str:
    rows = ["| payload | variant | CPU ms/call, median (min–max) | × anchor |", "|---|---|---|---|"]
    for payload, t in result["payloads"].items():
        for variant, r in t["variants"].items():
            rows.append(
                f"| {payload} | {variant} | {r['cpu_ms_per_call']} ({r['min']}–{r['max']}) | {r['ratio_to_anchor']} |"
            )
        rows.append(f"| {payload} | litellm answers identical | {t['litellm_answers_identical']} | |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves the script works")
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; 1 with --smoke)")
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        variant, payload, url, n, warmup = args.one
        print(json.dumps(asyncio.run(one(variant, payload, url, int(n), int(warmup)))))
        return 0
    sizes = dict(SMOKE if args.smoke else FULL)
    if args.rounds:
        sizes["rounds"] = args.rounds
    result = run(sizes, "smoke" if args.smoke else "full")
    return report(result, args.out, text(result))


if __name__ == "__main__":
    sys.exit(main())
