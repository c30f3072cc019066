"""Is a model file a state_dict? Read from its pickle's opcodes, never executed: the parent (spec.py)
asks before any child runs, so that a model without a factory fails at once, saying it needs one.
Standard library only, so that the parent imports none of the child's loading machinery
(stages/pickle_safety.py decides what the child may unpickle).
"""
from __future__ import annotations

import io
import os
import pickletools
import stat
import zipfile

# what a state_dict's pickle names (torch.save of tensors in dicts): anything else is a module's class
STATE_DICT_GLOBALS = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                      ("torch._utils", "_rebuild_parameter"), ("torch", "FloatStorage"), ("torch", "HalfStorage"),
                      ("torch", "DoubleStorage"), ("torch", "LongStorage"), ("torch", "IntStorage"),
                      ("torch", "BFloat16Storage"), ("torch", "ByteStorage"), ("torch", "BoolStorage"),
                      ("torch", "CharStorage"), ("torch", "ShortStorage"), ("torch", "device")}
MAX_SNIFFED_PICKLE = 64 * 2**20


def looks_like_state_dict(path) -> bool:
    """A torch.save zip whose pickle names only tensors and dicts: read, never executed, and only its
    pickle (the weights stay on disk), so the parent can say at once that a factory is needed. Only
    a regular file is opened: a FIFO named like a model would block the run on open()."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with zipfile.ZipFile(path) as zf:
            pickles = [i for i in zf.infolist() if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
            if len(pickles) != 1 or pickles[0].file_size > MAX_SNIFFED_PICKLE:
                return False
            data = zf.read(pickles[0])
        strings: list[str] = []
        globals_found = set()
        for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
            if opcode.name == "GLOBAL":
                globals_found.add(tuple(arg.split(" ", 1)))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                globals_found.add((strings[-2], strings[-1]))
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # not a zip, a corrupt pickle: the child says what it is
        return False
    return bool(globals_found) and globals_found <= STATE_DICT_GLOBALS
