"""Time to the first model request: launch of ``agentsaga run`` to the request arriving.

The real Anthropic client against the loopback server of the tests
(``tests/llm_server.py``), two pipelines: the model step first, and after a 1 s shell
step (a build, a test run). Each is run with the SDK imported in the background from the
run's start (as shipped: ``providers.warm_up``) and with that switched off (the SDK
imported inside the first call, as before), alternately, ``--repeat`` times; medians.

Run from the repository root: python benchmarks/first_request.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import REPO, machine, write

from tests.llm_server import Behaviour, FakeLLMServer, RecordedRequest

NO_WARM_UP = (
    "import sys; import agentsaga.providers as p; p.warm_up = lambda *a, **k: []; "
    "from agentsaga.cli import main; sys.argv[0] = 'agentsaga'; main()"
)
WARM_UP = "import sys; from agentsaga.cli import main; sys.argv[0] = 'agentsaga'; main()"


def pipeline(before: bool) -> str:
    lines = ["name: first", "workspace: {isolation: none}", "steps:"]
    if before:
        lines += ["  - id: build", "    kind: shell", '    run: ["sleep", "1"]']
    lines += [
        "  - id: ask",
        "    kind: plan",
        "    provider: anthropic",
        "    model: claude-sonnet-4-5",
        "    prompt: Say hi",
    ]
    return "\n".join(lines) + "\n"


def once(server: FakeLLMServer, folder: Path, text: str, warm: bool) -> float:
    arrived: list[float] = []

    def answer(request: RecordedRequest) -> Behaviour:
        arrived.append(time.time())
        return Behaviour("reply", text="hi", usage={"input": 5, "output": 1})

    server.script(answer)
    path = write(folder / "first.yml", text)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ANTHROPIC_API_KEY": "bench-key",
        "ANTHROPIC_BASE_URL": server.anthropic_base_url,
    }
    code = WARM_UP if warm else NO_WARM_UP
    start = time.time()
    subprocess.run(
        [sys.executable, "-c", code, "--store", str(folder / "s.db"), "run", str(path)],
        cwd=folder,
        env=env,
        check=True,
        capture_output=True,
    )
    assert arrived, "no request reached the server"
    return arrived[0] - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"time to the first model request ({machine()})")
    with tempfile.TemporaryDirectory(prefix="agentsaga-first-") as tmp, FakeLLMServer() as server:
        folder = Path(tmp)
        for before in (False, True):
            text = pipeline(before)
            shipped, cold = [], []
            for _ in range(args.repeat):
                shipped.append(once(server, folder, text, warm=True))
                cold.append(once(server, folder, text, warm=False))
            what = "after a 1 s shell step" if before else "model step first"
            print(
                f"{what:24s} SDK imported in the background: "
                f"{statistics.median(shipped) * 1000:6.0f} ms   inside the first call: "
                f"{statistics.median(cold) * 1000:6.0f} ms   (load {os.getloadavg()[0]:.1f})"
            )


if __name__ == "__main__":
    main()
