"""glibc malloc tunables: what they are set to, that they stop the page faults,
and that the long CLI commands start themselves again with them."""

import os
import subprocess
import sys
import textwrap

import pytest

from keras_sanet import cli
from keras_sanet import cpu_malloc
from tests.helpers import REPO_ROOT

OURS = ":".join(f"{name}={value}" for name, value in cpu_malloc.TUNABLES.items())
needs_glibc = pytest.mark.skipif(
    not cpu_malloc.uses_glibc(), reason="GLIBC_TUNABLES exist on Linux with glibc only"
)


@pytest.mark.parametrize(
    "current, expected",
    [
        ("", OURS),
        # Another library's tunable stays, ours follow it.
        ("glibc.pthread.rseq=0", "glibc.pthread.rseq=0:" + OURS),
        # A setting the user made wins over ours.
        (
            "glibc.malloc.arena_max=4",
            "glibc.malloc.arena_max=4:glibc.malloc.mmap_max=0:"
            "glibc.malloc.trim_threshold=68719476736",
        ),
        # Already complete: unchanged, nothing doubled.
        (OURS, OURS),
    ],
)
def test_tunables_value_adds_only_what_is_missing(current, expected):
    assert cpu_malloc.tunables_value(current) == expected


@pytest.mark.parametrize(
    "environ, configured",
    [
        ({}, False),
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}, False),
        ({"GLIBC_TUNABLES": OURS}, True),
        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:" + OURS}, True),
    ],
)
def test_is_configured(environ, configured):
    assert cpu_malloc.is_configured(environ) is configured


@pytest.mark.parametrize("opt_out", ["0", "false", "OFF", " no "])
def test_the_opt_out_stops_the_restart(opt_out):
    assert not cpu_malloc.should_restart({cpu_malloc.OPT_OUT_VARIABLE: opt_out})


@needs_glibc
def test_should_restart_where_glibc_lacks_the_tunables():
    assert cpu_malloc.should_restart({})
    assert cpu_malloc.should_restart({cpu_malloc.OPT_OUT_VARIABLE: "1"})
    assert not cpu_malloc.should_restart(cpu_malloc.environment({}))


def test_environment_copies_and_keeps_the_rest():
    base = {"HOME": "/home/user", "GLIBC_TUNABLES": "glibc.pthread.rseq=0"}
    env = cpu_malloc.environment(base)
    assert env["HOME"] == "/home/user"
    assert env["GLIBC_TUNABLES"] == "glibc.pthread.rseq=0:" + OURS
    assert base["GLIBC_TUNABLES"] == "glibc.pthread.rseq=0"  # not modified


# Allocates, fills and frees a 64 MB buffer (over glibc's 32 MB mmap threshold)
# 5 times; prints the page faults of the last 4 rounds.
_FAULTS = textwrap.dedent(
    """
    import resource
    import numpy as np
    faults = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffer = np.empty(16 * 1024 * 1024, "float32")
        buffer.fill(1.0)
        del buffer
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(sum(faults[1:]))
    """
)


def _faults(env):
    proc = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return int(proc.stdout.strip())


@needs_glibc
def test_the_tunables_stop_the_page_faults_of_a_reallocated_buffer():
    plain = dict(os.environ)
    plain.pop("GLIBC_TUNABLES", None)
    # A fresh 64 MB mapping each round: at least one fault per 2 MiB huge page
    # (NumPy asks for them; 16384 a round in 4 KiB pages). With the tunables
    # the rounds after the first reuse the same pages.
    assert _faults(plain) >= 4 * 32
    assert _faults(cpu_malloc.environment(plain)) <= 4 * 4


def _keras_sanet(arguments, env):
    env = dict(env, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "keras_sanet", *arguments], env=env,
                          capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)


@needs_glibc
@pytest.mark.parametrize("opt_out", [None, "0"])
def test_eval_starts_again_with_the_tunables_unless_told_not_to(opt_out):
    env = dict(os.environ)
    env.pop("GLIBC_TUNABLES", None)
    env.pop(cpu_malloc.OPT_OUT_VARIABLE, None)
    if opt_out is not None:
        env[cpu_malloc.OPT_OUT_VARIABLE] = opt_out
    proc = _keras_sanet(["eval", "--help"], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: keras-sanet eval" in proc.stdout
    restarted = "starting again with GLIBC_TUNABLES=" + OURS in proc.stderr
    assert restarted is (opt_out is None)


def test_main_called_from_python_never_restarts(monkeypatch):
    def fail(arguments):
        raise AssertionError(f"restarted with {arguments}")

    monkeypatch.setattr(cpu_malloc, "restart_with_tunables", fail)
    monkeypatch.setattr(sys, "argv", ["keras-sanet", "train", "config.toml"])
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
