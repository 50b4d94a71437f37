"""The paper's protocol in kind (issue 13, item 3): an ImageNet start, a new head, each loss arm.

    python scripts/study_imagenet.py [--datasets synthetic,openfield,mirror] [--arms mse,relu,...]
        [--stages search,final,finetune] [--selection JSON]
        [--runs runs/imagenet] [--parallel 1] [--device auto] [--smoke]

Every run is ``python -m posematch.cli.train`` (what ``posematch-train`` runs) on EfficientNet-Lite0
with the ImageNet weights of ``make install`` and a new SimpleBaseline head; arms differ only in
the loss, its codec and the head's output activation (``ARMS``; ``relu_mass_nowarm`` also in its
warm-up, none). ``synthetic128`` is the synthetic
protocol sized for a 2-core CPU (the stride-16 trunk at 128x96). Protocol, per dataset:

1. ``search``: each arm trains at every lr of its grid in ``ARMS`` (the paper's relu arm at the
   paper's 1e-3 only), seed 0, as one Hydra multirun (the basic sweeper) per dataset and arm:
   ``search/ARM/lrLR``, the lr as Hydra writes it (``lr0.0005``). Selection looks only at:
   synthetic, the last epoch's val AP; a DeepLabCut project (5 folds), fold 0's held-out RMSE.
2. ``final``: the selected lr, scored where selection never looked: synthetic, seeds 0 and 1 on
   the held-out test split (``posematch-diagnose split=test``, last checkpoint); a project, folds
   1-4 (seed 0), their held-out frames, last checkpoint. ``--selection FILE`` (an earlier run's
   ``--out`` JSON) supplies the lr of an arm whose search is not under ``--runs``, so a CPU can
   run the finals of a search done elsewhere.
3. ``finetune`` (projects with a ``FINETUNE`` entry): the fine-tune protocol. Each fold's final
   MSE model (trained first when missing; a fold whose base did not finish is named and skipped)
   starts every arm of ``FINETUNE`` (``model.init_from``), which trains 40 more epochs at equal
   budget: no warm-up, x0.1 at epoch 32, the lr that project's fold 0 selected (in the run
   folder's name, ``finetune/ARM/lrLR/foldK``).

Every run lives in its own folder under ``--runs`` and is skipped once it has finished (its last
epoch in ``metrics.jsonl``), so the command resumes. ``--out`` (JSON) gets every finished run's
numbers at the end, and its ``.md`` sibling the tables (``results/imagenet_study.md`` is the
curated report of the H200 run). ``--parallel N`` runs N jobs at a time (on a GPU; on a 2-core
CPU keep 1): a search job is one arm's whole sweep, whose lrs train one after another, so a search
runs at most one training per dataset and arm at once (the H200 run of 2026-12-04 predates the
sweeper and ran each lr as its own job). ``--smoke`` runs 2 steps per epoch of one epoch of every
arm into ``--runs``/smoke and reports failures, nothing else. The dead-heatmap guard is off
(``trainer.dead_guard=null``): a dying run is a result here, recorded by its dead share.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMON = ["optim=adam", "trainer.dead_guard=null"]
# name -> (overrides, epochs, batch, warm-up steps, selection metric, higher is better)
DATASETS: dict[str, tuple[list[str], int, int, int, str, bool]] = {
    "synthetic": (
        [
            "model=efficientnet_lite0",
            "data=synthetic",
            "data.input_size=[192,256]",
            "data.heatmap_size=[48,64]",
            "trainer.val_every=4",
        ],
        12,
        32,
        100,
        "AP",
        True,
    ),
    # The synthetic protocol sized for a 2-core CPU: the stride-16 trunk at 128x96 (8x6 features).
    # Measured (2026-12-06, 2 cores, MSE arm): 94 steps of 0.70 s and a 10 s val an epoch, about
    # 15 minutes a 12-epoch run; val AP 65.2 after epoch 1.
    "synthetic128": (
        [
            "model=efficientnet_lite0_s16",
            "data=synthetic",
            "data.input_size=[96,128]",
            "data.heatmap_size=[24,32]",
            "trainer.val_every=4",
        ],
        12,
        32,
        100,
        "AP",
        True,
    ),
    "openfield": (
        [
            "model=efficientnet_lite0",
            "data=dlc_openfield",
            "data.num_folds=5",
            "trainer.val_every=25",
        ],
        100,
        16,
        50,
        "RMSE",
        False,
    ),
    "mirror": (
        [
            "model=efficientnet_lite0",
            "data=mirror_mouse",
            "data.num_folds=5",
            "trainer.val_every=25",
        ],
        100,
        16,
        50,
        "RMSE",
        False,
    ),
}
# name -> (label, overrides, lrs); {sigma} is the Gaussian's official 2 px at 64x48, scaled.
ARMS: dict[str, tuple[str, list[str], tuple[str, ...]]] = {
    "mse": (
        "MSE, Gaussian (official head)",
        ["codec=gaussian", "loss=mse", "model.head.activation=none", "codec.sigma={sigma}"],
        ("5e-4", "1e-3", "2e-3"),
    ),
    "relu": (
        "matching, relu head, heatmap px (the paper, literal)",
        ["codec=dots", "loss=sinkhorn", "model.head.activation=none"],
        ("1e-3",),
    ),
    # The paper's relu head and loss with an L1 anchor on each map's unnormalised mass, sum relu(H)
    # (DM-Count's count term): the suppliers' optimum is the paper's (the transport term does not
    # see the map's scale); weight and target from results/relu.md's trace, not val. The joints
    # are scored by their window's mass share (dots_mass), which the anchor's scale cannot move.
    "relu_mass": (
        "matching, relu head, heatmap px, mass anchor 0.1 x |sum relu(H) - 100|, mass score",
        [
            "codec=dots_mass",
            "loss=sinkhorn",
            "model.head.activation=none",
            "loss.mass_weight=0.1",
            "loss.mass_target=100",
        ],
        ("5e-4", "1e-3", "2e-3"),
    ),
    # The same from the first step: the warm-up's small first steps are what kill its maps
    # (results/relu.md); only the optimizer's treatment differs (its warm-up), as the issue allows.
    "relu_mass_nowarm": (
        "matching, relu head, heatmap px, mass anchor 0.1 x |sum relu(H) - 100|, mass score,"
        " no warm-up",
        [
            "codec=dots_mass",
            "loss=sinkhorn",
            "model.head.activation=none",
            "loss.mass_weight=0.1",
            "loss.mass_target=100",
            "trainer.warmup_iters=0",
        ],
        ("5e-4", "1e-3", "2e-3"),
    ),
    "softplus": (
        "matching, softplus head, input px, mass score (the demo's recipe)",
        ["codec=dots_mass", "loss=sinkhorn_input_px", "model.head.activation=softplus"],
        ("5e-4", "1e-3", "2e-3"),
    ),
    "softplus_b10": (
        "matching, softplus beta 10 head, heatmap px (the paper's loss; only the activation differs)",
        [
            "codec=dots",
            "loss=sinkhorn",
            "model.head.activation=softplus",
            "model.head.softplus_beta=10",
        ],
        ("5e-4", "1e-3", "2e-3"),
    ),
    "exp": (
        "matching, exp head (softmax suppliers), heatmap px (only the activation differs)",
        ["codec=dots_mass", "loss=sinkhorn", "model.head.activation=exp"],
        ("5e-4", "1e-3", "2e-3"),
    ),
    "relu_input": (
        "matching, relu head, input px",
        ["codec=dots_mass", "loss=sinkhorn_input_px", "model.head.activation=none"],
        ("1e-4", "3e-4", "1e-3"),
    ),
    "expdist": (
        "expected distance, softplus head, input px (no transport)",
        [
            "codec=dots_mass",
            "loss=expected_distance",
            "loss.pixel_size=4.0",
            "model.head.activation=softplus",
        ],
        ("5e-4", "1e-3", "2e-3"),
    ),
}
# Fine-tune arms per project: arm -> lr, the project's own fold-0 selection. openfield
# (results/imagenet_study.md): MSE at 5e-4 (the one lr tried), zscore 1e-4 of (1e-4, 5e-4),
# softplus 5e-4; the paper's relu head at the paper's 1e-3, as its from-scratch arm (no search).
# A project without an entry has had no selection and is not fine-tuned.
FINETUNE: dict[str, dict[str, str]] = {
    "openfield": {"mse": "5e-4", "zscore": "1e-4", "softplus": "5e-4", "relu": "1e-3"},
}
PROJECT_FOLDS = (1, 2, 3, 4)  # held-out folds; fold 0 is the selection fold
FT_EPOCHS, FT_MILESTONE = 40, 32
ARMS["zscore"] = (
    "matching, zscore head (each map's standard scores), heatmap px (only the activation differs)",
    ["codec=dots", "loss=sinkhorn", "model.head.activation=zscore"],
    ("1e-4", "5e-4"),
)


def synthetic(dataset: str) -> bool:
    """Synthetic: seeds and a test split; otherwise a DeepLabCut project: folds."""
    return dataset.startswith("synthetic")


def schedule(epochs: int) -> list[str]:
    """x0.1 at 80% and 93% of the epochs: the official 210-epoch shape (170, 200), scaled."""
    return [
        f"trainer.epochs={epochs}",
        f"schedule.milestones=[{int(epochs * 0.8)},{int(epochs * 0.93)}]",
    ]


# The MSE arm's Gaussian sigma in heatmap px: the official 2 at 64x48 heatmaps (3 at 96x72), scaled
# with the heatmap: openfield's 48x48 and mirror's 64x64 keep 2 (the official width and height),
# the 32x24 heatmaps of synthetic128 get 1.
SIGMA = {"synthetic": "2", "synthetic128": "1", "openfield": "2", "mirror": "2"}


def override_key(override: str) -> str:
    """The config key a Hydra override sets: ``+a.b=1`` and ``a.b=2`` both set ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")


def layered(*layers: list[str]) -> list[str]:
    """Hydra overrides, each key once: a later layer's override replaces an earlier layer's
    of the same key (given a key twice, Hydra would silently keep the last)."""
    out: list[str] = []
    for layer in layers:
        keys = {override_key(o) for o in layer}
        out = [o for o in out if override_key(o) not in keys] + list(layer)
    return out


def command(
    dataset: str,
    arm: str,
    lr: str,
    seed: int,
    fold: int,
    run_dir: Path,
    args: argparse.Namespace,
    smoke: bool = False,
    init_from: Path | None = None,
    sweep: bool = False,
) -> list[str]:
    """The training command of one run; ``init_from``: a fine-tune from that checkpoint;
    ``sweep``: a Hydra multirun over the comma-separated ``lr``, one job folder per lr under
    ``run_dir`` (each job resumes its own ``last.pth``; a finished one trains no further)."""
    ds, epochs, batch, warm, _, _ = DATASETS[dataset]
    arm_o = [o.replace("{sigma}", SIGMA[dataset]) for o in ARMS[arm][1]]
    extra = [f"data.fold={fold}"] if not synthetic(dataset) else [f"data.root={args.data}"]
    steps = ["trainer.max_steps_per_epoch=2", "trainer.val_every=1"] if smoke else []
    protocol = [
        *COMMON,
        *ds,
        *extra,
        *(
            [f"trainer.epochs={FT_EPOCHS}", f"schedule.milestones=[{FT_MILESTONE}]"]
            if init_from
            else schedule(1 if smoke else epochs)
        ),
        *([f"model.init_from={init_from}"] if init_from else []),
        f"optim.optimizer.lr={lr}",
        f"trainer.batch_size={batch}",
        f"trainer.warmup_iters={0 if smoke or init_from else warm}",
        f"trainer.seed={seed}",
        f"trainer.num_workers={args.workers}",
        f"device={args.device}",
    ]
    cmd = [
        sys.executable,
        "-m",
        "posematch.cli.train",
        *(["-m"] if sweep else []),
        # a smoke run's steps beat the protocol's, and an arm's own value of a key beats both
        *layered(protocol, steps, arm_o),
    ]
    if sweep:
        # the job folder is named by the lr; Hydra writes the float its own way (5e-4 -> 0.0005)
        return [
            *cmd,
            f"hydra.sweep.dir={run_dir}",
            "hydra.sweep.subdir=lr${optim.optimizer.lr}",
            "resume=auto",
        ]
    cmd.append(f"hydra.run.dir={run_dir}")
    if (run_dir / "last.pth").exists():
        cmd.append("resume=auto")
    return cmd


def last_record(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return lines[-1] if lines else None


def finished(run_dir: Path, epochs: int) -> bool:
    rec = last_record(run_dir)
    return rec is not None and int(rec.get("epoch", 0)) >= epochs


def execute(job: tuple[list[str], Path, int], log_dir: Path) -> tuple[Path, int]:
    cmd, run_dir, epochs = job
    if finished(run_dir, epochs):
        return run_dir, 0
    run_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / (str(run_dir.relative_to(log_dir.parent)).replace("/", "_") + ".log")
    with log.open("a") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode
    print(f"[study] rc={rc} {run_dir}", flush=True)
    return run_dir, rc


def score_test(run_dir: Path, args: argparse.Namespace) -> None:
    """The run's last checkpoint on the test split, into ``run_dir/test``; its output goes to
    ``run_dir/test.log``, and a failure is printed (the report then lacks that run's row)."""
    out = run_dir / "test"
    if (out / "diagnosis.json").is_file() or not (run_dir / "last.pth").is_file():
        return
    cmd = [
        sys.executable,
        "-m",
        "posematch.cli.diagnose",
        f"run={run_dir}",
        "checkpoint=last.pth",
        "split=test",
        f"out={out}",
        f"device={args.device}",
    ]
    with (run_dir / "test.log").open("w") as log:
        rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        print(
            f"[study] test scoring failed (rc={rc}): {run_dir}; see {run_dir / 'test.log'}",
            flush=True,
        )


def run_jobs(jobs: list[tuple[list[str], Path, int]], args: argparse.Namespace) -> dict[Path, int]:
    log_dir = args.runs / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        return dict(pool.map(lambda j: execute(j, log_dir), jobs))


def search_dir(args: argparse.Namespace, dataset: str, arm: str, lr: str) -> Path:
    """One lr's search run: the sweeper's job folder, named by the lr as Hydra writes it
    (``lr0.0005``); a run made before the search used the sweeper (one call per lr) keeps the
    name it has (``lr5e-4``), so its records are read and resumed."""
    sweep = args.runs / dataset / "search" / arm
    before = sweep / f"lr{lr}"
    return before if before.is_dir() else sweep / f"lr{float(lr)}"


def search_jobs(
    args: argparse.Namespace, dataset: str, arm: str
) -> list[tuple[list[str], Path, int]]:
    """The arm's lr search as one Hydra multirun, or nothing once every lr's run has finished.

    A run folder that predates the sweeper (``lr5e-4``) is trained on in its own folder.
    """
    epochs = DATASETS[dataset][1]
    dirs = {lr: search_dir(args, dataset, arm, lr) for lr in ARMS[arm][2]}
    lrs = [lr for lr, run_dir in dirs.items() if not finished(run_dir, epochs)]
    before = [lr for lr in lrs if dirs[lr].name == f"lr{lr}"]
    jobs = [(command(dataset, arm, lr, 0, 0, dirs[lr], args), dirs[lr], epochs) for lr in before]
    swept = [lr for lr in lrs if lr not in before]
    if swept:
        sweep = args.runs / dataset / "search" / arm
        jobs.append(
            (command(dataset, arm, ",".join(swept), 0, 0, sweep, args, sweep=True), sweep, epochs)
        )
    return jobs


def selected(args: argparse.Namespace, dataset: str, arm: str) -> tuple[str, float, str] | None:
    """(lr, value, source) of the arm's selection by the dataset's metric, or None.

    Source, in order: the arm's complete search under ``--runs``; the lr recorded in
    ``--selection``; a partial search under ``--runs`` (said so in the source).
    """
    _, epochs, _, _, metric, higher = DATASETS[dataset]
    cells = []
    for lr in ARMS[arm][2]:
        rec = last_record(search_dir(args, dataset, arm, lr))
        if rec is None or int(rec.get("epoch", 0)) < epochs or f"val/{metric}" not in rec:
            continue
        value = float(rec[f"val/{metric}"])
        cells.append((value if higher else -value, lr, value))
    recorded = args.selection.get(dataset, {}).get(arm) if args.selection else None
    if recorded and len(cells) < len(ARMS[arm][2]):
        return recorded, float("nan"), "--selection"
    if not cells:
        return None
    _, lr, value = max(cells)
    n, total = len(cells), len(ARMS[arm][2])
    return lr, value, "search" if n == total else f"partial search ({n} of {total} lrs)"


def local_search(pick: tuple[str, float, str]) -> bool:
    """Whether the selected lr's seed-0 run is a search run under ``--runs``."""
    return pick[2] != "--selection"


def finetune_dir(args: argparse.Namespace, dataset: str, arm: str, lr: str, fold: int) -> Path:
    return args.runs / dataset / "finetune" / arm / f"lr{lr}" / f"fold{fold}"


def base_dir(args: argparse.Namespace, dataset: str, fold: int) -> Path:
    """The fine-tunes' start: the fold's final MSE model."""
    return args.runs / dataset / "final" / "mse" / f"fold{fold}"


def finetune_base_jobs(args: argparse.Namespace, dataset: str) -> list[tuple[list[str], Path, int]]:
    """The final MSE runs of ``--folds``, to train before any fine-tune starts from them."""
    if dataset not in FINETUNE:
        return []
    bases = {base_dir(args, dataset, f) for f in args.folds}
    return [job for job in final_jobs(args, dataset, "mse") if job[1] in bases]


def finetune_jobs(args: argparse.Namespace, dataset: str) -> list[tuple[list[str], Path, int]]:
    """Every fine-tune arm of every fold whose base model has finished (others are named)."""
    lrs = FINETUNE.get(dataset)
    if lrs is None:
        print(
            f"[study] {dataset}: no fine-tune lrs in FINETUNE (no selection): skipped", flush=True
        )
        return []
    jobs = []
    for fold in args.folds:
        base = base_dir(args, dataset, fold)
        if not finished(base, DATASETS[dataset][1]):
            print(
                f"[study] {dataset} fold {fold}: base {base} unfinished: no fine-tune", flush=True
            )
            continue
        for arm in args.ft_arms or list(lrs):
            if arm not in lrs:
                continue
            run_dir = finetune_dir(args, dataset, arm, lrs[arm], fold)
            cmd = command(
                dataset, arm, lrs[arm], 0, fold, run_dir, args, init_from=base / "last.pth"
            )
            jobs.append((cmd, run_dir, FT_EPOCHS))
    return jobs


def final_jobs(
    args: argparse.Namespace, dataset: str, arm: str
) -> list[tuple[list[str], Path, int]]:
    pick = selected(args, dataset, arm)
    if pick is None:
        print(f"[study] {dataset} {arm}: no search and no --selection lr: no final", flush=True)
        return []
    lr, epochs = pick[0], DATASETS[dataset][1]
    print(f"[study] {dataset} {arm}: lr {lr} from the {pick[2]}", flush=True)
    if synthetic(dataset):
        seeds = (1,) if local_search(pick) else (0, 1)
        return [
            (command(dataset, arm, lr, seed, 0, run_dir, args), run_dir, epochs)
            for seed in seeds
            for run_dir in [args.runs / dataset / "final" / arm / f"seed{seed}"]
        ]
    return [
        (command(dataset, arm, lr, 0, fold, run_dir, args), run_dir, epochs)
        for fold in PROJECT_FOLDS
        for run_dir in [args.runs / dataset / "final" / arm / f"fold{fold}"]
    ]


def final_dirs(args: argparse.Namespace, dataset: str, arm: str) -> list[Path]:
    pick = selected(args, dataset, arm)
    if pick is None:
        return []
    final = args.runs / dataset / "final" / arm
    if synthetic(dataset):
        seed0 = search_dir(args, dataset, arm, pick[0]) if local_search(pick) else final / "seed0"
        return [seed0, final / "seed1"]
    return [final / f"fold{f}" for f in PROJECT_FOLDS]


def val_row(rec: dict, run_dir: Path) -> dict:
    """A project run's held-out numbers (its last ``val/*`` record, prefix dropped) and folder."""
    return {k.removeprefix("val/"): v for k, v in rec.items() if k.startswith("val/")} | {
        "run": str(run_dir)
    }


def collect(args: argparse.Namespace) -> dict:
    """Every finished run's numbers, the selections and the held-out results."""
    out: dict = {"datasets": {}}
    for dataset in args.datasets:
        d: dict = {"search": {}, "selected": {}, "heldout": {}}
        for arm in args.arms:
            for lr in ARMS[arm][2]:
                rec = last_record(search_dir(args, dataset, arm, lr))
                if rec is not None:
                    d["search"][f"{arm} lr {lr}"] = rec
            pick = selected(args, dataset, arm)
            if pick is None:
                continue
            d["selected"][arm] = pick[0]
            rows = []
            for run_dir in final_dirs(args, dataset, arm):
                rec = last_record(run_dir)
                if rec is None or int(rec.get("epoch", 0)) < DATASETS[dataset][1]:
                    continue
                if synthetic(dataset):
                    diag = run_dir / "test" / "diagnosis.json"
                    if not diag.is_file():
                        continue
                    rep = json.loads(diag.read_text())
                    rows.append(
                        {
                            "AP": 100 * rep["ap"]["AP"],
                            "dead_share": rep["heatmap_health"]["dead_share"],
                            "run": str(run_dir),
                        }
                    )
                else:
                    rows.append(val_row(rec, run_dir))
            d["heldout"][arm] = rows
        if dataset in FINETUNE:
            d["finetune"] = {
                arm: [
                    val_row(rec, run_dir) | {"lr": lr, "fold": f}
                    for f in PROJECT_FOLDS
                    for run_dir in [finetune_dir(args, dataset, arm, lr, f)]
                    for rec in [last_record(run_dir)]
                    if rec is not None and int(rec.get("epoch", 0)) >= FT_EPOCHS
                ]
                for arm, lr in FINETUNE[dataset].items()
            }
        out["datasets"][dataset] = d
    return out


def mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f} (n=1)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})"


def column(rows: list[dict], key: str, dataset: str) -> str:
    """One table cell over the rows; a project's OKS-AP (a fraction in metrics.jsonl) in percent,
    as the synthetic rows' AP (diagnosis.json, scaled in ``collect``)."""
    scale = 100.0 if key == "AP" and not synthetic(dataset) else 1.0
    # None: a value the trainer wrote as null (non-finite), left out as a missing key is
    return mean_sd([scale * float(r[key]) for r in rows if r.get(key) is not None])


def table_row(arm: str, lr: str, rows: list[dict], keys: list[str], dataset: str) -> str:
    """One arm's markdown row: label, lr, each key's mean ± sd over the rows, the dead share."""
    cells = [column(rows, k, dataset) for k in keys]
    dead = mean_sd([float(r["dead_share"]) for r in rows if r.get("dead_share") is not None])
    label = ARMS[arm][0].replace("|", "\\|")  # the anchor's |sum relu(H) - 100| is not a cell
    return f"| {label} | {lr} | " + " | ".join(cells) + f" | {dead} |"


def report(data: dict) -> str:
    lines = [
        "# ImageNet start, new head: each loss arm (scripts/study_imagenet.py)",
        "",
        "EfficientNet-Lite0 (ImageNet weights of `make install`), SimpleBaseline head, Adam.",
        "Each arm's lr chosen on its own search; held-out numbers only from runs selection",
        "never looked at (synthetic: test split, seeds 0 and 1; projects: folds 1-4).",
        "",
    ]
    for dataset, d in data["datasets"].items():
        metric = DATASETS[dataset][4]
        keys = ["AP"] if synthetic(dataset) else ["RMSE", "PCK@0.2", "PCK@0.05", "AP"]
        lines += [
            f"## {dataset}",
            "",
            "| arm | lr | " + " | ".join(keys) + " | dead share |",
            "|---|---:|" + "---:|" * (len(keys) + 1),
        ]
        for arm, rows in d["heldout"].items():
            lines.append(table_row(arm, d["selected"][arm], rows, keys, dataset))
        if any(d.get("finetune", {}).values()):
            lines += [
                "",
                f"Fine-tune from each fold's MSE model, {FT_EPOCHS} epochs (x0.1 at "
                f"{FT_MILESTONE}), folds 1-4:",
                "",
                "| continued with | lr | " + " | ".join(keys) + " | dead share |",
                "|---|---:|" + "---:|" * (len(keys) + 1),
            ]
            for arm, rows in d["finetune"].items():
                if not rows:
                    continue
                lines.append(table_row(arm, rows[0]["lr"], rows, keys, dataset))
        lines += ["", f"Search (selection on {metric}, last epoch):", ""]
        for name, rec in d["search"].items():
            lines.append(
                f"- {name}: "
                + ", ".join(
                    f"{k.removeprefix('val/')} {float(v):.2f}"
                    for k, v in rec.items()
                    if k in (f"val/{metric}", "val/dead_share", "loss", "epoch")
                )
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="synthetic,openfield,mirror")
    parser.add_argument("--arms", default="mse,relu,softplus,relu_input,expdist")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "imagenet")
    parser.add_argument("--data", default=str(REPO / "data" / "synthetic"))
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "imagenet" / "study.json")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--stages", default="search,final", help="search, final, finetune")
    parser.add_argument(
        "--selection",
        type=Path,
        help="an earlier --out JSON: the lr of an arm whose search is not under --runs",
    )
    parser.add_argument("--folds", default="1,2,3,4", help="the finetune stage's folds")
    parser.add_argument(
        "--ft-arms", help="the finetune stage's arms (default: each project's FINETUNE arms)"
    )
    args = parser.parse_args()
    args.datasets = args.datasets.split(",")
    args.arms = args.arms.split(",")
    args.folds = [int(f) for f in args.folds.split(",")]
    args.ft_arms = args.ft_arms.split(",") if args.ft_arms else None
    ft_known = {arm for lrs in FINETUNE.values() for arm in lrs}
    for option, given, known in (
        ("--datasets", args.datasets, set(DATASETS)),
        ("--arms", args.arms, set(ARMS)),
        ("--folds", args.folds, set(PROJECT_FOLDS)),
        ("--ft-arms", args.ft_arms or [], ft_known),
    ):
        unknown = [x for x in given if x not in known]
        if unknown:
            parser.error(f"{option}: unknown {unknown}; one of {sorted(known)}")
    args.selection = (
        {k: v["selected"] for k, v in json.loads(args.selection.read_text())["datasets"].items()}
        if args.selection
        else None
    )
    args.runs = args.runs.resolve()
    start = time.time()
    # A failed run (a crash, a run folder another training holds) must fail the command, or a
    # chain of calls moves on as if the stage had finished; the report is written first.
    failed: list[str] = []

    def ran(rcs: dict[Path, int]) -> None:
        failed.extend(str(p) for p, rc in rcs.items() if rc != 0)

    if args.smoke:
        jobs = [
            (
                command(
                    ds, arm, ARMS[arm][2][0], 0, 0, args.runs / "smoke" / ds / arm, args, smoke=True
                ),
                args.runs / "smoke" / ds / arm,
                1,
            )
            for ds in args.datasets
            for arm in args.arms
        ]
        ran(run_jobs(jobs, args))
        print(
            f"[study] smoke: {len(jobs) - len(failed)} of {len(jobs)} ran "
            f"({time.time() - start:.0f} s); failed: {failed}",
            flush=True,
        )
        sys.exit(1 if failed else 0)
    if "search" in args.stages:
        jobs = [j for ds in args.datasets for arm in args.arms for j in search_jobs(args, ds, arm)]
        ran(run_jobs(jobs, args))
        print(f"[study] search done ({time.time() - start:.0f} s)", flush=True)
    if "final" in args.stages:
        jobs = [j for ds in args.datasets for arm in args.arms for j in final_jobs(args, ds, arm)]
        ran(run_jobs(jobs, args))
        for ds in args.datasets:
            if synthetic(ds):
                dirs = [p for arm in args.arms for p in final_dirs(args, ds, arm)]
                with ThreadPoolExecutor(max_workers=args.parallel) as pool:
                    list(pool.map(lambda p: score_test(p, args), dirs))
        print(f"[study] final done ({time.time() - start:.0f} s)", flush=True)
    if "finetune" in args.stages:
        # the bases first: a fine-tune starts only from a finished base model
        ran(run_jobs([j for ds in args.datasets for j in finetune_base_jobs(args, ds)], args))
        ran(run_jobs([j for ds in args.datasets for j in finetune_jobs(args, ds)], args))
        print(f"[study] finetune done ({time.time() - start:.0f} s)", flush=True)
    data = collect(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1))
    args.out.with_suffix(".md").write_text(report(data))
    print(report(data))
    if failed:
        print(
            f"[study] {len(failed)} run(s) failed: {failed}; their logs are in {args.runs / 'logs'}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
