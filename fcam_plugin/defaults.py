"""The one place that defines every default of the method; config, losses, seeds and data import it.

Values follow the paper's reference run (CUB, 224 px, ResNet-50) unless a measurement in
``benchmarks/README.md`` says otherwise.
"""

from __future__ import annotations

__all__ = [
    "ANCHOR_STEPS",
    "ANCHOR_WEIGHT",
    "BARRIER_FACTOR",
    "BARRIER_T0",
    "BARRIER_T_MAX",
    "BG_PERCENTILE",
    "CAM_GATE",
    "CAM_WEIGHT",
    "CRF_WEIGHT",
    "DECODER_CHANNELS",
    "FG_CONFIDENCE_POWER",
    "FG_CONFIDENCE_QUANTILE",
    "FG_EROSION",
    "FG_SEED_POWER",
    "FLIP_AVERAGE",
    "FLIP_WEIGHT",
    "GATE_DILATION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LR_SCHEDULE",
    "N_BG",
    "N_FG",
    "SEED_FLIP",
    "SEED_FUSION",
    "SEED_LAYERS",
    "SEED_PATCH",
    "SELF_TRAINING_FROM",
    "SIGMA_RGB",
    "SIGMA_XY",
    "SIZE_WEIGHT",
]

#: U-Net up-block widths, from the deepest.
DECODER_CHANNELS: tuple[int, ...] = (256, 128, 64, 32, 16)
#: Seeds sampled per image and step, the side of the square each grows to, the erosion of the
#: Otsu foreground region, and the CAM percentile below which pixels are background candidates.
N_FG, N_BG, SEED_PATCH, FG_EROSION, BG_PERCENTILE = 1, 1, 3, 11, 10.0
#: Foreground seeds are drawn with probability ∝ CAM ** FG_SEED_POWER inside their candidate
#: region (0: uniformly, as in the paper); measured in benchmarks/README.md ("Seeds weighted by the CAM").
FG_SEED_POWER = 2.0
#: Each image's foreground seeds weigh p(label | image) ** FG_CONFIDENCE_POWER in the partial
#: cross-entropy, the classifier's softmax confidence in the labelled class (0: all weigh 1, as in
#: the paper); measured in benchmarks/README.md ("Foreground seeds weighted by the classifier's confidence").
FG_CONFIDENCE_POWER = 1.0
#: Images under this quantile of the classifier's confidence in their label, measured over the
#: training set before the fit, get no foreground seeds (0: none is left out); measured in
#: benchmarks/README.md ("Foreground seeds weighted by the classifier's confidence").
FG_CONFIDENCE_QUANTILE = 0.0
#: Seeds are drawn from the seed CAM averaged over the image and its horizontal mirror (the
#: wrapped method run on both); measured in benchmarks/README.md ("Seeds from the mirrored image too").
SEED_FLIP = False
#: Where the seed CAM comes from: the wrapped method at the classifier's stride-8 and stride-16
#: stages and at its target layers, fused by their product (as RefineCAM fuses layers). The paper
#: uses the target layers only ("target"); measured in benchmarks/README.md ("Ablations").
SEED_LAYERS, SEED_FUSION = "stages", "product"
#: Dense CRF weight λ for the exact-valued loss (sum convention). The reference recipe uses
#: λ = 2e-9 with a permutohedral filter that returns ≈ 0.56× the exact quadratic form; our loss is
#: calibrated to the exact value, so λ = 2e-9 × 0.56 ≈ 1.1e-9.
CRF_WEIGHT = 1.1e-9
#: Bilateral kernel widths: pixels, and RGB levels in 0..255.
SIGMA_XY, SIGMA_RGB = 100.0, 15.0
#: Weight of the log-barrier size term and its parameter t: ``min(t0 * factor**epoch, t_max)``.
SIZE_WEIGHT, BARRIER_T0, BARRIER_FACTOR, BARRIER_T_MAX = 0.1, 1.0, 1.01, 10.0
#: Weight of the CAM prior (BCE between the foreground probability and the seed CAM on every pixel).
CAM_WEIGHT = 0.0
#: The class gate at inference: the decoder's probability times the requested class's seed CAM
#: over the strongest of it and the CAMs of ``GATE_RIVALS`` rival classes (the best-scoring others),
#: every CAM max-pooled, then averaged, over a window of ``GATE_DILATION`` times the image side (see
#: :mod:`fcam_plugin.class_gate`); measured in benchmarks/README.md ("Class-conditional maps").
#: ``"auto"``: on whenever the caller names classes (``targets``, ``class_idx``, ``maps(x, classes)``).
CAM_GATE, GATE_DILATION, GATE_RIVALS = "auto", 0.25, 2
#: Epoch (1-based) from which seeds come from √(decoder probability × seed CAM); 0: never (measured
#: in benchmarks/README.md, "Seed parameters, a stronger CRF and self-training").
SELF_TRAINING_FROM = 0
#: Learning rate of the default optimiser over a fit: decayed from ``lr`` to 0 by a cosine (the
#: paper keeps it constant); measured in benchmarks/README.md ("Ablations").
LR_SCHEDULE = "cosine"
#: Early-learning anchor: at the end of the first epoch that completes ``ANCHOR_STEPS`` or more
#: optimisation steps, a frozen copy of the decoder is kept, and every later step adds
#: ``ANCHOR_WEIGHT`` times the BCE between the decoder's map and the copy's; 0 disables it.
#: Measured in benchmarks/README.md ("The early-learning anchor").
ANCHOR_WEIGHT, ANCHOR_STEPS = 1.0, 10
#: Weight of the flip-consistency term (the map of a mirrored image against the mirrored map);
#: measured in benchmarks/README.md ("Test-time flip and flip consistency").
FLIP_WEIGHT = 1.0
#: Average the decoder's map over each image and its mirror at inference (test-time flip: two
#: passes, twice the call's cost). Off: after training with the flip-consistency term it adds
#: little; measured in benchmarks/README.md ("Test-time flip and flip consistency").
FLIP_AVERAGE = False
#: ImageNet normalisation of the classifier's inputs.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
