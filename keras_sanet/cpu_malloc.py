"""glibc malloc settings that keep freed memory for the next training step.

A training step on a CPU allocates and frees the same large buffers every step
(activations, tiles, gradients; tens to hundreds of MB each). glibc's malloc
gives every buffer over its mmap threshold (128 KiB, rising to at most 32 MB)
its own `mmap` and unmaps it on `free`, and trims its heaps when their top is
free: the next step's buffers then start as fresh pages, which the kernel
faults in and zeroes one 4 KiB page at a time. PyTorch's CPU training step of
SANet-R50 OS8 took 1.4-1.5 million such page faults (the step: 7.6 s with
them, 5.7 s without) and JAX's inference ~180,000 (benchmarks/PROFILE.md
section 17). With the settings below, malloc keeps what it got (no `mmap` per
buffer, no trimming, one arena shared by all threads, whose heaps would
otherwise be shrunk), and the steps reuse warm pages.

The settings are GLIBC_TUNABLES, read once when a process starts, so they
take effect in a process started with them: `keras-sanet train`, `eval` and
`ablation` start themselves again with them (set `KERAS_SANET_CPU_MALLOC=0`
to keep the process as it is), and your own script can be started as in the
example. Linux with glibc only; elsewhere nothing changes.

The cost: a process keeps its peak memory until it exits (PyTorch's peak RSS
for that training step: 4.3 -> 5.2 GB), and all threads share one malloc
arena, which on a many-core machine can contend in allocation-heavy input
pipelines (measured only on 2 cores).

Example (a shell, for your own training script):

    export GLIBC_TUNABLES=$(python -m keras_sanet.cpu_malloc)
    python my_training_script.py
"""

import os
import platform
import sys

ENVIRONMENT_VARIABLE = "GLIBC_TUNABLES"
OPT_OUT_VARIABLE = "KERAS_SANET_CPU_MALLOC"
# glibc.malloc.<name> -> value. trim_threshold: 64 GiB, i.e. never trim.
TUNABLES = {
    "glibc.malloc.mmap_max": "0",
    "glibc.malloc.trim_threshold": str(64 * 1024**3),
    "glibc.malloc.arena_max": "1",
}


def uses_glibc():
    """Whether this Python runs on Linux with glibc, where GLIBC_TUNABLES applies.

    Example:
    >>> isinstance(uses_glibc(), bool)
    True
    """
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _parse(tunables):
    """`{name: value}` of a GLIBC_TUNABLES string (`name=value:name=value`)."""
    pairs = (item.split("=", 1) for item in tunables.split(":") if "=" in item)
    return {name: value for name, value in pairs}


def tunables_value(current=""):
    """The GLIBC_TUNABLES value with keras-sanet's malloc settings added to `current`.

    Settings already in `current` are kept as they are, ours included only for
    the names it does not set: what a user chose wins.

    Args:
        current: the present GLIBC_TUNABLES value ("" if unset).

    Returns:
        A `name=value:name=value` string.

    Example:
    >>> tunables_value("glibc.malloc.arena_max=4")
    'glibc.malloc.arena_max=4:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736'
    """
    settings = _parse(current)
    merged = [item for item in current.split(":") if item]
    merged += [f"{name}={value}" for name, value in TUNABLES.items() if name not in settings]
    return ":".join(merged)


def is_configured(environ=None):
    """Whether `environ` (default `os.environ`) sets every malloc tunable named here.

    Example:
    >>> is_configured({"GLIBC_TUNABLES": tunables_value()})
    True
    >>> is_configured({})
    False
    """
    environ = os.environ if environ is None else environ
    return set(TUNABLES) <= set(_parse(environ.get(ENVIRONMENT_VARIABLE, "")))


def environment(environ=None):
    """A copy of `environ` (default `os.environ`) with the malloc tunables added.

    For starting a child process with them, e.g.
    `subprocess.run(command, env=environment())`.

    Example:
    >>> environment({"HOME": "/root"})["GLIBC_TUNABLES"] == tunables_value()
    True
    """
    environ = dict(os.environ if environ is None else environ)
    environ[ENVIRONMENT_VARIABLE] = tunables_value(environ.get(ENVIRONMENT_VARIABLE, ""))
    return environ


def should_restart(environ=None):
    """Whether a long command should start itself again with the tunables: on
    glibc, where they are not all set yet, unless `KERAS_SANET_CPU_MALLOC=0`.

    Example:
    >>> should_restart({"KERAS_SANET_CPU_MALLOC": "0"})
    False
    """
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return uses_glibc() and not is_configured(environ)


def restart_with_tunables(arguments):
    """Replaces this process by `python -m keras_sanet *arguments` started with the
    malloc tunables. Call it before any heavy work: the new process starts from
    scratch. Returns only if the interpreter could not be started again (with
    a warning; the command then goes on in this process).

    Args:
        arguments: the command line after the program name (`sys.argv[1:]`).
    """
    environ = environment()
    print(
        f"keras-sanet: starting again with {ENVIRONMENT_VARIABLE}="
        f"{environ[ENVIRONMENT_VARIABLE]} (glibc keeps freed memory between steps; "
        f"{OPT_OUT_VARIABLE}=0 turns this off)",
        file=sys.stderr,
        flush=True,
    )
    executable = sys.executable
    try:
        os.execve(executable, [executable, "-m", "keras_sanet", *arguments], environ)
    except OSError as error:
        print(f"keras-sanet: could not start again ({error}); going on without "
              f"the malloc tunables", file=sys.stderr, flush=True)


if __name__ == "__main__":
    # `export GLIBC_TUNABLES=$(python -m keras_sanet.cpu_malloc)`
    print(tunables_value(os.environ.get(ENVIRONMENT_VARIABLE, "")))
