"""How well and how fast the classifier's pure core classifies processes by behaviour.

    python bench/classifier.py [--train FILE] [--test FILE] [--models hoeffding_adaptive,...]
                               [--synthetic] [--speed-procs 1000] [--speed-sweeps 30]

(a) Accuracy. Trains the online model on a labelled training set and evaluates it on a
held-out set (a different run: other random names and parameters). Both are JSON lines,
one line per sweep per labelled process: ``{"run", "seed", "t", "label", "sample"}``.
Records are fed in time order; each identity ``(run, pid, start_time)`` has its own
rolling window, and a window is classified (or learned) once it has enough history.
Reported: macro-F1 and per-class F1 per window for the raw model, and after the decider's
hysteresis (what would be published); separately for single- and multi-threaded processes.
The model learns nothing from the held-out set.

Without data sets (or with ``--synthetic``) it generates both from simple per-class
behaviour profiles with different seeds; those figures only show the pipeline works.

Behaviour priors (``--rules``, the shipped ``config/rules/default.yml`` by default; modes
with ``--modes priors,cold,labelled``):
- priors: the rules' behaviour priors alone on each held-out window (no model, no
  hysteresis); a window no prior matches counts as wrong;
- cold: the live cold start. A fresh model is taught only by the priors while the whole
  ``Classifier`` streams the training set without labels or names; then, frozen, it
  classifies the held-out set with the full precedence (priors, model, hysteresis), and
  what would be published per window is scored; the frozen model alone is scored too;
- labelled: the figures above (the model trained on labels), plus the labelled model
  with the priors under the full precedence.

(b) Speed. Classifications per second on one core for window append + features + model
predict over sweeps of ``--speed-procs`` processes, and for the whole ``Classifier``
(labels, rules and priors, hysteresis and online learning included).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec  # noqa: E402

from pipeline.vocabulary import CLASSES  # noqa: E402
from agents.classification.decide import Classifier, Decider  # noqa: E402
from agents.classification.features import FeatureWindow, feature_vector  # noqa: E402
from agents.classification.model import MODEL_KINDS, OnlineModel  # noqa: E402
from agents.classification.rules import RuleSet, load_rules  # noqa: E402
from config import CONFIG_DIR  # noqa: E402
from pipeline.events import ProcessSample  # noqa: E402
from pipeline.settings import ClassifierSettings  # noqa: E402

DATASET_DIR = Path("/tmp/corelane-datasets")
DEFAULT_RULES = CONFIG_DIR / "rules" / "default.yml"
WINDOW_S = 20.0
MIN_SAMPLES = 5
MIN_SPAN_S = 4.0
EARLY_TIERS: tuple[str, ...] = ("ultra_critical",)  # the classifier's default
EARLY_SAMPLES = ClassifierSettings().early_min_samples
EARLY_SPAN_S = ClassifierSettings().early_min_span_s
BATCH_EARLY_TIERS: tuple[str, ...] = tuple(ClassifierSettings().batch_early_tiers)
BATCH_EARLY_SAMPLES = ClassifierSettings().batch_early_min_samples
BATCH_EARLY_SPAN_S = ClassifierSettings().batch_early_min_span_s
MIN_INTERVAL_S = ClassifierSettings().min_interval_s

Record = tuple[float, tuple, str, ProcessSample, bool]  # (t, identity, label, sample, mt)


# --- data -----------------------------------------------------------------------------

def _records_from_dicts(rows: Iterable[dict]) -> list[Record]:
    out: list[Record] = []
    for row in rows:
        sample = row["sample"]
        if not isinstance(sample, ProcessSample):
            sample = msgspec.convert(sample, ProcessSample)
        mt = row.get("mt")
        out.append((float(row["t"]), (row.get("run"), sample.pid, sample.start_time),
                    row["label"], sample, bool(mt) if mt is not None else sample.threads > 1))
    out.sort(key=lambda r: r[0])
    return out


def load_records(path: Path, roles: tuple[str, ...] = ("main",)) -> list[Record]:
    """Records of one data set through bench/dataset.py's loader, in time order.

    Only ``roles`` are kept: a stream's feeder and an interactive server's client carry
    their workload's label but not its behaviour. Whether a process is multi-threaded
    comes from its recorded parameters when they are there, else from its thread count.
    """
    from bench import dataset
    out: list[Record] = []
    for track in dataset.load(path):
        if track.role not in roles:
            continue
        mt = (track.params or {}).get("mt")
        if mt is None:
            mt = max(s.threads for s in track.samples) > 1
        ident = (track.run, track.pid, track.start_time)
        out.extend((t, ident, track.label, s, bool(mt))
                   for t, s in zip(track.t, track.samples))
    out.sort(key=lambda r: r[0])
    return out


def find_datasets(train_seed: int = 1, test_seed: int = 2) -> tuple[Path, Path] | None:
    """The newest data sets under DATASET_DIR recorded with the training and test seeds."""
    if not DATASET_DIR.is_dir():
        return None
    from bench import dataset
    by_seed: dict[int, Path] = {}
    files = [f for f in DATASET_DIR.iterdir()
             if f.name.endswith((".jsonl", ".jsonl.gz")) and f.stat().st_size > 0]
    for f in sorted(files, key=lambda f: f.stat().st_mtime):
        try:
            with dataset._open(f, "r") as inp:
                seed = json.loads(inp.readline()).get("seed")
        except (OSError, ValueError, EOFError):
            continue
        if isinstance(seed, int):
            by_seed[seed] = f
    if train_seed in by_seed and test_seed in by_seed:
        return by_seed[train_seed], by_seed[test_seed]
    return None


# Per-class behaviour profiles for the synthetic fallback: each draws a process's
# parameters, then each sweep's deltas. Loose on purpose: overlapping ranges, jitter.
def _synthetic_process(cls: str, rng: random.Random) -> dict:
    threads = 1 if rng.random() < 0.6 else rng.randint(2, 16)
    p = {"threads": threads, "rss": rng.uniform(5, 300) * 2**20, "growth": 0.0,
         "rchar": 0.0, "wchar": 0.0, "read": 0.0, "write": 0.0, "burst_p": 0.0}
    if cls == "latency_critical":
        p.update(cpu=rng.uniform(0.03, 0.35), wake=rng.uniform(800, 20000), jitter=0.3,
                 invol=rng.uniform(0, 30), rchar=rng.uniform(1e5, 2e7), wchar=rng.uniform(1e5, 2e7))
    elif cls == "realtime_stream":
        p.update(cpu=rng.uniform(0.05, 0.6), wake=rng.uniform(40, 800), jitter=0.05,
                 invol=rng.uniform(0, 5), rchar=rng.uniform(1e4, 5e6))
    elif cls == "interactive":
        p.update(cpu=rng.uniform(0.002, 0.02), wake=rng.uniform(5, 150), jitter=0.8,
                 invol=rng.uniform(0, 5), burst_p=rng.uniform(0.1, 0.35),
                 burst=rng.uniform(0.3, 1.0))
    elif cls == "compute_batch":
        p.update(cpu=rng.uniform(0.85, 1.0) * min(threads, 2), wake=rng.uniform(0, 20),
                 jitter=0.05, invol=rng.uniform(30, 600))
    elif cls == "io_batch":
        p.update(cpu=rng.uniform(0.05, 0.45), wake=rng.uniform(100, 4000), jitter=0.3,
                 invol=rng.uniform(0, 40), read=rng.uniform(5e6, 3e8),
                 write=rng.uniform(0, 2e8))
        p["rchar"], p["wchar"] = p["read"] * 1.1, p["write"] * 1.1
    elif cls == "memory_heavy":
        p.update(cpu=rng.uniform(0.2, 0.95), wake=rng.uniform(5, 300), jitter=0.2,
                 invol=rng.uniform(5, 100), rss=rng.uniform(1.5, 12) * 2**30,
                 growth=rng.uniform(0, 50) * 2**20)
    elif cls == "background":
        p.update(cpu=rng.uniform(0.001, 0.04), wake=rng.uniform(1, 25), jitter=0.5,
                 invol=rng.uniform(0, 1))
    else:  # idle
        p.update(cpu=rng.uniform(0, 0.0005), wake=rng.uniform(0, 0.5), jitter=1.0, invol=0.0)
    return p


def synthetic_rows(seed: int, per_class: int = 12, sweeps: int = 90,
                   interval: float = 1.0) -> list[dict]:
    rng = random.Random(seed)
    procs = []
    pid = 1000 * seed
    for cls in CLASSES:
        for _ in range(per_class):
            pid += 1
            procs.append((cls, pid, _synthetic_process(cls, rng), {
                "cpu_time_s": 0.0, "vol_ctx": 0, "invol_ctx": 0, "run_time_ns": 0,
                "run_delay_ns": 0, "timeslices": 0, "io_read_bytes": 0,
                "io_write_bytes": 0, "io_rchar": 0, "io_wchar": 0}))
    rows = []
    t0 = 1.7e9
    for k in range(sweeps):
        t = t0 + k * interval
        for cls, pid, p, c in procs:
            j = p["jitter"]
            cpu = max(p["cpu"] * (1 + rng.gauss(0, j)), 0.0)
            if p["burst_p"] and rng.random() < p["burst_p"]:
                cpu += p["burst"]
            wake = max(p["wake"] * (1 + rng.gauss(0, j)), 0.0)
            if p["burst_p"]:
                wake *= 1 + 5 * cpu
            invol = max(p["invol"] * (1 + rng.gauss(0, 0.3)), 0.0)
            c["cpu_time_s"] += cpu * interval
            c["vol_ctx"] += int(wake * interval)
            c["invol_ctx"] += int(invol * interval)
            c["run_time_ns"] += int(cpu * interval * 1e9)
            c["timeslices"] += int((wake + invol) * interval) + (1 if cpu > 0 else 0)
            c["run_delay_ns"] += int(cpu * interval * 1e9 * rng.uniform(0.001, 0.05))
            for key, rate in (("io_read_bytes", "read"), ("io_write_bytes", "write"),
                              ("io_rchar", "rchar"), ("io_wchar", "wchar")):
                c[key] += int(p[rate] * interval * rng.uniform(0.5, 1.5))
            rss = p["rss"] + p["growth"] * k * interval
            sample = {"pid": pid, "start_time": 500 + pid, "ppid": 1,
                      "name": f"p{rng.getrandbits(32):x}", "threads": p["threads"],
                      "cpu_share": cpu, "rss_bytes": int(rss), **c}
            rows.append({"run": f"synthetic-{seed}", "seed": seed, "t": t, "label": cls,
                         "sample": sample})
    return rows


# --- evaluation -----------------------------------------------------------------------

def windows(records: list[Record]) -> Iterator[tuple[float, tuple, str, list[float], bool]]:
    """(t, identity, label, feature vector, multi-threaded) for each window with enough history."""
    store: dict[tuple, FeatureWindow] = {}
    for t, ident, label, sample, mt in records:
        window = store.get(ident)
        if window is None:
            window = store[ident] = FeatureWindow(WINDOW_S, min_interval_s=MIN_INTERVAL_S)
        window.append(t, sample)
        if window.enough_history(MIN_SAMPLES, MIN_SPAN_S):
            yield t, ident, label, feature_vector(window), mt


def f1_scores(truth: list[str], predicted: list[str | None]) -> tuple[float, dict[str, float]]:
    classes = sorted(set(truth))
    per: dict[str, float] = {}
    for cls in classes:
        tp = sum(1 for a, b in zip(truth, predicted) if a == cls and b == cls)
        fp = sum(1 for a, b in zip(truth, predicted) if a != cls and b == cls)
        fn = sum(1 for a, b in zip(truth, predicted) if a == cls and b != cls)
        per[cls] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return (sum(per.values()) / len(per) if per else 0.0), per


def evaluate(kind: str, train: list[tuple], test: list[tuple], epochs: int = 1,
             hysteresis: int = 3) -> dict:
    model = OnlineModel(kind, seed=1)
    rng = random.Random(7)
    started = time.perf_counter()
    for epoch in range(epochs):
        rows = train if epoch == 0 else rng.sample(train, len(train))
        for _, _, label, vector, _ in rows:
            model.learn(vector, label)
    learn_s = time.perf_counter() - started
    started = time.perf_counter()
    predicted = model.predict_many([w[3] for w in test])
    predict_s = time.perf_counter() - started
    raw = [p[0] if p else None for p in predicted]
    truth = [w[2] for w in test]
    macro, per = f1_scores(truth, raw)
    # What would be published: the decider's committed class per window.
    decider = Decider(hysteresis_windows=hysteresis, heartbeat_s=1e9, min_model_confidence=0.5)
    decided: list[str | None] = []
    for (t, ident, _, _, _), p in zip(test, predicted):
        decider.decide(ident, t, model=(p[0], p[1], model.tag) if p else None)
        state = decider.current(ident)
        decided.append(state.cls if state else None)
    macro_d, per_d = f1_scores(truth, decided)
    split = {}
    for name, keep in (("single-threaded", lambda w: not w[4]),
                       ("multi-threaded", lambda w: w[4])):
        idx = [i for i, w in enumerate(test) if keep(w)]
        if idx:
            split[name] = (len(idx), f1_scores([truth[i] for i in idx],
                                               [raw[i] for i in idx])[0])
    return {"kind": kind, "macro_f1": macro, "per_class": per, "decided_macro_f1": macro_d,
            "decided_per_class": per_d, "split": split, "learn_per_s": len(train) * epochs
            / learn_s, "predict_per_s": len(test) / predict_s, "model": model}


# --- behaviour priors -----------------------------------------------------------------

def evaluate_priors(rules: RuleSet, test: list[tuple]) -> dict:
    """The priors alone: the first matching prior's class per held-out window."""
    truth = [w[2] for w in test]
    hits = [rules.match_prior(w[3]) for w in test]
    predicted = [h.cls if h is not None else None for h in hits]
    macro, per = f1_scores(truth, predicted)
    covered = sum(1 for h in hits if h is not None) / len(test) if test else 0.0
    return {"macro_f1": macro, "per_class": per, "coverage": covered}


def _sweeps(records: list[Record]) -> Iterator[tuple[float, str, list[tuple[tuple, str, ProcessSample]]]]:
    """Records grouped into sweeps: (t, run, [(identity, label, sample)])."""
    batch: list[tuple[tuple, str, ProcessSample]] = []
    key: tuple[float, str] | None = None
    for t, ident, label, sample, _ in records:
        k = (t, str(ident[0]))
        if key is not None and k != key:
            yield key[0], key[1], batch
            batch = []
        key = k
        batch.append((ident, label, sample))
    if key is not None and batch:
        yield key[0], key[1], batch


def published(clf: Classifier, records: list[Record]
              ) -> tuple[list[str], list[str | None], list[list[float]],
                         list[tuple[str, str | None]]]:
    """Stream ``records`` through ``clf``; per window with enough history, the label, the
    class the Classifier would have published (None before any) and the feature vector;
    and per process, (label, class) of its first published judgement: what a new process
    is placed by before any correction."""
    truth: list[str] = []
    out: list[str | None] = []
    vectors: list[list[float]] = []
    first: dict[tuple, tuple[str, str | None]] = {}
    for t, run, batch in _sweeps(records):
        clf.sweep(t, [s for _, _, s in batch], host=run)
        for ident, label, s in batch:
            key = (run, s.pid, s.start_time)
            state = clf.decider.current(key)
            if state is not None and state.cls is not None:
                first.setdefault(key, (label, state.cls))
            window = clf._windows.get(key)
            if window is None or not window.enough_history(clf.min_samples, clf.min_span_s):
                continue
            truth.append(label)
            out.append(state.cls if state is not None else None)
            vectors.append(feature_vector(window))
    return truth, out, vectors, list(first.values())


def _classifier(model: OnlineModel, rules: RuleSet, learn: bool) -> Classifier:
    return Classifier(model=model, rules=rules, window_s=WINDOW_S, min_samples=MIN_SAMPLES,
                      min_interval_s=ClassifierSettings().min_interval_s,
                      min_span_s=MIN_SPAN_S, early_tiers=EARLY_TIERS,
                      early_min_samples=EARLY_SAMPLES, early_min_span_s=EARLY_SPAN_S,
                      batch_early_tiers=BATCH_EARLY_TIERS,
                      batch_early_min_samples=BATCH_EARLY_SAMPLES,
                      batch_early_min_span_s=BATCH_EARLY_SPAN_S,
                      heartbeat_s=1e9,
                      learn=learn,
                      user_name=lambda uid: None)


def evaluate_cold_start(rules: RuleSet, train_records: list[Record],
                        test_records: list[Record], kind: str = "logistic") -> dict:
    """A model taught only by the priors on the training stream, then frozen and used
    with the full precedence on the held-out stream."""
    model = OnlineModel(kind, seed=1)
    teacher = _classifier(model, rules, learn=True)
    for t, run, batch in _sweeps(train_records):
        teacher.sweep(t, [s for _, _, s in batch], host=run)
    learned = model.n_learned
    truth, decided, vectors, firsts = published(_classifier(model, rules, learn=False),
                                                test_records)
    macro, per = f1_scores(truth, decided)
    raw = [p[0] if p else None for p in model.predict_many(vectors)]
    macro_m, per_m = f1_scores(truth, raw)
    confusion = Counter(firsts)
    print("  first judgements (label -> class: processes): " + ", ".join(
        f"{a}->{b}: {n}" for (a, b), n in sorted(confusion.items(), key=str) if a != b))
    first_macro, first_per = f1_scores([a for a, _ in firsts], [b for _, b in firsts])
    return {"learned": learned, "classes": sorted(model.classes), "macro_f1": macro,
            "per_class": per, "model_macro_f1": macro_m, "model_per_class": per_m,
            "windows": len(truth), "first_macro_f1": first_macro, "first_per_class": first_per,
            "first_n": len(firsts)}


def evaluate_labelled_with_priors(model: OnlineModel, rules: RuleSet,
                                  test_records: list[Record]) -> dict:
    """A model trained on labels, frozen, with the priors under the full precedence."""
    truth, decided, _, _ = published(_classifier(model, rules, learn=False), test_records)
    macro, per = f1_scores(truth, decided)
    return {"macro_f1": macro, "per_class": per}


def _per_class(per: dict[str, float]) -> str:
    return ", ".join(f"{c} {f:.2f}" for c, f in per.items())


# --- speed ----------------------------------------------------------------------------

def speed(model: OnlineModel, procs: int, sweeps: int,
          rules: RuleSet | None = None) -> tuple[float, float]:
    """(features+predict per second, whole Classifier per second) on one core."""
    rows = synthetic_rows(seed=99, per_class=max(procs // len(CLASSES), 1), sweeps=sweeps)
    by_t: dict[float, list[ProcessSample]] = defaultdict(list)
    for row in rows:
        by_t[row["t"]].append(msgspec.convert(row["sample"], ProcessSample))
    sweeps_list = sorted(by_t.items())
    warm = MIN_SAMPLES + 1
    # features + predict over each sweep's batch, once windows have enough history
    store: dict[tuple, FeatureWindow] = {}
    n = 0
    elapsed = 0.0
    for i, (t, batch) in enumerate(sweeps_list):
        started = time.perf_counter()
        vectors = []
        for s in batch:
            key = (s.pid, s.start_time)
            w = store.get(key)
            if w is None:
                w = store[key] = FeatureWindow(WINDOW_S, min_interval_s=MIN_INTERVAL_S)
            w.append(t, s)
            if w.enough_history(MIN_SAMPLES, MIN_SPAN_S):
                vectors.append(feature_vector(w))
        model.predict_many(vectors)
        if i >= warm:
            elapsed += time.perf_counter() - started
            n += len(vectors)
    core_rate = n / elapsed if elapsed else 0.0
    clf = Classifier(model=model, rules=rules, window_s=WINDOW_S, min_samples=MIN_SAMPLES,
                     min_span_s=MIN_SPAN_S)
    n = 0
    elapsed = 0.0
    for i, (t, batch) in enumerate(sweeps_list):
        started = time.perf_counter()
        clf.sweep(t, batch)
        if i >= warm:
            elapsed += time.perf_counter() - started
            n += len(batch)
    return core_rate, (n / elapsed if elapsed else 0.0)


def main(argv: list[str] | None = None) -> int:
    global MIN_SAMPLES, MIN_SPAN_S, EARLY_TIERS, EARLY_SAMPLES, EARLY_SPAN_S
    global BATCH_EARLY_TIERS, BATCH_EARLY_SAMPLES, BATCH_EARLY_SPAN_S
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path)
    parser.add_argument("--test", type=Path)
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--models", default=",".join(MODEL_KINDS))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--speed-procs", type=int, default=1000)
    parser.add_argument("--speed-sweeps", type=int, default=30)
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES,
                        help="rule file whose behaviour priors are measured "
                             "(default: the shipped config/rules/default.yml)")
    parser.add_argument("--modes", default="priors,cold,labelled",
                        help="which of priors, cold, labelled to run (comma-separated)")
    parser.add_argument("--min-samples", type=int, default=MIN_SAMPLES,
                        help="samples a window needs before it is classified")
    parser.add_argument("--min-span", type=float, default=MIN_SPAN_S,
                        help="seconds a window needs to span before it is classified")
    parser.add_argument("--early-samples", type=int, default=EARLY_SAMPLES,
                        help="samples a first judgement into an early tier needs")
    parser.add_argument("--early-span", type=float, default=EARLY_SPAN_S,
                        help="seconds those samples must span")
    parser.add_argument("--early-tiers", default=",".join(EARLY_TIERS),
                        help="tiers a first judgement may reach from a short window "
                             "(empty: none)")
    parser.add_argument("--batch-early-samples", type=int, default=BATCH_EARLY_SAMPLES,
                        help="samples a first judgement into a batch early tier needs")
    parser.add_argument("--batch-early-span", type=float, default=BATCH_EARLY_SPAN_S,
                        help="seconds those samples must span")
    parser.add_argument("--batch-early-tiers", default=",".join(BATCH_EARLY_TIERS),
                        help="tiers a first judgement may reach from the batch early window "
                             "(empty: none)")
    args = parser.parse_args(argv)
    BATCH_EARLY_SAMPLES, BATCH_EARLY_SPAN_S = args.batch_early_samples, args.batch_early_span
    BATCH_EARLY_TIERS = tuple(t for t in args.batch_early_tiers.split(",") if t)
    MIN_SAMPLES, MIN_SPAN_S = args.min_samples, args.min_span
    EARLY_SAMPLES, EARLY_SPAN_S = args.early_samples, args.early_span
    EARLY_TIERS = tuple(t for t in args.early_tiers.split(",") if t)
    modes = {m.strip() for m in args.modes.split(",") if m.strip()}
    unknown = modes - {"priors", "cold", "labelled"}
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(sorted(unknown))}; "
                     f"choose from priors, cold, labelled")
    rules = load_rules(args.rules)

    if args.synthetic:
        found = None
    elif args.train and args.test:
        found = (args.train, args.test)
    else:
        found = find_datasets()
    if found:
        train_records, test_records = load_records(found[0]), load_records(found[1])
        source = f"train={found[0]} test={found[1]}"
    else:
        train_records = _records_from_dicts(synthetic_rows(seed=1))
        test_records = _records_from_dicts(synthetic_rows(seed=2))
        source = "synthetic profiles (no data sets found), train seed 1, test seed 2"
    train = list(windows(train_records))
    test = list(windows(test_records))
    counts = Counter(w[2] for w in test)
    print(f"data: {source}")
    print(f"  train: {len(train_records)} samples, {len({r[1] for r in train_records})} "
          f"processes, {len(train)} windows")
    print(f"  test:  {len(test_records)} samples, {len({r[1] for r in test_records})} "
          f"processes, {len(test)} windows; per class: "
          + ", ".join(f"{c}={n}" for c, n in sorted(counts.items())))
    print(f"  window {WINDOW_S:g} s, enough history = {MIN_SAMPLES} samples over "
          f"{MIN_SPAN_S:g} s; epochs {args.epochs}")

    print(f"  rules: {args.rules} ({len(rules.priors)} behaviour priors, "
          f"{len(rules.identity_rules)} identity rules)")

    if "priors" in modes:
        res = evaluate_priors(rules, test)
        print(f"\npriors alone (held-out, per window): macro-F1 {res['macro_f1']:.3f}; "
              f"a prior matched {res['coverage']:.0%} of windows")
        print(f"  per class: {_per_class(res['per_class'])}")

    if "cold" in modes:
        res = evaluate_cold_start(rules, train_records, test_records)
        print(f"\ncold start (logistic taught only by the priors over the training stream: "
              f"{res['learned']} windows, classes {', '.join(res['classes'])}; then frozen):")
        print(f"  published on held-out, full precedence with hysteresis: macro-F1 "
              f"{res['macro_f1']:.3f} ({res['windows']} windows)")
        print(f"  per class: {_per_class(res['per_class'])}")
        print(f"  the frozen model alone: macro-F1 {res['model_macro_f1']:.3f}; "
              f"{_per_class(res['model_per_class'])}")
        print(f"  first judgement per process ({res['first_n']} processes): macro-F1 "
              f"{res['first_macro_f1']:.3f}; {_per_class(res['first_per_class'])}")

    results = []
    if "labelled" in modes:
        for kind in args.models.split(","):
            res = evaluate(kind.strip(), train, test, epochs=args.epochs)
            results.append(res)
            split = "; ".join(f"{k} ({n} windows) {f:.3f}"
                              for k, (n, f) in res["split"].items())
            print(f"\n{kind}: macro-F1 {res['macro_f1']:.3f} per window, "
                  f"{res['decided_macro_f1']:.3f} after hysteresis; "
                  f"learn {res['learn_per_s']:,.0f}/s, predict {res['predict_per_s']:,.0f}/s")
            print("  per class: " + _per_class(res["per_class"]))
            if split:
                print(f"  {split}")
        chosen = [r for r in results if r["kind"] == "logistic"]
        if chosen:
            res = evaluate_labelled_with_priors(chosen[0]["model"], rules, test_records)
            print(f"\nlogistic trained on labels, with the priors, full precedence: "
                  f"macro-F1 {res['macro_f1']:.3f}")
            print(f"  per class: {_per_class(res['per_class'])}")
    # Speed of the configured default when it was evaluated, else of the most accurate.
    if results:
        chosen = [r for r in results if r["kind"] == "logistic"]
        best = chosen[0] if chosen else max(results, key=lambda r: r["macro_f1"])
        kind, model = best["kind"], best["model"]
    else:
        kind, model = "logistic, untrained", OnlineModel()
    core, whole = speed(model, args.speed_procs, args.speed_sweeps, rules)
    print(f"\nspeed ({kind}, {args.speed_procs} processes per sweep, one core): "
          f"features+predict {core:,.0f} classifications/s; whole Classifier.sweep "
          f"with the priors {whole:,.0f} samples/s (target >= 5,000)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
