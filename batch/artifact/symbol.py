"""``symbol.json`` and ``meta.json`` of the FM artifact: the MXNet graph and a description.

The graph is what ``mx.sym.tojson()`` (MXNet 1.9.1) prints for this network, built without
MXNet: inputs ``data`` (csr, (batch, N)), parameters ``w0_weight`` (1,), ``w1_weight`` (N, 1)
and ``v`` (N, k), and one output op named ``out`` whose label is therefore ``out_label``::

    score = dot(data, w1_weight) + w0_weight
            + ½ (Σ_f dot(data, v)² − dot(data², Σ_f v²))
    out   = LogisticRegressionOutput(score)   # binary_classifier: sigmoid(score)
          | LinearRegressionOutput(score)     # regressor: score

So the published recipe (rename to ``model-symbol.json`` / ``model-0000.params``, then
``mx.module.Module.load(prefix, 0, label_names=['out_label'])``) binds and predicts. The graph
mirrors apache/mxnet ``example/sparse/factorization_machine/model.py`` with dense parameters.
"""

from __future__ import annotations

import json
from typing import Any

from batch import __version__

OUTPUT_OPS = {
    "binary_classifier": "LogisticRegressionOutput",
    "regressor": "LinearRegressionOutput",
}
MXNET_VERSION = 10901  # 1.9.1, as MXNet stamps it into the graph attributes
META_FORMAT = "topx/sagemaker-fm"
META_VERSION = 1


class _Graph:
    """Nodes of an NNVM graph in topological order; every node has exactly one output."""

    def __init__(self):
        self.nodes: list[dict[str, Any]] = []

    def var(self, name: str, **attrs: str) -> int:
        return self._add({"op": "null", "name": name, **({"attrs": attrs} if attrs else {})}, [])

    def op(self, op: str, name: str, *inputs: int, **attrs: str) -> int:
        return self._add({"op": op, "name": name, **({"attrs": attrs} if attrs else {})}, inputs)

    def _add(self, node: dict[str, Any], inputs) -> int:
        node["inputs"] = [[i, 0, 0] for i in inputs]
        self.nodes.append(node)
        return len(self.nodes) - 1

    def to_dict(self, head: int) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "arg_nodes": [i for i, n in enumerate(self.nodes) if n["op"] == "null"],
            "node_row_ptr": list(range(len(self.nodes) + 1)),
            "heads": [[head, 0, 0]],
            "attrs": {"mxnet_version": ["int", MXNET_VERSION]},
        }


def fm_graph(feature_dim: int, num_factors: int, predictor_type: str) -> dict[str, Any]:
    """The FM network as a symbol-JSON dict (node order as MXNet's depth-first serialisation)."""
    if predictor_type not in OUTPUT_OPS:
        raise ValueError(f"predictor_type must be one of {sorted(OUTPUT_OPS)}; "
                         f"got {predictor_type!r}")
    g = _Graph()
    data = g.var("data", __storage_type__="2")  # 2 = csr
    w1 = g.var("w1_weight", __shape__=str((feature_dim, 1)))
    linear = g.op("broadcast_add", "linear_bias", g.op("dot", "linear", data, w1),
                  g.var("w0_weight", __shape__=str((1,))))
    v = g.var("v", __shape__=str((feature_dim, num_factors)))
    xv = g.op("dot", "xv", data, v)
    xv_sq = g.op("sum", "xv_sq_sum", g.op("square", "xv_sq", xv), axis="1", keepdims="True")
    x_sq = g.op("square", "x_sq", data)
    v_sq = g.op("sum", "v_sq_sum", g.op("square", "v_sq", v), axis="1", keepdims="True")
    # Σ_j x_j² ‖v_j‖²: the self-interactions inside ‖Vᵀx‖² that the FM excludes.
    self_terms = g.op("dot", "self_interaction", x_sq, v_sq)
    pairwise = g.op("_mul_scalar", "pairwise", g.op("elemwise_sub", "pair_diff", xv_sq, self_terms),
                    scalar="0.5")
    score = g.op("elemwise_add", "score", linear, pairwise)
    head = g.op(OUTPUT_OPS[predictor_type], "out", score, g.var("out_label"))
    return g.to_dict(head)


def symbol_json(feature_dim: int, num_factors: int, predictor_type: str) -> str:
    """``symbol.json`` text for an FM of ``feature_dim`` features and ``num_factors`` factors."""
    return json.dumps(fm_graph(feature_dim, num_factors, predictor_type), indent=2) + "\n"


def predictor_type_of_symbol(graph: Any) -> str | None:
    """``binary_classifier`` or ``regressor`` from a parsed symbol.json's output op, or None when
    the graph's head is neither output op (or the graph is not shaped like a symbol graph)."""
    try:
        head_op = graph["nodes"][graph["heads"][0][0]]["op"]
    except (KeyError, IndexError, TypeError):
        return None
    return next((kind for kind, op in OUTPUT_OPS.items() if op == head_op), None)


def meta_json(feature_dim: int, num_factors: int, predictor_type: str,
              hyperparameters: dict[str, str]) -> str:
    """``meta.json`` text: what the artifact holds and how it was trained."""
    meta = {
        "format": META_FORMAT,
        "format_version": META_VERSION,
        "algorithm": "factorization-machines",
        "producer": f"topx {__version__}",
        "feature_dim": feature_dim,
        "num_factors": num_factors,
        "predictor_type": predictor_type,
        "params": {
            "arg:v": {"shape": [feature_dim, num_factors], "dtype": "float32"},
            "arg:w1_weight": {"shape": [feature_dim, 1], "dtype": "float32"},
            "arg:w0_weight": {"shape": [1], "dtype": "float32"},
        },
        "hyperparameters": hyperparameters,
    }
    return json.dumps(meta, indent=2) + "\n"
