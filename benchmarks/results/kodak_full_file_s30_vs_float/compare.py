"""Per-image means of two benchmarks/full_file.py runs over the same images (exact: first, float: second):
all images, and those where both files used the same coder. python compare.py exact/full_file.json float_container9/full_file.json"""
import json, sys
a = {r["image"]: r for r in json.load(open(sys.argv[1]))["images"]}  # exact (HEAD)
b = {r["image"]: r for r in json.load(open(sys.argv[2]))["images"]}  # float network
common = sorted(set(a) & set(b))
keys = ["encode_s", "decode_s", "lossless_encode_s", "lossless_decode_s", "bpd", "lossless_bpd"]
def mean(d, names, k): return sum(d[n][k] for n in names) / len(names)
print("images", len(common))
for k in keys:
    print(f"{k:20s} exact {mean(a, common, k):8.3f}  float {mean(b, common, k):8.3f}  ratio {mean(a, common, k)/mean(b, common, k):.3f}")
both = [n for n in common if a[n]["tail"] == "lossless" and b[n]["tail"] == "lossless"]
print("both bits-back tails:", len(both))
for k in keys[:2]:
    print(f"{k:20s} exact {mean(a, both, k):8.3f}  float {mean(b, both, k):8.3f}  ratio {mean(a, both, k)/mean(b, both, k):.3f}")
bothl = [n for n in common if a[n]["lossless_coder"] == "lossless" and b[n]["lossless_coder"] == "lossless"]
print("both bits-back lossless files:", len(bothl))
for k in keys[2:4]:
    print(f"{k:20s} exact {mean(a, bothl, k):8.3f}  float {mean(b, bothl, k):8.3f}  ratio {mean(a, bothl, k)/mean(b, bothl, k):.3f}")
for n in common:
    print(n, a[n]["tail"], b[n]["tail"], round(a[n]["encode_s"],1), round(b[n]["encode_s"],1), round(a[n]["decode_s"],1), round(b[n]["decode_s"],1), a[n]["lossless_coder"], b[n]["lossless_coder"], round(a[n]["lossless_encode_s"],1), round(b[n]["lossless_encode_s"],1), round(a[n]["lossless_decode_s"],1), round(b[n]["lossless_decode_s"],1))
