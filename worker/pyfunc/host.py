"""Gantry's Python model host: loads one MLflow model and predicts for the
Go worker that started it.

The worker runs `PYTHON - gantry-model-host MODEL_DIR` with this source on
stdin, and talks to it over two pipes: requests on fd 3, answers on fd 4.
stdout and stderr stay the model's (they go to the worker's log), so a
model that prints cannot corrupt the wire.

Every message is a little-endian u32 length and that many bytes. The first
message is the worker's load request (JSON: the MLmodel flavors and the
signature's input types); the host answers it once the model is loaded
("R" + JSON). After that, each request is a batch of named, typed columns
("P") and each answer is the model's output in the same columnar form
("O"), or an error ("E"): the worker parses and checks requests in Go, so
no JSON is parsed here per request. The layout is in wire.go, which is the
other half of this file.
"""

import importlib
import json
import os
import struct
import sys
import traceback

REQ_FD, RESP_FD = 3, 4

U32 = struct.Struct("<I")
U16 = struct.Struct("<H")


def read_exact(fd, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            raise EOFError
        got += k
    return buf


def read_msg():
    (n,) = U32.unpack(read_exact(REQ_FD, 4))
    return read_exact(REQ_FD, n)


def write_msg(parts):
    body = b"".join(parts)
    data = memoryview(U32.pack(len(body)) + body)
    while data:
        k = os.write(RESP_FD, data)
        data = data[k:]


class InputError(Exception):
    """The request's values are what the model could not take: a 400."""


# ---------------------------------------------------------------- loading


class LoadError(Exception):
    pass


def missing_module_message(name, what=None):
    top = (name or "?").split(".")[0]
    return (
        "No module named %r: the model needs %s, which the Python at %s lacks; "
        "install it there, or set GANTRY_PYTHON to an interpreter that has it"
        % (top, what or top, sys.executable)
    )


def logged_requirements(model_dir):
    """The pinned (name, version) pairs the model was logged with: its
    requirements.txt, else the pip list of its conda.yaml (MLflow writes
    both; python_env.yaml points at requirements.txt). No YAML library:
    the pip list is read line by line."""
    try:
        with open(os.path.join(model_dir, "requirements.txt")) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
        try:
            with open(os.path.join(model_dir, "conda.yaml")) as f:
                conda = f.read().splitlines()
        except OSError:
            conda = []
        in_pip = None  # the indentation of "- pip:", while under it
        for line in conda:
            stripped = line.strip()
            indent = len(line) - len(line.lstrip())
            if stripped in ("- pip:", "-  pip:"):
                in_pip = indent
                continue
            if in_pip is not None:
                if indent > in_pip and stripped.startswith("- "):
                    lines.append(stripped[2:].strip().strip("'\""))
                    continue
                in_pip = None
    out = []
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" not in line or line.startswith("-"):
            continue
        name, want = [s.strip() for s in line.split("==", 1)]
        out.append((name.split("[")[0], want.split(";")[0].strip()))
    return out


def logged_python(model_dir):
    """The Python version in python_env.yaml ("python: 3.11.2"), or None."""
    try:
        with open(os.path.join(model_dir, "python_env.yaml")) as f:
            for line in f:
                if line.startswith("python:"):
                    v = line.split(":", 1)[1].strip().strip("'\"")
                    return v or None
    except OSError:
        pass
    return None


def requirement_mismatches(model_dir):
    """Packages the model was logged with whose installed version differs,
    as "scikit-learn 1.4.0 logged, 1.2.1 here", and the Python version when
    its major.minor differs (pickles and compiled libraries follow it)."""
    out = []
    want_py = logged_python(model_dir)
    have_py = "%d.%d.%d" % sys.version_info[:3]
    if want_py and want_py.split(".")[:2] != have_py.split(".")[:2]:
        out.append("python %s logged, %s here" % (want_py, have_py))
    try:
        from importlib import metadata
    except ImportError:
        return out
    for name, want in logged_requirements(model_dir):
        if name.lower() == "mlflow":
            continue
        try:
            have = metadata.version(name)
        except Exception:
            have = None
        if have is None:
            out.append("%s %s logged, not installed here" % (name, want))
        elif have.split("+")[0] != want.split("+")[0]:
            out.append("%s %s logged, %s here" % (name, want, have))
    return out


def load_with_mlflow(model_dir):
    import mlflow.pyfunc

    m = mlflow.pyfunc.load_model(model_dir)
    return m.predict, "mlflow"


def load_sklearn(model_dir, flavors):
    sk = flavors["sklearn"]
    pf = flavors.get("python_function", {})
    path = os.path.join(model_dir, sk.get("pickled_model", "model.pkl"))
    fmt = sk.get("serialization_format", "cloudpickle")
    if fmt == "cloudpickle":
        import cloudpickle as pickler
    elif fmt == "pickle":
        import pickle as pickler
    else:
        raise LoadError("sklearn serialization_format %r is not supported; save with pickle or cloudpickle" % fmt)
    with open(path, "rb") as f:
        model = pickler.load(f)
    fn_name = pf.get("predict_fn") or "predict"
    fn = getattr(model, fn_name, None)
    if fn is None:
        raise LoadError("the sklearn model %s has no %s method" % (type(model).__name__, fn_name))
    return fn, "sklearn"


def load_pytorch(model_dir, flavors):
    import numpy as np
    import torch

    conf = flavors["pytorch"]
    path = os.path.join(model_dir, conf.get("model_data", "data"), "model.pth")
    code = conf.get("code")
    if code:
        sys.path.insert(0, os.path.join(model_dir, code))
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except TypeError:  # torch before 1.13 has no weights_only
        model = torch.load(path, map_location="cpu")
    model.eval()

    def predict(data):
        # What mlflow.pytorch's pyfunc does: float32 in; a DataFrame in gives
        # a DataFrame of the outputs back.
        pd = pandas()
        is_frame = pd is not None and isinstance(data, pd.DataFrame)
        values = data.values if is_frame else data
        try:
            x = torch.from_numpy(np.asarray(values, dtype=np.float32))
        except (TypeError, ValueError) as e:
            raise InputError("the PyTorch model takes numbers: %s" % e)
        with torch.no_grad():
            out = model(x)
        if isinstance(out, tuple):
            out = out[0]
        out = out.numpy()
        if is_frame:
            return pd.DataFrame(out, index=data.index)
        return out

    return predict, "pytorch"


def load_loader_module(model_dir, pf):
    code = pf.get("code")
    if code:
        sys.path.insert(0, os.path.join(model_dir, code))
    mod = importlib.import_module(pf["loader_module"])
    data = pf.get("data")
    model = mod._load_pyfunc(os.path.join(model_dir, data) if data else model_dir)
    return model.predict, "python_function"


def load(model_dir, flavors):
    """Returns (predict, how). mlflow's own loader when the interpreter has
    mlflow: it is the reference, custom PythonModels included. Otherwise
    the common flavors directly."""
    try:
        import mlflow.pyfunc  # noqa: F401
        have_mlflow = True
    except ImportError:
        have_mlflow = False
    try:
        if have_mlflow:
            return load_with_mlflow(model_dir)
        pf = flavors.get("python_function", {})
        loader = pf.get("loader_module") or ""
        if "sklearn" in flavors:
            return load_sklearn(model_dir, flavors)
        if "pytorch" in flavors:
            return load_pytorch(model_dir, flavors)
        if loader and not loader.startswith("mlflow."):
            return load_loader_module(model_dir, pf)
    except ModuleNotFoundError as e:
        raise LoadError(missing_module_message(e.name or str(e)))
    if pf.get("python_model") or pf.get("cloudpickle_version"):
        what = "mlflow: it is a custom PythonModel, which only mlflow can load"
    else:
        what = "mlflow to load its flavors (%s) (Gantry loads sklearn, pytorch and custom loader_module models without it)" % ", ".join(sorted(flavors))
    raise LoadError(missing_module_message("mlflow", what))


# ------------------------------------------------------------ the frames

_pd = False


def pandas():
    global _pd
    if _pd is False:
        try:
            import pandas as pd
        except ImportError:
            pd = None
        _pd = pd
    return _pd


def decode_batch(buf):
    """A "P" message into a DataFrame (a numpy array without pandas)."""
    import numpy as np

    (nrows,) = U32.unpack_from(buf, 1)
    (ncols,) = U16.unpack_from(buf, 5)
    at = 7
    names, values = [], []
    for _ in range(ncols):
        (nlen,) = U16.unpack_from(buf, at)
        at += 2
        name = bytes(buf[at : at + nlen]).decode("utf-8")
        at += nlen
        typ = chr(buf[at])
        has_mask = buf[at + 1]
        at += 2
        mask = None
        if has_mask:
            mask = np.frombuffer(buf, dtype=np.uint8, count=nrows, offset=at).astype(bool)
            at += nrows
        if typ in "df":
            col = np.frombuffer(buf, dtype="<f8", count=nrows, offset=at)
            at += 8 * nrows
            if typ == "f":
                col = col.astype(np.float32)
        elif typ in "li":
            col = np.frombuffer(buf, dtype="<i8", count=nrows, offset=at)
            at += 8 * nrows
            if mask is not None and mask.any():
                # As pandas does: an integer column with a gap is float.
                col = col.astype(np.float64)
                col[mask] = np.nan
            elif typ == "i":
                col = col.astype(np.int32)
        elif typ == "b":
            col = np.frombuffer(buf, dtype=np.uint8, count=nrows, offset=at).astype(bool)
            at += nrows
            if mask is not None and mask.any():
                col = col.astype(object)
                col[mask] = None
        elif typ in "sj":
            offs = np.frombuffer(buf, dtype="<u4", count=nrows + 1, offset=at)
            at += 4 * (nrows + 1)
            raw = bytes(buf[at : at + int(offs[-1])])
            at += int(offs[-1])
            col = np.empty(nrows, dtype=object)
            for i in range(nrows):
                if mask is not None and mask[i]:
                    col[i] = None
                else:
                    s = raw[offs[i] : offs[i + 1]].decode("utf-8")
                    col[i] = json.loads(s) if typ == "j" else s
        else:
            raise ValueError("unknown column type %r" % typ)
        names.append(name)
        values.append(col)
    pd = pandas()
    if pd is not None:
        return pd.DataFrame(dict(zip(names, values)), columns=names)
    if all(v.dtype.kind in "fiub" for v in values):
        return np.column_stack(values).astype(np.float64) if values else np.empty((nrows, 0))
    out = np.empty((nrows, len(values)), dtype=object)
    for j, v in enumerate(values):
        out[:, j] = v
    return out


def encode_strings(items):
    enc = [s.encode("utf-8") for s in items]
    offs = [0]
    for e in enc:
        offs.append(offs[-1] + len(e))
    import numpy as np

    return [np.asarray(offs, dtype="<u4").tobytes(), b"".join(enc)]


def encode_array(a):
    """One 1-D or 2-D numpy array as dtype byte, rows, width and data."""
    import numpy as np

    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim > 2:
        return encode_json_rows(a.tolist())
    rows = a.shape[0]
    width = a.shape[1] if a.ndim == 2 else 0
    head = lambda t: [t, U32.pack(rows), U32.pack(width)]  # noqa: E731
    k = a.dtype.kind
    if k == "f":
        return head(b"d") + [np.ascontiguousarray(a, dtype="<f8").tobytes()]
    if k in "iu":
        return head(b"l") + [np.ascontiguousarray(a, dtype="<i8").tobytes()]
    if k == "b":
        return head(b"b") + [np.ascontiguousarray(a, dtype=np.uint8).tobytes()]
    flat = a.reshape(-1).tolist()
    if k in "US" or (k == "O" and all(isinstance(s, str) for s in flat)):
        return head(b"s") + encode_strings([s.decode() if isinstance(s, bytes) else s for s in flat])
    return head(b"j") + encode_strings([json.dumps(v, default=jsonable) for v in flat])


def encode_json_rows(rows):
    return [b"j", U32.pack(len(rows)), U32.pack(0)] + encode_strings(
        [json.dumps(v, default=jsonable) for v in rows]
    )


def jsonable(v):
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def encode_output(p):
    """The model's output as an "O" message body: an array ("A"), the
    columns of a DataFrame ("F"), or rows of JSON ("A" with type j)."""
    import numpy as np

    pd = pandas()
    if pd is not None and isinstance(p, pd.DataFrame):
        parts = [b"OF", U16.pack(p.shape[1])]
        for name in p.columns:
            n = str(name).encode("utf-8")
            parts += [U16.pack(len(n)), n]
            parts += encode_array(p[name].to_numpy())
        return parts
    if pd is not None and isinstance(p, pd.Series):
        p = p.to_numpy()
    if hasattr(p, "numpy") and not isinstance(p, np.ndarray):  # a torch tensor
        p = p.detach().cpu().numpy()
    if isinstance(p, (list, tuple)):
        try:
            a = np.asarray(p)
        except Exception:
            a = None
        if a is None or a.dtype.kind == "O" and a.ndim != 1:
            return [b"OA"] + encode_json_rows(list(p))
        p = a
    if isinstance(p, np.ndarray):
        return [b"OA"] + encode_array(p)
    if isinstance(p, dict):
        return [b"OJ", json.dumps(p, default=jsonable).encode("utf-8")]
    return [b"OJ", json.dumps(p, default=jsonable).encode("utf-8")]


def error(kind, msg):
    write_msg([b"E", kind, msg.encode("utf-8", "replace")])


def last_line(e):
    text = ("%s: %s" % (type(e).__name__, e)).strip()
    return text.splitlines()[-1] if text else type(e).__name__


# Exceptions a model raises when a request's values do not suit it (a
# string where it computes, a category it cannot take, a wrong shape): the
# client can fix those, so they are 400s. Anything else is the model's.
INPUT_ERRORS = (ValueError, TypeError, KeyError, IndexError, InputError)


def serve(predict):
    import numpy as np  # noqa: F401  (imported once, not per request)

    while True:
        try:
            buf = read_msg()
        except EOFError:
            return
        if buf[:1] != b"P":
            error(b"M", "unknown message %r" % bytes(buf[:1]))
            continue
        try:
            data = decode_batch(buf)
        except Exception as e:
            error(b"M", "decode batch: %s" % last_line(e))
            continue
        try:
            out = predict(data)
        except INPUT_ERRORS as e:
            error(b"I", last_line(e))
            continue
        except Exception as e:
            traceback.print_exc()
            error(b"M", last_line(e))
            continue
        try:
            parts = encode_output(out)
        except Exception as e:
            traceback.print_exc()
            error(b"M", "encode output: %s" % last_line(e))
            continue
        write_msg(parts)


def main():
    model_dir = sys.argv[2]
    conf = json.loads(bytes(read_msg()).decode("utf-8"))
    try:
        predict, how = load(model_dir, conf.get("flavors") or {})
    except LoadError as e:
        write_msg([b"R", json.dumps({"error": str(e), "mismatches": requirement_mismatches(model_dir)}).encode()])
        return
    except Exception as e:
        traceback.print_exc()
        write_msg([b"R", json.dumps({"error": last_line(e), "mismatches": requirement_mismatches(model_dir)}).encode()])
        return
    import warnings

    # A model fitted on a numpy array warns about the DataFrame's names on
    # every call; the log would hold nothing else.
    warnings.filterwarnings("ignore", message="X has feature names")
    info = {"loader": how, "python": sys.version.split()[0], "executable": sys.executable,
            "pid": os.getpid(), "mismatches": requirement_mismatches(model_dir)}
    write_msg([b"R", json.dumps(info).encode()])
    serve(predict)


if __name__ == "__main__":
    main()
