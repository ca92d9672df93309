"""Sharded evaluation: the boards of one inventory group as one target whose rows are split.

``BoardGroup`` looks like any target (``name``, ``stage``, ``start_worker``, ``close``), so the
accuracy and robustness code runs on it unchanged. Its ``start_worker`` returns a
``ShardedWorker``: ``load`` goes to every board in use, a ``predict`` over rows is cut into
chunks (aligned to the batch, so every batch holds the same rows as on one board) that the boards
take from one queue, and the replies are put back in row order. Every figure is computed on the
host from those per-row outputs, exactly as for one board: same n, same intervals.

* Boards are checked first: a group whose boards differ in CPU model, architecture or runtime
  versions is refused in one line naming the difference (their outputs could differ in the last
  bits, and the merged figures would belong to no board).
* A board lost mid-run (its sshd, network or worker gone) is dropped; its chunk goes back in the
  queue and the other boards finish it. An error the worker reports (a bad input) is not a loss:
  every board would give it, so it is raised.
* ``max_boards`` bounds how many boards work at once (the rest are spares that replace lost
  ones); each board keeps one SSH connection; the host holds one request's rows at a time
  whatever the number of boards.
* ``map_rows`` gives row-independent work (the Square Attack, seeded per row) whole shards.
"""
from __future__ import annotations

import math
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError, WorkerError
from .client import WORKER_PATH, ModelRows, WorkerClient
from .worker import decode_array, encode_array

#: what boards of one group must share for their rows to merge into one board's figures
SAME = ("cpu_model", "machine", "onnxruntime", "ai_edge_litert", "tflite_runtime", "numpy")
CHUNKS_PER_BOARD = 3  # several chunks per board: a slow board delays the end less, a loss costs less


def _fact(env: dict[str, Any], key: str) -> Any:
    if key in ("cpu_model", "machine"):
        return env.get(key)
    return (env.get("versions") or {}).get(key)


# The facts SAME compares, read without importing a runtime (a worker would import it: seconds
# on a small board): the worker's own cpu_model() and the installed distributions' versions.
_FACTS = ("import importlib.metadata as m,json,platform,runpy,sys\n"
          "w=runpy.run_path(sys.argv[1],run_name='edgeprof_facts')\n"
          "def v(n):\n try:\n  return m.version(n)\n except Exception:\n  return None\n"
          "print(json.dumps({'cpu_model':w['cpu_model']('/'),'machine':platform.machine(),"
          "'versions':{'onnxruntime':v('onnxruntime'),'ai_edge_litert':v('ai-edge-litert'),"
          "'tflite_runtime':v('tflite-runtime'),'numpy':v('numpy')}}))")


def board_facts(board: Any) -> dict[str, Any]:
    """CPU model, architecture and runtime versions of a board (one short remote command)."""
    import json

    worker = board.stage(WORKER_PATH)
    status, out, err = board.run(board._command("-c", _FACTS, worker, pin=False), 120)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = (err.strip().splitlines() or [f"exit status {status}"])[-1]
        raise WorkerError(f"{board.name}: cannot read its CPU and runtime versions: {tail}")


def compatibility_problem(group: str, envs: dict[str, dict[str, Any]]) -> str | None:
    """One line naming what the boards of ``group`` do not share, or None when they match."""
    diffs = []
    for key in SAME:
        seen: dict[Any, list[str]] = {}
        for name, env in envs.items():
            seen.setdefault(_fact(env, key), []).append(name)
        if len(seen) > 1:
            parts = [f"{', '.join(names)} {v if v is not None else 'none'}"
                     for v, names in sorted(seen.items(), key=lambda kv: -len(kv[1]))]
            diffs.append(f"{key.replace('_', ' ')} ({'; '.join(parts)})")
    if not diffs:
        return None
    return (f"group {group}: its boards differ in " + ", ".join(diffs) + ": sharded evaluation "
            "needs one CPU model and the same runtime versions (fix the boards or use a "
            "smaller group)")


class BoardGroup:
    """The boards of one inventory group, evaluated as one target named ``name``."""

    def __init__(self, boards: Sequence[Any], name: str, max_boards: int | None = None):
        if not boards:
            raise InputError(f"group {name}: no boards")
        if max_boards is not None and max_boards < 1:
            raise InputError(f"--max-boards {max_boards}: must be at least 1")
        self.boards = list(boards)
        self.name = name
        self.max_boards = max_boards or len(self.boards)
        self.group_key = ("group", name)
        self.threads = None
        self.runtime = self.boards[0].runtime if len({getattr(b, "runtime", None)
                                                      for b in self.boards}) == 1 else None
        self.lost: dict[str, str] = {}
        self.env: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._checked = False

    def __repr__(self) -> str:
        return f"BoardGroup({self.name!r}, {[b.name for b in self.boards]})"

    # -- checks ---------------------------------------------------------------------------------
    def check(self) -> dict[str, dict[str, Any]]:
        """Read every board's env (``max_boards`` at a time) and refuse a mixed group. A board
        that cannot be reached is left out (named in ``lost``); none reachable is an error."""
        if self._checked:
            return {}
        envs: dict[str, dict[str, Any]] = {}

        def env_of(b: Any) -> None:
            try:
                envs[b.name] = board_facts(b)
            except WorkerError as exc:
                self._mark_lost(b, str(exc))

        with ThreadPoolExecutor(max_workers=min(self.max_boards, len(self.boards)),
                                thread_name_prefix="edgeprof-lab") as pool:
            list(pool.map(env_of, self.boards))
        if not envs:
            raise WorkerError(f"group {self.name}: no board could be reached: "
                              + "; ".join(self.lost.values()))
        problem = compatibility_problem(self.name, {b.name: envs[b.name] for b in self.boards
                                                     if b.name in envs})
        if problem:
            raise InputError(problem)
        self.env = next(iter(envs.values()))
        self._checked = True
        return envs

    # -- boards in use --------------------------------------------------------------------------
    def _mark_lost(self, board: Any, why: str) -> None:
        with self._lock:
            self.lost.setdefault(board.name, why.splitlines()[0] if why else "lost")
        try:
            board.close()
        except Exception:
            pass

    def active(self) -> list[Any]:
        """The boards at work: the first ``max_boards`` not lost (spares step in for losses)."""
        with self._lock:
            return [b for b in self.boards if b.name not in self.lost][: self.max_boards]

    def no_board_left(self) -> WorkerError:
        return WorkerError(f"group {self.name}: every board was lost ("
                           + "; ".join(f"{k}: {v}" for k, v in self.lost.items()) + ")")

    # -- the target interface -------------------------------------------------------------------
    def stage(self, path: Path | str) -> str:
        """A local path stands for the file: each board stages it on first use."""
        return str(Path(path).resolve())

    def start_worker(self, label: str) -> "ShardedWorker":
        self.check()
        return ShardedWorker(self, label)

    def close(self) -> None:
        for b in self.boards:
            try:
                b.close()
            except Exception:
                pass

    def abort(self) -> None:
        for b in self.boards:
            (getattr(b, "abort", None) or b.close)()

    def cold_start(self, args: dict[str, Any], timeout_s: float = 300.0) -> dict[str, Any]:
        raise InputError(f"group {self.name}: a cold start is a fact of one board; profile the "
                         "group's boards (profile --inventory --group) to time each")

    def __enter__(self) -> "BoardGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def report(self) -> dict[str, Any]:
        return {"group": self.name, "boards": [b.name for b in self.boards],
                "max_boards": self.max_boards, "lost": dict(self.lost)}


def _lost(board: Any, w: Any, exc: BaseException) -> bool:
    """A board that went away (its sshd, the network or the worker process), not an error the
    worker reported (which every board would report)."""
    if not isinstance(exc, WorkerError):
        return False
    return (w is None or getattr(w, "closed", False) or not getattr(board, "alive", lambda: True)()
            or "no reply from the worker" in str(exc))


class _Refused(Exception):
    def __init__(self, error: WorkerError):
        self.error = error


class ShardedWorker(ModelRows):
    """One worker per board in use, behind the WorkerClient interface (``request``, ``close``)."""

    def __init__(self, group: BoardGroup, label: str):
        self.group = group
        self.label = label
        self.workers: dict[str, Any] = {}
        self._load: dict[str, Any] | None = None
        self._load_reply: dict[str, Any] | None = None
        self._fixed: int | None = None
        self.closed = False
        self.rows_by_board: dict[str, int] = {}

    # -- helpers ----------------------------------------------------------------------------------
    def _on(self, board: Any, args: dict[str, Any]) -> dict[str, Any]:
        """``args`` with every local file path (from ``group.stage``) staged on ``board``."""
        def conv(v: Any, key: str = "") -> Any:
            if isinstance(v, dict):
                return {k: conv(x, k) for k, x in v.items()}
            if key in ("path", "npz") and isinstance(v, str):
                return board.stage(Path(v))
            return v
        return {k: conv(v, k) for k, v in args.items()}

    def _start(self, board: Any) -> Any:
        w = board.start_worker(self.label)
        if self._load is not None:
            try:
                reply = w.request("load", **self._on(board, self._load))
            except WorkerError as exc:
                lost = _lost(board, w, exc)
                w.close()
                if lost:
                    raise
                raise _Refused(exc) from None
            if self._load_reply is None:
                self._load_reply = reply
        return w

    def _ensure(self) -> list[Any]:
        """Workers on every active board (started at once; a board that fails is lost, a model
        the worker refuses is an error: every board would refuse it)."""
        while True:
            boards = self.group.active()
            if not boards:
                raise self.group.no_board_left()
            missing = [b for b in boards if b.name not in self.workers]
            if not missing:
                return boards
            errors: list[Exception] = []

            def start(b: Any) -> None:
                try:
                    self.workers[b.name] = self._start(b)
                except _Refused as exc:
                    errors.append(exc.error)
                except WorkerError as exc:
                    self.group._mark_lost(b, str(exc))

            with ThreadPoolExecutor(max_workers=len(missing),
                                    thread_name_prefix="edgeprof-lab") as pool:
                list(pool.map(start, missing))
            if errors:
                raise errors[0]

    def _reload(self, args: dict[str, Any]) -> None:
        started = [b for b in self.group.active() if b.name in self.workers]
        errors: list[Exception] = []

        def reload(b: Any) -> None:
            w = self.workers[b.name]
            try:
                reply = w.request("load", **self._on(b, args))
            except WorkerError as exc:
                if not _lost(b, w, exc):
                    errors.append(exc)
                    return
                self.workers.pop(b.name, None)
                w.close()
                self.group._mark_lost(b, str(exc))
                return
            if self._load_reply is None:
                self._load_reply = reply

        if started:
            with ThreadPoolExecutor(max_workers=len(started),
                                    thread_name_prefix="edgeprof-lab") as pool:
                list(pool.map(reload, started))
        if errors:
            raise errors[0]

    def _queue(self, items: list[Any], work: Callable[[Any, Any, Any], Any]) -> list[Any]:
        """``work(board, worker, item)`` for every item, items taken by the active boards from
        one queue; an item whose board is lost goes back in the queue for the others. An item
        that has taken two boards down (the same row kills every worker: out of memory, a
        runtime crash on it) is an error naming it, not a reason to lose the whole group."""
        out: list[Any] = [None] * len(items)
        todo = deque(range(len(items)))
        qlock = threading.Lock()
        failure: list[BaseException] = []
        losses: dict[int, int] = {}
        while todo:
            boards = self._ensure()

            def drain(b: Any) -> None:
                w = self.workers.get(b.name)
                while not failure:
                    with qlock:
                        if not todo:
                            return
                        i = todo.popleft()
                    try:
                        out[i] = work(b, w, items[i])
                    except Exception as exc:
                        with qlock:
                            todo.appendleft(i)
                        if _lost(b, w, exc):
                            self.workers.pop(b.name, None)
                            try:
                                w.close()
                            except Exception:
                                pass
                            self.group._mark_lost(b, str(exc))
                            with qlock:
                                losses[i] = losses.get(i, 0) + 1
                                if losses[i] >= 2:
                                    failure.append(WorkerError(
                                        f"{self.group.name}: {self.label}: part {i + 1} of "
                                        f"{len(items)} took down {losses[i]} boards ({exc}); "
                                        "it is not the boards: look at those rows"))
                        else:
                            failure.append(exc)
                        return

            pool = ThreadPoolExecutor(max_workers=len(boards), thread_name_prefix="edgeprof-lab")
            try:
                list(pool.map(drain, boards))
            except BaseException:  # Ctrl-C: drop the connections so the boards' threads end now
                failure.append(WorkerError(f"group {self.group.name}: interrupted"))
                self.group.abort()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
            if failure:
                raise failure[0]
        return out

    def _chunks(self, n: int, step: int, per_board: int = CHUNKS_PER_BOARD
                ) -> list[tuple[int, int]]:
        """[lo, hi) spans of n rows, each a whole number of ``step`` rows but the last."""
        boards = max(1, len(self.group.active()))
        size = max(1, math.ceil(n / (boards * per_board)))
        size = math.ceil(size / step) * step
        return [(lo, min(lo + size, n)) for lo in range(0, n, size)]

    # -- the WorkerClient interface ---------------------------------------------------------------
    # WorkerClient's helpers work through ``request``: they are this class's too
    load = getattr(WorkerClient, "load", None)
    predict_rows = getattr(WorkerClient, "predict_rows", None)

    def request(self, cmd: str, on_progress: Callable | None = None, **args: Any) -> dict[str, Any]:
        if self.closed:
            raise WorkerError(f"{self.group.name}: {self.label}: the worker is closed")
        if cmd == "load":
            self._load, self._load_reply = args, None
            self._reload(args)  # workers already started load the new model (a WorkerPool)
            self._ensure()
            reply = self._load_reply or {}
            shape = (reply.get("inputs") or [{}])[0].get("shape") or [None]
            self._fixed = shape[0] if isinstance(shape[0], int) and \
                reply.get("runtime") == "onnxruntime" else None
            return reply
        if cmd == "predict":
            return self._predict(args)
        if cmd == "close":
            self.close()
            return {"status": "ok"}
        boards = self._ensure()
        return self.workers[boards[0].name].request(cmd, on_progress=on_progress,
                                                    **self._on(boards[0], args))

    def _predict(self, args: dict[str, Any]) -> dict[str, Any]:
        batch = int(args.get("batch", 64))
        fixed = self._fixed  # the worker feeds whole batches of a fixed-batch model
        step = batch * fixed // math.gcd(batch, fixed) if fixed else batch
        if "npz" in args:
            start, stop = int(args.get("start", 0)), int(args.get("stop", 0))
            pieces = [dict(args, start=start + lo, stop=start + hi)
                      for lo, hi in self._chunks(stop - start, step)]
        else:
            arrays = {k: decode_array(v) for k, v in args["arrays"].items()}
            n = min(len(v) for v in arrays.values())
            pieces = [dict(args, arrays={k: encode_array(v[lo:hi]) for k, v in arrays.items()})
                      for lo, hi in self._chunks(n, step)]

        def work(b: Any, w: Any, piece: dict[str, Any]) -> dict[str, np.ndarray]:
            reply = w.request("predict", **self._on(b, piece))
            outs = {k: decode_array(v) for k, v in reply["outputs"].items()}
            rows = len(next(iter(outs.values())))
            self.rows_by_board[b.name] = self.rows_by_board.get(b.name, 0) + rows
            return outs

        parts = self._queue(pieces, work)
        names = list(parts[0])
        return {"status": "ok", "outputs": {k: encode_array(np.concatenate([p[k] for p in parts]))
                                            for k in names}}

    def map_rows(self, n: int, fn: Callable[[Callable[..., dict], int, int], Any],
                 step: int = 1) -> list[Any]:
        """``fn(request, lo, hi)`` for shards [lo, hi) of n rows on the boards, in row order;
        ``request(cmd, **args)`` talks to the shard's board. For work whose rows are
        independent (seeded per row), so a re-run shard gives the same result."""
        def work(b: Any, w: Any, span: tuple[int, int]) -> Any:
            def request(cmd: str, **args: Any) -> dict[str, Any]:
                return w.request(cmd, **self._on(b, args))
            return fn(request, *span)

        # one shard per board: an attack's queries are round trips, more shards cost more of them
        return self._queue(self._chunks(n, max(1, step), per_board=1), work)

    def lab_report(self) -> dict[str, Any]:
        return dict(self.group.report(), rows_by_board=dict(self.rows_by_board))

    def close(self) -> None:
        self.closed = True
        for w in list(self.workers.values()):
            try:
                w.close()
            except Exception:
                pass
        self.workers.clear()

    def __enter__(self) -> "ShardedWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def board_group(inventory: str | Path, group: str, max_boards: int | None = None,
                accept_new_host_key: bool = False, wait: bool = False) -> BoardGroup:
    """The hosts of ``group`` in an Ansible inventory as one sharded target named ``group``."""
    from . import targets_from_inventory
    return BoardGroup(targets_from_inventory(inventory, group, accept_new_host_key=accept_new_host_key,
                                             wait=wait), group, max_boards)


def cli_target(target_name: str = "local", *, targets_dir: Any = None,
               inventory: str | Path | None = None, group: str | None = None,
               max_boards: int | None = None, accept_new_host_key: bool = False,
               wait: bool = False) -> Any:
    """What ``--target``, ``--inventory``, ``--group`` and ``--max-boards`` name: one target, or
    the boards of an inventory group as one sharded target (checked before anything runs)."""
    from . import get_target

    if group is not None and inventory is None:
        raise InputError("--group names a group of --inventory; give --inventory too")
    if max_boards is not None and group is None:
        raise InputError("--max-boards bounds the boards of --inventory --group; give them too")
    if group is not None:
        if target_name not in ("local", "", None):
            raise InputError("--target and --group both name where to run; give one of them")
        lab = board_group(inventory, group, max_boards, accept_new_host_key, wait)
        try:
            lab.check()
        except BaseException:
            lab.close()
            raise
        return lab
    return get_target(target_name, targets_dir=targets_dir, accept_new_host_key=accept_new_host_key,
                      wait=wait, inventory=inventory)


def run_per_board(targets: Sequence[Any], fn: Callable[[Any], Any],
                  max_boards: int | None = None) -> list[Any]:
    """``run_per_target`` with at most ``max_boards`` machines at work at once (targets on one
    host and port still one after another); results in order, an exception in its place."""
    from . import run_per_target
    return run_per_target(targets, fn, max_machines=max_boards)
