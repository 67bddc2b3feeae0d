"""The failed-run tax, measured by driving the real engine, not by a formula.

Every policy runs the same tasks through ``agentsaga.engine.Engine`` in this process
(``isolation: none``, the scripted provider with exact ``usage:`` per reply), one SQLite
store per policy, and every token and dollar figure is read back from that store
(``llm_calls`` and ``report.token_report``). Nothing is added by the simulator except the
one thing a store cannot see: a call that was in flight when the process was killed (its
reply never arrived, so it was never logged, but a provider bills it); those tokens are
added explicitly and printed on their own line.

How the workload maps onto steps (``isolation: none``, so no git):

* plan / read / write / test / deploy tokens are one LLM call each, of exactly the seed's
  size, made by ``plan``-kind steps named after them (the ``read`` kind counts files with
  tiktoken but makes no call; a ``write`` needs git: neither would change the token count,
  which is what is measured here);
* the pass/fail decision of the test is a separate command step, ``test_gate``, right after
  the ``test`` call: ``bash`` pops the next line of a pre-drawn outcome file and exits 1 on
  ``fail``. The seed's "test step" is the pair (``test`` + ``test_gate``): its 3K tokens are
  paid on every attempt, failing ones included. Each failure message carries random letters,
  so the stuck-loop detector (same failure twice) never fires: each failure is a new one.

Outcomes are drawn once per workload from ``--seed`` and replayed identically under every
policy (paired comparison). ``--draw stratified`` (default) makes the failure fraction
exact (e.g. 50 failures for 200 successes at p = 0.2, shuffled), so the measured tax is
not blurred by sampling noise; ``--draw iid`` draws each attempt independently.

Policies, side by side:

* ``restart``: any failure starts a new run from scratch (``Engine.run`` again);
* ``resume``: the run fails; ``Engine.resume(run, from_step="test")`` re-runs the test
  (its call and its gate) and goes on;
* ``saga``: ``on_failure: {rewind_to: write}`` in one run, the call memo off;
* ``saga+memo+cache``: the same with the call memo on (``memo: run``) and prompt-cache
  usage: the first write/test write their shared prefix to the cache, re-runs read it at
  the discounted price (same token counts, lower dollars). The cache usage here is
  *declared* by scripted replies (an estimate); ``prompt_cache.py`` measures the same
  workload's cache dollars from what the real SDK clients send to a caching server.

Crashes (``--crash-rate``): in that fraction of tasks the process driving the first run is
killed (``SIGKILL``, via ``agentsaga.faults`` armed in a forked child) at an instant drawn
uniformly among all the instants of a clean run: every occurrence of every fault point,
plus, for each LLM call, "in flight" (killed while waiting for the reply). The policy then
recovers as it would: ``restart`` starts over, the others ``resume``.

Run: python benchmarks/tax.py seed          (the seed's workload, ~1 min)
     python benchmarks/tax.py harsh         (8 steps, p = 10/30/50 %, 10 % crashes)
     python benchmarks/tax.py crash         (a kill at every instant of a clean run, in
                                             turn: the exact mean cost of a crash)
     python benchmarks/tax.py kills         (10 % of the tasks really killed, once each,
                                             at the instants of a clean run in turn; no
                                             test failure: the crash tax, measured)
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import string
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine

MODEL = "claude-sonnet-4-5"


@dataclass(frozen=True)
class Call:
    """One LLM step: its tokens on a first pass, split as the API would report them."""

    name: str
    input: int
    output: int
    cacheable: int = 0  # prefix tokens shared with the previous pass (prompt cache)

    @property
    def total(self) -> int:
        return self.input + self.output


@dataclass(frozen=True)
class Workload:
    name: str
    before_gate: tuple[Call, ...]  # plan .. test (the test's call last)
    after_gate: tuple[Call, ...]  # deploy, ...
    rewind_to: str = "write"

    @property
    def calls(self) -> tuple[Call, ...]:
        return self.before_gate + self.after_gate

    @property
    def clean(self) -> int:
        return sum(c.total for c in self.calls)

    @property
    def through_gate(self) -> int:
        return sum(c.total for c in self.before_gate)

    @property
    def rewound(self) -> int:
        names = [c.name for c in self.before_gate]
        return sum(c.total for c in self.before_gate[names.index(self.rewind_to) :])

    @property
    def test_call(self) -> Call:
        return self.before_gate[-1]


SEED = Workload(
    "seed: plan 5K, read 15K, write 8K, test 3K, deploy 2K",
    (
        Call("plan", 4000, 1000),
        Call("read", 14500, 500),
        Call("write", 6500, 1500, 6000),
        Call("test", 2500, 500, 2000),
    ),
    (Call("deploy", 1500, 500),),
)
HARSH = Workload(
    "harsh: 8 steps: plan 5K, read 15K, write 8K, lint 1K, test 3K (+ gate), review 4K, deploy 2K",
    (
        Call("plan", 4000, 1000),
        Call("read", 14500, 500),
        Call("write", 6500, 1500, 6000),
        Call("lint", 800, 200, 600),
        Call("test", 2500, 500, 2000),
    ),
    (Call("review", 3500, 500), Call("deploy", 1500, 500)),
)

# An exhausted outcome file passes: a gate re-executed after a crash draws again.
GATE = (
    'line=$(head -n 1 "$OUTCOMES"); sed -i 1d "$OUTCOMES"; '
    'case "$line" in fail*) echo "FAILED: $line" >&2; exit 1;; '
    "*) echo passed; exit 0;; esac"
)

POLICIES = ("restart", "resume", "saga", "saga+memo+cache")


# --- the pipeline ---------------------------------------------------------------------------


def reply_usage(call: Call, policy: str, n: int) -> dict[str, int]:
    """The usage of the n-th reply (0-based) of ``call`` under ``policy``. With the prompt
    cache, the first pass writes the cacheable prefix and later passes read it."""
    if policy != "saga+memo+cache" or not call.cacheable:
        return {"input": call.input, "output": call.output}
    key = "cache_read" if n > 0 else "cache_write"
    return {"input": call.input - call.cacheable, "output": call.output, key: call.cacheable}


def _reply(call: Call, policy: str, n: int) -> str:
    usage = "{" + ", ".join(f"{k}: {v}" for k, v in reply_usage(call, policy, n).items()) + "}"
    return f'      - text: "{call.name} reply {n}"\n        usage: {usage}\n'


def pipeline_text(w: Workload, policy: str, max_calls: int) -> str:
    out = [
        f"name: tax-{policy}",
        "vars: {outcomes: none}",
        "workspace: {isolation: none}",
        f"defaults: {{provider: scripted, model: {MODEL}}}",
        "steps:",
    ]

    def llm_step(call: Call) -> None:
        prompt = f"{call.name} for the task" + (
            " ${{ rewind.error }}" if call.name in ("write",) else ""
        )
        out.append(f'  - id: {call.name}\n    kind: plan\n    prompt: "{prompt}"\n    replies:\n')
        out.append("".join(_reply(call, policy, n) for n in range(max_calls)))

    for call in w.before_gate:
        llm_step(call)
    gate = '  - id: test_gate\n    kind: test\n    env: {OUTCOMES: "${{ vars.outcomes }}"}\n'
    gate += f"    run: '{GATE}'\n"
    if policy.startswith("saga"):
        gate += f"    on_failure: {{rewind_to: {w.rewind_to}, max_rewinds: {max_calls}}}\n"
    out.append(gate)
    for call in w.after_gate:
        llm_step(call)
    return "\n".join(out) + "\n"


# --- outcomes and crashes -------------------------------------------------------------------


def draw_outcomes(rng: random.Random, tasks: int, p: float, mode: str) -> list[list[str]]:
    """Per task, its test outcomes in order: some 'fail ...' lines then one 'pass'."""
    if p <= 0:
        return [["pass"] for _ in range(tasks)]
    if mode == "iid":
        result = []
        for _ in range(tasks):
            seq = []
            while rng.random() < p:
                seq.append("fail")
            result.append(seq + ["pass"])
    else:
        failures = round(tasks * p / (1 - p))
        seq = ["fail"] * failures + ["pass"] * tasks
        rng.shuffle(seq)
        if seq[-1] != "pass":  # every task ends with a pass: move one there
            i = max(i for i, s in enumerate(seq) if s == "pass")
            seq[i], seq[-1] = seq[-1], seq[i]
        result, current = [], []
        for s in seq:
            current.append(s)
            if s == "pass":
                result.append(current)
                current = []
    letters = string.ascii_lowercase
    return [
        [
            s if s == "pass" else "fail " + "".join(rng.choice(letters) for _ in range(12))
            for s in task
        ]
        for task in result
    ]


@dataclass
class Instant:
    point: str  # a fault point, or "in_flight"
    nth: int  # the n-th occurrence of that point (for in_flight: of step.after_record)
    step: str | None = None


def clean_run_instants(w: Workload, tmp: Path) -> list[Instant]:
    """Every instant a crash can hit, counted on one clean run of the workload."""
    from agentsaga import faults

    seen: list[tuple[str, str | None]] = []
    current_step: dict[str, str | None] = {"id": None}
    real = faults.point

    def counting(name: str) -> None:
        seen.append((name, current_step["id"]))

    import agentsaga.engine as engine_mod

    real_emit = engine_mod.Engine._emit

    def emit(self: Any, event: Any) -> None:
        if event.kind == "step" and event.status == "running":
            current_step["id"] = event.step_id
        real_emit(self, event)

    faults.point = counting  # type: ignore[assignment]
    engine_mod.Engine._emit = emit  # type: ignore[method-assign]
    try:
        run_policy_task(w, "saga", 0, ["pass"], tmp / "count", None, {})
    finally:
        faults.point = real  # type: ignore[assignment]
        engine_mod.Engine._emit = real_emit  # type: ignore[method-assign]
    llm_steps = {c.name for c in w.calls}
    counts: Counter[str] = Counter()
    instants = []
    for name, _ in seen:
        counts[name] += 1
        instants.append(Instant(name, counts[name]))
    # step.after_record fires for the step being started; the in-flight instant of an LLM
    # step is right after it. Which step: the k-th step.after_record is the k-th step.
    order = [c.name for c in w.before_gate] + ["test_gate"] + [c.name for c in w.after_gate]
    for k, step_id in enumerate(order, start=1):
        if step_id in llm_steps:
            instants.append(Instant("in_flight", k, step_id))
    return instants


# --- driving one task under one policy ------------------------------------------------------


@dataclass
class TaskResult:
    runs: list[str] = field(default_factory=list)
    in_flight_tokens: int = 0
    in_flight_cost: float = 0.0
    crashed: bool = False


def _engine(store: Any, home: Path, policy: str) -> Any:
    from agentsaga.engine import Engine, EngineOptions

    memo = "run" if policy == "saga+memo+cache" else "off"
    return Engine(store, home, EngineOptions(config={"memo": memo}))


def _crash_child(
    db: Path,
    home: Path,
    policy: str,
    instant: Instant,
    action: str,
    pipeline: Any,
    run_id: str | None,
) -> None:
    """Fork; the child drives the run with a fault armed and is SIGKILLed there (or
    finishes, if the run never reaches it). The parent waits."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            from agentsaga import faults
            from agentsaga.store.sqlite import SqliteStore

            point = "step.after_record" if instant.point == "in_flight" else instant.point
            faults._POINT, faults._NTH = point, str(instant.nth)
            faults._COUNT["n"] = 0
            store = SqliteStore(db)
            engine = _engine(store, home, policy)
            if action == "run":
                engine.run(pipeline, None)
            else:
                assert run_id is not None
                engine.resume(run_id)
        except BaseException:  # noqa: BLE001 - the child must never return into the parent's code
            code = 1
        os._exit(code)
    os.waitpid(pid, 0)


def run_policy_task(
    w: Workload,
    policy: str,
    task: int,
    outcomes: list[str],
    root: Path,
    crash: Instant | None,
    pipelines: dict[str, Any],
) -> TaskResult:
    """Drive one task to success under ``policy``; return the runs it made."""
    from agentsaga.pipeline import load_text
    from agentsaga.states import RunStatus
    from agentsaga.store.sqlite import SqliteStore

    root.mkdir(parents=True, exist_ok=True)
    outcome_file = root / f"outcomes-{task}"
    outcome_file.write_text("\n".join(outcomes) + "\n")
    key = f"{policy}:{len(outcomes)}"
    if key not in pipelines:
        pipelines[key] = pipeline_text(w, policy, max_calls=len(outcomes) + 3)
    pipeline = load_text(pipelines[key], f"tax-{policy}.yml", {"outcomes": str(outcome_file)})
    db, home = root / "state.db", root / ".agentsaga"
    result = TaskResult()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        run_id: str | None = None
        if crash is not None:
            result.crashed = True
            store = SqliteStore(db)
            before = {r.id for r in store.list_runs()}
            store.close()
            _crash_child(db, home, policy, crash, "run", pipeline, None)
            store = SqliteStore(db)
            new = [r.id for r in store.list_runs() if r.id not in before]
            run_id = new[0] if new else None  # None: killed before the run was recorded
            if run_id is not None:
                result.runs.append(run_id)
            if crash.point == "in_flight" and run_id is not None:
                _bill_in_flight(w, policy, store, run_id, result)
            store.close()
        store = SqliteStore(db)
        engine = _engine(store, home, policy)
        status = None
        if run_id is not None:
            status = store.get_run(run_id).status
            if status != RunStatus.SUCCEEDED:
                if policy == "restart":
                    status = None  # start again from scratch
                else:
                    status = engine.resume(run_id).status
        while status != RunStatus.SUCCEEDED:
            if run_id is None or policy == "restart":
                res = engine.run(pipeline, None)
                run_id = res.run_id
                result.runs.append(run_id)
            else:
                res = engine.resume(run_id, from_step="test")
            status = res.status
            if status not in (RunStatus.SUCCEEDED, RunStatus.FAILED):
                raise SystemExit(f"{policy} task {task}: unexpected status {status}")
        store.close()
    finally:
        os.chdir(cwd)
    return result


def _bill_in_flight(w: Workload, policy: str, store: Any, run_id: str, result: TaskResult) -> None:
    """The process was killed while an LLM step waited for its reply: the provider bills
    that call, the store never saw it. Add the reply the step was about to receive."""
    from agentsaga.pricing import cost_usd
    from agentsaga.providers.base import Usage

    running = [a for a in store.attempts(run_id) if a.status == "running"]
    by_name = {c.name: c for c in w.calls}
    if not running or running[-1].step_id not in by_name:
        return  # the kill landed on a command step: no call was in flight
    step = running[-1].step_id
    cursor = sum(
        1 for c in store.llm_calls(run_id) if c.step_id == step and c.status in ("ok", "error")
    )
    usage = reply_usage(by_name[step], policy, cursor)
    result.in_flight_tokens += sum(usage.values())
    result.in_flight_cost += (
        cost_usd(
            "anthropic",
            MODEL,
            Usage(
                usage["input"],
                usage["output"],
                usage.get("cache_read", 0),
                usage.get("cache_write", 0),
            ),
        )
        or 0.0
    )


# --- accounting -----------------------------------------------------------------------------


@dataclass
class PolicyFigures:
    policy: str
    tasks: int = 0
    failures: int = 0
    spent: int = 0
    cost: float = 0.0
    clean: int = 0
    clean_cost: float = 0.0
    in_flight: int = 0
    in_flight_cost: float = 0.0
    report_restart: int = 0  # token_report's counterfactual, summed (one-run policies)
    runs: int = 0
    seconds: float = 0.0
    report_mismatch: int = 0  # tasks whose token_report clean pass != the workload's

    @property
    def tax(self) -> float:
        return (self.spent + self.in_flight) / self.clean - 1

    @property
    def tax_usd(self) -> float:
        return (self.cost + self.in_flight_cost) / self.clean_cost - 1


def clean_cost(w: Workload, policy: str) -> float:
    from agentsaga.pricing import cost_usd
    from agentsaga.providers.base import Usage

    total = 0.0
    for call in w.calls:
        u = reply_usage(call, policy, 0)
        total += (
            cost_usd(
                "anthropic",
                MODEL,
                Usage(u["input"], u["output"], u.get("cache_read", 0), u.get("cache_write", 0)),
            )
            or 0.0
        )
    return total


def account(w: Workload, db: Path, figures: PolicyFigures, result: TaskResult) -> None:
    """Add one task's figures, read from the store. The clean pass is the workload's (one
    pass, no failure): ``token_report``'s own clean pass leaves out replies the memo served,
    which would count a crash the memo absorbed as a tax (reported to the lead)."""
    from agentsaga.report import token_report
    from agentsaga.store.sqlite import SqliteStore

    store = SqliteStore(db)
    try:
        for run_id in result.runs:
            calls = [c for c in store.llm_calls(run_id) if c.status == "ok"]
            figures.spent += sum(c.usage.total for c in calls)
            figures.cost += sum(c.usage.cost_usd or 0.0 for c in calls)
            figures.failures += sum(
                1
                for a in store.attempts(run_id)
                if a.step_id == "test_gate" and a.error is not None
            )
        report = token_report(store, result.runs[-1])
        if not result.crashed and report["clean_pass_tokens"] != w.clean:
            figures.report_mismatch += 1
        figures.clean += w.clean
        figures.clean_cost += clean_cost(w, figures.policy)
        if len(result.runs) == 1:
            figures.report_restart += report["restart_counterfactual_tokens"]
        figures.in_flight += result.in_flight_tokens
        figures.in_flight_cost += result.in_flight_cost
        figures.runs += len(result.runs)
        figures.tasks += 1
    finally:
        store.close()


def simulate(
    w: Workload,
    p: float,
    tasks: int,
    crash_rate: float,
    seed: int,
    draw: str,
    tmp: Path,
    policies: tuple[str, ...] = POLICIES,
) -> dict[str, PolicyFigures]:
    rng = random.Random(f"{seed}:{w.name}:{p}:{crash_rate}")
    outcomes = draw_outcomes(rng, tasks, p, draw)
    crashes: dict[int, Instant] = {}
    if crash_rate > 0:
        instants = clean_run_instants(w, tmp / f"instants-{p}")
        killed = rng.sample(range(tasks), round(tasks * crash_rate))
        if draw == "stratified":
            # Every instant of a clean run in turn (shuffled), as evenly as the number of
            # killed tasks allows: the measured tax is not blurred by which instants the
            # draw happened to pick.
            order = rng.sample(instants, len(instants))
            for k, task in enumerate(killed):
                crashes[task] = order[k % len(order)]
        else:
            for task in killed:
                crashes[task] = rng.choice(instants)
    results = {}
    for policy in policies:
        figures = PolicyFigures(policy)
        pipelines: dict[str, Any] = {}
        root = tmp / f"{policy}-{p}-{crash_rate}"
        start = time.perf_counter()
        for task in range(tasks):
            res = run_policy_task(
                w, policy, task, outcomes[task], root, crashes.get(task), pipelines
            )
            account(w, root / "state.db", figures, res)
        figures.seconds = time.perf_counter() - start
        results[policy] = figures
        shutil.rmtree(root / ".agentsaga", ignore_errors=True)
    return results


def crash_sweep(w: Workload, tmp: Path) -> None:
    """One task per crash instant (every instant of a clean run, in turn), no logical
    failure: the exact mean cost of a kill, and the tax when 10 % of runs are killed."""
    instants = clean_run_instants(w, tmp / "instants-sweep")
    print(
        f"\n== crash sweep, {w.name}: {len(instants)} instants per clean run "
        f"({sum(1 for i in instants if i.point == 'in_flight')} of them an LLM call in flight)"
    )
    print(
        f"   {'policy':17} {'mean extra':>10} {'worst':>8} {'tax @10%':>9} {'$ tax @10%':>10}  "
        "extra tokens by where the kill landed"
    )
    for policy in POLICIES:
        root = tmp / f"sweep-{policy}"
        extras: list[int] = []
        dollars: list[float] = []
        where: dict[str, int] = {}
        clean_cost = 0.0
        for task, instant in enumerate(instants):
            figures = PolicyFigures(policy)
            res = run_policy_task(w, policy, task, ["pass"], root, instant, {})
            account(w, root / "state.db", figures, res)
            extra = figures.spent + figures.in_flight - figures.clean
            extras.append(extra)
            dollars.append(figures.cost + figures.in_flight_cost - figures.clean_cost)
            clean_cost = figures.clean_cost
            where[instant.point] = where.get(instant.point, 0) + extra
        mean = sum(extras) / len(extras)
        mean_usd = sum(dollars) / len(dollars)
        top = ", ".join(
            f"{k} {v / len(extras):,.0f}"
            for k, v in sorted(where.items(), key=lambda kv: -kv[1])
            if v
        )
        print(
            f"   {policy:17} {mean:10,.0f} {max(extras):8,d} {0.1 * mean / w.clean:9.2%} "
            f"{0.1 * mean_usd / clean_cost:10.2%}  {top or '-'}"
        )
        sys.stdout.flush()
        shutil.rmtree(root, ignore_errors=True)


# --- printing -------------------------------------------------------------------------------


def print_table(
    w: Workload, p: float, crash_rate: float, tasks: int, results: dict[str, PolicyFigures]
) -> None:
    expected_failures = p / (1 - p) if p < 1 else 0.0
    observed = results["saga"].failures / results["saga"].tasks if "saga" in results else 0.0
    print(
        f"\n== {w.name}; test fails p = {p:.0%}; crashes in {crash_rate:.0%} of tasks; "
        f"{tasks} tasks per policy"
    )
    print(
        f"   clean pass {w.clean:,} tokens; failures per success: expected "
        f"{expected_failures:.3f}, drawn {observed:.3f}"
    )
    print(
        f"   {'policy':17} {'runs':>5} {'tokens/task':>12} {'tax':>7} {'$/task':>9} "
        f"{'tax $':>7} {'in-flight':>10} {'time':>6}"
    )
    for f in results.values():
        print(
            f"   {f.policy:17} {f.runs:5d} {(f.spent + f.in_flight) / f.tasks:12,.0f} "
            f"{f.tax:7.2%} {(f.cost + f.in_flight_cost) / f.tasks:9.4f} {f.tax_usd:7.2%} "
            f"{f.in_flight:10,d} {f.seconds:5.0f}s"
        )
    mismatched = {f.policy: f.report_mismatch for f in results.values() if f.report_mismatch}
    if mismatched:
        print(f"   note: token_report's clean pass differs from the workload's in {mismatched}")
    if "saga" in results and crash_rate == 0:
        saga = results["saga"]
        predicted = saga.failures * w.rewound / saga.clean
        print(
            f"   engine adds no tokens: saga tax {saga.tax:.2%} vs re-run steps' tokens "
            f"({w.rewound:,}) x drawn failures / clean = {predicted:.2%} "
            f"(x expected failures: {expected_failures * w.rewound / w.clean:.2%}); "
            f"difference {abs(saga.tax - predicted) * 100:.2f} points (target <= 0.5)"
        )
    if "restart" in results and "saga" in results and crash_rate == 0:
        restart, saga = results["restart"], results["saga"]
        print(
            f"   agentsaga report's restart counterfactual (summed over the saga's runs): "
            f"{saga.report_restart:,} tokens = tax {saga.report_restart / saga.clean - 1:.2%}; "
            f"the restart policy measured {restart.spent:,} tokens = {restart.tax:.2%}"
        )
    if "restart" in results and "saga" in results and crash_rate == 0:
        restart, saga = results["restart"], results["saga"]
        base = w.through_gate * restart.tasks
        print(
            f"   the seed's accounting (extra tokens / the {w.through_gate:,} tokens of a pass "
            f"up to the test): restart {(restart.spent - restart.clean) / base:.1%}, "
            f"saga {(saga.spent - saga.clean) / base:.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "workload", choices=("seed", "harsh", "crash", "kills"), nargs="?", default="seed"
    )
    parser.add_argument("--tasks", type=int, default=None, help="tasks per policy")
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--draw", choices=("stratified", "iid"), default="stratified")
    args = parser.parse_args()
    print(
        f"failed-run tax, real engine, scripted provider ({machine()}); seed {args.seed}, "
        f"{args.draw} draws, prices: genai-prices for {MODEL}"
    )
    with tempfile.TemporaryDirectory(prefix="agentsaga-tax-") as tmp_name:
        tmp = Path(tmp_name)
        if args.workload == "seed":
            tasks = args.tasks or 200
            print_table(
                SEED, 0.2, 0.0, tasks, simulate(SEED, 0.2, tasks, 0.0, args.seed, args.draw, tmp)
            )
        elif args.workload == "harsh":
            tasks = args.tasks or 60
            for p in (0.1, 0.3, 0.5):
                print_table(
                    HARSH, p, 0.1, tasks, simulate(HARSH, p, tasks, 0.1, args.seed, args.draw, tmp)
                )
                sys.stdout.flush()
        elif args.workload == "crash":
            for w in (SEED, HARSH):
                crash_sweep(w, tmp)
        else:
            # Real kills: 10 % of the tasks are SIGKILLed once, at the instants of a clean
            # run in turn, then recovered by each policy; the tax is read from the store.
            for w in (SEED, HARSH):
                tasks = args.tasks or 10 * len(clean_run_instants(w, tmp / f"count-{w.name}"))
                print_table(
                    w, 0.0, 0.1, tasks, simulate(w, 0.0, tasks, 0.1, args.seed, args.draw, tmp)
                )
                sys.stdout.flush()


if __name__ == "__main__":
    main()
