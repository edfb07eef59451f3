"""`make bench`: runs each benchmark in its own process (so peak RSS is per run) and writes benchmarks/results.jsonl."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = [
    ["iteration.py", "--num-per-class", "200", "--lookahead", "8"],   # the reference implementation's workload (2,000 x 9 renders)
    ["iteration.py", "--num-per-class", "1000", "--lookahead", "8"],  # N_syn = 10,000
    ["iteration.py", "--num-per-class", "200", "--lookahead", "8", "--backend", "torch"],
]


def main() -> None:
    results = []
    for args in RUNS:
        out = subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]], capture_output=True, text=True, check=True)
        line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
        results.append(json.loads(line))
        print(line, flush=True)
    (HERE / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    print("\n| workload | s / iteration | API | embedding | voting | other | peak RSS GiB |\n|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['workload']} | {r['iteration_s']} | {r['api_s']} | {r['embedding_s']} | {r['voting_s']} | {r['other_s']} | {r['peak_rss_gib']} |")


if __name__ == "__main__":
    main()
