import sys, time, torch, numpy as np
from diffcodec.model import load_model
from diffcodec.model.exact_network import ExactNetwork
m = load_model('/work/main/diffcodec/weights/default.pt'); net = ExactNetwork(m.network)
gs = [float(v) for v in m.schedule.portable(np.linspace(0.1, 0.9, 16))]
z = torch.randn(1, 3, 128, 768, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
net(z, gs[0], edge_rows=4)
ts = []
for k in range(20):
    t = time.perf_counter(); net(z, gs[k % 16], edge_rows=4); ts.append(time.perf_counter() - t)
print(sys.argv[1], f"min {min(ts)*1000:.1f} med {np.median(ts)*1000:.1f}")
