"""The CUDA paths: training steps in bf16 and in float16 with a gradient scaler, EMA, validation, checkpoints
that move between the GPU and a CPU-only process, pinned-memory loader workers, torchrun with NCCL, QAT on the
GPU exported on the CPU, and the ablation study on the GPU. Every test needs a CUDA device (tiny settings,
seconds each); `bash scripts/gpu_check.sh` runs them on a GPU machine and measures throughput."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hsvlt.engine as engine_module
from hsvlt import distributed
from hsvlt.checkpoint import load_checkpoint, load_model
from hsvlt.data.base import to_model_input
from hsvlt.data.loader import eval_loader, train_loader
from hsvlt.data.shapes import ShapesDataset
from hsvlt.data.transforms import eval_transform, train_transform
from hsvlt.evaluate import main as evaluate_main
from hsvlt.evaluate import score_loader
from hsvlt.losses import build_loss
from hsvlt.train import main as train_main
from reports import ablation

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA device, and torch sees none here (bash scripts/gpu_check.sh runs these "
                              "on a GPU machine)"),
]

# cuBLAS computes bit-identical results run to run only with a fixed workspace, and reads this setting when it
# starts. Tests are all collected before any runs, so this comes before the first GPU call of the session; the
# child processes inherit it.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

REPO = Path(__file__).resolve().parents[2]
CUDA = torch.device("cuda")
CPU = torch.device("cpu")
# 64 training images in batches of 16 (4 steps an epoch), the first epoch at 56 px (progressive resizing).
TINY = ["--model", "hsvlt_pico", "--img-size", "64", "--train-size", "64", "--val-size", "33", "--batch-size", "16",
        "--workers", "0", "--warmup-epochs", "0.5", "--low-res-epochs", "1"]
# One batch of 8 images is the whole training set: each epoch is one step on the same images. The from-scratch
# default of 2e-3 without warm-up overshoots once on hsvlt_nano (its loss rose on the third step); 1e-3 does not.
STEPS = {"hsvlt_pico": "2e-3", "hsvlt_nano": "1e-3"}


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def child_env(**extra) -> dict:
    """A child process's environment: this checkout importable (whether installed or not), plus `extra`."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def run_child(args: list[str], timeout: int = 300, **env) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=child_env(**env), capture_output=True,
                            text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def assert_probabilities_close(actual, expected, max_error: float, mean_error: float) -> None:
    difference = np.abs(np.asarray(actual, dtype=np.float64) - np.asarray(expected, dtype=np.float64))
    assert difference.max() < max_error and difference.mean() < mean_error, (difference.max(), difference.mean())


@pytest.fixture(params=["bf16", "fp16"])
def precision(request, monkeypatch):
    """bf16 autocast where the GPU has native bf16; float16 autocast with a gradient scaler, as a GPU without
    it (before Ampere) trains, on every GPU by hiding its bf16 from the precision decision."""
    if request.param == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no native bf16: it trains in float16, the other case")
    if request.param == "fp16":
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    return request.param


@pytest.fixture
def deterministic():
    """Bit-exact kernels for one test: cuDNN's fastest convolution backward passes add in a varying order. An op
    without a deterministic kernel warns (and names itself) instead of failing."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory):
    """Two epochs of hsvlt_pico with EMA trained on the GPU: its folder (best.pt, last.pt, log.jsonl)."""
    out = tmp_path_factory.mktemp("cuda") / "run"
    train_main(TINY + ["--device", "cuda", "--epochs", "2", "--ema", "0.9", "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def cuda_scores(cuda_run, tmp_path_factory):
    """hsvlt.evaluate of the run's best.pt on the GPU, in the batches training validated in (2 x 16): (figures,
    scores N x C)."""
    folder = tmp_path_factory.mktemp("cuda_scores")
    evaluate_main(["--ckpt", str(cuda_run / "best.pt"), "--device", "cuda", "--workers", "0", "--batch-size", "32",
                   "--json", str(folder / "e.json"), "--save-scores", str(folder / "s.npz")])
    return json.loads((folder / "e.json").read_text()), np.load(folder / "s.npz")["scores"]


@pytest.mark.parametrize("preset", sorted(STEPS))
def test_training_steps_lower_the_loss(preset, precision, tmp_path, monkeypatch):
    """Six steps on one batch: the loss stays finite and falls; the forward runs in the chosen dtype, and float16
    goes through the gradient scaler, whose state last.pt keeps."""
    dtypes = set()
    original = engine_module.autocast  # the training step's

    def recording(device, dtype):
        dtypes.add((device.type, dtype))
        return original(device, dtype)

    monkeypatch.setattr(engine_module, "autocast", recording)
    out = tmp_path / "run"
    train_main(["--model", preset, "--img-size", "64", "--train-size", "8", "--val-size", "8", "--batch-size", "8",
                "--workers", "0", "--warmup-epochs", "0", "--epochs", "6", "--lr", STEPS[preset], "--device", "cuda",
                "--out", str(out)])
    losses = [entry["train_loss"] for entry in read_log(out)]
    assert len(losses) == 6 and all(math.isfinite(loss) for loss in losses), losses
    assert losses[-1] < 0.8 * losses[0], losses
    assert dtypes == {("cuda", torch.bfloat16 if precision == "bf16" else torch.float16)}
    train_state = load_checkpoint(out / "last.pt")["train_state"]
    assert all(torch.isfinite(weights).all() for weights in train_state["model"].values())
    if precision == "fp16":
        assert 0 < train_state["scaler"]["scale"] < math.inf, train_state["scaler"]
    else:
        assert train_state["scaler"] == {}  # bf16 has float32's range: nothing to scale


def test_ema_averages_each_step_on_cuda(tmp_path):
    """One step per epoch with decay 0.9: after step 1 the EMA holds the weights, after step 2 it holds 0.9 x those
    plus 0.1 x the new weights (the second step runs after a resume, so the EMA state survives one too)."""
    out = tmp_path / "run"
    argv = TINY + ["--device", "cuda", "--train-size", "16", "--low-res-epochs", "0", "--warmup-epochs", "0",
                   "--ema", "0.9", "--out", str(out)]
    train_main(argv + ["--epochs", "1"])
    first = load_checkpoint(out / "last.pt")
    train_main(argv + ["--epochs", "2", "--resume"])
    second = load_checkpoint(out / "last.pt")
    moved = 0
    for key, weights in first["train_state"]["model"].items():
        torch.testing.assert_close(first["model"][key], weights, rtol=0, atol=0, msg=key)
        new = second["train_state"]["model"][key]
        torch.testing.assert_close(second["model"][key], 0.9 * weights + 0.1 * new, rtol=1e-5, atol=1e-6, msg=key)
        moved += not torch.equal(weights, new)
    assert moved > 0


def test_validation_on_cuda_is_reproduced_and_matches_the_cpu(cuda_run, cuda_scores, tmp_path):
    """The GPU's validation (bf16) of best.pt: hsvlt.evaluate on the GPU gives the training run's mAP, and on the
    CPU (float32) the same scores within bf16's rounding."""
    figures, scores = cuda_scores
    best = load_checkpoint(cuda_run / "best.pt")
    assert figures["num_images"] == 33 and scores.shape == (33, 10)
    assert figures["mAP"] == pytest.approx(best["metrics"]["mAP"], abs=1e-3)
    evaluate_main(["--ckpt", str(cuda_run / "best.pt"), "--device", "cpu", "--workers", "0",
                   "--save-scores", str(tmp_path / "cpu.npz")])
    assert_probabilities_close(np.load(tmp_path / "cpu.npz")["scores"], scores, 0.02, 0.005)


def test_resume_on_cuda_continues_exactly(crash_on_batch, precision, deterministic, tmp_path, monkeypatch):
    """Killed at the start of epoch 2 and resumed from last.pt on the GPU: the same weights, EMA and (float16)
    loss scale, to the bit, as an uninterrupted run."""
    argv = TINY + ["--device", "cuda", "--epochs", "2", "--ema", "0.9"]
    train_main(argv + ["--out", str(tmp_path / "straight")])
    restore = crash_on_batch(5)  # 4 batches per epoch
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train_main(argv + ["--out", str(tmp_path / "resumed")])
    restore()
    train_main(argv + ["--out", str(tmp_path / "resumed"), "--resume"])
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "resumed" / "last.pt")
    for key, value in a["train_state"]["model"].items():
        torch.testing.assert_close(value, b["train_state"]["model"][key], rtol=0, atol=0, msg=key)
    for key, value in a["model"].items():  # the EMA weights
        torch.testing.assert_close(value, b["model"][key], rtol=0, atol=0, msg=key)
    assert a["train_state"]["scaler"] == b["train_state"]["scaler"]
    assert bool(a["train_state"]["scaler"]) == (precision == "fp16")
    assert [entry["epoch"] for entry in read_log(tmp_path / "resumed")] == [1, 2]


# Run with CUDA hidden: evaluate and export best.pt, then resume last.pt for one more epoch on the CPU.
CPU_ONLY_CHILD = """
import json, sys
import torch
from hsvlt.export.to_executorch import main as export_main
from hsvlt.evaluate import main as evaluate_main
from hsvlt.train import main as train_main

assert not torch.cuda.is_available(), "CUDA should be hidden from this process"
run, out, resume_argv = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
evaluate_main(["--ckpt", f"{run}/best.pt", "--workers", "0", "--batch-size", "32", "--save-scores", f"{out}/cpu.npz"])
export_main(["--ckpt", f"{run}/best.pt", "--out", f"{out}/model.pte", "--parity-images", "4"])
train_main(resume_argv)
"""


def test_a_cpu_only_process_evaluates_exports_and_resumes_a_cuda_checkpoint(cuda_run, cuda_scores, tmp_path):
    """Checkpoints written on the GPU hold CUDA tensors: a process without CUDA reads them (evaluation, ExecuTorch
    export, and --resume on the CPU), with outputs that match the GPU's."""
    pytest.importorskip("executorch")
    from hsvlt.checkpoint import load_source
    from hsvlt.deploy.runtimes import ExecuTorchModel
    from hsvlt.export.parity import scene_images

    run = tmp_path / "run"
    shutil.copytree(cuda_run, run)  # the resume below writes into it
    resume_argv = TINY + ["--device", "cpu", "--epochs", "3", "--ema", "0.9", "--out", str(run), "--resume"]
    run_child(["-c", CPU_ONLY_CHILD, str(cuda_run), str(tmp_path), json.dumps(resume_argv)], CUDA_VISIBLE_DEVICES="")

    _, scores = cuda_scores
    assert_probabilities_close(np.load(tmp_path / "cpu.npz")["scores"], scores, 0.02, 0.005)
    images = scene_images(4, load_source(cuda_run / "best.pt").img_size)  # 4 x 3 x 64 x 64 in [0, 1]
    model = load_model(cuda_run / "best.pt")[0].to(CUDA)
    with torch.no_grad():
        on_gpu = torch.sigmoid(model(torch.from_numpy(images).to(CUDA))).cpu().numpy()
    # float32 on both sides; the GPU's convolutions run in TF32 (PyTorch's default for cuDNN).
    assert_probabilities_close(ExecuTorchModel(tmp_path / "model.pte").run(images).probabilities, on_gpu, 0.01, 0.002)

    log = read_log(run)
    assert [entry["epoch"] for entry in log] == [1, 2, 3]
    assert math.isfinite(log[2]["train_loss"]) and log[2]["train_loss"] < log[0]["train_loss"]  # went on, not over


def test_loader_workers_deliver_pinned_batches_that_match_the_main_process():
    """With CUDA present the loaders pin their batches; two workers deliver what the main process computes
    (augmentation depends on seed, epoch and index only), and the non-blocking copy to the GPU is exact."""
    dataset = ShapesDataset("train", 48, 64, 0)
    transform = train_transform(64, 0.7, 2)
    batches = {}
    for workers in (0, 2):
        loader, sampler = train_loader(dataset, transform, 16, workers, seed=0)
        sampler.set_epoch(1)
        batches[workers] = list(loader)
    assert len(batches[2]) == 3
    for main, worker in zip(batches[0], batches[2]):
        assert worker["images"].is_pinned() and worker["targets"].is_pinned()
        assert torch.equal(main["indices"], worker["indices"]) and torch.equal(main["images"], worker["images"])
        copied = worker["images"].to(CUDA, non_blocking=True)  # uint8 16 x 64 x 64 x 3
        assert torch.equal(copied.cpu(), main["images"])
        # The GPU's division by 255 may round the last bit differently from the CPU's vectorised one.
        torch.testing.assert_close(to_model_input(worker["images"], CUDA).cpu(), to_model_input(main["images"], CPU),
                                   rtol=2.4e-7, atol=0)


# One process under torchrun gets no process group from hsvlt.distributed (it starts one for several). Declaring
# every Runtime distributed sends this one through the multi-GPU path: an NCCL group, DDP, and the collectives
# of training and validation, which a one-GPU machine can run in no other way.
DDP_DRIVER = """
import sys
import torch.distributed as dist
from hsvlt import distributed
from hsvlt.train import main

distributed.Placement.distributed = property(lambda self: True)
setup = distributed.setup


def setup_and_report(device="auto"):
    placement = setup(device)
    print("process group backend:", dist.get_backend(), flush=True)
    return placement


distributed.setup = setup_and_report
main(sys.argv[1:])
"""


def test_torchrun_one_process_and_nccl_ddp_train_alike(tmp_path):
    """`torchrun --nproc_per_node 1 -m hsvlt.train` on the GPU (pinned-memory workers), and the same run through
    NCCL and DDP: both finish, print once, and log the same losses."""
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]  # the torchrun command
    argv = TINY + ["--device", "cuda", "--epochs", "1", "--workers", "2"]
    plain = run_child([*torchrun, "-m", "hsvlt.train", *argv, "--out", str(tmp_path / "plain")])
    driver = tmp_path / "ddp_driver.py"
    driver.write_text(DDP_DRIVER)
    ddp = run_child([*torchrun, str(driver), *argv, "--out", str(tmp_path / "ddp")])
    assert "process group backend: nccl" in ddp.stdout
    for result in (plain, ddp):
        assert "1 x cuda" in result.stdout and result.stdout.count("best epoch 1") == 1
    a, b = read_log(tmp_path / "plain")[0], read_log(tmp_path / "ddp")[0]
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-2)
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-2)
    assert load_checkpoint(tmp_path / "ddp" / "best.pt")["metrics"]["num_images"] == 33


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
def test_qat_steps_on_cuda_then_int8_export_on_the_cpu(checkpoint, tmp_path):
    """The fake-quantised graph (prepared on the CPU, as quant/qat.py does) trains on the GPU: its loss falls, it
    gives the CPU's outputs once moved back, and converts and lowers to an int8 ExecuTorch program on the CPU that
    computes what the GPU's graph did."""
    pytest.importorskip("torchao")
    pytest.importorskip("executorch")
    from hsvlt.checkpoint import load_source
    from hsvlt.deploy.manifest import Quantization, checkpoint_manifest
    from hsvlt.deploy.runtimes import ExecuTorchModel
    from hsvlt.export import to_executorch
    from hsvlt.quant import qat
    from hsvlt.quant.pt2e import (
        capture,
        convert,
        freeze_observers,
        load_artifact,
        prepare,
        save_artifact,
        to_program,
        train_mode,
    )

    source = load_source(checkpoint)
    args = qat.parse_args(["--ckpt", str(checkpoint), "--out", str(tmp_path / "qat.pt2"), "--workers", "0",
                           "--batch-size", "16", "--train-size", "32", "--val-size", "16"])
    train, _, _ = qat.loaders(source.checkpoint, source.img_size, args, augment=True)
    images, targets = next(qat.batches(train))  # 16 x 3 x 32 x 32 in [0, 1], 16 x 10
    torch.manual_seed(0)
    prepared = prepare(capture(source.model, qat=True), qat=True).to(CUDA)
    train_mode(prepared, True)
    optimizer = torch.optim.AdamW(prepared.parameters(), lr=1e-3)
    loss_fn = build_loss("bce")
    losses = []
    for _ in range(8):
        loss = loss_fn(qat.logits_of(prepared(images.to(CUDA))), targets.to(CUDA))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < 0.5 * losses[0], losses

    train_mode(prepared, False)
    freeze_observers(prepared)  # the ranges learnt on the GPU, unchanged by the comparisons below
    with torch.no_grad():
        on_gpu = torch.sigmoid(qat.logits_of(prepared(images.to(CUDA)))).cpu().numpy()
        prepared.cpu()
        on_cpu = torch.sigmoid(qat.logits_of(prepared(images))).numpy()
    # A value on a rounding boundary may land one int8 step apart on the two devices.
    assert_probabilities_close(on_cpu, on_gpu, 0.06, 0.01)

    artifact, program_file = tmp_path / "qat.pt2", tmp_path / "int8.pte"
    manifest = checkpoint_manifest(source, "torch.export", "int8",
                                   quantization=Quantization(method="qat", activations="int8"))
    save_artifact(to_program(convert(prepared), source.img_size), artifact, manifest)
    to_executorch.main(["--ckpt", str(checkpoint), "--int8", str(artifact), "--out", str(program_file),
                        "--parity-images", "0"])
    program, _ = load_artifact(artifact)
    with torch.no_grad():
        int8 = program.module()(images).numpy()
    assert_probabilities_close(int8, on_gpu, 0.06, 0.01)
    assert_probabilities_close(ExecuTorchModel(program_file).run(images.numpy()).probabilities, int8, 0.06, 0.01)


def test_ablation_quick_on_cuda(tmp_path):
    """`python reports/ablation.py --device cuda --quick` (two variants): trains and tests on the GPU, names it on the
    page, and its GPU test scores are what the CPU computes from the same checkpoint."""
    out = tmp_path / "ablation"
    argv = ["--device", "cuda", "--quick", "--data", "shapes", "--variants", "hsvlt", "no-ivla", "--workers", "0",
            "--bootstrap", "100", "--out", str(out)]
    ablation.main(argv)
    summary = json.loads((out / "results.json").read_text())
    assert torch.cuda.get_device_name(CUDA) in summary["machine"]
    assert [r["key"] for r in summary["results"]] == ["hsvlt", "no-ivla"]
    assert all(math.isfinite(r["mAP"]) for r in summary["results"])
    assert "training and test on" in (out / "RESULTS.md").read_text()

    args = ablation.parse_args(argv)
    test, _ = ablation.build_test_split(args)
    model, _ = load_model(out / "hsvlt" / "best.pt")
    loader = eval_loader(test, eval_transform(args.img_size), 2 * args.batch_size, 0)
    on_cpu = score_loader(model, loader, distributed.Placement(CPU), progress=False)
    saved = np.load(out / "hsvlt" / "test_scores.npz")
    np.testing.assert_array_equal(saved["targets"], on_cpu.targets)
    assert_probabilities_close(on_cpu.scores, saved["scores"], 0.02, 0.005)
