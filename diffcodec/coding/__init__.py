"""The coders: each turns an image into layers for the container and back.

randomness  shared, reproducible noise and dithers (numpy PCG64)
entropy     range-coded chunks of integer arrays under quantized Laplaces (numpy only)
runner      the model as both sides see it: float64 schedule, tiled predictions, identity
progressive universally quantized reverse steps, one truncatable layer each
ans, chain  the ANS stack, and the Gaussian chain walked by bits-back coding
lossless    bits-back coding band by band, calibration and the coder's bound
stored      zlib pixels, where the model loses to deflate
"""
