"""Runs in the aics venv (Python >= 3.12, aics-tlog and aics-witness installed): third-party
checks of our cosigned checkpoints and a third-party client for our witness.

Reads one JSON object on stdin and prints one JSON object:

- ``{"op": "verify", "note", "log_vkey", "witness_vkeys", "quorum"}``: aics-tlog's
  ``verify_checkpoint``; prints ``{"ok", "error", "witnesses"}``.
- ``{"op": "feed", "url", "witness_vkey", "steps": [{"note", "old", "proof"}]}``: aics-witness's
  ``WitnessClient.submit`` for each step; prints ``{"results": [{"line"} or {"error"}]}`` and
  the merged notes.
"""

from __future__ import annotations

import base64
import json
import sys


def main() -> None:
    """Do what the JSON on stdin asks; print the answer as JSON."""
    request = json.load(sys.stdin)
    from aics_tlog import parse_note, parse_vkey, verify_checkpoint

    if request["op"] == "verify":
        result = verify_checkpoint(
            parse_note(request["note"].encode()),
            parse_vkey(request["log_vkey"]),
            [parse_vkey(v) for v in request["witness_vkeys"]],
            quorum=request["quorum"],
        )
        print(json.dumps({"ok": result.ok, "error": result.error, "witnesses": result.witnesses}))
        return
    from aics_witness.feeder import FeederError, WitnessClient, merge_cosignatures

    client = WitnessClient(request["url"], request["witness_vkey"])
    results = []
    for step in request["steps"]:
        proof = [base64.b64decode(h) for h in step["proof"]]
        try:
            line = client.submit(step["note"], (step["old"], proof))
            merged = merge_cosignatures(step["note"], line).decode()
            results.append({"line": line, "note": merged})
        except FeederError as exc:
            results.append({"error": type(exc).__name__, "message": str(exc)})
    client.close()
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
