"""The coders: each turns an image into a CodedImage (layers and their fields) and back.

coded        the context both sides share (runner, tiling, seed) and the CodedImage type
runner       the model as both sides see it: portable schedule, exact tiled predictions, identity
randomness   shared, reproducible noise and dithers (numpy PCG64)
entropy      range-coded chunks of integer arrays under quantized Laplaces, the scale table
transform    the step layers' orthonormal transform (colour rotation, block DCT) and its bands
layer_plan   a step layer's plan: band scales, skipped regions, scale shifts (its first chunk)
progressive  universally quantized reverse steps, one truncatable layer each, then the tail
uq_step      one such step: the latent its symbols give, and the box they put x in
placement    where the rate-placed layers end (a ladder of rates, and the time that reaches one)
tail         the progressive stream's exact end: bits-back from the last layer's latent
ans          the ANS stack bits-back coding pushes to and pops from
chain        the Gaussian chain bits-back coding walks, band by band (Bit-Swap order)
lossless     bits-back coding of a whole image in bands, calibration, the coder's bound
direct       a small predictive pixel coder (the first band, and a fallback)
stored       the fallbacks without the model: predictive pixels, or zlib
progress     progress bars
"""
