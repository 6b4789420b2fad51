"""fcnseg.export.aoti: an AOTInductor package, compiled once, checked, refused where it cannot run.

One package is compiled for the module (tens of seconds; a C++ compiler is needed and the
tests skip, saying so, without one) through the command line a user types, then loaded,
timed, predicted with, and refused on a simulated CPU without its instructions.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import fcnseg
from fcnseg.accel.precision import cpu_has_bf16
from fcnseg.cli import main
from fcnseg.data.transforms import Normalize
from fcnseg.export import ATOL, AotiError, AotiModel, export_aoti
from fcnseg.export.aoti import compiler_available

from . import random_image, tiny_model

pytestmark = pytest.mark.skipif(
    not compiler_available(),
    reason="AOTInductor export needs a C++ compiler (g++ / clang++), none on this machine",
)

SIZE = (64, 96)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """``fcnseg export --format aoti`` of a tiny trained-looking model: (checkpoint, package,
    the command's JSON report)."""
    folder = tmp_path_factory.mktemp("aoti")
    model = tiny_model("fcn8s")
    checkpoint = folder / "model.pt"
    fcnseg.save_model(model, checkpoint)
    out = folder / "model.pt2"
    argv = ["export", "--checkpoint", str(checkpoint), "--format", "aoti", "--out", str(out)]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main([*argv, "--size", "x".join(map(str, SIZE)), "--json"])
    assert code == 0
    return checkpoint, out, json.loads(buffer.getvalue())


def test_the_package_reproduces_the_model_and_describes_itself(package):
    checkpoint, path, report = package
    assert report["format"] == "aoti" and report["dynamic_shapes"] is False
    assert report["parity"]["passed"] and report["parity"]["max_abs_diff"] < ATOL
    assert report["example_size"] == [1, 3, *SIZE]
    model = fcnseg.load_model(checkpoint)
    compiled = AotiModel(path)
    assert compiled.size == (1, 3, *SIZE)
    assert compiled.config["preprocess"] == model.preprocess  # the normalisation ships with it
    assert compiled.num_classes == 3 and compiled.class_names == model.class_names
    assert compiled.threads == torch.get_num_threads() and compiled.isa == report["isa"]
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(x)
    for layout in (torch.contiguous_format, torch.channels_last):  # any layout in
        got = compiled(x.contiguous(memory_format=layout))
        assert (got - expected).abs().max() < ATOL


def test_another_size_is_refused_in_one_line(package):
    _, path, _ = package
    with pytest.raises(AotiError, match=r"compiled for inputs 1x3x64x96, got 1x3x64x97"):
        AotiModel(path)(torch.randn(1, 3, 64, 97))


def test_a_cpu_without_the_packages_instructions_is_refused(package, monkeypatch):
    _, path, _ = package
    import torch._inductor.cpu_vec_isa as vec

    if not AotiModel(path).isa.split()[0].startswith("avx"):
        pytest.skip("the ISA check simulates x86 CPUs")
    monkeypatch.setattr(vec, "x86_isa_checker", lambda: [])  # a CPU with no vector extension
    with pytest.raises(AotiError, match="this CPU lacks .*Re-export on this machine"):
        AotiModel(path)


def test_files_that_are_not_fcnseg_packages_are_refused(tmp_path, capsys):
    bad = tmp_path / "broken.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(AotiError, match="broken.pt2: not an AOTInductor package"):
        AotiModel(bad)
    other = tmp_path / "other.pt2"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("readme.txt", "a zip, not a package")
    with pytest.raises(AotiError, match="other.pt2: not an AOTInductor package"):
        AotiModel(other)
    with pytest.raises(FileNotFoundError):
        AotiModel(tmp_path / "missing.pt2")
    assert main(["bench", "--aoti", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not an AOTInductor package" in err


def test_bench_times_the_package_at_its_size(package, capsys):
    _, path, _ = package
    assert main(["bench", "--aoti", str(path), "--repeat", "3"]) == 0
    out = capsys.readouterr().out
    assert "model.pt2 [aoti" in out and "64x96" in out


def test_predict_runs_the_package_like_the_checkpoint(package, tmp_path):
    checkpoint, path, _ = package
    image = random_image(*SIZE, seed=3)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "frame.png")
    for flag, source, out in (("--aoti", path, "a"), ("--checkpoint", checkpoint, "c")):
        argv = ["predict", flag, str(source), str(tmp_path / "frame.png"), "--out"]
        assert main([*argv, str(tmp_path / out), "--no-progress"]) == 0
    labels = {o: np.array(Image.open(tmp_path / o / "frame.png")) for o in "ac"}
    assert labels["a"].shape == SIZE
    assert (labels["a"] == labels["c"]).mean() > 0.999
    model = fcnseg.load_model(checkpoint)
    with torch.no_grad():
        logits = model(Normalize(model.preprocess)(image)[None])
    assert len(np.unique(logits.argmax(1).numpy())) > 1  # labels a wrong package would change


_FAULTS_SCRIPT = """
import ctypes, resource, sys
from fcnseg.accel.heap import retain_freed_memory
taken = retain_freed_memory() if sys.argv[1] == "retain" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
size = 64 << 20  # above glibc's largest adaptive mmap threshold (32 MiB)
def buffer():  # what a package does on every call: allocate, write, free
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
buffer()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    buffer()
print(taken, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux")
def test_retained_memory_is_reused_without_page_faults():
    # in a child process: the setting is process-wide and would change this one's memory
    def run(mode: str) -> tuple[str, float]:
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS_SCRIPT, mode], capture_output=True, text=True
        )
        taken, faults = out.stdout.split()
        return taken, float(faults)

    taken, retained = run("retain")
    if taken != "True":
        pytest.skip("not glibc: retain_freed_memory changes nothing here")
    _, default = run("default")
    # glibc's default: the 64 MiB buffer mapped and faulted in again on every call (4 KiB
    # pages, or 2 MiB ones where transparent huge pages are on); retained: reused
    assert default >= (64 << 20) / (2 << 20)
    assert retained < 0.05 * default


def test_a_bf16_package_is_refused_on_a_cpu_without_native_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr("fcnseg.export.aoti.cpu_has_bf16", lambda: False)
    with pytest.raises(AotiError, match="needs a CPU with native bf16"):
        export_aoti(tiny_model("fcn8s"), tmp_path / "m.pt2", precision="bf16")
    assert not (tmp_path / "m.pt2").exists()


@pytest.mark.skipif(
    not cpu_has_bf16(),
    reason="a bf16 package needs native bf16 (AMX or AVX512-BF16); this CPU has none",
)
def test_a_bf16_package_runs_the_autocast_graph_with_float32_in_and_out(tmp_path):
    model = tiny_model("fcn8s")
    report = export_aoti(model, tmp_path / "bf16.pt2", (1, 3, *SIZE), precision="bf16")
    compiled = AotiModel(tmp_path / "bf16.pt2")
    assert report["precision"] == compiled.precision == "bf16" and report["parity"]["passed"]
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(x).float()
    got = compiled(x)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    # the same bf16 graph as eager autocast, up to the order of bf16 sums: labels agree on
    # at least the 99 % that the export's own parity rule asks of it against fp32
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.99
