"""Which requirements of the wheels in a folder are neither in the folder nor in the GPU image?

    python benchmarks/_wheel_check.py .whl      # exit 1 and a list when something is missing

The GPU machine's image has torch, transformers, sentence-transformers, accelerate, pandas, pyarrow and
their own dependencies (DEVICE_HAS); everything else st-hpo imports there must travel as a wheel. Reads
each wheel's METADATA (``Requires-Dist``, markers evaluated for CPython 3.12 on Linux, extras ignored).
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

DEVICE_HAS = {
    "torch", "transformers", "sentence-transformers", "accelerate", "pandas", "pyarrow", "numpy", "scipy",
    "scikit-learn", "huggingface-hub", "tokenizers", "safetensors", "regex", "requests", "urllib3", "idna",
    "certifi", "charset-normalizer", "packaging", "pyyaml", "tqdm", "filelock", "fsspec", "jinja2", "markupsafe",
    "networkx", "sympy", "mpmath", "typing-extensions", "psutil", "pillow", "python-dateutil", "pytz", "tzdata",
    "six", "joblib", "threadpoolctl", "triton", "setuptools", "hf-xet", "click", "protobuf", "aiohttp", "xxhash",
    "httpx", "httpcore", "anyio", "sniffio", "h11", "typer", "shellingham", "aiosignal", "aiohappyeyeballs", "attrs", "frozenlist", "multidict", "propcache", "yarl",
}
#: st-hpo requirements that a leaner wheel serves there (the MLflow client and its SQL store, without the server).
SERVED_BY = {"mlflow": "mlflow-skinny"}
#: Also in the GPU image (KINDS.md's package list).
DEVICE_HAS |= {"matplotlib", "narwhals", "rich", "pygments", "markdown-it-py", "mdurl", "zipp", "cloudpickle",
               "annotated-doc", "contourpy", "cycler", "fonttools", "kiwisolver", "pyparsing", "pillow"}
ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def project_requirements() -> list[str]:
    """st-hpo's own ``[project] dependencies`` (pyproject.toml): what the study runner imports there."""
    import tomllib

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def main(folder: str) -> int:
    wheels = sorted(Path(folder).glob("*.whl"))
    have = {canonicalize_name(w.name.split("-")[0]) for w in wheels} | DEVICE_HAS
    missing: dict[str, set[str]] = {}
    for line in project_requirements():  # st-hpo's own (plotly went missing there once: no study reports)
        req = Requirement(line)
        name = SERVED_BY.get(canonicalize_name(req.name), canonicalize_name(req.name))
        if (req.marker is None or req.marker.evaluate(ENV)) and name not in have:
            missing.setdefault(canonicalize_name(req.name), set()).add("st-hpo")
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            meta = next(n for n in zf.namelist() if re.match(r"[^/]+\.dist-info/METADATA$", n))
            text = zf.read(meta).decode()
        for line in text.splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is not None and not req.marker.evaluate(ENV):
                continue
            name = canonicalize_name(req.name)
            if name not in have:
                missing.setdefault(name, set()).add(wheel.name.split("-")[0])
    for name, needed_by in sorted(missing.items()):
        print(f"missing: {name} (needed by {', '.join(sorted(needed_by))})")
    print(f"{len(wheels)} wheels checked; {len(missing)} requirement(s) missing")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".whl"))
