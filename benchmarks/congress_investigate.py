"""Issue 15 target (run from the repo root with ../shared/data; reuses the audit embedding cache):
Investigate mode on the Congress experiment: is each member's other photo in the top-10 candidate list
above the lead floor (FMR 1e-3), searched against every stranger in ../shared/data plus the 200 mates?"""
from pathlib import Path

import numpy as np

import facelens
from facelens.audit.dataset import read_dataset
from facelens.audit.run import _embed, _probes_and_mates, read_exclusions

S = Path("../shared/data")
CACHE = Path.home() / ".local/share/facelens/cache/embeddings-buffalo_s.npz"
eng = facelens.Engine(threads=2)
probes = read_dataset(S / "congress-past")
galleries = [read_dataset(S / n) for n in ("utkface-dev", "lfw", "congress-historical")]
exclude = [p for f in (S / "congress-past/lfw_name_overlap.csv", Path("benchmarks/data/congress_lfw_overlap_extra.csv"))
           for p in read_exclusions(f)]
p_emb = _embed(eng, probes, workers=2, cache=CACHE, progress=None)
p_idx, mates = _probes_and_mates(p_emb)
parts = [_embed(eng, g, workers=2, cache=CACHE, progress=None) for g in galleries]
g_emb = np.concatenate([g.embeddings for g in parts])
g_ids = np.concatenate([np.char.add(f"{g.dataset.name}:", g.dataset.subjects.astype(str)) for g in parts])
names = p_emb.dataset.attributes.get("name")
by_name = {} if names is None else {str(n): str(s) for n, s in zip(names, p_emb.dataset.subjects, strict=True)}
pref = {(by_name.get(a, a), f"{g.dataset.name}:{b}") for a, b in exclude for g in parts}
floor = eng.operating_point(max_fmr=1e-3).threshold
n_gal = len(g_emb) + len(p_idx)  # strangers + every member's mate, as a collection would hold them
found = 0
rank_list = []
for j, i in enumerate(p_idx):
    subj = str(p_emb.dataset.subjects[i])
    q = p_emb.embeddings[i]
    keep = np.array([(subj, gid) not in pref for gid in g_ids])
    s_str = g_emb[keep] @ q
    s_other = np.delete(mates, j, axis=0) @ q  # the other members' second photos: strangers too
    mate = float(mates[j] @ q)
    higher = int((s_str > mate).sum() + (s_other > mate).sum())
    rank = 1 + higher
    rank_list.append(rank)
    if mate >= floor and rank <= 10:
        found += 1
print(f"lead floor (FMR 1e-3) threshold {floor:.4f}; gallery {n_gal:,} faces; members {len(p_idx)}")
print(f"mate in the investigate candidate list (top 10 at or above the floor): {found} of {len(p_idx)}")
print("mate rank 1:", sum(r == 1 for r in rank_list), " rank <= 10:", sum(r <= 10 for r in rank_list))
