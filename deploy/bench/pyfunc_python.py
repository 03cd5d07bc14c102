#!/usr/bin/python3
"""Baselines for make bench-pyfunc, two ways of serving one scikit-learn
model in Python:

  loop     calls model.predict on a one-row DataFrame in a loop and prints
           the p50 (the floor under any server: no HTTP, no parsing);
  serve    answers POST /invocations with FastAPI under uvicorn, the stack
           `mlflow models serve` runs, parsing the MLflow JSON body into a
           DataFrame the way MLflow's scoring server does (without its
           schema checks, so this baseline is, if anything, fast).

    pyfunc_python.py loop MODEL_DIR BODY.json
    pyfunc_python.py serve MODEL_DIR PORT
"""

import json
import os
import pickle
import sys
import time

import numpy as np
import pandas as pd


def load(model_dir):
    with open(os.path.join(model_dir, "model.pkl"), "rb") as f:
        return pickle.load(f)


def frame(body, dtypes):
    split = body["dataframe_split"]
    df = pd.DataFrame(split["data"], columns=split["columns"])
    return df.astype({c: t for c, t in dtypes.items() if c in df and t != object}, errors="ignore")


def dtypes_of(model_dir):
    # The signature's types, as MLflow's schema enforcement applies them.
    kinds = {"double": np.float64, "long": np.int64, "string": object}
    with open(os.path.join(model_dir, "MLmodel")) as f:
        for line in f:
            if line.strip().startswith("inputs:"):
                spec = json.loads(line.split(":", 1)[1].strip().strip("'"))
                return {c["name"]: kinds.get(c["type"], object) for c in spec}
    return {}


def loop(model_dir, body_file, n=3000):
    model = load(model_dir)
    body = json.load(open(body_file))
    dtypes = dtypes_of(model_dir)
    df = frame(body, dtypes)
    for _ in range(200):
        model.predict(df)
    t = []
    for _ in range(n):
        s = time.perf_counter()
        model.predict(df)
        t.append(time.perf_counter() - s)
    t.sort()
    print("python-loop predict p50=%.3fms p99=%.3fms (n=%d)" % (t[n // 2] * 1e3, t[int(n * 0.99)] * 1e3, n))
    # The same with the request's JSON parsed into the DataFrame each time.
    raw = open(body_file, "rb").read()
    t = []
    for _ in range(n):
        s = time.perf_counter()
        model.predict(frame(json.loads(raw), dtypes))
        t.append(time.perf_counter() - s)
    t.sort()
    print("python-loop parse+predict p50=%.3fms p99=%.3fms (n=%d)" % (t[n // 2] * 1e3, t[int(n * 0.99)] * 1e3, n))


def serve(model_dir, port):
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    model = load(model_dir)
    dtypes = dtypes_of(model_dir)
    app = FastAPI()

    @app.get("/ping")
    def ping():
        return Response("\n", media_type="application/json")

    @app.post("/invocations")
    async def invocations(request: Request):
        body = json.loads(await request.body())
        preds = model.predict(frame(body, dtypes))
        return Response(json.dumps({"predictions": preds.tolist()}), media_type="application/json")

    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False)


if __name__ == "__main__":
    {"loop": loop, "serve": serve}[sys.argv[1]](*sys.argv[2:])
