"""The compiled loops give the same numbers on other CPUs: tests/kernels/cross_check.c runs
every loop on made-up inputs, on each of its paths (plain C; AVX2 and SSE2 on x86-64, NEON
on 64-bit ARM) with one and three threads, and prints a hash of each output. Here all paths must agree;
where an ARM cross-compiler and an emulator are installed (Debian: gcc-aarch64-linux-gnu,
qemu-user), the ARM build's hashes must be this machine's."""

from __future__ import annotations

import collections
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from diffcodec.model import compiled

SOURCE = Path(__file__).with_name("kernels") / "cross_check.c"


def _build(compiler: list[str], target: Path, extra: tuple[str, ...] = ()) -> bool:
    """The harness built with the codec's own flags (compiled._builds), as an executable."""
    for command in compiled._builds():
        flags = [f for f in command[1:] if f not in ("-shared", "-fPIC")]
        done = subprocess.run([*compiler, *flags, *extra, "-o", str(target), str(SOURCE), "-lm"],
                              capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return True
    return False


def _run(command: list[str]) -> tuple[list[str], dict[int, tuple[int, int]]]:
    """The hashes, and the path each of intconv and floatconv took when asked for path 0, 1, 2."""
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    took = {}
    for line in done.stderr.splitlines():
        if line.startswith("took "):
            path, integer, floating = map(int, line.split()[1:])
            took[path] = (integer, floating)
    return done.stdout.splitlines(), took


@pytest.fixture(scope="module")
def here(tmp_path_factory):
    target = tmp_path_factory.mktemp("kernels") / "cross_check"
    if not _build(compiled._builds()[0][:1], target):
        pytest.skip("no C compiler here")
    return _run([str(target)])


def test_every_path_and_thread_count_gives_the_same_numbers(here):
    hashes, took = here
    seen = collections.defaultdict(set)
    for line in hashes:
        name, path, threads, digest = line.split()
        seen[name].add(digest)
    assert len(seen) >= 20 and all(len(digests) == 1 for digests in seen.values()), seen
    assert took[0] == (0, 0)  # plain C
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert took[2] == (2, 0) and took[1] in ((1, 1), (2, 0))  # SSE2 forced; AVX2, else SSE2


@pytest.mark.skipif(not (shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")),
                    reason="needs an ARM cross-compiler and emulator (gcc-aarch64-linux-gnu, qemu-user)")
def test_arm_build_gives_this_machines_numbers(here, tmp_path):
    target = tmp_path / "cross_check_arm"
    assert _build(["aarch64-linux-gnu-gcc"], target, ("-static",))
    hashes, took = _run(["qemu-aarch64", str(target)])
    assert took == {0: (0, 0), 1: (2, 2), 2: (2, 2)}  # NEON
    assert hashes == here[0]
