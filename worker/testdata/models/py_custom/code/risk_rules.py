"""A rules model in MLflow's loader_module form: _load_pyfunc(path)
returns an object whose predict takes a DataFrame."""

import json

import pandas as pd


class RiskRules:
    def __init__(self, rules):
        self.rules = rules

    def predict(self, df, params=None):
        out = []
        for plan, tenure, spend in zip(df["plan"], df["tenure"], df["spend"]):
            if plan is None or spend != spend:  # missing plan or NaN spend
                out.append("unknown")
                continue
            score = self.rules["plan"].get(plan, 0.0) + spend * self.rules["per_dollar"]
            score -= tenure * self.rules["per_month"]
            out.append("high" if score > self.rules["threshold"] else "low")
        return pd.Series(out, index=df.index)


def _load_pyfunc(path):
    with open(path) as f:
        return RiskRules(json.load(f))
