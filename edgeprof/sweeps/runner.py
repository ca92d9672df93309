"""Run a sweep: build every variant (cached), measure latency in interleaved rounds across the
variants on each target, evaluate accuracy and robustness, append every record as soon as it
exists, then decide (frontier, recommendation) and write the report.

A rerun resumes: keys already in the results file are skipped. Ctrl-C keeps what was written. A
failing cell becomes an ``error`` record and the sweep goes on."""
from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any, Callable

from ..data import Dataset, check_disjoint, load_npz
from ..errors import EdgeprofError
from ..measure.accuracy import metric_key, metric_record, outputs_on
from ..measure.profiler import Profiler, Settings, cold_in_worker
from ..results import RecordKey, ResultStore, new_record, read_records
from ..targets import get_target
from ..targets.worker import one_line
from ..variants.cache import Cache, Variant
from ..variants.family import spec_for_worker
from .build import Builder, open_root, scratch_dir
from .plan import Plan

Progress = Callable[[str, float], None]
# share of the progress bar per phase
PHASES = {"build": (0.0, 0.25), "latency": (0.25, 0.6), "accuracy": (0.6, 0.7),
          "robustness": (0.7, 0.97), "decide": (0.97, 1.0)}


def _import_in_background(load: Callable[[], Any], name: str) -> threading.Thread:
    """Run an import on a thread while untimed work goes on (never while latency is measured);
    a failure stays silent here: the code that needs the module imports it again and says what
    is wrong, in one line."""
    def run() -> None:
        try:
            load()
        except Exception:
            pass
    t = threading.Thread(target=run, name=f"edgeprof-import-{name}", daemon=True)
    t.start()
    return t


def _import_scipy_special() -> None:
    from scipy import special  # noqa: F401


class SweepRunner:
    def __init__(self, plan: Plan, cache: Cache, progress: Progress | None = None,
                 targets_dir: Path | None = None, wait: bool = False):
        self.plan, self.cache = plan, cache
        self._prestarted: dict[str, Any] = {}  # target name -> Prestart (latency workers)
        self._spare: dict[str, list[Any]] = {}  # target name -> latency workers left for accuracy
        self.progress = progress or (lambda d, f: None)
        self.targets_dir = targets_dir
        self.wait = wait
        self.inventory_hosts: list[str] = []
        if plan.inventory is not None:  # the group's hosts join the targets
            from ..targets.inventory import host_names, load_inventory
            self.inventory_hosts = host_names(load_inventory(plan.inventory), plan.group)
            base = [] if plan.targets == ["local"] and "targets" not in (plan.raw.get("measure") or {}) \
                else list(plan.targets)
            plan.targets = base + [h for h in self.inventory_hosts if h not in base]
        try:
            plan.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EdgeprofError(f"report folder {plan.out_dir}: cannot create: "
                                f"{exc.strerror or exc}") from None
        self.results_path = plan.out_dir / "results.jsonl"
        # every record of this run carries its run_id: the report lists the errors of the
        # latest run only (a rerun retries every failed cell, so older errors are history)
        self.store = ResultStore(self.results_path, stamp={"run_id": uuid.uuid4().hex[:12]},
                                 wait=wait, flag="report folder")
        if self.inventory_hosts:  # latency names the group: its spread, one recommendation
            from ..measure.spread import GroupTaggingStore
            self.store = GroupTaggingStore(self.store, {h: plan.group for h in self.inventory_hosts})
        self.counts = {"variants": 0, "passes_run": 0, "latency": 0, "accuracy": 0, "robustness": 0,
                       "errors": 0, "skipped": 0}

    def _phase(self, name: str, desc: str, frac: float) -> None:
        lo, hi = PHASES[name]
        self.progress(desc, lo + (hi - lo) * max(0.0, min(1.0, frac)))

    def _error(self, phase: str, what: str, exc: Exception, variant: Variant | None = None,
               target: str | None = None) -> None:
        self.counts["errors"] += 1
        rec = new_record("error", variant_id=variant.id if variant else f"recipe:{what}",
                         root_id=variant.root if variant else None, target=target,
                         threads=None, batch=None, data_sha256=None, phase=phase,
                         model={"name": variant.label if variant else what}, error=str(exc))
        self.store.append(rec)

    # -- phases -------------------------------------------------------------------------------
    def load_data(self) -> tuple[Dataset | None, Dataset | None, Dataset | None]:
        p = self.plan
        ev = load_npz(p.eval_data) if p.eval_data else None
        cal = load_npz(p.calib_data) if p.calib_data else None
        ft = load_npz(p.finetune_data) if p.finetune_data else None
        for other, what in ((cal, "calibration"), (ft, "fine-tuning")):
            if other is not None and ev is not None:
                check_disjoint(other, ev, what)
        return ev, cal, ft

    def build(self, builder: Builder) -> list[Variant]:
        from ..passes.base import PASS_CALLS
        ran_before = sum(PASS_CALLS.values())
        variants: list[Variant] = []
        recipes = self.plan.recipes
        for i, recipe in enumerate(recipes):
            self._phase("build", f"building {recipe.describe()}", i / len(recipes))
            try:
                v = builder.build(recipe)
            except EdgeprofError as exc:
                self._error("build", recipe.describe(), exc)
                continue
            except (KeyboardInterrupt, SystemExit, MemoryError):
                raise
            except Exception as exc:  # a pass's own library failing: one cell, not the sweep
                self._error("build", recipe.describe(), EdgeprofError(
                    f"the pass failed: {type(exc).__name__}: {one_line(exc)}"))
                continue
            if v.id not in {x.id for x in variants}:
                variants.append(v)
                self._fidelity_record(v)
        self.counts["passes_run"] += sum(PASS_CALLS.values()) - ran_before
        self.counts["variants"] = len(variants)
        return variants

    def _fidelity_record(self, v: Variant) -> None:
        """The fidelity measured when the variant was built (kept in the cache) as a record, so
        the report, which renders from records only, can show it."""
        fid = v.fidelity
        if not fid or not fid.get("vs_root"):
            return
        key = RecordKey.of_variant("fidelity", v.id, fid.get("data_sha256"))
        if self.store.has(key):
            return
        self.store.append(new_record(
            "fidelity", variant_id=v.id, root_id=v.root, target=None, threads=None, batch=None,
            data_sha256=fid.get("data_sha256"), model={"name": v.label, "format": v.format},
            rows=fid.get("rows"), data_role=fid.get("data_role"), vs_root=fid["vs_root"],
            vs_parent=fid.get("vs_parent")))

    def latency(self, variants: list[Variant], evaluation: Dataset | None) -> None:
        p = self.plan
        refs = [self.cache.ref(v) for v in variants]
        settings = Settings(threads=tuple(p.threads), batches=tuple(p.batches) if p.batches else None,
                            processes=p.processes, rel_ci=p.rel_ci,
                            max_time_s=max(p.max_time_s, p.min_time_s),
                            min_time_s=p.min_time_s, min_runs=p.min_runs,
                            cold_starts=p.cold_starts, cooldown=p.cooldown)
        for ti, tname in enumerate(p.targets):
            try:
                target = self._target(tname)
            except EdgeprofError as exc:
                self._error("latency", tname, exc, target=tname)
                continue

            def prog(desc: str, frac: float, ti: int = ti) -> None:
                self._phase("latency", f"{tname}: {desc}", (ti + frac) / len(p.targets))
            ahead = self._prestarted.pop(tname, None)
            # two local latency workers stay for the accuracy phase (which runs two at a time,
            # untimed), so it does not start interpreters of its own
            spare = self._spare.setdefault(tname, [])
            keep = (2 - len(spare) if tname == "local" and self.plan.accuracy
                    and tname in self._eval_targets() else 0)
            prof = Profiler(ahead or target, settings, store=self.store, data=evaluation,
                            progress=prog, keep_workers=max(0, keep))
            try:
                records, skipped = prof.run(refs)
            finally:  # the board's connection and its claim end with the phase
                spare.extend(prof.kept)
                if ahead is not None:
                    ahead.close()
                getattr(target, "close", lambda: None)()
            self.counts["latency"] += sum(r["kind"] == "latency" for r in records)
            self.counts["errors"] += sum(r["kind"] == "error" for r in records)
            self.counts["skipped"] += len(skipped)

    def sustained(self, variants: list[Variant], evaluation: Dataset | None) -> None:
        """``[measure] sustained``: a sustained-load record per (variant, target, threads,
        batch), one after another on each target, each after its cool-down; keys already in
        the results are skipped, an interrupted one (Ctrl-C) is measured again."""
        from ..measure.sustained import profile_sustained
        p = self.plan
        refs = [self.cache.ref(v) for v in variants]
        settings = Settings(threads=tuple(p.threads),
                            batches=tuple(p.batches) if p.batches else None)
        for ti, tname in enumerate(p.targets):
            try:
                target = self._target(tname)
            except EdgeprofError as exc:
                self._error("sustained", tname, exc, target=tname)
                continue

            def prog(desc: str, frac: float, ti: int = ti) -> None:
                self._phase("latency", f"{tname}: {desc}", (ti + frac) / len(p.targets))
            try:
                records, skipped = profile_sustained([target], settings, refs, self.store,
                                                     evaluation, None, p.sustained, prog,
                                                     side_dir=self.results_path.parent)
            finally:
                getattr(target, "close", lambda: None)()
            self.counts["latency"] += sum(r["kind"] == "latency" for r in records)
            self.counts["errors"] += sum(r["kind"] == "error" for r in records)
            self.counts["skipped"] += len(skipped)

    def _side_file(self, outputs: Any) -> str | None:
        """Raw outputs beside the results (outputs/<sha256>.npz), for cross-target parity (None:
        parity then compares top-1 only)."""
        import numpy as np

        from ..storage import side_npz
        return side_npz(self.results_path.parent, "outputs", "outputs",
                        np.ascontiguousarray(outputs, dtype=np.float32))

    def _target(self, name: str):
        inv = self.plan.inventory if name in self.inventory_hosts else None
        return get_target(name, targets_dir=self.targets_dir, wait=self.wait, inventory=inv)

    def _eval_targets(self) -> list[str]:
        """Where accuracy and robustness run: every target of the plan, except that the boards
        of an inventory group are one target named after the group, whose rows are sharded
        across its boards (targets/shard.py: the same records one board would give)."""
        if not self.inventory_hosts:
            return list(self.plan.targets)
        return [t for t in self.plan.targets if t not in self.inventory_hosts] + [self.plan.group]

    def _eval_target(self, name: str):
        if self.inventory_hosts and name == self.plan.group and name not in self.plan.targets:
            from ..targets.shard import board_group
            lab = board_group(self.plan.inventory, self.plan.group, wait=self.wait)
            try:
                lab.check()  # one CPU model and runtime across the group, else one line
            except BaseException:
                lab.close()
                raise
            return lab
        return self._target(name)

    def accuracy(self, variants: list[Variant], evaluation: Dataset, scratch: Path) -> None:
        """The plan's metric (top-1 by default) of every variant on every target, two variants
        at a time in two long-lived workers that load one variant after another (nothing here
        is timed, so the two cores may share the work). ``agreement`` scores against the fp32
        root's outputs, so the root goes first."""
        from concurrent.futures import ThreadPoolExecutor

        from ..metrics import get_metric, labels_of
        from ..targets.pool import WorkerPool

        metric = get_metric(self.plan.metric)
        if metric.name == "top1" and evaluation.y is None:
            return
        n = min(evaluation.n, self.plan.accuracy_limit or evaluation.n)
        raw_dtype = next(iter(evaluation.x.values())).dtype.name
        labels = labels_of(evaluation, n)
        lock = threading.Lock()
        for tname in self._eval_targets():
            try:
                target = self._eval_target(tname)
            except EdgeprofError as exc:
                self._error("accuracy", tname, exc, target=tname)
                continue
            key_data = metric_key(evaluation, n, metric.name)
            todo = [v for v in variants
                    if not self.store.has(RecordKey.evaluation("accuracy", v.id, tname, key_data,
                                                             metric.name))]
            if metric.needs_reference:
                todo.sort(key=lambda v: v.id != v.root)
            self.counts["skipped"] += len(variants) - len(todo)
            npz = target.stage(evaluation.npz_path(scratch)) if todo else None
            done = [0]
            refs: dict[str, dict[str, Any]] = {}
            pool = WorkerPool(target, idle=self._spare.pop(tname, None))

            def outputs_of(v: Variant, target: Any, npz: Any, pool: Any = pool) -> dict[str, Any]:
                return outputs_on(target, v.path, npz, n, spec_for_worker(v.input_spec, raw_dtype),
                                  f"{v.label} accuracy", pool)

            def one(v: Variant, tname: str = tname, target: Any = target, npz: Any = npz) -> None:
                try:
                    outs = outputs_of(v, target, npz)
                    first = next(iter(outs.values()))
                    lab = dict(labels)
                    if metric.needs_reference:
                        root = refs.get(v.root)
                        if root is None and v.id != v.root:
                            root = outputs_of(self.cache.get(v.root), target, npz)
                        lab.update({f"ref:{k}": a for k, a in (root or outs).items()})
                    rec = metric_record(self.cache.ref(v), tname, evaluation, metric, outs, lab)
                    if v.id == v.root:
                        refs[v.id] = outs
                    rec["outputs_file"] = self._side_file(first)
                    with lock:
                        self.store.append(rec)
                        self.counts["accuracy"] += 1
                except EdgeprofError as exc:
                    with lock:
                        self._error("accuracy", v.label, exc, v, tname)
                with lock:
                    done[0] += 1
                    self._phase("accuracy", f"{tname}: {metric.name} of {v.label}",
                                done[0] / len(todo))
            try:
                if metric.needs_reference and todo and todo[0].id == todo[0].root:
                    one(todo.pop(0))  # the root's outputs first: the others are scored against them
                with ThreadPoolExecutor(max_workers=2) as threads:
                    list(threads.map(one, todo))
            finally:  # the workers, the board's connection and its claim end with the phase
                pool.close()
                target.close()

    def robustness(self, variants: list[Variant], evaluation: Dataset, scratch: Path) -> None:
        """Robustness of every built variant on every evaluation target through the library's
        ``evaluate_robustness`` (what ``edgeprof.robustness()`` runs); the root (``v.id ==
        v.root``) is the baseline and goes first. Failures become error records."""
        from ..robust.evaluate import config_from_plan, evaluate_robustness

        plan = self.plan
        if not plan.robustness and not plan.attacks:
            return
        try:
            config = config_from_plan(plan.robustness, plan.attacks, plan.torch_factory,
                                      plan.torch_weights, plan.metric)
        except EdgeprofError as exc:
            self._error("robustness", "robustness", exc)
            return
        by_id = {v.id: v for v in variants}
        refs = [self.cache.ref(v) for v in variants]
        base_ref = next((r for r in refs if by_id[r.id].id == by_id[r.id].root), None)
        names = self._eval_targets()
        for ti, tname in enumerate(names):
            try:
                target = self._eval_target(tname)
            except EdgeprofError as exc:
                self._error("robustness", tname, exc, target=tname)
                continue

            def prog(desc: str, frac: float, ti: int = ti, tname: str = tname) -> None:
                self._phase("robustness", f"{tname}: {desc}", (ti + frac) / len(names))

            def on_error(ref: Any, exc: Exception, tname: str = tname) -> None:
                v = by_id.get(ref.id) if ref is not None else None
                self._error("robustness", ref.name if ref is not None else "transfer attacks",
                            exc, v, tname)
            try:
                out = evaluate_robustness(refs, evaluation, config, target=target,
                                          target_name=tname, cache_dir=self.cache.root,
                                          baseline=base_ref, store=self.store, progress=prog,
                                          on_error=on_error)
                self.counts["robustness"] += len(out.records)
                self.counts["skipped"] += len(out.skipped)
            except EdgeprofError as exc:
                self._error("robustness", tname, exc, target=tname)
            finally:  # the workers, the boards' connections and claims end with the phase
                target.close()

    def drift(self, variants: list[Variant], plan: Plan) -> None:
        """Field rows against the calibration set (``[data] field``): clipped activations of
        every static int8 ONNX variant and full-integer TFLite variant (edgeprof.measure.drift);
        variants without static activation ranges (fp32, fp16, dynamic int8) clip nothing by
        construction and say so."""
        import hashlib

        from ..measure.drift import TFLITE_STATIC, drift
        from ..data import load_npz
        if plan.calib_data is None:
            self._error("drift", "drift", EdgeprofError("[data] field needs [data] calib (the "
                                                        "rows the int8 variants were calibrated on)"))
            return
        try:
            field, calib = load_npz(plan.field_data), load_npz(plan.calib_data)
        except EdgeprofError as exc:
            self._error("drift", "drift", exc)
            return
        key_data = hashlib.sha256(f"{calib.sha256}:{field.sha256}".encode()).hexdigest()
        for i, v in enumerate(variants):
            self._phase("robustness", f"drift of {v.label}", 1.0)
            if self.store.has(RecordKey.of_variant("drift", v.id, key_data)):
                self.counts["skipped"] += 1
                continue
            static = ((v.pass_name == "quantize" and v.config.get("precision") == "int8-static")
                      or (v.format == "tflite" and v.config.get("precision") in TFLITE_STATIC))
            base = dict(variant_id=v.id, root_id=v.root, target=None, threads=None, batch=None,
                        data_sha256=key_data, calib_sha256=calib.sha256, field_sha256=field.sha256,
                        model={"name": v.label, "format": v.format})
            if not static:
                self.store.append(new_record("drift", field_clip=0.0, findings=[],
                                             note="no static activation ranges: nothing clips",
                                             **base))
                continue
            try:
                res = drift(v.id, calib.path, field.path, cache_dir=self.cache.root)
            except EdgeprofError as exc:
                self._error("drift", v.label, exc, v)
                continue
            d = res.to_dict()
            worst = max((t["field_rows_share"] for t in d["tensors"]), default=0.0)
            self.store.append(new_record(
                "drift", field_clip=worst, overall=d["overall"], agreement=d["agreement"],
                input_drift=d["input_drift"], findings=d["findings"],
                tensors=d["tensors"][:10], thresholds=d["thresholds"], **base))

    # -- all ----------------------------------------------------------------------------------
    #: at most this many latency workers started ahead (each an idle interpreter, ~30 MiB)
    PRESTART_MAX = 16

    def _prestart(self) -> None:
        """Start the first target's latency workers while the variants build, when that target
        is the local CPU (a board's workers start in the latency phase, with its claim)."""
        self._prestarted = {}
        p = self.plan
        if not (p.latency and p.targets and p.targets[0] == "local") or p.cooldown:
            return
        configs = sum(len(mp.recipes) for mp in p.model_plans()) * len(p.threads) * \
            len(p.batches or [None])
        # a configuration's cold-start processes start at its turn, never ahead
        count = min(self.PRESTART_MAX,
                    configs * (max(1, p.processes) - cold_in_worker(p.cold_starts, p.processes)))
        if count <= 0:
            return
        try:
            target = self._target("local")
        except EdgeprofError:
            return
        from ..targets.local import LocalTarget
        from ..targets.pool import Prestart
        if not isinstance(target, LocalTarget):
            return
        self._prestarted["local"] = Prestart(target, count)

    def run(self) -> dict[str, Any]:
        """Every model of the plan (one, or each of ``[[models]]``): build its grid, measure
        latency of all variants of all models in one interleaved run per data set, then
        accuracy and robustness per model on its own data; decide across all of them."""
        whole = self.plan
        groups = []  # (model plan, root, variants, evaluation)
        variants: list[Variant] = []
        self._prestart()
        # scipy.special (~0.25 s) serves the stop rule's first check: imported while the
        # variants build, joined before latency is measured
        early = (_import_in_background(_import_scipy_special, "scipy")
                 if self.plan.latency else None)
        try:
            with scratch_dir() as tmp:
                scratch = Path(tmp)
                for mp in whole.model_plans():
                    self.plan = mp
                    evaluation, calib, finetune = self.load_data()
                    root = open_root(self.cache, mp)
                    builder = Builder(self.cache, mp, root, calib, evaluation, finetune, scratch)
                    # a full disk stops the sweep at the end of the phase it happened in (what
                    # was measured is spilled, see ResultStore), not hours later
                    try:
                        built = [v for v in self.build(builder)
                                 if v.id not in {x.id for x in variants}]
                    finally:
                        builder.close()
                    variants += built
                    groups.append((mp, root, built, evaluation))
                    self.store.check()
                self.counts["variants"] = len(variants)
                self.plan = whole
                if early is not None:
                    early.join()
                if (whole.latency or whole.sustained) and variants:
                    by_data: dict[Any, tuple[list[Variant], Dataset | None]] = {}
                    for _mp, _root, vs, ev in groups:
                        key = ev.sha256 if ev is not None else None
                        by_data.setdefault(key, ([], ev))[0].extend(vs)
                    for vs, ev in by_data.values():  # one interleaved run per input data
                        if vs and whole.latency:
                            self.latency(vs, ev)
                    self.store.check()
                    if whole.sustained:
                        for vs, ev in by_data.values():
                            if vs:
                                self.sustained(vs, ev)
                        self.store.check()
                from ..report.charts import _plt  # matplotlib (~0.8 s), for the report
                _import_in_background(_plt, "matplotlib")  # nothing is timed from here on
                for mp, _root, vs, ev in groups:
                    self.plan = mp
                    if mp.accuracy and ev is not None and vs:
                        self.accuracy(vs, ev, scratch)
                        self.store.check()
                    if ev is not None and vs:
                        self.robustness(vs, ev, scratch)
                        self.store.check()
                    if mp.field_data is not None and vs:
                        self.drift(vs, mp)
                        self.store.check()
        finally:
            self.plan = whole
            for ahead in self._prestarted.values():
                ahead.close()
            self._prestarted.clear()
            for spare in self._spare.values():
                for w in spare:
                    w.close()
            self._spare.clear()
        self._phase("decide", "frontier and recommendation", 0.0)
        from .decide import decide
        root = groups[0][1]
        decision = decide(list(read_records(self.results_path)), self.plan,
                          root.id if len(groups) == 1 else None, {v.id for v in variants},
                          side_dir=self.results_path.parent)
        self.progress("done", 1.0)
        return {"variants": variants, "root": root, "roots": [g[1] for g in groups],
                "decision": decision, "counts": self.counts}
