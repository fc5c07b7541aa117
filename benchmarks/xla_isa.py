"""What ``XLA_FLAGS=--xla_cpu_max_isa=AVX2`` changes in the ``jax_grad`` row's program.

Compiles the row (``bench_rows._jax_grad``) at one size in a fresh process per setting,
with XLA dumping what it compiled (``--xla_dump_to``), and reports for each setting:

- the AVX-512 instructions in XLA's generated object code: those that name a zmm
  register or a mask register k1–k7 (``objdump``; AVX2 has neither);
- the library calls of the optimized program: fusions XLA hands to YNNPACK
  (``__ynn_fusion``, the matrix products), whose kernels are precompiled and picked
  at run time from CPUID, so the flag cannot reach them;
- the functions the optimized LLVM IR declares other than LLVM's intrinsics (a libm
  ``tanh``, say): none means tanh is XLA's own inlined approximation.

    python benchmarks/xla_isa.py [--size 1] [--dtype float32]

Needs ``objdump`` (binutils). A setting is a list of extra XLA flags; the first is the
default, the second the one ``bench_bptt.py --cpu-features avx2`` adds.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_bptt import SIZES, XLA_WITHOUT_AVX512

AVX512_OPERAND = re.compile(r"%zmm\d+|%k[1-7]\b")
SETTINGS = ("", XLA_WITHOUT_AVX512)

_COMPILE = """
import sys
sys.path.insert(0, {bench!r})
import jax
jax.config.update("jax_enable_x64", True)
from bench_bptt import SIZES
from bench_rows import _jax_grad, make_problem
_jax_grad(make_problem(SIZES[{size}], {dtype!r})).run()
"""


def compile_and_dump(size: int, dtype: str, flags: str, dump: Path) -> None:
    """Build the row in a fresh process whose XLA reads ``flags`` and dumps into ``dump``."""
    code = _COMPILE.format(bench=str(Path(__file__).parent), size=size, dtype=dtype)
    env = {**os.environ, "XLA_FLAGS": f"--xla_dump_to={dump} {flags}".strip()}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def inspect(dump: Path) -> dict[str, object]:
    """Counts over every module XLA dumped."""
    objects = sorted(dump.glob("*.o"))
    avx512 = 0
    for obj in objects:
        text = subprocess.run(
            ["objdump", "-d", str(obj)], capture_output=True, text=True, check=True
        ).stdout
        avx512 += sum(1 for line in text.splitlines() if AVX512_OPERAND.search(line))
    hlo = "".join(p.read_text() for p in dump.glob("*cpu_after_optimizations.txt"))
    ir = "".join(p.read_text() for p in dump.glob("*ir-with-opt.ll"))
    return {
        "object files": len(objects),
        "AVX-512 instructions": avx512,
        "YNNPACK fusions": hlo.count("__ynn_fusion"),
        "functions declared outside LLVM's intrinsics": len(
            set(re.findall(r"^declare [^@]*@(?!llvm\.)([\w.]+)", ir, flags=re.MULTILINE))
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1, help="index into bench_bptt.SIZES")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    print(f"jax_grad at {SIZES[args.size]} {args.dtype}")
    for flags in SETTINGS:
        with tempfile.TemporaryDirectory() as tmp:
            compile_and_dump(args.size, args.dtype, flags, Path(tmp))
            counts = inspect(Path(tmp))
        print(
            f"XLA_FLAGS extra: {flags or '(none)'}: "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
        )


if __name__ == "__main__":
    main()
