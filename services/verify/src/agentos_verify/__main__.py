"""``python -m agentos_verify PROOF.json --key VKEY``: exit 0 and a JSON verdict when the proof
verifies, exit 1 and the reason when it does not, exit 2 when the arguments are unusable."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agentos_verify import VerificationError, Verifier, check


def _key(text: str) -> Verifier:
    """A vkey given as itself or as a file holding it."""
    path = Path(text)
    return Verifier.parse(path.read_text() if "+" not in text and path.is_file() else text)


def main(argv: list[str] | None = None) -> int:
    """Run the verifier; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m agentos_verify", description="Verify an AgentOS audit proof (agentos audit prove)."
    )
    parser.add_argument("proof", help="the proof JSON file ('-' reads stdin)")
    parser.add_argument("--key", required=True, help="the trusted verifier key (vkey) or a file holding it")
    parser.add_argument("--origin", help="the log origin the checkpoints must name")
    args = parser.parse_args(argv)
    try:
        key = _key(args.key)
        text = sys.stdin.read() if args.proof == "-" else Path(args.proof).read_text()
        doc = json.loads(text)
    except (OSError, ValueError, VerificationError) as exc:
        print(json.dumps({"ok": False, "error": f"cannot read the proof or the key: {exc}"}))
        return 2
    try:
        verdict = check(doc, key, args.origin)
    except VerificationError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 1
    print(json.dumps(verdict))
    return 0


if __name__ == "__main__":
    sys.exit(main())
