"""What may be unpickled from a model file that the user did not say they trust.

`torch.load(weights_only=True)` is safe: it rebuilds tensors and plain containers and refuses
any other Python object. `torch.export.load` is not: it unpickles an archive's sample inputs
(falling back to `weights_only=False`), weights and constants marked `use_pickle`, torchbind
objects (`custom_obj_*`) and opaque objects (`opaque_obj_*`, plain `pickle.loads`), and loads
AOTInductor's compiled libraries. `inspect_pt2` reads the archive without executing anything
and refuses it before `torch.export.load` sees it, unless every pickle in it is plain tensors.
"""
from __future__ import annotations

import collections
import io
import json
import pickletools
import posixpath
import zipfile

from ..failures import ConversionError, FailureKind, first_line, reraise_if_memory

LEGACY_MAGIC = 0x1950a86a20f9469cfc6c  # torch.serialization.MAGIC_NUMBER, the first object of a legacy torch.save
OBJECT_PREFIXES = ("opaque_obj_", "custom_obj_")  # constants torch unpickles as Python objects
CONFIG_SUFFIXES = ("_weights_config.json", "_constants_config.json")
OLD_FORMAT_PICKLES = ("serialized_state_dict", "serialized_constants", "serialized_example_inputs")
ADVICE = ("if you trust its source, set trust_pickle = true in its .toml (CLI: --trust-pickle); "
          "better, re-export it with plain tensors only")


def is_legacy_torch_save(data: bytes) -> bool:
    """Read, never execute, the first pickle of the file: torch.save wrote its magic number there."""
    try:
        with io.BytesIO(data) as fh:
            for count, (opcode, arg, _) in enumerate(pickletools.genops(fh)):
                if arg == LEGACY_MAGIC:
                    return True
                if opcode.name == "STOP" or count > 4:
                    return False
    except Exception:  # pickletools raises ValueError and friends on garbage
        return False
    return False


def refusal_kind(exc: BaseException) -> FailureKind:
    """A weights-only load that met a Python object names it ('Unsupported global'); garbage
    fails on an opcode instead. Only the first deserves the trust_pickle advice."""
    text = str(exc)
    return (FailureKind.UNTRUSTED_PICKLE if "Unsupported global" in text or "Unsupported class" in text
            else FailureKind.LOAD_ERROR)


def _check_tensor_pickle(data: bytes, member: str, *, tensor_only: bool) -> None:
    import torch

    if not data:
        return  # torch reads an empty member as "nothing", without unpickling
    try:
        value = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        reraise_if_memory(exc)
        kind = refusal_kind(exc)
        what = "a pickled Python object" if kind is FailureKind.UNTRUSTED_PICKLE else "a corrupt pickle"
        raise ConversionError(kind, f"archive member {member} holds {what} ({first_line(exc)}); "
                                    f"{ADVICE if kind is FailureKind.UNTRUSTED_PICKLE else 're-save the model'}"
                              ) from exc
    if tensor_only and not isinstance(value, torch.Tensor):
        raise ConversionError(FailureKind.UNTRUSTED_PICKLE,
                              f"archive member {member} holds a {type(value).__name__}, not a tensor; {ADVICE}")


def _config_entries(zf: zipfile.ZipFile, name: str) -> dict:
    try:
        config = json.loads(zf.read(name)).get("config", {})
    except (ValueError, AttributeError) as exc:
        raise ConversionError(FailureKind.LOAD_ERROR, f"corrupt archive: {name} is not a payload config") from exc
    if not isinstance(config, dict) or not all(isinstance(m, dict) for m in config.values()):
        raise ConversionError(FailureKind.LOAD_ERROR, f"corrupt archive: {name} is not a payload config")
    return config


MAX_MEMBERS = 10_000  # members of a .pt2 archive
MAX_DECLARED_BYTES = 64 * 2**30  # what its members declare they unpack to


def inspect_pt2(data: bytes) -> None:
    """Raise untrusted_pickle unless torch.export.load would unpickle nothing beyond plain tensors."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ConversionError(FailureKind.LOAD_ERROR, f"corrupt archive ({exc})") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:  # a real ExportedProgram has tens of members; inspecting each costs time
            raise ConversionError(FailureKind.LOAD_ERROR, f"archive has {len(infos):,} members, more than the "
                                                          f"{MAX_MEMBERS:,} a .pt2 file may have")
        declared = sum(i.file_size for i in infos)
        if declared > MAX_DECLARED_BYTES:  # a zip bomb declares what it would unpack to
            raise ConversionError(FailureKind.LOAD_ERROR, f"archive declares {declared / 2**30:.1f} GB once unpacked, "
                                                          f"more than {MAX_DECLARED_BYTES / 2**30:.0f} GB")
        names = [i.filename for i in infos]
        counts = collections.Counter(names)  # once over the names: 40 000 members took 37 s with names.count
        repeated = sorted(n for n, k in counts.items() if k > 1)
        present = set(names)
        if repeated:  # zipfile reads the last copy of a name, torch the first: what is checked must be what loads
            raise ConversionError(FailureKind.UNTRUSTED_PICKLE,
                                  f"archive member {repeated[0]} appears more than once (a crafted archive: "
                                  f"what would be inspected is not what torch loads); {ADVICE}")
        for name in names:
            parts = name.split("/")
            if "aotinductor" in parts:
                raise ConversionError(FailureKind.UNTRUSTED_PICKLE,
                                      f"archive member {name} is AOTInductor-compiled native code; {ADVICE}")
            if parts[-1].endswith(CONFIG_SUFFIXES):
                folder = posixpath.dirname(name)
                for fqn, meta in sorted(_config_entries(zf, name).items()):
                    path_name = str(meta.get("path_name", ""))
                    if path_name.startswith(OBJECT_PREFIXES):
                        raise ConversionError(FailureKind.UNTRUSTED_PICKLE,
                                              f"constant '{fqn}' is a pickled Python object "
                                              f"({path_name}); {ADVICE}")
                    if meta.get("use_pickle"):
                        member = posixpath.join(folder, path_name)
                        if member not in present:
                            raise ConversionError(FailureKind.LOAD_ERROR,
                                                  f"corrupt archive: {member} is missing")
                        _check_tensor_pickle(zf.read(member), member, tensor_only=True)
            elif parts[-1].endswith(".pt") or "sample_inputs" in parts or parts[-1].startswith(OLD_FORMAT_PICKLES):
                # sample inputs, legacy weights/constants, the older format's serialized_* state dict,
                # constants and example inputs (even when named .json): torch retries them with
                # weights_only=False when the safe load fails
                _check_tensor_pickle(zf.read(name), name, tensor_only=False)
