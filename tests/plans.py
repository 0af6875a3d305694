"""Hand-built Plans (the Slice geometry of passes/analyze/plan.py) for tests that need no trace."""
from passes.analyze.plan import AttentionFamily, FeedForwardFamily, Plan, Slice


def _attn(fqn, layer, H, KV, d, q, k, v, out):
    return AttentionFamily(fqn, layer, H, KV, d, q=Slice(*q, role="q"), k=Slice(*k, role="k"),
                           v=Slice(*v, role="v"), out=Slice(*out, role="out"))


def _ffn(fqn, layer, width, up, down, gate=None):
    return FeedForwardFamily(fqn, layer, width, "gelu", up=Slice(*up, role="up"), down=Slice(*down, role="down"),
                             gate=None if gate is None else Slice(*gate, role="gate"))


def bert_plan(layers=2, E=32, H=4, F=64):
    fams = {}
    for i in range(layers):
        p = f"bert.encoder.layer.{i}"
        a = f"{p}.attention"
        fams[a] = _attn(a, i, H, H, E // H, (f"{a}.self.query", "weight", 0, 0, E), (f"{a}.self.key", "weight", 0, 0, E),
                        (f"{a}.self.value", "weight", 0, 0, E), (f"{a}.output.dense", "weight", 1, 0, E))
        fams[p] = _ffn(p, i, F, (f"{p}.intermediate.dense", "weight", 0, 0, F), (f"{p}.output.dense", "weight", 1, 0, F))
    return Plan(fams, "BertForSequenceClassification")
